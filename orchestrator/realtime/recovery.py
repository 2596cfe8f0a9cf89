"""Re-establishing a lost upstream (an agent's `reconnect:`), seeded with the conversation.

When the model connection is lost (closed, its pings unanswered, or silent mid-response), the
session stands a `HeldUpstream` in its place, so the client's frames wait instead of failing,
then opens a new upstream for the current agent (bounded attempts with doubling backoff),
configures it as the handshake did and recreates the conversation in it (`seeding.seed`),
replays the held frames and carries on. The client gets one `error` event with the code
`upstream_reconnected` (a notice it may ignore) and never a second `session.created`. The
response in flight when the upstream went is lost: the session closes it as `failed` first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from orchestrator.agents.spec import Reconnect
from orchestrator.errors import UpstreamError
from orchestrator.realtime import protocol
from orchestrator.realtime.policy import agent_session
from orchestrator.realtime.protocol import JsonObject
from orchestrator.realtime.seeding import seed
from orchestrator.upstream.base import Upstream, UpstreamClosed, follow_script
from orchestrator.upstream.factory import open_configured

if TYPE_CHECKING:
    from orchestrator.realtime.session import RealtimeSession

log = logging.getLogger(__name__)

HELD_BYTES = 8 * 1024 * 1024  # client frames kept while reconnecting (~2 min of PCM16 audio)
NOTICE_CODE = "upstream_reconnected"


class HeldUpstream:
    """Stands in for the upstream while a new one is opened: keeps what is sent (bounded) for
    the replacement; `recv` waits until the stand-in is closed, then reports it replaced."""

    def __init__(self, limit_bytes: int = HELD_BYTES) -> None:
        self.frames: deque[str] = deque()
        self._size = 0
        self._limit = limit_bytes
        self._closed = asyncio.Event()

    async def send(self, frame: str) -> None:
        """Keep a frame for the new upstream."""
        self._size += len(frame)
        if self._size > self._limit or self._closed.is_set():
            raise UpstreamClosed("too much input while the model connection was re-established",
                                 clean=False)
        self.frames.append(frame)

    async def recv(self) -> str | bytes:
        """Nothing arrives from a stand-in: wait until it is replaced (or given up)."""
        await self._closed.wait()
        raise UpstreamClosed("replaced", clean=True)

    async def aclose(self) -> None:
        """Wake a reader; later sends fail."""
        self._closed.set()


def deep_merge(base: JsonObject, layer: JsonObject) -> JsonObject:
    """`base` with `layer` laid over it, objects merged key by key."""
    merged = dict(base)
    for key, value in layer.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = deep_merge(cast(JsonObject, below), cast(JsonObject, value))
        else:
            merged[key] = value
    return merged


async def reconnect(session: RealtimeSession, policy: Reconnect, reason: str,
                    unanswered: list[str]) -> bool:
    """Replace the session's lost upstream (see module docstring); True once the session runs
    on a new one, False when every attempt failed (the caller ends the conversation).
    `unanswered`: our `session.update` frames the lost upstream never acknowledged, sent
    again first so each still gets its `session.updated`."""
    started = time.monotonic()
    held = HeldUpstream()
    held.frames.extend(unanswered)
    lost, session.upstream = session.upstream, held
    session.spawn(lost.aclose())  # a silent peer may hold its close handshake a while
    for attempt in range(1, policy.attempts + 1):
        await asyncio.sleep(policy.backoff_s * 2 ** (attempt - 1))
        try:
            upstream = await _open_seeded(session)
        except UpstreamError as exc:
            log.warning("reconnecting the model, attempt %d of %d failed: %s",
                        attempt, policy.attempts, exc)
            continue
        if await _hand_over(session, held, upstream):
            elapsed = time.monotonic() - started
            session.rec.upstream_reconnect(
                f"model connection re-established in {elapsed:.2f} s (attempt {attempt}) "
                f"after: {reason}", "completed", session.agent.spec.name)
            await session.outbox.put(protocol.error_event(
                "The model connection was lost and has been re-established with the "
                "conversation so far; a response that was in progress is lost.",
                code=NOTICE_CODE, error_type="server_error"), ordered=False)
            await session.tools.upstream_restored()
            return True
    session.rec.upstream_reconnect(
        f"model connection not re-established after {policy.attempts} attempt(s) in "
        f"{time.monotonic() - started:.2f} s; lost after: {reason}", "failed",
        session.agent.spec.name)
    return False


async def _open_seeded(session: RealtimeSession) -> Upstream:
    """A new upstream for the current agent, configured and holding the conversation."""
    settings = session.deps.settings
    tools = session.tools
    upstream = await open_configured(session.agent.spec, settings)
    configured = deep_merge(
        agent_session(session.agent.spec, tools.toolset.definitions, tools.client_tools),
        session.client_settings)
    try:
        await seed(upstream, configured, tools.history.items(),
                   timeout_s=settings.upstream_connect_timeout_s)
    except BaseException:
        await upstream.aclose()
        raise
    follow_script(upstream, session.agent.spec.script)
    return upstream


async def _hand_over(session: RealtimeSession, held: HeldUpstream, upstream: Upstream) -> bool:
    """Send the held frames on, in order, then make `upstream` the session's; False if the new
    upstream closed meanwhile (the attempt failed)."""
    if session.upstream is not held:  # a handoff to another model replaced it meanwhile
        await upstream.aclose()
        return True
    try:
        while held.frames:  # frames the client sends meanwhile join the queue
            await upstream.send(held.frames[0])
            held.frames.popleft()
    except UpstreamClosed as exc:
        log.warning("the new model connection closed at once: %s", exc.reason)
        await upstream.aclose()
        return False
    except asyncio.CancelledError:  # the session is ending: the new connection is not its yet
        await upstream.aclose()
        raise
    await session.replace_upstream(upstream)  # closes the stand-in: a waiting reader moves on
    return True


def lost_response(response_id: str, reason: str) -> JsonObject:
    """A `response.done` closing a response the lost upstream never finished."""
    response: dict[str, Any] = {
        "id": response_id, "object": "realtime.response", "status": "failed",
        "status_details": {"type": "failed", "error": {
            "type": "server_error", "code": "upstream_lost", "message": reason}},
        "output": [], "usage": None,
    }
    return {"type": "response.done", "event_id": protocol.new_id("event"), "response": response}
