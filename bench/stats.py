"""Audit stats at scale: seed a database with N tool calls (default 1,000,000) and time every
stats and audit endpoint through the real app (`create_app`, its lifespan, HTTP over ASGI).

    .venv/bin/python bench/stats.py [--quick] [--rows N] [--requests 7]
        [--database-url URL] [--json out.json]

Seeding uses Core bulk inserts (executemany in chunks): 1M tool calls, one conversation per 5
calls, two responses and two items per conversation, spread over 30 days, 24 tools on 4 servers,
12 agents, 5 % failures. Each endpoint is asked `--requests` times; the first answer warms the
caches and is reported apart (`cold_ms`), then the median and worst of the rest. Target: each
stats endpoint under 1 s on SQLite at 1M tool calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.app import create_app
from orchestrator.config import Settings
from orchestrator.store.db import create_engine, is_sqlite, upgrade
from orchestrator.store.tables import Conversation, Item, Response, ToolCall

TOKEN = "bench-token"
CHUNK = 20_000
SPAN = timedelta(days=30)
END = datetime(2026, 12, 1, tzinfo=UTC)
SERVERS = {f"srv{s}": [f"tool_{s}_{t}" for t in range(6)] for s in range(4)}
AGENTS = [f"agent-{a}" for a in range(12)]
WORDS = ("refund invoice tokyo weather booking flight hotel printer password delivery order "
         "cancel upgrade support billing schedule").split()
CALLS_PER_CONVERSATION = 5


COLUMNS = {
    "conversations": ("id", "agent", "agent_version", "status", "started_at", "ended_at",
                      "end_reason", "client", "tool_call_count", "item_count", "response_count"),
    "tool_calls": ("conversation_id", "call_id", "agent", "server", "tool", "arguments",
                   "output", "error", "status", "started_at", "finished_at", "duration_ms"),
    "responses": ("conversation_id", "response_id", "agent", "status", "input_tokens",
                  "output_tokens", "total_tokens", "input_text_tokens", "input_audio_tokens",
                  "output_text_tokens", "output_audio_tokens", "first_output_latency_ms",
                  "created_at", "done_at"),
    "items": ("conversation_id", "seq", "item_id", "type", "role", "agent", "text", "status",
              "created_at"),
}
TABLES = {"conversations": Conversation, "tool_calls": ToolCall, "responses": Response,
          "items": Item}
TOOLS = [(server, tool) for server, tools in SERVERS.items() for tool in tools]
Rows = dict[str, list[tuple[Any, ...]]]


def _generate(rng: random.Random, first: int, last: int, total: int) -> Rows:
    """Rows of conversations first..last-1 (naive UTC datetimes), in time order."""
    rows: Rows = {name: [] for name in COLUMNS}
    start, span_s = END.replace(tzinfo=None) - SPAN, SPAN.total_seconds()
    second = timedelta(seconds=1)
    for n in range(first, last):
        started = start + second * (span_s * n / total + rng.random())
        cid, agent = f"conv_{n:08d}", AGENTS[n % len(AGENTS)]
        rows["conversations"].append((
            cid, agent, 1, "completed", started, started + second * rng.uniform(5, 600),
            "client_closed", "{}", CALLS_PER_CONVERSATION, 2, 2))
        for k in range(CALLS_PER_CONVERSATION):
            server, tool = TOOLS[int(rng.random() * len(TOOLS))]
            at, duration = started + second * (2 * k), rng.lognormvariate(4, 0.8)
            failed = rng.random() < 0.05
            rows["tool_calls"].append((
                cid, f"call_{k}", agent, server, tool, "{}", None if failed else '{"ok":1}',
                "boom" if failed else None, "failed" if failed else "completed", at,
                at + second * (duration / 1000), duration))
        for k in range(2):
            at = started + second * (5 * k)
            t_in, a_in, t_out, a_out = (int(rng.random() * 300) for _ in range(4))
            rows["responses"].append((
                cid, f"resp_{k}", agent, "failed" if rng.random() < 0.02 else "completed",
                t_in + a_in, t_out + a_out, t_in + a_in + t_out + a_out, t_in, a_in, t_out,
                a_out, rng.lognormvariate(5, 0.5), at, at + second))
            said = " ".join(WORDS[int(rng.random() * len(WORDS))] for _ in range(8))
            rows["items"].append((cid, k + 1, f"item_{k}", "message",
                                  "user" if k == 0 else "assistant", agent, said,
                                  "completed", at))
    return rows


def _sqlite_value(value: Any) -> Any:
    # The text form SQLAlchemy's SQLite DateTime stores (UTC, no offset).
    return value.isoformat(" ", "microseconds") if isinstance(value, datetime) else value


async def _insert(connection: AsyncConnection, rows: Rows, sqlite: bool) -> None:
    for name, columns in COLUMNS.items():
        if sqlite:  # the driver's executemany: no per-value type processing
            marks = ", ".join("?" for _ in columns)
            sql = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})"
            data = [tuple(_sqlite_value(v) for v in row) for row in rows[name]]
            await connection.exec_driver_sql(sql, data)  # type: ignore[arg-type]
        else:
            dicts = [dict(zip(columns, row, strict=True)) for row in rows[name]]
            if name == "conversations":
                for d in dicts:
                    d["client"] = {}
            await connection.execute(insert(TABLES[name]), dicts)


async def seed(url: str, tool_calls: int) -> float:
    """Fill an empty, migrated database; returns the seconds it took."""
    rng = random.Random(7)
    engine = create_engine(url)
    began = time.perf_counter()
    conversations = tool_calls // CALLS_PER_CONVERSATION
    sqlite = is_sqlite(url)
    try:
        async with engine.begin() as connection:
            rebuild: list[str] = []
            if sqlite:
                await connection.execute(text("PRAGMA synchronous=OFF"))
                rebuild = await _drop_sqlite_indexes(connection)
            per_chunk = CHUNK // CALLS_PER_CONVERSATION
            for first in range(0, conversations, per_chunk):
                last = min(first + per_chunk, conversations)
                await _insert(connection, _generate(rng, first, last, conversations), sqlite)
            for statement in rebuild:  # one sorted build per index beats 1M random inserts
                await connection.execute(text(statement))
            if sqlite:
                await connection.execute(text("INSERT INTO items_fts(items_fts) VALUES('rebuild')"))
            await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
    return time.perf_counter() - began


async def _drop_sqlite_indexes(connection: AsyncConnection) -> list[str]:
    """Drop the secondary indexes and FTS triggers of the seeded tables; their CREATEs."""
    found = (await connection.execute(text(
        "SELECT name, type, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "AND sql IS NOT NULL AND tbl_name IN ('conversations', 'tool_calls', 'responses', "
        "'items')"))).all()
    for name, kind, _ in found:
        await connection.execute(text(f'DROP {kind.upper()} "{name}"'))
    return [sql for _, _, sql in found]


def _endpoints() -> dict[str, tuple[str, dict[str, str]]]:
    day = (END - timedelta(days=1)).isoformat()
    week = (END - timedelta(days=7)).isoformat()
    return {
        "stats_tools_all": ("/admin/stats/tools", {}),
        "stats_tools_7d": ("/admin/stats/tools", {"since": week}),
        "stats_tools_24h": ("/admin/stats/tools", {"since": day}),
        "stats_agents_all": ("/admin/stats/agents", {}),
        "stats_agents_7d": ("/admin/stats/agents", {"since": week}),
        "stats_agents_24h": ("/admin/stats/agents", {"since": day}),
        "conversations_q": ("/admin/conversations", {"q": "tokyo refund"}),
        "conversations_tool_failed": ("/admin/conversations",
                                      {"tool": "tool_1_2", "tool_status": "failed"}),
        "conversations_min_duration": ("/admin/conversations", {"min_duration_s": "590"}),
        "tool_calls_filtered": ("/admin/tool-calls", {"tool": "tool_2_3", "status": "failed"}),
    }


async def measure(url: str, requests: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Median and worst latency of each endpoint through the real app."""
    agents = workdir / "agents"
    agents.mkdir(exist_ok=True)
    settings = Settings(agents_dir=agents, database_url=url, var_dir=workdir / "var",
                        admin_token=SecretStr(TOKEN))
    app = create_app(settings)
    results: dict[str, dict[str, float]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers=headers, timeout=120) as http:
            for name, (path, params) in _endpoints().items():
                times: list[float] = []
                for _ in range(requests):
                    began = time.perf_counter()
                    response = await http.get(path, params=params)
                    times.append((time.perf_counter() - began) * 1000)
                    response.raise_for_status()
                warm = times[1:] or times
                results[name] = {"cold_ms": round(times[0], 1),
                                 "median_ms": round(statistics.median(warm), 1),
                                 "worst_ms": round(max(warm), 1)}
                shown = results[name]
                print(f"{name:28s} cold {shown['cold_ms']:8.1f} ms  median "
                      f"{shown['median_ms']:8.1f} ms  worst {shown['worst_ms']:8.1f} ms",
                      flush=True)
    return results


async def main(args: argparse.Namespace) -> None:
    rows = 20_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory(prefix="orch-bench-stats-") as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'stats.db'}"
        await upgrade(url)
        seconds = await seed(url, rows)
        print(f"seeded {rows:,} tool calls in {seconds:.1f} s ({url.split(':')[0]})", flush=True)
        results = await measure(url, args.requests, workdir)
    if args.json:
        report = {"tool_calls": rows, "backend": url.split(":")[0], "seed_s": round(seconds, 1),
                  "requests": args.requests, "endpoints": results}
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="tool calls to seed")
    parser.add_argument("--quick", action="store_true", help="20,000 tool calls")
    parser.add_argument("--requests", type=int, default=7, help="requests per endpoint")
    parser.add_argument("--database-url", help="an EMPTY database (default: a temp SQLite file)")
    parser.add_argument("--json", help="write the results here")
    asyncio.run(main(parser.parse_args()))
