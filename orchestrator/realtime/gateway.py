"""The `/v1/realtime` WebSocket endpoint: authentication, agent selection, one session per
connection (design §4.3)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import APIRouter, WebSocket

from orchestrator.errors import UpstreamError
from orchestrator.keys import authenticate
from orchestrator.ratelimit import remote_of
from orchestrator.realtime import protocol
from orchestrator.realtime.admission import close_session
from orchestrator.realtime.calls import ToolEvents
from orchestrator.realtime.session import RealtimeSession, SessionDeps, SessionEnd
from orchestrator.services import Services
from orchestrator.upstream.factory import open_upstream

log = logging.getLogger(__name__)
router = APIRouter()

_SUBPROTOCOL_KEY = "openai-insecure-api-key."
_SERVICE_RESTART = 1012


def bearer_key(headers: Any, subprotocols: Iterable[str]) -> str | None:
    """The key a client presents: `Authorization: Bearer`, or the browser subprotocol form."""
    auth = headers.get("authorization")
    if isinstance(auth, str) and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for proto in subprotocols:
        if proto.startswith(_SUBPROTOCOL_KEY):
            return proto[len(_SUBPROTOCOL_KEY):]
    return None


class _Client:
    """The session's view of the client socket."""

    def __init__(self, websocket: WebSocket, send_timeout_s: float) -> None:
        self.websocket = websocket
        self.close_code: int | None = None
        self.send_timeout_s = send_timeout_s

    def end_reason(self) -> str:
        # uvicorn closes live WebSockets with 1012 (service restart) when the server stops.
        return "shutdown" if self.close_code == _SERVICE_RESTART else "client_closed"

    async def send(self, frame: str) -> None:
        try:
            # A client that stops reading blocks this send once its socket is full: end the
            # session rather than hold its frames (admission.py closes it with 1008).
            async with asyncio.timeout(self.send_timeout_s):
                await self.websocket.send_text(frame)
        except TimeoutError as exc:
            raise SessionEnd("failed", "client_too_slow") from exc
        except Exception as exc:  # the client went away; the session ends
            raise SessionEnd("completed", "client_closed") from exc

    async def frames(self) -> AsyncIterator[str | bytes]:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = message.get("code")
                return
            text = message.get("text")
            if text is not None:
                yield text
            else:
                data = message.get("bytes")
                if data is not None:
                    yield data


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    """One realtime conversation with the agent named by `model=` (or `agent=`)."""
    services: Services = websocket.app.state.services
    if not await services.admission.admit(websocket):
        return
    try:
        await _admitted(websocket, services)
    finally:
        services.admission.release()


async def _admitted(websocket: WebSocket, services: Services) -> None:
    address = remote_of(websocket.client)
    denial = services.throttle.denial(address)
    if denial is not None:  # too many wrong keys from here: 429 before the upgrade
        await websocket.send_denial_response(denial)
        return
    offered = list(websocket.scope.get("subprotocols") or [])
    presented = bearer_key(websocket.headers, offered)
    credential = await authenticate(
        presented, admin_token=services.admin_token,
        api_keys=services.api_keys, sessionmaker=services.sessionmaker)
    if credential is None:
        if presented:
            services.throttle.failed(address)
        await websocket.close(code=1008, reason="invalid or missing API key")
        return
    params = websocket.query_params
    if not credential.may_open(params.get("model") or params.get("agent") or ""):
        await websocket.close(code=1008, reason="this client secret is for another agent")
        return
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    end_reason = await _serve(websocket, services)
    await close_session(websocket, end_reason or "")


async def _refuse(websocket: WebSocket, message: str, code: str, close_code: int) -> None:
    await websocket.send_text(protocol.error_event(message, code=code))
    await websocket.close(code=close_code, reason=code)


async def _serve(websocket: WebSocket, services: Services) -> str | None:
    params = websocket.query_params
    name = params.get("model") or params.get("agent") or ""
    loaded = services.registry.get(name)
    if loaded is None:
        known = ", ".join(sorted(services.registry.names()))
        await _refuse(websocket, f"Unknown agent {name!r}. Known agents: {known}.",
                      "model_not_found", 1008)
        return
    mode = params.get("tool_events") or loaded.spec.tool_events
    if mode not in ("mcp", "none"):
        await _refuse(websocket, "tool_events must be `mcp` or `none`.", "invalid_value", 1008)
        return
    tool_events: ToolEvents = "mcp" if mode == "mcp" else "none"
    settings = services.settings
    try:
        upstream = await open_upstream(
            loaded.spec, connect_timeout_s=settings.upstream_connect_timeout_s,
            ping_interval_s=settings.upstream_ping_interval_s,
            ping_timeout_s=settings.upstream_ping_timeout_s)
    except UpstreamError as exc:
        await _refuse(websocket, f"Could not reach the model: {exc}", "upstream_unavailable", 1011)
        return
    client = _Client(websocket, settings.client_send_timeout_s)
    session = RealtimeSession(
        deps=SessionDeps(services.registry, services.pool, services.recorder, settings),
        agent=loaded, agent_version=services.registry.version(name), upstream=upstream,
        client=client, tool_events=tool_events, client_info=_client_info(websocket),
    )
    services.live_sessions.add(session)
    try:
        await session.run(client.frames())
    finally:
        services.live_sessions.discard(session)
    return session.end_reason


def _client_info(websocket: WebSocket) -> dict[str, Any]:
    client = websocket.client
    return {
        "remote": f"{client.host}:{client.port}" if client else None,
        "user_agent": websocket.headers.get("user-agent"),
    }
