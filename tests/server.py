"""Run the real orchestrator app on a free 127.0.0.1 port inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from pydantic import SecretStr

from orchestrator.app import create_app
from orchestrator.config import Settings
from orchestrator.services import Services
from orchestrator.serving import DrainingServer, server_config

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A served app and how to reach it."""

    app: FastAPI
    port: int
    token: str

    @property
    def services(self) -> Services:
        """The live process services (registry, pool, recorder, ...)."""
        return self.app.state.services

    @property
    def http(self) -> str:
        """Base HTTP URL."""
        return f"http://127.0.0.1:{self.port}"

    def realtime_url(self, agent: str) -> str:
        """The realtime WebSocket URL for `agent`."""
        return f"ws://127.0.0.1:{self.port}/v1/realtime?model={agent}"


@asynccontextmanager
async def serve(database_url: str, tmp_path: Path, *, agents_dir: Path | None = None,
                **overrides: object) -> AsyncIterator[RunningServer]:
    """Serve the app as `orchestrator serve` does (`server_config`: the same transport and
    frame limit)."""
    settings = Settings(
        agents_dir=agents_dir or REPO / "agents", database_url=database_url,
        var_dir=tmp_path / "var", admin_token=SecretStr(ADMIN_TOKEN),
        **overrides,  # pyright: ignore[reportArgumentType]
    )
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn sets TCP_NODELAY on sockets it binds, not on one it is handed; accepted sockets
    # inherit it from the listener (without it, Nagle + delayed ACK add ~40 ms per turn).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = server_config(app, settings, lifespan="on", log_level="warning")
    server = DrainingServer(config, app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        ready = asyncio.ensure_future(app.state.ready.wait())
        done, _ = await asyncio.wait({ready, task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()
            raise RuntimeError("the server did not start within 60 s")
        yield RunningServer(app, sock.getsockname()[1], ADMIN_TOKEN)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 60)
        sock.close()
