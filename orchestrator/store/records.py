"""What the session hands to the recorder: small frozen records, one per observable fact.

The session never awaits the recorder: `Recorder.record()` only enqueues.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ConversationStarted:
    conversation_id: str
    agent: str
    agent_version: int | None
    started_at: datetime
    client: dict[str, Any] = field(default_factory=dict[str, Any])


@dataclass(frozen=True, slots=True)
class ConversationEnded:
    conversation_id: str
    ended_at: datetime
    status: str  # "completed" | "failed"
    end_reason: str  # "client_closed" | "upstream_closed" | "upstream_error" | "shutdown" | ...
    current_agent: str | None = None


@dataclass(frozen=True, slots=True)
class ItemRecorded:
    """A conversation item as finalized (user/assistant message, function call or output)."""

    conversation_id: str
    seq: int
    item_id: str | None
    type: str  # message | function_call | function_call_output | mcp_call
    role: str | None
    agent: str
    text: str | None
    status: str | None
    call_id: str | None
    name: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ToolCallRecorded:
    conversation_id: str
    call_id: str
    agent: str
    server: str  # MCP server name, or "handoff"
    tool: str
    arguments: str
    output: str | None
    error: str | None
    status: str  # completed | failed
    started_at: datetime
    finished_at: datetime
    duration_ms: float


@dataclass(frozen=True, slots=True)
class ResponseRecorded:
    conversation_id: str
    response_id: str
    agent: str
    status: str
    usage: dict[str, Any] | None
    first_output_latency_ms: float | None
    created_at: datetime
    done_at: datetime


@dataclass(frozen=True, slots=True)
class HandoffRecorded:
    conversation_id: str
    from_agent: str
    to_agent: str
    call_id: str
    at: datetime
    reason: str | None = None


Record = (
    ConversationStarted | ConversationEnded | ItemRecorded | ToolCallRecorded
    | ResponseRecorded | HandoffRecorded
)


RECORD_TYPES: tuple[type[Record], ...] = (
    ConversationStarted, ConversationEnded, ItemRecorded, ToolCallRecorded, ResponseRecorded,
    HandoffRecorded,
)
# Per record type: its field names, and one getter returning all their values at once.
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in RECORD_TYPES}
_GETTERS = {cls: attrgetter(*names) for cls, names in _FIELDS.items()}


def fields_of(row: Record) -> dict[str, Any]:
    """A record's fields by name, values as they are (not copied): what the recorder binds
    for a table whose columns are the record's fields, and what a journal line holds."""
    cls = type(row)
    return dict(zip(_FIELDS[cls], _GETTERS[cls](row), strict=True))


class Recorder(Protocol):
    """Takes records without blocking; writes them later in batches."""

    def record(self, row: Record) -> None:
        """Enqueue one record. Never blocks, never raises for database trouble."""
        ...
