"""Audit statistics over a time window, computed in SQL on SQLite and PostgreSQL.

Percentiles are nearest-rank (the smallest value with at least p of the values at or below it):
PostgreSQL's `percentile_disc`; on SQLite, which has no ordered-set aggregates, one
`ORDER BY value LIMIT 1 OFFSET k` per group and percentile, walking a covering index
(`(server, tool, duration_ms, started_at, status)` on tool calls, `(agent,
first_output_latency_ms, created_at)` on responses), so no table rows are read or sorted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from orchestrator.store.tables import Conversation, Response, ToolCall

PERCENTILES = (0.5, 0.95)


@dataclass(frozen=True, slots=True)
class Window:
    """[since, until) on a timestamp column; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None

    def on(self, column: InstrumentedAttribute[datetime]) -> list[ColumnElement[bool]]:
        """The conditions that keep `column` inside the window."""
        conditions: list[ColumnElement[bool]] = []
        if self.since is not None:
            conditions.append(column >= self.since)
        if self.until is not None:
            conditions.append(column < self.until)
        return conditions


@dataclass(frozen=True, slots=True)
class ToolStats:
    """One tool of one server over the window."""

    server: str
    tool: str
    calls: int
    errors: int
    error_rate: float
    avg_ms: float
    p50_ms: float | None
    p95_ms: float | None


@dataclass(slots=True)
class AgentStats:
    """One agent over the window: conversations it started, its responses and tool calls."""

    agent: str
    conversations: int = 0
    responses: int = 0
    failed_responses: int = 0
    response_error_rate: float = 0.0
    first_output_p50_ms: float | None = None
    first_output_p95_ms: float | None = None
    tool_calls: int = 0
    tool_errors: int = 0
    tokens: dict[str, int] = field(default_factory=dict[str, int])


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _rank(p: float, n: int) -> int:
    """0-based offset of the nearest-rank p-th percentile of n values."""
    return max(0, math.ceil(p * n) - 1)


async def _nth_values(
    session: AsyncSession, value: InstrumentedAttribute[Any], where: Sequence[ColumnElement[bool]],
    n: int,
) -> list[float | None]:
    """SQLite: the nearest-rank percentiles of `value` among `n` rows matching `where`."""
    found: list[float | None] = []
    for p in PERCENTILES:
        stmt = select(value).where(*where).order_by(value).limit(1).offset(_rank(p, n))
        found.append(await session.scalar(stmt) if n else None)
    return found


async def _rows(session: AsyncSession, stmt: Select[*tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in (await session.execute(stmt)).all()]


def _percentile_columns(value: InstrumentedAttribute[Any]) -> list[ColumnElement[Any]]:
    """PostgreSQL: nearest-rank percentiles as ordered-set aggregates."""
    return [func.percentile_disc(p).within_group(value).cast(Float) for p in PERCENTILES]


# --- tools ----------------------------------------------------------------------------------


async def tool_stats(session: AsyncSession, window: Window) -> list[ToolStats]:
    """Calls, error rate and duration percentiles per (server, tool), busiest first."""
    postgres = session.get_bind().dialect.name == "postgresql"
    errors = func.sum(case((ToolCall.status != "completed", 1), else_=0))
    columns: list[Any] = [ToolCall.server, ToolCall.tool, func.count(), errors,
                          func.avg(ToolCall.duration_ms)]
    if postgres:
        columns += _percentile_columns(ToolCall.duration_ms)
    stmt = select(*columns).where(*window.on(ToolCall.started_at)) \
        .group_by(ToolCall.server, ToolCall.tool)
    result: list[ToolStats] = []
    for row in await _rows(session, stmt):
        server, tool, calls, failed, avg = row[0], row[1], int(row[2]), int(row[3] or 0), row[4]
        if postgres:
            p50, p95 = row[5], row[6]
        else:
            where = [ToolCall.server == server, ToolCall.tool == tool,
                     *window.on(ToolCall.started_at)]
            p50, p95 = await _nth_values(session, ToolCall.duration_ms, where, calls)
        result.append(ToolStats(
            server=server, tool=tool, calls=calls, errors=failed,
            error_rate=_rate(failed, calls), avg_ms=float(avg or 0.0), p50_ms=p50, p95_ms=p95))
    result.sort(key=lambda s: (-s.calls, s.server, s.tool))
    return result


# --- agents ---------------------------------------------------------------------------------

TOKEN_COLUMNS = (
    "input_tokens", "output_tokens", "total_tokens", "input_text_tokens", "input_audio_tokens",
    "output_text_tokens", "output_audio_tokens",
)


async def agent_stats(session: AsyncSession, window: Window) -> list[AgentStats]:
    """Per agent: conversations started, responses (errors, first-output latency percentiles,
    tokens by modality) and tool calls, over the window."""
    stats: dict[str, AgentStats] = {}

    def of(agent: str) -> AgentStats:
        return stats.setdefault(agent, AgentStats(agent=agent, tokens=dict.fromkeys(
            TOKEN_COLUMNS, 0)))

    started = select(Conversation.agent, func.count()).where(
        *window.on(Conversation.started_at)).group_by(Conversation.agent)
    for agent, count in (await session.execute(started)).all():
        of(agent).conversations = int(count)
    await _response_stats(session, window, of)
    errors = func.sum(case((ToolCall.status != "completed", 1), else_=0))
    calls = select(ToolCall.agent, func.count(), errors).where(
        *window.on(ToolCall.started_at)).group_by(ToolCall.agent)
    for agent, count, failed in (await session.execute(calls)).all():
        entry = of(agent)
        entry.tool_calls, entry.tool_errors = int(count), int(failed or 0)
    return [stats[name] for name in sorted(stats)]


async def _response_stats(session: AsyncSession, window: Window, of: Any) -> None:
    postgres = session.get_bind().dialect.name == "postgresql"
    latency = Response.first_output_latency_ms
    failed = func.sum(case((Response.status == "failed", 1), else_=0))
    columns: list[Any] = [Response.agent, func.count(), failed, func.count(latency),
                          *(func.sum(getattr(Response, c)) for c in TOKEN_COLUMNS)]
    if postgres:
        columns += _percentile_columns(latency)
    stmt = select(*columns).where(*window.on(Response.created_at)).group_by(Response.agent)
    for row in await _rows(session, stmt):
        entry: AgentStats = of(row[0])
        entry.responses, entry.failed_responses = int(row[1]), int(row[2] or 0)
        entry.response_error_rate = _rate(entry.failed_responses, entry.responses)
        entry.tokens = {c: int(v or 0) for c, v in zip(TOKEN_COLUMNS, row[4:11], strict=True)}
        if postgres:
            entry.first_output_p50_ms, entry.first_output_p95_ms = row[11], row[12]
        else:
            where = [Response.agent == row[0], latency.is_not(None),
                     *window.on(Response.created_at)]
            entry.first_output_p50_ms, entry.first_output_p95_ms = await _nth_values(
                session, latency, where, int(row[3]))
