"""Response bodies of the admin API (`XRead` / `XList`), built from the store's query rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.store.queries import ConversationDetail


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ConversationRead(_Read):
    """A conversation as listed."""

    id: str
    agent: str
    agent_version: int | None
    current_agent: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    duration_ms: float | None
    client: dict[str, Any]
    input_tokens: int
    output_tokens: int
    total_tokens: int
    item_count: int
    tool_call_count: int
    handoff_count: int
    response_count: int
    error_count: int
    erased_at: datetime | None = None


class ConversationList(BaseModel):
    """One page of conversations; pass `next_cursor` as `cursor` for the next one."""

    data: list[ConversationRead]
    next_cursor: str | None


class ItemEntryRead(_Read):
    """A conversation item (message, function call or output) on the timeline."""

    kind: Literal["item"]
    at: datetime
    seq: int
    item_id: str | None
    type: str
    role: str | None
    agent: str
    text: str | None
    status: str | None
    call_id: str | None
    name: str | None


class ToolCallEntryRead(_Read):
    """A server-run tool call on the timeline; `at` is when it started."""

    kind: Literal["tool_call"]
    at: datetime
    call_id: str
    agent: str
    server: str
    tool: str
    arguments: str
    output: str | None
    error: str | None
    status: str
    finished_at: datetime
    duration_ms: float


class HandoffEntryRead(_Read):
    """A handoff between agents on the timeline."""

    kind: Literal["handoff"]
    at: datetime
    from_agent: str
    to_agent: str
    call_id: str
    reason: str | None


class ResponseEntryRead(_Read):
    """A model response on the timeline; `at` is when it was created."""

    kind: Literal["response"]
    at: datetime
    response_id: str
    agent: str
    status: str
    usage: dict[str, Any] | None
    input_tokens: int
    output_tokens: int
    total_tokens: int
    first_output_latency_ms: float | None
    done_at: datetime


TimelineEntry = Annotated[
    ItemEntryRead | ToolCallEntryRead | HandoffEntryRead | ResponseEntryRead,
    Field(discriminator="kind"),
]


class ConversationDetailRead(ConversationRead):
    """A conversation with its items, tool calls, handoffs and responses as one timeline."""

    timeline: list[TimelineEntry]

    @classmethod
    def from_detail(cls, detail: ConversationDetail) -> ConversationDetailRead:
        """Build from the store's query result."""
        head = ConversationRead.model_validate(detail.conversation).model_dump()
        return cls.model_validate({**head, "timeline": detail.timeline})
