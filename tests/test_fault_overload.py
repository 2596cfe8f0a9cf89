"""Fault 7: overload. Past the live-session limit, or while the event loop is behind, new
sessions are refused before the upgrade (HTTP 503 + Retry-After) while admitted ones carry on;
a client that stops reading is disconnected (1008, `client_too_slow`) instead of growing
memory."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from orchestrator.realtime.admission import Admission
from tests.conftest import sqlite_url
from tests.faults import wait_until
from tests.realtime_client import connect, text_of
from tests.server import REPO, RunningServer, serve

AGENTS = REPO / "tests" / "fixtures" / "faults"
WAIT = 30.0


@asynccontextmanager
async def desk_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      **overrides: object) -> AsyncGenerator[RunningServer]:
    """The real server on the fault agents (SQLite)."""
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    async with serve(sqlite_url(tmp_path / "orchestrator.db"), tmp_path, agents_dir=AGENTS,
                     **overrides) as running:
        yield running


async def refused(server: RunningServer) -> InvalidStatus:
    """The refusal of a new session's upgrade."""
    with pytest.raises(InvalidStatus) as caught:
        async with websockets.connect(server.realtime_url("desk"), additional_headers={
                "Authorization": f"Bearer {server.token}"}):
            pass
    return caught.value


async def recorded(server: RunningServer) -> list[dict[str, Any]]:
    """Every recorded conversation, once all sessions ended and were written."""
    await asyncio.wait_for(server.services.live_sessions.wait_empty(), WAIT)
    await asyncio.wait_for(server.services.recorder.flush(), WAIT)
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=WAIT) as http:
        return (await http.get("/admin/conversations")).json()["data"]


async def test_past_the_session_limit_new_sessions_get_503_and_admitted_ones_carry_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with desk_server(tmp_path, monkeypatch, max_sessions=2) as server:
        async with connect(server.realtime_url("desk"), server.token) as one, \
                connect(server.realtime_url("desk"), server.token) as two:
            refusal = await refused(server)
            response = refusal.response
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            error = json.loads(response.body or b"{}")["error"]
            assert error["code"] == "server_overloaded" and "limit of 2" in error["message"]
            for client in (one, two):  # the admitted sessions are served as before
                assert "Echo: echoed" in text_of(await client.turn("echo please"))
        assert len(await recorded(server)) == 2  # the refused one never became one


async def test_a_lagging_event_loop_refuses_new_sessions_until_it_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with desk_server(tmp_path, monkeypatch, max_loop_lag_ms=100.0) as server:
        lag = server.services.admission.lag
        stop = asyncio.Event()

        async def hog() -> None:  # a real overload: the loop is blocked 300 ms at a time
            while not stop.is_set():
                time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the fault
                await asyncio.sleep(0)

        hogging = asyncio.create_task(hog())
        try:
            await wait_until(lambda: lag.smoothed_ms > 150.0)
        finally:
            stop.set()
            await hogging
        refusal = await refused(server)  # the average takes ~0.4 s to fall back to 100 ms
        assert refusal.response.status_code == 503
        assert b"event loop" in (refusal.response.body or b"")
        await wait_until(lambda: lag.smoothed_ms < 100.0)
        async with connect(server.realtime_url("desk"), server.token, text_only=False):
            pass  # admitted again: session.created came


def test_one_lag_spike_does_not_refuse_but_a_sustained_lag_does() -> None:
    admission = Admission(max_sessions=None, max_loop_lag_ms=100.0)
    admission.lag.sample(800.0)  # an MCP server spawning, a GC pause
    assert admission.refusal(live=0) is None
    for _ in range(10):
        admission.lag.sample(300.0)
    refusal = admission.refusal(live=0)
    assert refusal is not None and refusal.code == "server_overloaded"


async def test_a_client_that_stops_reading_is_disconnected_with_client_too_slow(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with desk_server(tmp_path, monkeypatch, client_send_timeout_s=1.0) as server:
        # A tiny receive window and a client library queue of one frame: once this client
        # stops reading, the server's socket fills.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        async with websockets.connect(
                server.realtime_url("desk"), sock=sock, max_queue=1, max_size=None,
                compression=None,
                additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            big = "x" * 1_000_000
            for n in range(12):  # each item comes back twice (added, done): ~24 MB unread
                await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": f"{n} {big}"}]}}))
            await asyncio.wait_for(server.services.live_sessions.wait_empty(), WAIT)
            last: dict[str, Any] = {}
            with pytest.raises(ConnectionClosed):
                for _ in range(100):  # now read what was queued, up to the close
                    last = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert ws.close_code == 1008
            assert last["type"] == "error" and last["error"]["code"] == "client_too_slow"
        [conversation] = await recorded(server)
        assert (conversation["status"], conversation["end_reason"]) == (
            "failed", "client_too_slow")
