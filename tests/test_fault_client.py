"""Fault 3: clients that vanish mid tool call (the TCP connection dropped without a close).
The tool is cancelled and its row recorded, the upstream connection is closed, and no task or
child process is left behind."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
import pytest_asyncio

from orchestrator.upstream.sandbox import SandboxHandle, start_sandbox
from tests.conftest import sqlite_url
from tests.faults import REPO, child_pids, wait_until
from tests.realtime_client import connect, text_of
from tests.server import serve

AGENTS = REPO / "tests" / "fixtures" / "faults"
WAIT = 30.0
CLIENTS = 4


@pytest_asyncio.fixture
async def sandbox(monkeypatch: pytest.MonkeyPatch) -> AsyncGenerator[SandboxHandle]:
    """The scripted model over a real socket, the upstream of the `relay` agent."""
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    handle = await start_sandbox(agents_dir=AGENTS)
    try:
        yield handle
    finally:
        await handle.aclose()


async def test_clients_vanishing_mid_tool_call_leave_nothing_behind(
        sandbox: SandboxHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    monkeypatch.setenv("SANDBOX_URL", f"ws://127.0.0.1:{sandbox.port}/v1")
    async with serve(sqlite_url(tmp_path / "orchestrator.db"), tmp_path,
                     agents_dir=AGENTS) as server:
        services = server.services
        async with connect(server.realtime_url("relay"), server.token) as warm:
            assert "Echo: echoed" in text_of(await warm.turn("echo please"))
        await asyncio.wait_for(services.live_sessions.wait_empty(), WAIT)
        await wait_until(lambda: not sandbox.server.connections)
        tasks, children = len(asyncio.all_tasks()), child_pids()

        async def vanish() -> None:
            async with connect(server.realtime_url("relay"), server.token) as client:
                await client.say("slow please")  # a 3 s tool
                await client.until_type("response.mcp_call.in_progress")
                assert client.ws.transport is not None
                client.ws.transport.abort()  # gone: no close frame, a reset socket

        await asyncio.gather(*(vanish() for _ in range(CLIENTS)))
        await asyncio.wait_for(services.live_sessions.wait_empty(), WAIT)
        await asyncio.wait_for(services.recorder.flush(), WAIT)
        await wait_until(lambda: not sandbox.server.connections)  # every upstream closed
        await wait_until(lambda: len(asyncio.all_tasks()) <= tasks)
        assert child_pids() == children  # the MCP server is shared and kept, nothing more

    with sqlite3.connect(tmp_path / "orchestrator.db") as db:
        calls = db.execute("SELECT status, error FROM tool_calls WHERE tool = 'slow'").fetchall()
        ends = db.execute("SELECT end_reason FROM conversations").fetchall()
    assert calls == [("failed", "cancelled")] * CLIENTS
    assert ends == [("client_closed",)] * (CLIENTS + 1)
