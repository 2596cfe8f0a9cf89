"""Audit routes beyond the conversation list: transcript export, erasure, tool calls, stats."""

from __future__ import annotations

import json
from collections.abc import Generator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.admin.deps import SessionDep
from orchestrator.admin.schemas import ConversationRead
from orchestrator.store import queries, stats
from orchestrator.store.erasure import erase_conversation
from orchestrator.store.queries import ConversationDetail, HandoffEntry, ItemEntry, ToolCallEntry

router = APIRouter()

TranscriptFormat = Literal["json", "jsonl", "text"]
_MEDIA = {"json": "application/json", "jsonl": "application/x-ndjson", "text": "text/plain"}


def transcript_entries(detail: ConversationDetail) -> list[dict[str, Any]]:
    """What was said and done, in order: messages, tool calls and handoffs."""
    entries: list[dict[str, Any]] = []
    for e in detail.timeline:
        at = e.at.isoformat().replace("+00:00", "Z")
        if isinstance(e, ItemEntry) and e.type == "message" and e.text is not None:
            entries.append({"at": at, "role": e.role, "agent": e.agent, "text": e.text})
        elif isinstance(e, ToolCallEntry):
            entries.append({"at": at, "role": "tool", "agent": e.agent, "server": e.server,
                            "tool": e.tool, "arguments": e.arguments, "output": e.output,
                            "error": e.error, "status": e.status})
        elif isinstance(e, HandoffEntry):
            entries.append({"at": at, "role": "handoff", "from_agent": e.from_agent,
                            "to_agent": e.to_agent})
    return entries


def _text_line(entry: dict[str, Any]) -> str:
    match entry["role"]:
        case "tool":
            result = entry["output"] if entry["error"] is None else f"error: {entry['error']}"
            said = f"{entry['server']}.{entry['tool']}({entry['arguments']}) -> {result}"
        case "handoff":
            said = f"handoff {entry['from_agent']} -> {entry['to_agent']}"
        case role:
            said = f"{role}: {entry['text']}"
    return f"[{entry['at']}] {said}"


def render_transcript(detail: ConversationDetail, fmt: TranscriptFormat) -> str:
    """The transcript as one JSON document, JSON lines, or readable text."""
    entries = transcript_entries(detail)
    if fmt == "jsonl":
        return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
    if fmt == "text":
        return "".join(_text_line(e) + "\n" for e in entries)
    head = ConversationRead.model_validate(detail.conversation).model_dump(mode="json")
    return json.dumps({"conversation": head, "entries": entries}, ensure_ascii=False)


async def conversation_detail(session: AsyncSession, conversation_id: str) -> ConversationDetail:
    """The conversation and its timeline; 404 if there is no such conversation."""
    detail = await queries.get_conversation(session, conversation_id)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no conversation {conversation_id!r}")
    return detail


LimitQuery = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)]
CursorQuery = Annotated[str | None, Query(description="`next_cursor` of the previous page")]


@contextmanager
def cursor_checked() -> Generator[None]:
    """A pagination cursor the store did not produce is the client's error (400)."""
    try:
        yield
    except queries.InvalidCursorError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None


@router.get(
    "/conversations/{conversation_id}/transcript",
    responses={200: {"content": {m: {} for m in _MEDIA.values()}}},
    response_class=Response,
)
async def get_transcript(
    conversation_id: str, session: SessionDep,
    format: Annotated[TranscriptFormat, Query(description="json, jsonl or text")] = "json",
) -> Response:
    """The conversation's messages, tool calls and handoffs, for export."""
    detail = await conversation_detail(session, conversation_id)
    return Response(render_transcript(detail, format), media_type=_MEDIA[format])


@router.delete("/conversations/{conversation_id}", response_model=ConversationRead)
async def delete_conversation(conversation_id: str, session: SessionDep) -> ConversationRead:
    """Erase what was said; a tombstone (ids, times, counters) stays."""
    outcome = await erase_conversation(session, conversation_id)
    if outcome == "not_found":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no conversation {conversation_id!r}")
    if outcome == "active":
        raise HTTPException(status.HTTP_409_CONFLICT, "the conversation is still active")
    detail = await queries.get_conversation(session, conversation_id)
    assert detail is not None
    return ConversationRead.model_validate(detail.conversation)


class ToolCallList(BaseModel):
    """One page of tool calls; pass `next_cursor` as `cursor` for the next one."""

    data: list[queries.ToolCallRow]
    next_cursor: str | None


@router.get("/tool-calls", response_model=ToolCallList)
async def list_tool_calls(
    session: SessionDep,
    filters: Annotated[queries.ToolCallFilter, Query()],
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ToolCallList:
    """Tool calls across conversations, newest first, filtered; cursor pagination."""
    with cursor_checked():
        rows, next_cursor = await queries.list_tool_calls(
            session, filters, limit=limit, cursor=cursor)
    return ToolCallList(data=rows, next_cursor=next_cursor)


class ToolStatsList(stats.Window):
    """Per-tool statistics over [since, until)."""

    data: list[stats.ToolStats]


class AgentStatsList(stats.Window):
    """Per-agent statistics over [since, until); `tokens` holds totals and text/audio splits."""

    data: list[stats.AgentStats]


WindowQuery = Annotated[stats.Window, Query()]


@router.get("/stats/tools", response_model=ToolStatsList)
async def tool_stats(session: SessionDep, window: WindowQuery) -> ToolStatsList:
    """Calls, error rates and p50/p95 durations per tool (nearest-rank), computed in SQL."""
    rows = await stats.tool_stats(session, window)
    return ToolStatsList(since=window.since, until=window.until, data=rows)


@router.get("/stats/agents", response_model=AgentStatsList)
async def agent_stats(session: SessionDep, window: WindowQuery) -> AgentStatsList:
    """Per agent: conversations, response error rate, first-output latency p50/p95, tool
    calls and token usage by modality, computed in SQL."""
    rows = await stats.agent_stats(session, window)
    return AgentStatsList(since=window.since, until=window.until, data=rows)
