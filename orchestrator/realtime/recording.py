"""Turns what a session observes into audit records, without ever waiting on the database."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.realtime import protocol
from orchestrator.realtime.calls import ServerCall
from orchestrator.realtime.protocol import JsonObject
from orchestrator.realtime.protocol import string as _str
from orchestrator.store.records import (
    ConversationEnded,
    ConversationStarted,
    HandoffRecorded,
    ItemRecorded,
    Recorder,
    ResponseRecorded,
    ToolCallRecorded,
)

RECORDED_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output"})


def now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


@dataclass(slots=True)
class ResponseTiming:
    """When a response started and when its first output arrived (perf_counter seconds)."""

    response_id: str
    agent: str
    created_at: datetime
    turn_end: float
    first_output: float | None = None


@dataclass(slots=True)
class SessionRecording:
    """The recorder's view of one conversation."""

    recorder: Recorder
    conversation_id: str
    seq: int = 0
    turn_end: float | None = None
    active: ResponseTiming | None = None
    seen_items: set[str] = field(default_factory=set[str])

    def started(self, agent: str, version: int | None, client: dict[str, Any]) -> None:
        """The conversation began."""
        self.recorder.record(ConversationStarted(
            self.conversation_id, agent, version, now(), client,
        ))

    def ended(self, status: str, reason: str, agent: str) -> None:
        """The conversation ended."""
        self.recorder.record(ConversationEnded(self.conversation_id, now(), status, reason, agent))

    def mark_turn_end(self) -> None:
        """The user's turn ended (response requested, or speech stopped)."""
        self.turn_end = time.perf_counter()

    def response_created(self, event: JsonObject, agent: str) -> None:
        """A response began."""
        response: Any = event.get("response")
        rid = str(response.get("id") or "") if isinstance(response, dict) else ""  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        start = self.turn_end if self.turn_end is not None else time.perf_counter()
        self.active = ResponseTiming(rid, agent, now(), start)
        self.turn_end = None

    def first_output(self) -> None:
        """An output delta arrived; only the first of each response counts."""
        active = self.active
        if active is not None and active.first_output is None:
            active.first_output = time.perf_counter()

    def response_done(self, event: JsonObject, agent: str) -> None:
        """A response ended (any status)."""
        response = event.get("response")
        if not isinstance(response, dict):
            return
        rid = str(response.get("id") or "")  # type: ignore[union-attr]
        timing = self.active if self.active and self.active.response_id == rid else None
        latency = None
        if timing is not None and timing.first_output is not None:
            latency = (timing.first_output - timing.turn_end) * 1000.0
        usage = response.get("usage")  # type: ignore[union-attr]
        self.recorder.record(ResponseRecorded(
            self.conversation_id, rid, timing.agent if timing else agent,
            str(response.get("status") or "unknown"),  # type: ignore[union-attr]
            usage if isinstance(usage, dict) else None,  # type: ignore[arg-type]
            latency, timing.created_at if timing else now(), now(),
        ))
        if timing is not None:
            self.active = None

    def item_done(self, item: JsonObject, agent: str) -> None:
        """A conversation item was finalized upstream."""
        kind = item.get("type")
        item_id = item.get("id")
        if kind not in RECORDED_ITEM_TYPES or not isinstance(kind, str):
            return
        if isinstance(item_id, str):
            if item_id in self.seen_items:
                return
            self.seen_items.add(item_id)
        text: str | None
        if kind == "message":
            text = protocol.item_text(item)
        elif kind == "function_call":
            text = _str(item.get("arguments"))
        else:
            text = _str(item.get("output"))
        self._item(kind, _str(item.get("role")), item_id, text, _str(item.get("status")),
                   _str(item.get("call_id")), _str(item.get("name")), agent)

    def transcription(self, event: JsonObject, agent: str) -> None:
        """The transcript of a user's audio arrived (asynchronously)."""
        self._item("input_audio_transcription", "user", event.get("item_id"),
                   _str(event.get("transcript")), "completed", None, None, agent)

    def upstream_reconnect(self, text: str, status: str, agent: str) -> None:
        """The upstream was lost and re-established (`completed`) or not (`failed`)."""
        self._item("upstream_reconnect", None, None, text, status, None, None, agent)

    def _item(self, kind: str, role: str | None, item_id: object, text: str | None,
              status: str | None, call_id: str | None, name: str | None, agent: str) -> None:
        self.seq += 1
        self.recorder.record(ItemRecorded(
            self.conversation_id, self.seq, _str(item_id), kind, role, agent, text, status,
            call_id, name, now(),
        ))

    def tool_call(self, call: ServerCall) -> None:
        """A server-run call finished (or was abandoned)."""
        result = call.result
        finished = now()
        self.recorder.record(ToolCallRecorded(
            self.conversation_id, call.row_call_id or call.call_id, call.agent,
            call.server_label, call.tool_name, call.arguments, result.output if result else None,
            (result.error if result else "cancelled") if (result is None or result.is_error)
            else None,
            call.policy or ("failed" if result is None or result.is_error else "completed"),
            call.started_at, finished, (time.perf_counter() - call.t0) * 1000.0,
        ))

    def handoff(self, from_agent: str, to_agent: str, call_id: str, reason: str | None) -> None:
        """The conversation moved to another agent."""
        self.recorder.record(HandoffRecorded(
            self.conversation_id, from_agent, to_agent, call_id, now(), reason,
        ))
