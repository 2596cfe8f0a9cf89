"""The `/v1/realtime` WebSocket endpoint: authentication, agent selection, one session per
connection (design §4.3)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, cast

from fastapi import APIRouter, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketState

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

REALTIME_PATH = "/v1/realtime"
_SUBPROTOCOL_KEY = "openai-insecure-api-key."
_SCOPE_KEY = "orchestrator.realtime_io"
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


@dataclass(slots=True)
class FrameTally:
    """Frames relayed on realtime sockets, by direction: plain counters (one event loop),
    read by /metrics at scrape time."""

    from_client: int = 0
    to_client: int = 0


class RealtimeIO:
    """ASGI middleware: hands each realtime WebSocket the server's own `receive`/`send` and
    the app's frame tally (in its scope), so that per-frame traffic skips the wrappers that
    Starlette and any middleware add; the handshake and the close still go through them."""

    def __init__(self, app: ASGIApp, tally: FrameTally) -> None:
        self.app = app
        self.tally = tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass everything through; realtime sockets get `_SCOPE_KEY`."""
        if scope["type"] == "websocket" and scope["path"] == REALTIME_PATH:
            scope[_SCOPE_KEY] = (receive, send, self.tally)
        await self.app(scope, receive, send)


class _Client:
    """The session's view of the client socket: frames through the server's own ASGI
    callables when `RealtimeIO` provided them (else Starlette's), counted in the tally.

    A client that stops reading blocks a send once its socket is full; that ends the session
    (`client_too_slow`, admission.py closes it with 1008). A watchdog ticking a few times per
    `send_timeout_s` finds such a send, rather than a timer per frame (asyncio.timeout costs
    ~8 us a send, more than the rest of the send path)."""

    def __init__(self, websocket: WebSocket, send_timeout_s: float) -> None:
        self.websocket = websocket
        self.close_code: int | None = None
        self.send_timeout_s = send_timeout_s
        raw = websocket.scope.get(_SCOPE_KEY)
        if raw is not None:
            self._receive, self._send, self._tally = cast(tuple[Receive, Send, FrameTally], raw)
        else:
            self._receive, self._send, self._tally = websocket.receive, websocket.send, \
                FrameTally()
        self._sending: dict[asyncio.Task[Any] | None, float] = {}  # task -> send started
        self._expired: set[asyncio.Task[Any] | None] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._tick_s = min(max(send_timeout_s / 4, 0.05), 1.0)
        self._closed = False

    def end_reason(self) -> str:
        # uvicorn closes live WebSockets with 1012 (service restart) when the server stops.
        return "shutdown" if self.close_code == _SERVICE_RESTART else "client_closed"

    async def send(self, frame: str) -> None:
        task = asyncio.current_task()
        self._sending[task] = time.monotonic()
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self._tick_s, self._watch)
        try:
            await self._send({"type": "websocket.send", "text": frame})
        except asyncio.CancelledError:
            if task is None or task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise SessionEnd("failed", "client_too_slow") from None
        except Exception as exc:  # the client went away; the session ends
            raise SessionEnd("completed", "client_closed") from exc
        finally:
            del self._sending[task]
        self._tally.to_client += 1

    def _watch(self) -> None:
        """Cancel sends blocked past the bound; re-arm while the socket is open."""
        self._watchdog = None
        if self._closed:
            return
        limit = time.monotonic() - self.send_timeout_s
        for task, started in list(self._sending.items()):
            if started <= limit and task is not None and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(self._tick_s, self._watch)

    def close(self) -> None:
        """Stop the watchdog (the session is over)."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def frames(self) -> AsyncIterator[str | bytes]:
        receive, tally = self._receive, self._tally
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = message.get("code", 1000)
                # What Starlette's receive records; close_session reads it.
                self.websocket.client_state = WebSocketState.DISCONNECTED
                return
            tally.from_client += 1
            text = message.get("text")
            if text is not None:
                yield text
            else:
                data = message.get("bytes")
                if data is not None:
                    yield data


@router.websocket(REALTIME_PATH)
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
        client.close()
        services.live_sessions.discard(session)
    return session.end_reason


def _client_info(websocket: WebSocket) -> dict[str, Any]:
    client = websocket.client
    return {
        "remote": f"{client.host}:{client.port}" if client else None,
        "user_agent": websocket.headers.get("user-agent"),
    }
