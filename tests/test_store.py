"""The store: the batched recorder, agent versions and the audit queries, on every backend."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncGenerator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.store import queries
from orchestrator.store.db import create_engine, upgrade
from orchestrator.store.recorder import (
    SqlRecorder,
    insert_ignoring_duplicates,
    plan_batch,
    write_plan,
)
from orchestrator.store.records import ConversationStarted, ItemRecorded
from orchestrator.store.tables import Conversation, Handoff, Item, Response, ToolCall
from orchestrator.store.versions import ensure_agent_version
from tests.conftest import T0, WriteRecords, conversation_records, sqlite_url

Sessions = async_sessionmaker[AsyncSession]


async def _counts(sessionmaker: Sessions) -> dict[str, int]:
    async with sessionmaker() as session:
        return {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Conversation, Item, ToolCall, Response, Handoff)
        }


# --- recorder ---------------------------------------------------------------------------------


async def test_recorder_writes_a_conversation_in_batches(
    engine: AsyncEngine, sessionmaker: Sessions
) -> None:
    rows = conversation_records("conv_a", handoff_to="billing", tool_failed=True)
    recorder = SqlRecorder(engine, batch_size=3, flush_interval_s=5.0)
    await recorder.start()
    for row in rows:
        recorder.record(row)
    await asyncio.wait_for(recorder.flush(), 10)
    assert recorder.rows_written == len(rows) == 9
    assert recorder.batches_written == 3
    assert recorder.queue_depth == 0
    await recorder.aclose()

    async with sessionmaker() as session:
        detail = await queries.get_conversation(session, "conv_a")
    assert detail is not None
    c = detail.conversation
    assert (c.status, c.end_reason, c.current_agent) == ("completed", "client_closed", "billing")
    assert (c.input_tokens, c.output_tokens, c.total_tokens) == (30, 12, 42)
    assert (c.item_count, c.tool_call_count, c.handoff_count, c.response_count) == (3, 1, 1, 2)
    assert c.error_count == 1
    assert c.started_at == T0 and c.ended_at == T0 + timedelta(seconds=1)
    assert c.client == {"user_agent": "pytest"}
    assert [e.kind for e in detail.timeline] == [
        "item", "response", "item", "tool_call", "response", "item", "handoff",
    ]
    call = detail.timeline[3]
    assert isinstance(call, queries.ToolCallEntry)
    assert (call.tool, call.status, call.error, call.duration_ms) == (
        "get_current_time", "failed", "server crashed", 40.0,
    )
    assert all(e.at.tzinfo is not None for e in detail.timeline)


async def test_rows_recorded_right_before_aclose_are_written(
    engine: AsyncEngine, sessionmaker: Sessions
) -> None:
    recorder = SqlRecorder(engine, batch_size=500, flush_interval_s=60.0)
    await recorder.start()
    for n in range(40):
        for row in conversation_records(f"conv_{n:03}", started_at=T0 + timedelta(minutes=n)):
            recorder.record(row)
    await recorder.aclose()  # no flush: the long interval would otherwise hold them back
    assert recorder.rows_written == 40 * 8
    assert recorder.queue_depth == 0
    assert await _counts(sessionmaker) == {
        "conversations": 40, "items": 120, "tool_calls": 40, "responses": 80, "handoffs": 0,
    }


async def test_replayed_batch_does_not_duplicate(
    engine: AsyncEngine, sessionmaker: Sessions
) -> None:
    plan = plan_batch(conversation_records("conv_r", handoff_to="billing"))
    insert = insert_ignoring_duplicates(engine.dialect.name)
    for _ in range(2):  # a retry after a commit whose acknowledgement was lost
        async with engine.begin() as connection:
            await write_plan(connection, plan, insert)
    assert await _counts(sessionmaker) == {
        "conversations": 1, "items": 3, "tool_calls": 1, "responses": 2, "handoffs": 1,
    }
    async with sessionmaker() as session:
        conversation = await session.get(Conversation, "conv_r")
    assert conversation is not None
    assert (conversation.item_count, conversation.total_tokens) == (3, 42)


async def test_search_indexes_each_item_once_even_when_a_batch_is_replayed(
    engine: AsyncEngine, sessionmaker: Sessions
) -> None:
    # The recorder indexes item text per batch (migration 0003), not by trigger.
    insert = insert_ignoring_duplicates(engine.dialect.name)
    for plan in (plan_batch(conversation_records("conv_a", user_text="Tokyo at noon")),
                 plan_batch(conversation_records("conv_b", user_text="Osaka at dusk"))):
        for _ in range(2):  # a retry after a commit whose acknowledgement was lost
            async with engine.begin() as connection:
                await write_plan(connection, plan, insert)
    assert await _ids(sessionmaker, q="noon") == ["conv_a"]
    assert await _ids(sessionmaker, q="osaka dusk") == ["conv_b"]
    assert await _ids(sessionmaker, q="six pm") == ["conv_b", "conv_a"]
    if engine.dialect.name == "sqlite":
        async with engine.begin() as connection:  # raises if the index and the rows differ
            await connection.execute(text(
                "INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)"))


async def test_recording_the_same_rows_twice_stores_them_once(
    write_records: WriteRecords, sessionmaker: Sessions
) -> None:
    rows = conversation_records("conv_twice")
    recorder = await write_records([*rows, *rows])
    assert recorder.rows_written == 16 and recorder.rows_dropped == 0
    counts = await _counts(sessionmaker)
    assert counts == {
        "conversations": 1, "items": 3, "tool_calls": 1, "responses": 2, "handoffs": 0,
    }


async def test_a_row_the_database_rejects_does_not_block_the_others(
    engine: AsyncEngine, sessionmaker: Sessions
) -> None:
    orphan = ItemRecorded("conv_missing", 1, None, "message", "user", "a", "lost", None, None,
                          None, T0)
    good = conversation_records("conv_ok")
    recorder = SqlRecorder(engine, batch_size=100, flush_interval_s=5.0)
    await recorder.start()
    for row in [*good[:3], orphan, *good[3:]]:
        recorder.record(row)
    await asyncio.wait_for(recorder.flush(), 10)
    await recorder.aclose()
    assert (recorder.rows_written, recorder.rows_dropped) == (len(good), 1)
    assert (await _counts(sessionmaker))["items"] == 3


class TcpProxy:
    """A real TCP relay to the database server that can be started and stopped."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        with socket.socket() as probe:  # a port nothing listens on until start()
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen and relay."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def unavailable_database(
    database_url: str, tmp_path: Path
) -> AsyncGenerator[tuple[str, TcpProxy | None]]:
    """A URL whose database is down until the test brings it up.

    SQLite: a file in a folder that does not exist yet. PostgreSQL: a port with no listener,
    later a relay to the real server.
    """
    if make_url(database_url).get_backend_name() == "sqlite":
        yield sqlite_url(tmp_path / "not-yet" / "orchestrator.db"), None
        return
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        yield url.set(port=proxy.port).render_as_string(hide_password=False), proxy
    finally:
        await proxy.close()


async def test_an_outage_delays_rows_and_they_land_when_the_database_is_back(
    database_url: str, tmp_path: Path
) -> None:
    rows = conversation_records("conv_outage", handoff_to="billing")
    async with unavailable_database(database_url, tmp_path) as (url, proxy):
        engine = create_engine(url)
        recorder = SqlRecorder(engine, batch_size=4, flush_interval_s=0.01,
                               retry_initial_s=0.01, retry_max_s=0.05)
        await recorder.start()
        for row in rows:
            recorder.record(row)  # returns at once although the database is down
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(recorder.flush(), 0.5)
        assert recorder.rows_written == 0
        assert recorder.queue_depth == len(rows)
        assert recorder.last_error is not None

        if proxy is None:
            (tmp_path / "not-yet").mkdir()
            await upgrade(url)
        else:
            await upgrade(database_url)
            await proxy.start()
        await asyncio.wait_for(recorder.flush(), 10)
        await recorder.aclose()
        assert recorder.rows_written == len(rows)
        assert recorder.last_error is None
        async with async_sessionmaker(engine)() as session:
            detail = await queries.get_conversation(session, "conv_outage")
        await engine.dispose()
    assert detail is not None
    assert len(detail.timeline) == 7
    assert detail.conversation.status == "completed"


async def test_record_never_waits_for_the_writer(engine: AsyncEngine) -> None:
    recorder = SqlRecorder(engine)  # not even started: record() still only enqueues
    for n in range(1000):
        recorder.record(ConversationStarted(f"conv_{n}", "a", None, T0))
    assert recorder.queue_depth == 1000
    await recorder.start()
    await asyncio.wait_for(recorder.flush(), 10)
    await recorder.aclose()
    assert recorder.rows_written == 1000


# --- agent versions ---------------------------------------------------------------------------


async def test_agent_versions_count_up_per_name(sessionmaker: Sessions) -> None:
    first = await ensure_agent_version(sessionmaker, "concierge", "a" * 64, "name: concierge")
    second = await ensure_agent_version(sessionmaker, "concierge", "b" * 64, "name: concierge #2")
    again = await ensure_agent_version(sessionmaker, "concierge", "a" * 64, "name: concierge")
    other = await ensure_agent_version(sessionmaker, "billing", "a" * 64, "name: billing")
    assert (first, second, again, other) == (1, 2, 1, 1)


async def test_concurrent_registrations_get_distinct_versions(sessionmaker: Sessions) -> None:
    shas = [f"{n:064x}" for n in range(6)]
    versions = await asyncio.gather(
        *(ensure_agent_version(sessionmaker, "concierge", sha, "def") for sha in shas),
        *(ensure_agent_version(sessionmaker, "concierge", shas[0], "def") for _ in range(3)),
    )
    assert sorted(versions[:6]) == [1, 2, 3, 4, 5, 6]
    assert set(versions[6:]) == {versions[0]}


# --- queries ----------------------------------------------------------------------------------


@pytest.fixture
async def audit_trail(write_records: WriteRecords) -> None:
    """Six conversations one minute apart; conv_5 is the newest."""
    rows = [
        *conversation_records("conv_0", started_at=T0),
        *conversation_records("conv_1", started_at=T0 + timedelta(minutes=1), agent="billing",
                              user_text="Where is my INVOICE?", tool="lookup_invoice"),
        *conversation_records("conv_2", started_at=T0 + timedelta(minutes=2), tool_failed=True),
        *conversation_records("conv_3", started_at=T0 + timedelta(minutes=3),
                              response_failed=True),
        *conversation_records("conv_4", started_at=T0 + timedelta(minutes=4), status="failed"),
        *conversation_records("conv_5", started_at=T0 + timedelta(minutes=5),
                              user_text="100% sure_thing"),
    ]
    await write_records(rows)


async def _ids(sessionmaker: Sessions, **filters: Any) -> list[str]:
    async with sessionmaker() as session:
        rows, _ = await queries.list_conversations(
            session, queries.ConversationFilter(**filters))
    return [row.id for row in rows]


@pytest.mark.usefixtures("audit_trail")
async def test_list_filters(sessionmaker: Sessions) -> None:
    everything = ["conv_5", "conv_4", "conv_3", "conv_2", "conv_1", "conv_0"]
    assert await _ids(sessionmaker) == everything
    assert await _ids(sessionmaker, agent="billing") == ["conv_1"]
    assert await _ids(sessionmaker, status="failed") == ["conv_4"]
    assert await _ids(sessionmaker, tool="lookup_invoice") == ["conv_1"]
    assert await _ids(sessionmaker, has_error=True) == ["conv_4", "conv_3", "conv_2"]
    assert await _ids(sessionmaker, has_error=False) == ["conv_5", "conv_1", "conv_0"]
    assert await _ids(sessionmaker, q="invoice") == ["conv_1"]
    assert await _ids(sessionmaker, q="six PM") == everything
    assert await _ids(sessionmaker, q="100%") == ["conv_5"]
    # Full-text search (migration 0002): every word, as a prefix; punctuation separates words
    # and is never search syntax.
    assert await _ids(sessionmaker, q="0%") == []  # words, not substrings
    assert await _ids(sessionmaker, q="sure_thing") == ["conv_5"]
    assert await _ids(sessionmaker, q="thin SURE") == ["conv_5"]
    since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    assert await _ids(sessionmaker, since=since, until=until) == ["conv_2", "conv_1"]
    assert await _ids(sessionmaker, agent="concierge", has_error=True, q="tokyo") == [
        "conv_4", "conv_3", "conv_2",
    ]


@pytest.mark.usefixtures("audit_trail")
async def test_cursor_pagination_is_stable(
    sessionmaker: Sessions, write_records: WriteRecords
) -> None:
    pages: list[list[str]] = []
    cursor: str | None = None
    async with sessionmaker() as session:
        rows, cursor = await queries.list_conversations(session, limit=4)
    pages.append([r.id for r in rows])
    # A newer conversation and one with the same start as the page's last row arrive.
    await write_records([
        *conversation_records("conv_9", started_at=T0 + timedelta(minutes=9)),
        *conversation_records("conv_1b", started_at=T0 + timedelta(minutes=1)),
    ])
    while cursor is not None:
        async with sessionmaker() as session:
            rows, cursor = await queries.list_conversations(session, limit=4, cursor=cursor)
        pages.append([r.id for r in rows])
    assert pages == [["conv_5", "conv_4", "conv_3", "conv_2"], ["conv_1b", "conv_1", "conv_0"]]


async def test_a_foreign_cursor_is_rejected(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        for bad in ("not-base64!", "bm9wZQ", queries.encode_cursor(T0, "x")[:-3]):
            with pytest.raises(queries.InvalidCursorError):
                await queries.list_conversations(session, cursor=bad)


async def test_unknown_conversation_is_none(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        assert await queries.get_conversation(session, "conv_nope") is None
