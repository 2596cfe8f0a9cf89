"""`orchestrator sandbox`: the scripted model alone, as a GA-protocol WebSocket server.

`ws://HOST:PORT/v1/realtime?model=<agent>` (or `agent=`) follows that scripted agent's
script, for benchmarks and for testing any realtime client without a paid model. Any bearer
key is accepted. A handoff call, once answered, switches to the target agent's script. Built
on the `websockets` server directly (no deflate): it stands in for the model, so it should
cost as little as possible next to what it measures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from orchestrator.agents.loader import load_agents
from orchestrator.agents.spec import ScriptRule
from orchestrator.upstream.scripted import ScriptedModel

log = logging.getLogger(__name__)

Scripts = Mapping[str, Sequence[ScriptRule]]
_MAX_FRAME_BYTES = 32 * 1024 * 1024  # the GA limit is 15 MiB of audio per append event


def load_scripts(agents_dir: Path | str) -> dict[str, Sequence[ScriptRule]]:
    """The scripts of the `model: scripted` agents in a directory (problems are logged)."""
    agent_set, problems = load_agents(Path(agents_dir))
    for problem in problems:
        log.warning("%s", problem)
    return {name: loaded.spec.script or [] for name, loaded in agent_set.agents.items()
            if loaded.spec.model == "scripted"}


def requested_agent(path: str) -> str | None:
    """The agent a handshake path asks for, or None if the path is not a realtime endpoint."""
    parts = urlsplit(path)
    if not parts.path.rstrip("/").endswith("/realtime"):
        return None
    query = parse_qs(parts.query)
    names = query.get("model") or query.get("agent") or [""]
    return names[0]


class _Sandbox:
    """The handshake check and the per-connection loop, over a fixed set of scripts."""

    def __init__(self, scripts: Scripts, pace_audio: bool) -> None:
        self.scripts = scripts
        self.pace_audio = pace_audio

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the handshake (HTTP 404) unless it names a scripted agent."""
        agent = requested_agent(request.path)
        if agent is None:
            return _reject(connection, HTTPStatus.NOT_FOUND,
                           "not found; use /v1/realtime?model=AGENT")
        if agent not in self.scripts:
            known = ", ".join(sorted(self.scripts)) or "none"
            return _reject(connection, HTTPStatus.NOT_FOUND,
                           f"unknown agent {agent!r}; scripted agents here: {known}")
        return None

    async def session(self, ws: ServerConnection) -> None:
        """One connection: client frames into a ScriptedModel, its frames back out."""
        assert ws.request is not None
        agent = requested_agent(ws.request.path) or ""
        model = ScriptedModel(self.scripts[agent], model=agent, pace_audio=self.pace_audio,
                              handoff_scripts=self.scripts.get)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_write(model, ws))
            try:
                async for message in ws:
                    await model.handle_frame(message)
            except ConnectionClosed:
                pass
            finally:
                model.close()


def _reject(connection: ServerConnection, status: HTTPStatus, text: str) -> Response:
    log.info("sandbox refused %s: %s", connection.remote_address, text)
    return connection.respond(status, text + "\n")


async def _write(model: ScriptedModel, ws: ServerConnection) -> None:
    """Send the model's frames until it closes or the client goes away."""
    while (frame := await model.outgoing.get()) is not None:
        try:
            await ws.send(frame)
        except ConnectionClosed:
            model.close()
            return


@dataclass(slots=True)
class SandboxHandle:
    """A running sandbox server (for tests and benchmarks)."""

    server: Server
    port: int

    async def aclose(self) -> None:
        """Stop accepting, close every connection, wait until done."""
        self.server.close()
        await self.server.wait_closed()


async def start_sandbox(
    host: str = "127.0.0.1", port: int = 0, agents_dir: Path | str = "agents", *,
    pace_audio: bool = False, scripts: Scripts | None = None,
) -> SandboxHandle:
    """Start serving; port 0 binds a free port (see `.port`). `scripts` overrides the folder."""
    sandbox = _Sandbox(load_scripts(agents_dir) if scripts is None else scripts, pace_audio)
    server = await serve(
        sandbox.session, host, port, process_request=sandbox.check, compression=None,
        max_size=_MAX_FRAME_BYTES, server_header="orchestrator-sandbox",
    )
    bound = next(iter(server.sockets)).getsockname()[1]
    log.info("sandbox on ws://%s:%d/v1/realtime?model=<agent>; scripted agents: %s",
             host, bound, ", ".join(sorted(sandbox.scripts)) or "none")
    return SandboxHandle(server, bound)


async def serve_sandbox(
    host: str, port: int, agents_dir: Path | str, *, pace_audio: bool = False,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled."""
    handle = await start_sandbox(host, port, agents_dir, pace_audio=pace_audio)
    if ready is not None:
        ready.set()
    try:
        await handle.server.serve_forever()
    finally:
        await handle.aclose()
