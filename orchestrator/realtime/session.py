"""One realtime connection: the relay between a client and its upstream model session.

Upstream frames and plain client audio appends are relayed untouched; other client events are
parsed and re-encoded (protocol.py). The session acts on:
server-run tool calls (executed here, shown as `mcp_call` items), session updates (merged
under the agent's policy), response bookkeeping (one `response.create` in flight) and the
audit record (handed to the recorder, never awaited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.agents.loader import LoadedAgent
from orchestrator.agents.registry import Registry
from orchestrator.config import Settings
from orchestrator.errors import ProtocolError, UpstreamError
from orchestrator.realtime import protocol
from orchestrator.realtime.calls import Presenter, ToolEvents
from orchestrator.realtime.outbox import Outbox
from orchestrator.realtime.policy import agent_session, client_view, merge_client_update
from orchestrator.realtime.protocol import JsonObject
from orchestrator.realtime.recording import SessionRecording
from orchestrator.realtime.recovery import deep_merge, lost_response, reconnect
from orchestrator.realtime.turns import TurnTools
from orchestrator.store.records import Recorder
from orchestrator.tools.mcp_pool import McpPool
from orchestrator.upstream.base import Upstream, UpstreamClosed

log = logging.getLogger(__name__)

# Output deltas forwarded without decoding (they never concern server-run calls).
_PASSTHROUGH_OUTPUT = frozenset({
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
})
# ... and how OpenAI (and the scripted model) start them: a prefix test costs ~0.1 us, the
# sniff's regex ~1 us, on the path of every audio delta.
_PASSTHROUGH_PREFIXES = tuple(f'{{"type":"{kind}"' for kind in sorted(_PASSTHROUGH_OUTPUT))


def _passthrough(frame: str) -> bool:
    """Whether an upstream frame is an output delta (known prefix, else the sniff)."""
    return frame.startswith(_PASSTHROUGH_PREFIXES) or \
        protocol.sniff_type(frame) in _PASSTHROUGH_OUTPUT


_INTERNAL_EVENTS_KEPT = 512


class ClientSink(Protocol):
    """Where frames for the client go."""

    async def send(self, frame: str) -> None:
        """Send one text frame; raises SessionEnd once the client is gone."""
        ...

    def end_reason(self) -> str:
        """Why the client's frames ended (`client_closed`, or `shutdown` when the server is
        stopping)."""
        ...


class SessionEnd(Exception):
    """Raised by a pump when the conversation is over."""

    def __init__(self, status: str, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class SessionDeps:
    """The process-wide parts a session uses."""

    registry: Registry
    pool: McpPool
    recorder: Recorder
    settings: Settings


@dataclass(slots=True)
class _PendingUpdate:
    owner: str  # "init" | "client" | "handoff" | "voice"
    event_id: str
    session: JsonObject = field(default_factory=dict[str, Any])
    client_tools: list[JsonObject] | None = None  # kept only once the upstream accepts them
    generated_id: bool = False  # the client gave no event_id; errors must not show ours


class RealtimeSession:
    """Relays one client connection to one upstream session (see module docstring)."""

    def __init__(
        self, *, deps: SessionDeps, agent: LoadedAgent, agent_version: int | None,
        upstream: Upstream, client: ClientSink, tool_events: ToolEvents,
        client_info: dict[str, Any] | None = None,
    ) -> None:
        self.conversation_id = protocol.new_id("conv")
        self.deps = deps
        self.upstream = upstream
        self.client = client
        self.outbox = Outbox(client.send)
        self.rec = SessionRecording(deps.recorder, self.conversation_id)
        self.tools = TurnTools(self, Presenter(tool_events), agent)
        self._agent_version = agent_version
        self._client_info = dict(client_info or {}, tool_events=tool_events)
        self._pending_updates: deque[_PendingUpdate] = deque()
        self._internal_events: dict[str, str] = {}  # our event ids -> what they were
        self._early: list[str] = []
        self._tg: asyncio.TaskGroup | None = None
        self._end_request: tuple[str, str, str] | None = None
        self._response_open = False  # between response.created and response.done
        self._last_upstream_at = 0.0  # time.monotonic() of the last upstream frame
        # What the client's accepted session.updates set besides tools (for a reconnection).
        self.client_settings: JsonObject = {}
        self.end_status = "completed"
        self.end_reason = "client_closed"

    @property
    def agent(self) -> LoadedAgent:
        """The agent currently answering (changes on a handoff)."""
        return self.tools.agent

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, client_frames: AsyncIterator[str | bytes]) -> None:
        """Run until the client or the upstream ends; record the outcome."""
        self.rec.started(self.agent.spec.name, self._agent_version, self._client_info)
        try:
            await self._handshake()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._client_pump(client_frames))
                tg.create_task(self._upstream_pump())
                if self._end_request is not None:
                    self.request_end(*self._end_request)
                limit = self.deps.settings.upstream_response_timeout_s
                if limit is not None:
                    tg.create_task(self._watch_responses(limit))
        except* SessionEnd as group:
            first = group.exceptions[0]
            assert isinstance(first, SessionEnd)
            self.end_status, self.end_reason = first.status, first.reason
        except* UpstreamError as group:
            self.end_status, self.end_reason = "failed", "upstream_error"
            await self._tell_client(str(group.exceptions[0]), "upstream_error")
        finally:
            await self.upstream.aclose()
            self.rec.ended(self.end_status, self.end_reason, self.agent.spec.name)

    def request_end(self, reason: str, message: str, code: str) -> None:
        """End the conversation from outside (a shutdown): an `error` event says why, sent
        ahead of frames held for running tools, then the session ends with `reason`."""
        if self._tg is None:
            self._end_request = (reason, message, code)
            return

        async def end() -> None:
            with contextlib.suppress(SessionEnd):
                await self.client.send(
                    protocol.error_event(message, code=code, error_type="server_error"))
            raise SessionEnd("completed", reason)

        ending = end()
        try:
            self._tg.create_task(ending)
        except RuntimeError:  # the session has just ended by itself
            ending.close()

    async def _watch_responses(self, limit_s: float) -> None:
        """A model that started a response and then stopped streaming it (while still
        answering pings) ends the session: the client would otherwise wait forever."""
        while True:
            await asyncio.sleep(min(limit_s / 4, 1.0))
            if self._response_open and time.monotonic() - self._last_upstream_at > limit_s:
                silent = UpstreamClosed(f"nothing from the model for {limit_s:g} s mid-response",
                                        clean=False)
                if await self.recover_upstream(silent):
                    continue
                await self._tell_client(
                    f"The model stopped answering mid-response (nothing for {limit_s:g} s).",
                    "upstream_timeout")
                raise SessionEnd("failed", "upstream_timeout")

    async def recover_upstream(self, lost: UpstreamClosed) -> bool:
        """Re-establish a lost upstream where the agent's `reconnect:` allows it (a new
        connection seeded with the conversation so far, `recovery.py`): True once
        `self.upstream` is a live replacement, so the pump carries on. The response in flight
        is closed as failed for the client and the record first."""
        policy = self.agent.spec.reconnect
        if policy is None:
            return False
        self.tools.upstream_lost()
        unanswered = [protocol.dumps({"type": "session.update", "event_id": p.event_id,
                                      "session": p.session}) for p in self._pending_updates]
        if self._response_open and self.tools.active_response:
            done = lost_response(self.tools.active_response, lost.reason)
            await self._on_upstream_event(done, protocol.dumps(done))
        return await reconnect(self, policy, lost.reason, unanswered)

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        """Run a task owned by this session's task group."""
        assert self._tg is not None
        return self._tg.create_task(coro)

    async def forward(self, event: JsonObject, frame: str) -> None:
        """Relay an upstream frame; only frames of a response whose server calls still run
        wait behind them (a client's item acknowledgement, VAD events, errors do not)."""
        if self.tools.renumbering:
            frame = self.tools.renumbered(event) or frame
        await self.outbox.put(frame, ordered=not self.outbox.holding or self.tools.holds(event))

    async def _tell_client(self, message: str, code: str) -> None:
        try:
            # Not behind frames held for running tools: the session ends and they never will.
            await self.outbox.put(
                protocol.error_event(message, code=code, error_type="server_error"),
                ordered=False)
        except SessionEnd:
            pass

    async def _handshake(self) -> None:
        """Wait for `session.created`, configure the agent, show the client the result."""
        timeout = self.deps.settings.upstream_connect_timeout_s
        created = await self._recv_until("session.created", None, timeout)
        update = await self.send_session_update("init", self._agent_session())
        updated = await self._recv_until("session.updated", update.event_id, timeout)
        self._pending_updates.clear()
        session = updated.get("session")
        await self.outbox.put(protocol.dumps({
            "type": "session.created",
            "event_id": created.get("event_id") or protocol.new_id("event"),
            "session": client_view(session if isinstance(session, dict) else {},  # type: ignore[arg-type]
                                   self.tools.server_tool_names),
        }))
        for frame in self._early:
            await self.outbox.put(frame)
        self._early.clear()

    async def _recv_until(self, kind: str, event_id: str | None, limit_s: float) -> JsonObject:
        async with asyncio.timeout(limit_s):
            while True:
                frame = await self._recv_upstream()
                event = protocol.parse(frame)
                if event.get("type") == kind:
                    return event
                error = event.get("error")
                if (event.get("type") == "error" and isinstance(error, dict)
                        and event_id is not None and error.get("event_id") == event_id):  # type: ignore[union-attr]
                    raise UpstreamError(
                        f"the model refused the agent's configuration: {error.get('message')}"  # type: ignore[union-attr]
                    )
                self._early.append(frame)

    async def _recv_upstream(self) -> str:
        try:
            frame = await self.upstream.recv()
        except UpstreamClosed as exc:
            raise UpstreamError(f"upstream closed: {exc.reason}") from None
        return frame.decode() if isinstance(frame, bytes) else frame

    def _agent_session(self) -> JsonObject:
        tools = self.tools
        return agent_session(self.agent.spec, tools.toolset.definitions, tools.client_tools)

    async def send_session_update(self, owner: str, session: JsonObject) -> _PendingUpdate:
        """Send a `session.update` of ours upstream and remember who asked for it."""
        pending = _PendingUpdate(owner, protocol.new_id("event"), session)
        self._pending_updates.append(pending)
        self._remember_internal(pending.event_id, owner)
        await self.send_upstream(protocol.dumps(
            {"type": "session.update", "event_id": pending.event_id, "session": session}
        ))
        return pending

    async def send_internal(self, event: JsonObject) -> str:
        """Send an event we originate upstream (errors for it are ours, not the client's)."""
        event_id = protocol.new_id("event")
        self._remember_internal(event_id, str(event.get("type")))
        await self.send_upstream(protocol.dumps({**event, "event_id": event_id}))
        return event_id

    def _remember_internal(self, event_id: str, what: str) -> None:
        """Keep our recent event ids, so an upstream error about one is not shown to the
        client; bounded, since a long session sends thousands."""
        self._internal_events[event_id] = what
        if len(self._internal_events) > _INTERNAL_EVENTS_KEPT:
            del self._internal_events[next(iter(self._internal_events))]

    async def replace_upstream(self, upstream: Upstream) -> None:
        """Carry on with another (already seeded) upstream session; the old one is closed."""
        old, self.upstream = self.upstream, upstream
        await old.aclose()

    async def send_upstream(self, frame: str) -> None:
        """Send a frame upstream; a closed upstream ends the session."""
        try:
            await self.upstream.send(frame)
        except UpstreamClosed as exc:
            raise SessionEnd("failed", "upstream_closed") from exc

    # --- client → upstream -----------------------------------------------------------------

    async def _client_pump(self, frames: AsyncIterator[str | bytes]) -> None:
        async for frame in frames:
            await self._on_client_frame(frame)
        raise SessionEnd("completed", self.client.end_reason())

    async def _on_client_frame(self, raw: str | bytes) -> None:
        try:
            frame = self._check_frame(raw)
            if protocol.is_plain_audio_append(frame):  # the hot path: never decoded
                await self.send_upstream(frame)
                return
            event = protocol.parse_client(frame)
            kind = protocol.event_type(event)
            if kind not in protocol.CLIENT_EVENT_TYPES:
                raise ProtocolError(f"Unknown client event type {kind!r}.", code="invalid_event",
                                    event_id=protocol.client_event_id(event), param="type")
            await self._on_client_event(kind, event, protocol.encode_client(event))
        except ProtocolError as exc:
            await self.outbox.put(protocol.error_from(exc))
        except (SessionEnd, asyncio.CancelledError):
            raise
        except Exception:  # a frame we failed to handle must not end the conversation
            log.exception("could not handle a client frame")
            await self.outbox.put(protocol.error_event(
                "The server could not handle this event.", code="server_error",
                error_type="server_error"))

    def _check_frame(self, raw: str | bytes) -> str:
        """The frame as text, if it is within the size limit (in bytes) and UTF-8."""
        limit = self.deps.settings.max_client_frame_bytes
        size = protocol.utf8_size(raw)
        if size > limit:
            head = raw[:300].decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            raise ProtocolError(
                f"Frame of {size} bytes exceeds the limit of {limit} bytes.",
                code="frame_too_large", event_id=protocol.sniff_event_id(head))
        if isinstance(raw, bytes):
            try:
                return raw.decode()
            except UnicodeDecodeError:
                raise ProtocolError(
                    "Binary frame is not UTF-8 JSON.", code="invalid_json") from None
        return raw

    async def _on_client_event(self, kind: str, event: JsonObject, frame: str) -> None:
        event_id = protocol.client_event_id(event)
        match kind:
            case "session.update":
                session, tools = merge_client_update(
                    self.agent.spec, event, self.tools.toolset.definitions, event_id)
                pending = _PendingUpdate("client", event_id or protocol.new_id("event"), session,
                                         client_tools=tools, generated_id=event_id is None)
                self._pending_updates.append(pending)
                await self.send_upstream(protocol.dumps(
                    {"type": "session.update", "event_id": pending.event_id, "session": session}))
            case "response.cancel":
                if not self.tools.client_cancel(event):
                    await self.send_upstream(frame)
            case "response.create":
                self.tools.client_create(event)
                if self.tools.hold_create(frame):
                    return
                self.rec.mark_turn_end()
                await self.send_upstream(frame)
            case "conversation.item.create":
                if await self.tools.client_item(event, event_id):
                    return
                await self.send_upstream(frame)
            case _:
                await self.send_upstream(frame)

    # --- upstream → client -----------------------------------------------------------------

    async def _upstream_pump(self) -> None:
        while True:
            upstream = self.upstream
            try:
                raw = await upstream.recv()
            except UpstreamClosed as exc:
                if upstream is not self.upstream:
                    continue  # replaced by a cross-model handoff: read the new one
                if await self.recover_upstream(exc):
                    continue
                # Even a clean close (e.g. the upstream's session-length cap) ends the
                # conversation under the client's feet: say why before closing.
                await self._tell_client(f"The model connection closed: {exc.reason}",
                                        "upstream_closed")
                status = "completed" if exc.clean else "failed"
                raise SessionEnd(status, "upstream_closed") from None
            self._last_upstream_at = time.monotonic()
            frame = raw.decode() if isinstance(raw, bytes) else raw
            if _passthrough(frame) and not self.tools.parse_outputs:
                self.rec.first_output()
                await self.outbox.put(frame)
                continue
            try:
                event = protocol.parse(frame)
            except ProtocolError:
                log.warning("upstream sent a frame that is not a JSON object; relayed as is")
                await self.outbox.put(frame)
                continue
            await self._on_upstream_event(event, frame)

    async def _on_upstream_event(self, event: JsonObject, frame: str) -> None:
        kind = event.get("type")
        agent = self.agent.spec.name
        match kind:
            case "response.created":
                self._response_open = True
                self.rec.response_created(event, agent)
                await self.tools.response_created(event)
                await self.forward(event, frame)
            case "response.done":
                self._response_open = False
                self.rec.response_done(event, agent)
                await self.tools.response_done(event, frame)
            case "conversation.item.done":
                item = event.get("item")
                if isinstance(item, dict):
                    self.rec.item_done(item, self.tools.output_agent(item, agent))  # type: ignore[arg-type]
                await self.tools.item_event(event, frame, done=True)
            case "conversation.item.added" | "response.output_item.added" | \
                    "response.output_item.done":
                await self.tools.item_event(event, frame, done=kind == "response.output_item.done")
            case "response.output_audio.delta" | "response.output_audio_transcript.delta" | \
                    "response.output_text.delta":  # only while hidden calls shift indexes
                self.rec.first_output()
                await self.forward(event, frame)
            case "response.function_call_arguments.delta" | "response.function_call_arguments.done":
                self.rec.first_output()
                await self.tools.arguments_event(event, frame)
            case "session.updated":
                await self._session_updated(event)
            case "error":
                await self._upstream_error(event, frame)
            case "input_audio_buffer.speech_stopped":
                self.rec.mark_turn_end()
                await self.forward(event, frame)
            case "conversation.item.input_audio_transcription.completed":
                self.rec.transcription(event, agent)
                self.tools.history.transcript(event.get("item_id"), event.get("transcript"))
                await self.forward(event, frame)
            case _:
                await self.forward(event, frame)

    async def _session_updated(self, event: JsonObject) -> None:
        if self._pending_updates:
            pending = self._pending_updates.popleft()
            if pending.client_tools is not None:
                self.tools.client_tools = pending.client_tools
            if pending.owner == "client":
                settings = {k: v for k, v in pending.session.items() if k != "tools"}
                self.client_settings = deep_merge(self.client_settings, settings)
        session = event.get("session")
        shown = client_view(session if isinstance(session, dict) else {},  # type: ignore[arg-type]
                            self.tools.server_tool_names)
        await self.outbox.put(protocol.dumps({**event, "session": shown}))

    async def _upstream_error(self, event: JsonObject, frame: str) -> None:
        error: Any = event.get("error")
        fields: JsonObject = error if isinstance(error, dict) else {}  # pyright: ignore[reportUnknownVariableType]
        event_id = fields.get("event_id")
        generated = False
        for pending in list(self._pending_updates):
            if pending.event_id == event_id:
                self._pending_updates.remove(pending)
                generated = pending.generated_id
        if isinstance(event_id, str) and event_id in self._internal_events:
            what = self._internal_events.pop(event_id)
            log.warning("upstream refused an orchestrator event (%s): %s", what,
                        fields.get("message"))
            if what == "response.create":
                await self.tools.create_refused(protocol.string(fields.get("code")))
            return
        if generated:  # the client sent no event_id: do not show the one we made up
            frame = protocol.dumps({**event, "error": {**fields, "event_id": None}})
        await self.forward(event, frame)
