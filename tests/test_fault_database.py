"""Fault 4: the database goes away (PostgreSQL cut at a TCP relay, SQLite locked) while rows
keep coming: they queue in memory up to a bound, spill to the journal file, and all land once
the database is back, none twice; rows unwritten at a stop are replayed by the next start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.db import create_engine, upgrade
from orchestrator.store.journal import Journal, decode, encode
from orchestrator.store.recorder import SqlRecorder
from orchestrator.store.records import Record
from tests.conftest import conversation_records
from tests.faults import REPO, Seen, outage_ready, recorded_messages, row_counts, wait_until
from tests.realtime_client import connect, text_of
from tests.server import serve

WAIT = 30.0
AGENTS = REPO / "tests" / "fixtures" / "faults"


def conversations(count: int, prefix: str) -> list[Record]:
    """The records of `count` conversations (9 rows each: items, tool call, responses...)."""
    return [row for n in range(count)
            for row in conversation_records(f"{prefix}{n}", handoff_to="billing")]


def expected_counts(count: int) -> dict[str, int]:
    """Rows per table for `conversations(count, ...)`."""
    return {"conversations": count, "items": 3 * count, "tool_calls": count,
            "responses": 2 * count, "handoffs": count}


def recorder(engine: AsyncEngine, journal: Path, **options: float) -> SqlRecorder:
    """A recorder with a small queue bound and quick retries."""
    return SqlRecorder(engine, batch_size=20, flush_interval_s=0.01, retry_initial_s=0.05,
                       retry_max_s=0.2, journal=Journal(journal), max_queue=40, **options)


@asynccontextmanager
async def engine_on(url: str) -> AsyncGenerator[AsyncEngine]:
    """An engine, disposed afterwards."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


def test_the_journal_round_trips_every_record_kind() -> None:
    rows = conversation_records("conv_rt", handoff_to="billing")
    assert [decode(encode(row)) for row in rows] == rows


async def test_an_outage_spills_to_the_journal_and_every_row_lands_once(
        database_url: str, tmp_path: Path) -> None:
    await upgrade(database_url)
    async with outage_ready(database_url) as outage, engine_on(outage.url) as engine:
        rec = recorder(engine, tmp_path / "journal.jsonl")
        await rec.start()
        rec.record(conversation_records("conv_before")[0])
        await asyncio.wait_for(rec.flush(), WAIT)
        await outage.cut()
        rows = conversations(30, "conv_out_")  # 270 rows against a bound of 40
        for row in rows:
            rec.record(row)  # never waits for the database
        await wait_until(lambda: rec.journal_depth > 0)
        assert rec.queue_depth == len(rows)
        assert (tmp_path / "journal.jsonl").exists()
        await outage.restore()
        await asyncio.wait_for(rec.flush(), WAIT)
        assert rec.rows_journaled > 0 and rec.journal_depth == 0
        assert not (tmp_path / "journal.jsonl").exists()
        await rec.aclose()
        counts = await row_counts(engine)
    expected = expected_counts(30)
    expected["conversations"] += 1
    assert counts == expected


async def test_rows_unwritten_at_a_stop_are_kept_and_replayed_by_the_next_start(
        database_url: str, tmp_path: Path) -> None:
    await upgrade(database_url)
    journal = tmp_path / "journal.jsonl"
    rows = conversations(10, "conv_stop_")
    async with outage_ready(database_url) as outage, engine_on(outage.url) as engine:
        await outage.cut()
        first = recorder(engine, journal, close_grace_s=0.3)
        await first.start()
        for row in rows:
            first.record(row)
        await first.aclose()  # the database is still down: everything goes to the journal
        assert first.rows_written == 0
        assert len(Journal(journal).rest()) == len(rows)
        await outage.restore()
        second = recorder(engine, journal)
        await second.start()
        second.record(rows[0])  # written again: stored once
        await asyncio.wait_for(second.flush(), WAIT)
        await second.aclose()
        counts = await row_counts(engine)
    assert counts == expected_counts(10)
    assert not journal.exists()


async def test_sessions_run_through_an_outage_and_every_row_they_made_lands_once(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    await upgrade(database_url)
    seen = Seen()
    async with outage_ready(database_url) as outage, \
            serve(outage.url, tmp_path, agents_dir=AGENTS, recorder_max_queue=10,
                  recorder_batch_size=10, recorder_journal_path=tmp_path / "journal.jsonl",
                  ) as server:
        recorder = server.services.recorder
        await outage.cut()

        async def conversation() -> None:
            async with connect(server.realtime_url("desk"), server.token) as client:
                for text in ("echo please", "hello", "echo again"):
                    events = await client.turn(text)
                    seen.add(events)
                    assert text_of(events)

        await asyncio.gather(*(conversation() for _ in range(4)))  # while the database is out
        await asyncio.wait_for(server.services.live_sessions.wait_empty(), WAIT)
        assert recorder.queue_depth > 0  # nothing of theirs could be written yet
        await wait_until(lambda: recorder.rows_journaled > 0)
        await outage.restore()
        back = time.monotonic()
        await asyncio.wait_for(recorder.flush(), WAIT)
        print(f"database back: {recorder.rows_written} rows written "
              f"({recorder.rows_journaled} via the journal) {time.monotonic() - back:.2f} s later")
        async with engine_on(database_url) as engine:
            messages, calls = await recorded_messages(engine)
            counts = await row_counts(engine)
    assert sorted(messages) == sorted(seen.messages)  # each one, once
    assert calls == seen.tool_calls == 8
    assert counts["conversations"] == 4


async def test_a_journal_line_cut_short_by_a_crash_is_skipped(
        engine: AsyncEngine, tmp_path: Path) -> None:
    rows = conversation_records("conv_cut")
    path = tmp_path / "journal.jsonl"
    lines = [encode(row) for row in rows]
    path.write_text("\n".join([*lines[:3], lines[3][:25], *lines[4:]]) + "\n{\"kind\": \"Item")
    rec = recorder(engine, path)
    await rec.start()
    await asyncio.wait_for(rec.flush(), WAIT)
    await rec.aclose()
    counts = await row_counts(engine)
    assert counts["items"] == 2 and counts["tool_calls"] == 1  # the cut item is the lost one
    assert not path.exists()
