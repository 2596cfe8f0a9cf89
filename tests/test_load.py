"""Fault 6: load. Many concurrent sessions with tool calls through the `openai` provider
against the scripted model served in another process (`orchestrator sandbox`): every message
item and tool call each client saw is in the database, count for count, none twice. The suite
runs a short burst; `ORCHESTRATOR_SOAK=1` runs the 60 s soak (also `bench/soak.py`)."""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
import pytest_asyncio

from orchestrator.store.db import create_engine
from tests.conftest import sqlite_url
from tests.faults import REPO, ServeProcess, recorded_messages, sandbox_process
from tests.load import run_load
from tests.server import serve

AGENTS = REPO / "tests" / "fixtures" / "faults"
SESSIONS = 200
SOAK = os.environ.get("ORCHESTRATOR_SOAK") == "1"


@pytest_asyncio.fixture
async def sandbox(tmp_path: Path) -> AsyncGenerator[ServeProcess]:
    """`orchestrator sandbox` in its own process, serving the `desk` script."""
    async with sandbox_process(tmp_path / "sandbox") as process:
        yield process


async def test_concurrent_sessions_are_recorded_count_for_count(
        sandbox: ServeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    monkeypatch.setenv("SANDBOX_URL", f"ws://127.0.0.1:{sandbox.port}/v1")
    url = sqlite_url(tmp_path / "orchestrator.db")
    async with serve(url, tmp_path, agents_dir=AGENTS) as server:
        result = await run_load(server.realtime_url("relay"), server.token, sessions=SESSIONS,
                                turns=None if SOAK else 1, duration_s=60.0 if SOAK else None)
        services = server.services
        await asyncio.wait_for(services.live_sessions.wait_empty(), 60)
        await asyncio.wait_for(services.recorder.flush(), 60)
        assert services.recorder.rows_dropped == 0
    engine = create_engine(url)
    try:
        messages, calls = await recorded_messages(engine)
    finally:
        await engine.dispose()
    assert result.turns >= SESSIONS
    assert sorted(messages) == sorted(result.seen.messages)
    assert calls == result.seen.tool_calls > 0
    if not SOAK:
        assert calls == SESSIONS  # one tool turn each
    assert len(result.seen.messages) == 2 * result.turns  # the user's and the reply
    quantiles = statistics.quantiles(result.latencies_ms, n=100)
    print(f"{SESSIONS} sessions, {result.turns} turns: turn p50 {quantiles[49]:.0f} ms, "
          f"p99 {quantiles[98]:.0f} ms")
