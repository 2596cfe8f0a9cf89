"""Fault 5: SIGTERM to `orchestrator serve` with sessions live (one mid tool call): new
sessions are refused, every live one gets an `error` event (`server_shutting_down`) and a 1012
close, all are recorded as ended by `shutdown`, the recorder drains, the process exits."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.faults import REPO, ServeProcess
from tests.wire import validate_server_event

AGENTS = REPO / "tests" / "fixtures" / "faults"
WAIT = 30.0
SESSIONS = 6


async def until(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    """Validated events up to the first of type `kind`."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != kind:
        raw = await asyncio.wait_for(ws.recv(), WAIT)
        validate_server_event(raw)
        events.append(json.loads(raw))
    return events


async def say(ws: ClientConnection, text: str) -> None:
    """A user message and a response.create."""
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    await ws.send(json.dumps({"type": "response.create"}))


async def rest_until_close(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every event until the server closes (bounded)."""
    events: list[dict[str, Any]] = []
    try:
        for _ in range(1000):
            raw = await asyncio.wait_for(ws.recv(), WAIT)
            validate_server_event(raw)
            events.append(json.loads(raw))
    except ConnectionClosed:
        return events
    raise AssertionError("no close after 1000 events")


async def test_sigterm_drains_live_sessions_and_records_them_as_shutdown(tmp_path: Path) -> None:
    shutil.copytree(AGENTS, tmp_path / "agents")
    server = ServeProcess(tmp_path, "serve", env={"ORCH_TEST_REPO": str(REPO)})
    await server.ready()
    token = (tmp_path / "var" / "admin_token").read_text().strip()
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=desk"
    headers = {"Authorization": f"Bearer {token}"}
    clients = [await websockets.connect(url, additional_headers=headers, max_size=None)
               for _ in range(SESSIONS)]
    try:
        for ws in clients:
            await until(ws, "session.created")
            await say(ws, "echo please")
            await until(ws, "response.done")  # the tool round: mcp_call shown
            await until(ws, "response.done")  # the answer
        await say(clients[0], "slow please")  # still running when the signal comes
        await until(clients[0], "response.mcp_call.in_progress")

        started = time.monotonic()
        exit_code = asyncio.create_task(server.stop())
        endings = [await rest_until_close(ws) for ws in clients]
        try:
            async with websockets.connect(url, additional_headers=headers):
                raise AssertionError("a new session was admitted during the shutdown")
        except InvalidStatus as exc:
            assert exc.response.status_code == 503
        except OSError:
            pass  # the listener is already closed: refused as well
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert await exit_code in (0, -signal.SIGTERM), "".join(server.output)
        elapsed = time.monotonic() - started
    finally:
        for ws in clients:
            await ws.close()
    for ws, events in zip(clients, endings, strict=True):
        assert events[-1]["type"] == "error", events
        assert events[-1]["error"]["code"] == "server_shutting_down"
        assert ws.close_code == 1012
    print(f"SIGTERM to exit: {elapsed:.2f} s with {SESSIONS} live sessions")

    with sqlite3.connect(tmp_path / "var" / "orchestrator.db") as db:
        ends = db.execute("SELECT status, end_reason FROM conversations").fetchall()
        calls = db.execute("SELECT tool, status, error FROM tool_calls").fetchall()
        items = db.execute("SELECT count(*) FROM items").fetchone()
    assert ends == [("completed", "shutdown")] * SESSIONS
    assert sorted(calls) == sorted([("echo", "completed", None)] * SESSIONS
                                   + [("slow", "failed", "cancelled")])
    assert items is not None and items[0] >= 2 * SESSIONS  # user + assistant per session
