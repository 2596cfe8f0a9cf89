"""Who may start a session, and how sessions end when the process cannot keep them.

- **Admission** happens before the WebSocket upgrade: past `max_sessions` live sessions, while
  the event loop falls behind (smoothed lag above `max_loop_lag_ms`), or once the process is
  draining for a shutdown, the upgrade is answered `503` with `Retry-After` and a JSON `error`
  body, so admitted sessions keep their latency and the client can go elsewhere.
- **Loop lag** is measured by a ticker that sleeps 100 ms and notes how late it wakes; the
  admission test uses an exponentially weighted average, because single spikes (an MCP server
  spawning, a garbage collection) are normal on a busy machine and must not refuse anyone.
- **Draining** (`drain`): refuse new sessions, tell every live one why it ends (`error` event,
  code `server_shutting_down`), end it (recorded `shutdown`, closed with 1012), and wait for
  them within a grace.
- **Closing** (`close_session`): the close code follows the end reason; a client too slow to
  read gets `client_too_slow` and 1008, all within a bound, since its socket may never drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from orchestrator.realtime import protocol

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 0.1
LAG_SMOOTHING = 0.1  # weight of the newest sample in the average
CLOSE_BOUND_S = 5.0  # how long a close may wait for a client's socket to drain
CLOSE_CODES = {"shutdown": 1012, "client_too_slow": 1008}


class LoopLag:
    """How late the event loop runs timers, as a smoothed figure in milliseconds."""

    def __init__(self, interval_s: float = LAG_INTERVAL_S, smoothing: float = LAG_SMOOTHING):
        self.interval_s = interval_s
        self.smoothing = smoothing
        self.smoothed_ms = 0.0
        self.last_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring."""
        if self._task is None:
            self._task = asyncio.create_task(self._tick(), name="loop-lag")

    async def aclose(self) -> None:
        """Stop measuring."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def sample(self, lag_ms: float) -> None:
        """Fold one measurement into the average."""
        self.last_ms = lag_ms
        self.smoothed_ms += self.smoothing * (lag_ms - self.smoothed_ms)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval_s)
            self.sample(max(loop.time() - started - self.interval_s, 0.0) * 1000)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new session is refused."""

    code: str  # server_overloaded | server_shutting_down
    message: str
    retry_after_s: int


class Admission:
    """The process's admission policy (see module docstring); limits of None are off."""

    def __init__(self, *, max_sessions: int | None, max_loop_lag_ms: float | None,
                 retry_after_s: int = 5) -> None:
        self.max_sessions = max_sessions
        self.max_loop_lag_ms = max_loop_lag_ms
        self.retry_after_s = retry_after_s
        self.lag = LoopLag()
        self.draining = False
        self.refused = 0
        self.admitted = 0  # connections admitted and not finished (sessions and handshakes)

    def start(self) -> None:
        """Start the loop-lag measurement if a lag limit is set."""
        if self.max_loop_lag_ms is not None:
            self.lag.start()

    async def aclose(self) -> None:
        """Stop measuring."""
        await self.lag.aclose()

    def release(self) -> None:
        """An admitted connection has finished."""
        self.admitted -= 1

    def refusal(self, live: int) -> Refusal | None:
        """Whether a new connection must be refused, with `live` ones admitted."""
        if self.draining:
            return Refusal("server_shutting_down", "The server is shutting down; reconnect.",
                           self.retry_after_s)
        if self.max_sessions is not None and live >= self.max_sessions:
            return Refusal("server_overloaded",
                           f"The server is at its limit of {self.max_sessions} live sessions.",
                           self.retry_after_s)
        limit = self.max_loop_lag_ms
        if limit is not None and self.lag.smoothed_ms > limit:
            return Refusal("server_overloaded",
                           f"The server is overloaded (event loop {self.lag.smoothed_ms:.0f} ms "
                           f"behind).", self.retry_after_s)
        return None

    async def admit(self, websocket: WebSocket) -> bool:
        """Admit the connection (counted until `release`), or answer its upgrade with 503 +
        Retry-After. Counted from here, not from when its session starts: a burst of
        handshakes cannot overshoot the limit while upstreams are being opened."""
        refusal = self.refusal(self.admitted)
        if refusal is None:
            self.admitted += 1
            return True
        self.refused += 1
        body = {"type": "error", "error": {"type": "server_error", "code": refusal.code,
                                           "message": refusal.message}}
        await websocket.send_denial_response(JSONResponse(
            body, status_code=503, headers={"Retry-After": str(refusal.retry_after_s)}))
        return False


class Stoppable(Protocol):
    """A live session that can be ended from outside."""

    def request_end(self, reason: str, message: str, code: str) -> None:
        """Tell the client why, then end the conversation with `reason`."""
        ...


async def drain(admission: Admission, sessions: list[Stoppable],
                wait_empty: Callable[[], Awaitable[None]], grace_s: float) -> bool:
    """Refuse new sessions, end the live ones, wait for them; False if the grace ran out."""
    admission.draining = True
    for session in sessions:
        session.request_end("shutdown", "The server is shutting down; reconnect.",
                            "server_shutting_down")
    try:
        async with asyncio.timeout(grace_s if math.isfinite(grace_s) else None):
            await wait_empty()
    except TimeoutError:
        log.warning("shutdown: sessions still live after %.1f s", grace_s)
        return False
    return True


async def close_session(websocket: WebSocket, end_reason: str) -> None:
    """Close the client's socket with the code that fits how the session ended (bounded)."""
    if websocket.application_state == WebSocketState.DISCONNECTED or \
            websocket.client_state == WebSocketState.DISCONNECTED:
        return
    try:
        async with asyncio.timeout(CLOSE_BOUND_S):
            if end_reason == "client_too_slow":
                await websocket.send_text(protocol.error_event(
                    "The client did not read its events fast enough.", code="client_too_slow",
                    error_type="server_error"))
            await websocket.close(code=CLOSE_CODES.get(end_reason, 1000), reason=end_reason)
    except Exception:  # already closing from the other side, or a socket that never drains
        log.debug("close after session end failed", exc_info=True)
