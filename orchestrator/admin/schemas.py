"""Response bodies of the admin API (`XRead` / `XList`), built from the store's query rows
(which stand in the bodies as they are where nothing is added to them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.store import queries
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


# Timeline entries are the store's own frozen rows, told apart by `kind`.
TimelineEntry = Annotated[queries.TimelineEntry, Field(discriminator="kind")]


class ConversationDetailRead(ConversationRead):
    """A conversation with its items, tool calls, handoffs and responses as one timeline."""

    timeline: list[TimelineEntry]

    @classmethod
    def from_detail(cls, detail: ConversationDetail) -> ConversationDetailRead:
        """Build from the store's query result."""
        head = ConversationRead.model_validate(detail.conversation).model_dump()
        return cls.model_validate({**head, "timeline": detail.timeline})
