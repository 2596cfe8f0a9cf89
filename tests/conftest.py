"""Shared fixtures.

Database fixtures run each test on every backend:
- `sqlite`: a fresh database file under the test's tmp_path;
- `postgres`: a fresh database created for the test on the server named by
  ORCHESTRATOR_TEST_DATABASE_URL (that database is only used to CREATE/DROP the test's own),
  dropped afterwards; skipped with a visible reason when the variable is not set.
  These tests carry the `postgres` marker, so `pytest -m postgres` runs only them.

`database_url` is the empty database, `migrated_url` the same after `upgrade()`, then `engine`
and `sessionmaker` on it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.store.db import create_engine, upgrade
from orchestrator.store.recorder import SqlRecorder
from orchestrator.store.records import (
    ConversationEnded,
    ConversationStarted,
    HandoffRecorded,
    ItemRecorded,
    Record,
    ResponseRecorded,
    ToolCallRecorded,
)

POSTGRES_ENV = "ORCHESTRATOR_TEST_DATABASE_URL"


@asynccontextmanager
async def fresh_postgres_database(server_url: str) -> AsyncGenerator[str]:
    """Create a uniquely named database next to `server_url`'s, yield its URL, drop it."""
    name = f"orchestrator_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                # FORCE: a test that failed midway may still hold connections.
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


def sqlite_url(path: Path) -> str:
    """The aiosqlite URL of a database file."""
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database, on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "orchestrator.db")
        return
    server_url = os.environ.get(POSTGRES_ENV)
    if not server_url:
        pytest.skip(f"{POSTGRES_ENV} not set")
    async with fresh_postgres_database(server_url) as url:
        yield url


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """The URL of a database with every migration applied."""
    await upgrade(database_url)
    return database_url


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the migrated database, disposed after the test."""
    engine = create_engine(migrated_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on the migrated database."""
    return async_sessionmaker(engine, expire_on_commit=False)


# --- audit-trail data ---

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def conversation_records(
    conversation_id: str,
    *,
    agent: str = "concierge",
    started_at: datetime = T0,
    user_text: str = "What time is it in Tokyo?",
    tool: str = "get_current_time",
    tool_failed: bool = False,
    response_failed: bool = False,
    handoff_to: str | None = None,
    status: str = "completed",
) -> list[Record]:
    """The records of one plausible conversation: a user turn, a tool call, a spoken answer
    over two responses, optionally a handoff, then the end."""

    def at(ms: int) -> datetime:
        return started_at + timedelta(milliseconds=ms)

    cid, args = conversation_id, '{"timezone": "Asia/Tokyo"}'
    rows: list[Record] = [
        ConversationStarted(cid, agent, 1, started_at, {"user_agent": "pytest"}),
        ItemRecorded(cid, 1, f"{cid}_u", "message", "user", agent, user_text, "completed",
                     None, None, at(10)),
        ResponseRecorded(cid, f"{cid}_r1", agent, "failed" if response_failed else "completed",
                         {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}, 120.0,
                         at(20), at(200)),
        ItemRecorded(cid, 2, f"{cid}_fc", "function_call", None, agent, args, "completed",
                     "call_1", tool, at(100)),
        ToolCallRecorded(cid, "call_1", agent, "time", tool, args,
                         None if tool_failed else '{"time": "18:00"}',
                         "server crashed" if tool_failed else None,
                         "failed" if tool_failed else "completed", at(110), at(150), 40.0),
        ResponseRecorded(cid, f"{cid}_r2", agent, "completed",
                         {"input_tokens": 20, "output_tokens": 7, "total_tokens": 27}, 80.0,
                         at(210), at(320)),
        ItemRecorded(cid, 3, f"{cid}_a", "message", "assistant", agent, "It is six pm.",
                     "completed", None, None, at(300)),
    ]
    if handoff_to is not None:
        rows.append(HandoffRecorded(cid, agent, handoff_to, "call_h", at(400), "billing question"))
    rows.append(ConversationEnded(cid, at(1000), status, "client_closed"))
    return rows


WriteRecords = Callable[[Sequence[Record]], Awaitable[SqlRecorder]]


@pytest.fixture
def write_records(engine: AsyncEngine) -> WriteRecords:
    """Write records through a real `SqlRecorder` (started, flushed, closed)."""

    async def write(rows: Sequence[Record]) -> SqlRecorder:
        recorder = SqlRecorder(engine, batch_size=50, flush_interval_s=0.01)
        await recorder.start()
        for row in rows:
            recorder.record(row)
        await recorder.aclose()
        assert recorder.queue_depth == 0
        return recorder

    return write


# --- end-to-end fixtures ---
