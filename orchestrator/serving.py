"""uvicorn as this service runs it: sessions drain before connections close on a stop.

uvicorn's own shutdown closes every WebSocket with 1012 at once. `DrainingServer` first runs
`drain_sessions` (new sessions get 503, live ones an `error` event saying why, recorded as
ended by `shutdown`, within `shutdown_grace_s`), then uvicorn's shutdown, then the lifespan
that drains the recorder. `uvicorn_config` is the one place the WebSocket transport is set up.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from orchestrator.app import drain_sessions
from orchestrator.config import Settings


def transport_frame_limit(settings: Settings) -> int:
    """The largest frame the WebSocket layer reads (1009 past it): twice the session's limit,
    so a frame a little too large gets an `error` event and the session goes on."""
    return 2 * settings.max_client_frame_bytes


def uvicorn_config(app: FastAPI, settings: Settings, **options: object) -> uvicorn.Config:
    """uvicorn as the relay needs it: websockets-sansio, no permessage-deflate (it costs
    ~10x the CPU per audio frame), frames bounded by `transport_frame_limit`."""
    return uvicorn.Config(
        app, ws="websockets-sansio", ws_per_message_deflate=False,
        ws_max_size=transport_frame_limit(settings),
        **options,  # pyright: ignore[reportArgumentType]
    )


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
