"""uvicorn as this service runs it: the WebSocket options of design §5, and sessions that
drain before connections close on a stop.

`server_config` is the one place the uvicorn options live (`orchestrator serve`, the tests'
server and bench/serve.py use it): the sans-I/O WebSocket protocol, no permessage-deflate,
uvloop when installed. `RealtimeWebSocketProtocol` is uvicorn's sans-I/O protocol without its
per-message flow control: uvicorn pauses reading the socket after every message and resumes
once the app took it (two transport calls and an epoll change per audio frame); here reading
pauses only once `PAUSE_AT` messages wait for the app, so memory stays bounded.

uvicorn's own shutdown closes every WebSocket with 1012 at once. `DrainingServer` first runs
`drain_sessions` (new sessions get 503, live ones an `error` event saying why, recorded as
ended by `shutdown`, within `shutdown_grace_s`), then uvicorn's shutdown, then the lifespan
that drains the recorder.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from orchestrator.app import drain_sessions
from orchestrator.config import Settings


def transport_frame_limit(settings: Settings) -> int:
    """The largest frame the WebSocket layer reads (1009 past it): twice the session's limit,
    so a frame a little too large gets an `error` event and the session goes on."""
    return 2 * settings.max_client_frame_bytes


PAUSE_AT = 16  # messages waiting for the app before the socket stops being read


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, pausing reads only when the app falls behind."""

    def send_receive_event_to_app(self) -> None:
        """Queue the message as uvicorn does; pause reading only past `PAUSE_AT` waiting."""
        paused = self.read_paused
        self.read_paused = True  # uvicorn's own code pauses unless it sees this set
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not paused and self.queue.qsize() >= PAUSE_AT:
            # uvicorn's receive() resumes reading once the app has taken every message.
            self.read_paused = True
            self.transport.pause_reading()


def server_config(app: FastAPI, settings: Settings | None = None, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for this service; `options` add to or override it. With
    `settings`, frames are bounded by `transport_frame_limit` (1009 past it)."""
    if settings is not None:
        options.setdefault("ws_max_size", transport_frame_limit(settings))
    options.setdefault("loop", _loop())
    options.setdefault("ws", RealtimeWebSocketProtocol)
    return uvicorn.Config(app, ws_per_message_deflate=False, **options)


def _loop() -> str:
    try:
        import uvloop  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        return "asyncio"
    return "uvloop"


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains the app's realtime sessions before it stops."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain the sessions (bounded), then shut down as uvicorn does."""
        services = getattr(self.app.state, "services", None)
        if services is not None:
            await drain_sessions(services)
        await super().shutdown(sockets)
