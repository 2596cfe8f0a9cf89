"""uvicorn as this service runs it: sessions drain before connections close on a stop.

uvicorn's own shutdown closes every WebSocket with 1012 at once. `DrainingServer` first runs
`drain_sessions` (new sessions get 503, live ones an `error` event saying why, recorded as
ended by `shutdown`, within `shutdown_grace_s`), then uvicorn's shutdown, then the lifespan
that drains the recorder.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from orchestrator.app import drain_sessions


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
