"""Audit statistics over a time window, computed in SQL on SQLite and PostgreSQL.

Percentiles are nearest-rank (the smallest value with at least p of the values at or below it):
PostgreSQL's `percentile_disc`; on SQLite, which has no ordered-set aggregates, one
`ORDER BY value LIMIT 1 OFFSET k` per group and percentile, walking a covering index
(`(server, tool, duration_ms, started_at, status)` on tool calls, `(agent,
first_output_latency_ms, created_at)` on responses), so no table rows are read or sorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Float, Select, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from orchestrator.store.tables import RESPONSE_TOKEN_COLUMNS as TOKEN_COLUMNS
from orchestrator.store.tables import Conversation, Response, ToolCall

PERCENTILES = (50, 95)  # integers: rank arithmetic stays exact


class Window(BaseModel):
    """[since, until) on a timestamp column; either end may be open (the stats routes' query
    parameters, echoed in their answers)."""

    model_config = ConfigDict(frozen=True)

    since: Annotated[datetime | None, Field(description="Window start (inclusive)")] = None
    until: Annotated[datetime | None, Field(description="Window end (exclusive)")] = None

    @property
    def bounded(self) -> bool:
        """Whether either end is set."""
        return self.since is not None or self.until is not None

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


def _rank(p: int, n: int) -> int:
    """0-based offset of the nearest-rank p-th percentile of n values: ceil(p n / 100) - 1."""
    return max(0, (p * n + 99) // 100 - 1)


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
    return [func.percentile_disc(p / 100).within_group(value).cast(Float) for p in PERCENTILES]


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
    rows = await _rows(session, stmt)
    if postgres:
        percentiles = {(r[0], r[1]): (r[5], r[6]) for r in rows}
    elif window.bounded and sum(r[2] for r in rows) <= RANKED_MAX_ROWS:
        percentiles = await _ranked_tool_percentiles(session, window)
    else:
        percentiles = {}
        for server, tool, calls, *_ in rows:
            where = [ToolCall.server == server, ToolCall.tool == tool,
                     *window.on(ToolCall.started_at)]
            found = await _nth_values(session, ToolCall.duration_ms, where, calls)
            percentiles[(server, tool)] = (found[0], found[1])
    result = [
        ToolStats(server=server, tool=tool, calls=int(calls), errors=int(failed or 0),
                  error_rate=_rate(int(failed or 0), int(calls)), avg_ms=float(avg or 0.0),
                  p50_ms=percentiles[(server, tool)][0], p95_ms=percentiles[(server, tool)][1])
        for server, tool, calls, failed, avg, *_ in rows
    ]
    result.sort(key=lambda s: (-s.calls, s.server, s.tool))
    return result


# A bounded window with at most this many calls is ranked in one query (a sort of those rows);
# beyond, or unbounded, each percentile is one offset walk of the covering index.
RANKED_MAX_ROWS = 200_000


async def _ranked_tool_percentiles(
    session: AsyncSession, window: Window
) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """SQLite: nearest-rank percentiles of every tool in the window, in one windowed query."""
    group = (ToolCall.server, ToolCall.tool)
    ranked = select(
        ToolCall.server, ToolCall.tool, ToolCall.duration_ms,
        func.row_number().over(partition_by=group, order_by=ToolCall.duration_ms).label("rn"),
        func.count().over(partition_by=group).label("n"),
    ).where(*window.on(ToolCall.started_at)).subquery()
    rows = await _rows(session, select(ranked).where(or_(*(
        ranked.c.rn == (ranked.c.n * p + 99) // 100 for p in PERCENTILES))))
    found: dict[tuple[str, str], list[float | None]] = {}
    for server, tool, duration, rn, n in rows:
        slots = found.setdefault((server, tool), [None] * len(PERCENTILES))
        for i, p in enumerate(PERCENTILES):
            if rn == _rank(p, n) + 1:
                slots[i] = duration
    return {key: (v[0], v[1]) for key, v in found.items()}


# --- agents ---------------------------------------------------------------------------------


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
    # SQLite groups along `ix_responses_agent_stats`, which covers every column used here.
    agent = Response.agent
    columns: list[Any] = [agent, func.count(), failed, func.count(latency),
                          *(func.sum(getattr(Response, c)) for c in TOKEN_COLUMNS)]
    if postgres:
        columns += _percentile_columns(latency)
    stmt = select(*columns).where(*window.on(Response.created_at)).group_by(agent)
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
