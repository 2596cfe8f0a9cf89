"""Audit queries over the record: conversation lists with filters, one conversation's timeline.

Results are frozen dataclasses; the admin API turns them into its `*Read` schemas and the CLI
prints them. Pagination is by an opaque cursor over the (started_at desc, id desc) order, which
stays stable while new conversations arrive.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from orchestrator.store.stats import Window
from orchestrator.store.tables import Conversation, Handoff, Item, Response, ToolCall

MAX_LIMIT = 500


class InvalidCursorError(ValueError):
    """A pagination cursor that this module did not produce."""


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """One conversation as listed: identity, outcome and running totals."""

    id: str
    agent: str
    agent_version: int | None
    current_agent: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
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

    @property
    def duration_ms(self) -> float | None:
        """Wall time from start to end; None while the conversation is active."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds() * 1000


@dataclass(frozen=True, slots=True)
class ItemEntry:
    """A conversation item on the timeline (`at` = when it was finalized)."""

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
    kind: Literal["item"] = field(default="item", init=False)


@dataclass(frozen=True, slots=True)
class ToolCallEntry:
    """A server-run tool call on the timeline (`at` = when it started)."""

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
    kind: Literal["tool_call"] = field(default="tool_call", init=False)


@dataclass(frozen=True, slots=True)
class HandoffEntry:
    """A handoff from one agent to another."""

    at: datetime
    from_agent: str
    to_agent: str
    call_id: str
    reason: str | None
    kind: Literal["handoff"] = field(default="handoff", init=False)


@dataclass(frozen=True, slots=True)
class ResponseEntry:
    """A model response (`at` = when it was created)."""

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
    kind: Literal["response"] = field(default="response", init=False)


TimelineEntry = ItemEntry | ToolCallEntry | HandoffEntry | ResponseEntry


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    """A conversation with everything recorded about it, as one ordered timeline."""

    conversation: ConversationRow
    timeline: tuple[TimelineEntry, ...]


# --- cursor ---------------------------------------------------------------------------------


def encode_cursor(started_at: datetime, conversation_id: str) -> str:
    """An opaque cursor pointing just after this conversation in the list order."""
    raw = json.dumps([started_at.isoformat(), conversation_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor points at; `InvalidCursorError` if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, conversation_id = json.loads(raw)
        position = (datetime.fromisoformat(started), conversation_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursorError("invalid cursor") from exc
    if not isinstance(conversation_id, str) or position[0].tzinfo is None:
        raise InvalidCursorError("invalid cursor")
    return position


# --- filters --------------------------------------------------------------------------------


class _Filter(BaseModel):
    model_config = ConfigDict(frozen=True)


class ConversationFilter(_Filter):
    """Which conversations to list; every field given must hold (the admin API's query
    parameters and the CLI's options are these fields)."""

    agent: Annotated[str | None, Field(description="Agent the conversation started with")] = None
    status: Annotated[str | None, Field(description="active|completed|failed")] = None
    since: Annotated[datetime | None, Field(description="Started at or after")] = None
    until: Annotated[datetime | None, Field(description="Started before")] = None
    tool: Annotated[str | None, Field(description="Has a call of this tool")] = None
    has_error: Annotated[
        bool | None, Field(description="Has a failed tool call or response, or failed")
    ] = None
    q: Annotated[str | None, Field(description="Full-text search in the items (every word)")] \
        = None
    tool_status: Annotated[
        str | None, Field(description="Has a tool call (of `tool`, if given) with this status")
    ] = None
    handoff_to: Annotated[str | None, Field(description="Handed off to this agent")] = None
    min_duration_s: Annotated[
        float | None, Field(ge=0, description="Ended, and lasted at least this long")
    ] = None


class ToolCallFilter(_Filter):
    """Which tool calls to list; every field given must hold."""

    tool: str | None = None
    server: str | None = None
    agent: str | None = None
    status: Annotated[str | None, Field(description="completed|failed|…")] = None
    since: Annotated[datetime | None, Field(description="Started at or after")] = None
    until: Annotated[datetime | None, Field(description="Started before")] = None
    conversation_id: str | None = None


# --- list -----------------------------------------------------------------------------------


async def list_conversations(
    session: AsyncSession,
    filters: ConversationFilter | None = None,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[ConversationRow], str | None]:
    """One page of conversations, newest first, and the cursor of the next page (or None).

    `since` is inclusive and `until` exclusive (on `started_at`); `tool` keeps conversations
    with a call of that tool; `has_error` those with a failed tool call, a failed response or a
    failed status; `tool_status` those with a tool call (of `tool`, if given) that ended so;
    `handoff_to` those that handed off to that agent; `min_duration_s` ended ones that lasted
    at least that long; `q` is a full-text search of the items' text (every word, as a
    prefix, case-insensitively).
    """
    limit = max(1, min(limit, MAX_LIMIT))
    dialect = session.get_bind().dialect.name
    f = filters or ConversationFilter()
    stmt = _more_filters(_filtered(select(Conversation), f), dialect, f)
    if cursor is not None:
        started_at, conversation_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                Conversation.started_at < started_at,
                and_(Conversation.started_at == started_at, Conversation.id < conversation_id),
            )
        )
    stmt = stmt.order_by(Conversation.started_at.desc(), Conversation.id.desc()).limit(limit + 1)
    found = [_row(c) for c in (await session.scalars(stmt)).all()]
    page = found[:limit]
    next_cursor = encode_cursor(page[-1].started_at, page[-1].id) if len(found) > limit else None
    return page, next_cursor


def _filtered(stmt: Select[Conversation], f: ConversationFilter) -> Select[Conversation]:
    stmt = stmt.where(*_equal((Conversation.agent, f.agent), (Conversation.status, f.status)),
                      *Window(since=f.since, until=f.until).on(Conversation.started_at))
    if f.tool is not None:
        stmt = stmt.where(
            exists().where(ToolCall.conversation_id == Conversation.id, ToolCall.tool == f.tool)
        )
    if f.has_error is not None:
        # error_count is kept by the recorder: failed tool calls + failed responses.
        failed = or_(Conversation.error_count > 0, Conversation.status == "failed")
        stmt = stmt.where(failed if f.has_error else ~failed)
    return stmt


def _more_filters(
    stmt: Select[Conversation], dialect: str, f: ConversationFilter
) -> Select[Conversation]:
    if f.tool_status is not None:
        conditions = [ToolCall.conversation_id == Conversation.id,
                      ToolCall.status == f.tool_status]
        if f.tool is not None:
            conditions.append(ToolCall.tool == f.tool)
        stmt = stmt.where(exists().where(*conditions))
    if f.handoff_to is not None:
        stmt = stmt.where(exists().where(
            Handoff.conversation_id == Conversation.id, Handoff.to_agent == f.handoff_to))
    if f.min_duration_s is not None:
        stmt = stmt.where(duration_s(dialect) >= f.min_duration_s)
    if f.q is not None:
        stmt = stmt.where(Conversation.id.in_(text_search(f.q, dialect)))
    return stmt


def _equal(*pairs: tuple[InstrumentedAttribute[str], str | None]) -> list[ColumnElement[bool]]:
    """`column == value` for each pair whose value is given."""
    return [column == value for column, value in pairs if value is not None]


def duration_s(dialect: str) -> ColumnElement[Any]:
    """A conversation's duration in seconds, in SQL (NULL while it is active)."""
    if dialect == "postgresql":
        return func.extract("epoch", Conversation.ended_at - Conversation.started_at)
    # SQLite keeps ISO text; julianday() turns it into days.
    return (func.julianday(Conversation.ended_at) - func.julianday(Conversation.started_at)) \
        * 86400.0


# Letters and digits: what both FTS5's unicode61 and PostgreSQL's parser keep as word characters.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def search_words(q: str) -> list[str]:
    """The words of a search; punctuation and operators are dropped, never interpreted."""
    return _WORD.findall(q.lower())[:16]


def text_search(q: str, dialect: str) -> Select[str]:
    """Ids of conversations with an item whose text holds every word of `q` (as prefixes).

    SQLite answers from the FTS5 table `items_fts`, PostgreSQL from the GIN index on
    `to_tsvector('simple', text)` (both made by migration 0002): no scan of the items.
    """
    words = search_words(q)
    if not words:
        return select(Item.conversation_id).where(false())
    if dialect == "postgresql":
        simple = literal_column("'simple'", String)
        document = func.to_tsvector(simple, func.coalesce(Item.text, ""))
        query = func.to_tsquery(simple, " & ".join(f"{w}:*" for w in words))
        return select(Item.conversation_id).where(document.op("@@")(query))
    hits = select(literal_column("rowid", Integer)).select_from(table("items_fts")).where(
        literal_column("items_fts", String).op("MATCH")(" ".join(f'"{w}"*' for w in words)))
    return select(Item.conversation_id).where(Item.id.in_(hits))


def _row(c: Conversation) -> ConversationRow:
    return ConversationRow(
        id=c.id, agent=c.agent, agent_version=c.agent_version, current_agent=c.current_agent,
        status=c.status, started_at=c.started_at, ended_at=c.ended_at, end_reason=c.end_reason,
        client=dict(c.client), input_tokens=c.input_tokens, output_tokens=c.output_tokens,
        total_tokens=c.total_tokens, item_count=c.item_count,
        tool_call_count=c.tool_call_count, handoff_count=c.handoff_count,
        response_count=c.response_count, error_count=c.error_count, erased_at=c.erased_at,
    )


# --- detail ---------------------------------------------------------------------------------

# Within one instant: the response first (it frames its items), then items, calls, handoffs.
_RANK = {"response": 0, "item": 1, "tool_call": 2, "handoff": 3}


async def get_conversation(
    session: AsyncSession, conversation_id: str
) -> ConversationDetail | None:
    """The conversation and its merged timeline, or None if there is no such conversation."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    items = await session.scalars(select(Item).where(Item.conversation_id == conversation_id))
    calls = await session.scalars(
        select(ToolCall).where(ToolCall.conversation_id == conversation_id)
    )
    handoffs = await session.scalars(
        select(Handoff).where(Handoff.conversation_id == conversation_id)
    )
    responses = await session.scalars(
        select(Response).where(Response.conversation_id == conversation_id)
    )
    timeline: list[TimelineEntry] = [
        *(_item_entry(i) for i in items), *(_tool_call_entry(t) for t in calls),
        *(_handoff_entry(h) for h in handoffs), *(_response_entry(r) for r in responses),
    ]
    timeline.sort(key=_timeline_key)
    return ConversationDetail(conversation=_row(conversation), timeline=tuple(timeline))


def _timeline_key(entry: TimelineEntry) -> tuple[datetime, int, int]:
    seq = entry.seq if isinstance(entry, ItemEntry) else 0
    return entry.at, _RANK[entry.kind], seq


def _item_entry(i: Item) -> ItemEntry:
    return ItemEntry(
        at=i.created_at, seq=i.seq, item_id=i.item_id, type=i.type, role=i.role, agent=i.agent,
        text=i.text, status=i.status, call_id=i.call_id, name=i.name,
    )


def _tool_call_entry(t: ToolCall) -> ToolCallEntry:
    return ToolCallEntry(
        at=t.started_at, call_id=t.call_id, agent=t.agent, server=t.server, tool=t.tool,
        arguments=t.arguments, output=t.output, error=t.error, status=t.status,
        finished_at=t.finished_at, duration_ms=t.duration_ms,
    )


def _handoff_entry(h: Handoff) -> HandoffEntry:
    return HandoffEntry(
        at=h.at, from_agent=h.from_agent, to_agent=h.to_agent, call_id=h.call_id, reason=h.reason
    )


def _response_entry(r: Response) -> ResponseEntry:
    return ResponseEntry(
        at=r.created_at, response_id=r.response_id, agent=r.agent, status=r.status,
        usage=r.usage, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
        total_tokens=r.total_tokens, first_output_latency_ms=r.first_output_latency_ms,
        done_at=r.done_at,
    )


# --- tool calls -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCallRow:
    """One tool call as listed across conversations."""

    id: int
    conversation_id: str
    call_id: str
    agent: str
    server: str
    tool: str
    arguments: str
    output: str | None
    error: str | None
    status: str
    started_at: datetime
    finished_at: datetime
    duration_ms: float


async def list_tool_calls(
    session: AsyncSession,
    filters: ToolCallFilter | None = None,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[ToolCallRow], str | None]:
    """One page of tool calls, newest first, and the cursor of the next page (or None)."""
    limit = max(1, min(limit, MAX_LIMIT))
    f = filters or ToolCallFilter()
    stmt = select(ToolCall).where(
        *_equal((ToolCall.tool, f.tool), (ToolCall.server, f.server), (ToolCall.agent, f.agent),
                (ToolCall.status, f.status), (ToolCall.conversation_id, f.conversation_id)),
        *Window(since=f.since, until=f.until).on(ToolCall.started_at))
    if cursor is not None:
        started_at, raw_id = decode_cursor(cursor)
        if not raw_id.isdigit():
            raise InvalidCursorError("invalid cursor")
        stmt = stmt.where(or_(
            ToolCall.started_at < started_at,
            and_(ToolCall.started_at == started_at, ToolCall.id < int(raw_id)),
        ))
    stmt = stmt.order_by(ToolCall.started_at.desc(), ToolCall.id.desc()).limit(limit + 1)
    found = [
        ToolCallRow(
            id=t.id, conversation_id=t.conversation_id, call_id=t.call_id, agent=t.agent,
            server=t.server, tool=t.tool, arguments=t.arguments, output=t.output,
            error=t.error, status=t.status, started_at=t.started_at,
            finished_at=t.finished_at, duration_ms=t.duration_ms,
        )
        for t in (await session.scalars(stmt)).all()
    ]
    page = found[:limit]
    more = len(found) > limit
    return page, encode_cursor(page[-1].started_at, str(page[-1].id)) if more else None
