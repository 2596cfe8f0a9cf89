"""Recorder throughput (rows/s on SQLite, the service's batching) and queue lag under load.

    python bench/recorder.py [--quick] [--url sqlite+aiosqlite:///FILE]   # one JSON line out

Rows are the realistic mix a conversation produces (start, items, tool calls, responses, a
handoff now and then, end). Throughput: everything recorded at once, then `flush()`: rows /
seconds, twice on fresh databases, with the share of time spent building parameters
(`plan_batch`). Lag: rows recorded at a steady rate in 10 ms ticks, in the writer's own
event loop as in the service; a row's lag is the time from its `record()` to its commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.store import recorder as recorder_module
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

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def conversation(n: int) -> list[Record]:
    """The rows of one conversation (20 or 21)."""
    cid = f"conv_bench{n:08d}"
    at = T0 + timedelta(seconds=n)
    rows: list[Record] = [ConversationStarted(cid, "bench", 1, at, {"remote": "127.0.0.1:1"})]
    for i in range(10):
        rows.append(ItemRecorded(cid, i, f"item_{n}_{i}", "message", "user" if i % 2 else
                                 "assistant", "bench", "a sentence of about this length " * 2,
                                 "completed", None, None, at))
    for i in range(3):
        rows.append(ToolCallRecorded(cid, f"call_{n}_{i}", "bench", "time", "get_current_time",
                                     '{"timezone": "Asia/Tokyo"}', '{"datetime": "x"}', None,
                                     "completed", at, at, 2.5))
    for i in range(4):
        rows.append(ResponseRecorded(cid, f"resp_{n}_{i}", "bench", "completed",
                                     {"input_tokens": 120, "output_tokens": 40,
                                      "total_tokens": 160}, 310.0, at, at))
    if n % 5 == 0:
        rows.append(HandoffRecorded(cid, "bench", "other", f"call_{n}_h", at, "billing"))
    rows.append(ConversationEnded(cid, at, "completed", "client_closed", "bench"))
    return rows


def rows_for(count: int, start: int = 0) -> list[Record]:
    rows: list[Record] = []
    n = start
    while len(rows) < count:
        rows.extend(conversation(n))
        n += 1
    return rows


async def fresh(tmp: Path, name: str, url: str | None) -> tuple[Any, SqlRecorder]:
    db = url or f"sqlite+aiosqlite:///{tmp / name}"
    await upgrade(db)
    engine = create_engine(db)
    recorder = SqlRecorder(engine)  # the service's defaults: batch 1000, 0.2 s
    await recorder.start()
    return engine, recorder


async def throughput(tmp: Path, name: str, count: int, url: str | None) -> dict[str, Any]:
    rows = rows_for(count)
    engine, recorder = await fresh(tmp, name, url)
    planning = [0.0]
    plan = recorder_module.plan_batch

    def timed_plan(batch: Any) -> Any:
        t = time.perf_counter()
        try:
            return plan(batch)
        finally:
            planning[0] += time.perf_counter() - t

    recorder_module.plan_batch = timed_plan  # type: ignore[assignment]
    try:
        t = time.perf_counter()
        for row in rows:
            recorder.record(row)
        await recorder.flush()
        elapsed = time.perf_counter() - t
    finally:
        recorder_module.plan_batch = plan
        await recorder.aclose()
        await engine.dispose()
    return {"rows": len(rows), "seconds": round(elapsed, 3),
            "rows_per_s": round(len(rows) / elapsed), "plan_share": round(planning[0] / elapsed, 3),
            "batches": recorder.batches_written}


async def lag(tmp: Path, rate: int, seconds: float, url: str | None) -> dict[str, Any]:
    engine, recorder = await fresh(tmp, "lag.db", url)
    rows = rows_for(int(rate * seconds) + 100, start=10_000_000)
    marks: list[tuple[float, int]] = []  # (record time, rows enqueued after it)
    commits: list[tuple[float, int]] = []  # (time, rows written)
    per_tick = max(1, rate // 100)
    loop = asyncio.get_running_loop()
    start, sent, depth_max = loop.time(), 0, 0

    async def watch() -> None:
        while True:
            commits.append((loop.time(), recorder.rows_written))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        for tick in range(int(seconds * 100)):
            due = start + tick / 100
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            for row in rows[sent:sent + per_tick]:
                recorder.record(row)
            sent += per_tick
            marks.append((loop.time(), sent))
            depth_max = max(depth_max, recorder.queue_depth)
        await recorder.flush()
        commits.append((loop.time(), recorder.rows_written))
    finally:
        watcher.cancel()
        await recorder.aclose()
        await engine.dispose()
    lags, j = [], 0
    for at, count in marks:
        while commits[j][1] < count:
            j += 1
        lags.append((commits[j][0] - at) * 1000)
    lags.sort()
    return {"rate_rows_per_s": per_tick * 100, "seconds": seconds, "max_queue_depth": depth_max,
            "lag_ms_p50": round(lags[len(lags) // 2], 1),
            "lag_ms_p99": round(lags[int(len(lags) * 0.99)], 1), "lag_ms_max": round(lags[-1], 1)}


async def main(quick: bool, url: str | None) -> dict[str, Any]:
    count = 20_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        runs = [await throughput(tmp, f"t{i}.db", count, url) for i in range(2)]
        under_load = await lag(tmp, 5000, 1.0 if quick else 5.0, url)
    return {"database": "sqlite" if url is None else url.split(":")[0], "throughput": runs,
            "rows_per_s": max(r["rows_per_s"] for r in runs), "lag": under_load}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    import uvloop

    json.dump(uvloop.run(main(args.quick, args.url)), sys.stdout)
    sys.stdout.write("\n")
