"""Fault 2: the model server (the sandbox, in its own process, reached by the `openai`
provider) dies mid-turn (SIGKILL) or stops answering (SIGSTOP; found by WebSocket pings). The
client gets an `error` event and a clean close; the conversation is recorded as failed with the
reason; everything before the fault is in the database."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
import pytest_asyncio
import websockets
from websockets.asyncio.server import Server, ServerConnection

from orchestrator.upstream.sandbox import start_sandbox
from tests.conftest import sqlite_url
from tests.events import timeline
from tests.faults import REPO, ServeProcess, sandbox_process
from tests.realtime_client import connect, text_of
from tests.server import serve

AGENTS = REPO / "tests" / "fixtures" / "faults"
WAIT = 30.0


@pytest_asyncio.fixture
async def sandbox(tmp_path: Path) -> AsyncGenerator[ServeProcess]:
    """`orchestrator sandbox` in its own process, serving the `desk` script."""
    async with sandbox_process(tmp_path / "sandbox") as process:
        yield process


@pytest.mark.parametrize("fault", ["killed", "hung"])
async def test_the_model_server_dying_or_hanging_mid_turn_ends_the_session_cleanly(
        fault: str, sandbox: ServeProcess, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    monkeypatch.setenv("SANDBOX_URL", f"ws://127.0.0.1:{sandbox.port}/v1")
    async with serve(sqlite_url(tmp_path / "orchestrator.db"), tmp_path, agents_dir=AGENTS,
                     upstream_ping_interval_s=0.3, upstream_ping_timeout_s=0.7) as server:
        async with connect(server.realtime_url("relay"), server.token) as client:
            assert "Echo: echoed" in text_of(await client.turn("echo please"))
            await client.say("slow please")
            await client.until_type("response.mcp_call.in_progress")
            started = time.monotonic()
            os.kill(sandbox.proc.pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
            events = await client.until(lambda e: e["type"] == "error")
            detected = time.monotonic() - started
            with pytest.raises(websockets.ConnectionClosed):
                await client.recv()
            assert client.ws.close_code == 1000
        error = events[-1]["error"]
        assert error["code"] == "upstream_closed"
        assert ("keepalive ping timeout" in error["message"]) == (fault == "hung")
        print(f"upstream {fault}: error event after {detected:.2f} s")
        record = await timeline(server)
    assert (record["status"], record["end_reason"]) == ("failed", "upstream_closed")
    calls = [(e["tool"], e["status"]) for e in record["timeline"] if e["kind"] == "tool_call"]
    assert calls == [("echo", "completed"), ("slow", "failed")]
    said = [e["text"] for e in record["timeline"] if e.get("role") == "assistant"]
    assert said == ["Echo: echoed"]  # the turn before the fault, as the client saw it


class StallingModel:
    """A model server that starts a response and then goes silent while still answering
    pings: a relay to the sandbox that, once `stall` is set, forwards the next
    `response.created` and nothing after it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.stall = False
        self.server: Server | None = None

    async def handler(self, ws: ServerConnection) -> None:
        """Relay one connection, going silent once asked to."""
        path = ws.request.path if ws.request is not None else "/v1/realtime"
        async with websockets.connect(f"ws://127.0.0.1:{self.target_port}{path}",
                                      compression=None, max_size=None) as model:
            async def up() -> None:
                async for message in ws:
                    await model.send(message)
                await model.close()  # the orchestrator hung up: so does the relay

            async def down() -> None:
                silent = False
                async for message in model:
                    if not silent:
                        await ws.send(message)
                    silent = silent or (self.stall and '"response.created"' in str(message))

            async with asyncio.TaskGroup() as tg:
                tg.create_task(up())
                tg.create_task(down())


async def test_a_model_that_goes_silent_mid_response_ends_the_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    sandbox = await start_sandbox(agents_dir=AGENTS)
    model = StallingModel(sandbox.port)
    relay = await websockets.serve(model.handler, "127.0.0.1", 0, compression=None)
    port = next(iter(relay.sockets)).getsockname()[1]
    monkeypatch.setenv("SANDBOX_URL", f"ws://127.0.0.1:{port}/v1")
    try:
        async with serve(sqlite_url(tmp_path / "orchestrator.db"), tmp_path,
                         agents_dir=AGENTS, upstream_response_timeout_s=1.0) as server:
            async with connect(server.realtime_url("relay"), server.token) as client:
                assert "Desk here." in text_of(await client.turn("hello"))
                model.stall = True
                await client.say("hello again")
                events = await client.until(lambda e: e["type"] == "error")
                assert "response.created" in [e["type"] for e in events]
                assert events[-1]["error"]["code"] == "upstream_timeout"
                with pytest.raises(websockets.ConnectionClosed):
                    await client.recv()
            record = await timeline(server)
    finally:
        relay.close()
        await relay.wait_closed()
        await sandbox.aclose()
    assert (record["status"], record["end_reason"]) == ("failed", "upstream_timeout")
    said = [e["text"] for e in record["timeline"] if e.get("role") == "assistant"]
    assert said == ["Desk here."]
