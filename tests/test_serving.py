"""uvicorn as the service configures it (`serving.server_config`): the WebSocket protocol reads
on while a few messages wait for the app (uvicorn's own pauses the socket after each one), and
stops reading once `PAUSE_AT` wait, so a client that outruns the app stays bounded."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect

from orchestrator.serving import PAUSE_AT, RealtimeWebSocketProtocol, server_config


class _SlowApp:
    """Accepts a WebSocket, then takes its messages only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.received: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await self.release.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            self.received.append(message["text"])
            if len(self.received) == 3 * PAUSE_AT:
                await send({"type": "websocket.send", "text": "all"})


class _Observed(RealtimeWebSocketProtocol):
    """The protocol under test, telling the test each time it has queued a message."""

    queued = asyncio.Event()

    def send_receive_event_to_app(self) -> None:
        super().send_receive_event_to_app()
        _Observed.queued.set()


async def _until(condition: Any, what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            _Observed.queued.clear()
            await _Observed.queued.wait()
    assert condition(), what


async def test_reading_pauses_only_when_the_app_falls_behind() -> None:
    app = _SlowApp()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    server = uvicorn.Server(server_config(app, ws=_Observed, lifespan="off",  # type: ignore[arg-type]
                                          log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        port = sock.getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
            protocol = next(iter(server.server_state.connections))
            assert isinstance(protocol, _Observed)
            for i in range(3):
                await ws.send(f"m{i}")
            await _until(lambda: protocol.queue.qsize() == 3, "three messages queued")
            assert protocol.transport.is_reading()  # stock uvicorn pauses after the first
            for i in range(3, 3 * PAUSE_AT):
                await ws.send(f"m{i}")
            await _until(lambda: not protocol.transport.is_reading(), "reading paused")
            assert PAUSE_AT <= protocol.queue.qsize() < 3 * PAUSE_AT
            app.release.set()
            async with asyncio.timeout(10):
                assert await ws.recv() == "all"
            assert app.received == [f"m{i}" for i in range(3 * PAUSE_AT)]
            assert protocol.transport.is_reading()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
