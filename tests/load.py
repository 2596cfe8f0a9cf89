"""A load driver shared by `tests/test_load.py` and `bench/soak.py`: N concurrent realtime
sessions, all live at once, each taking turns (a tool turn, then a plain one) until a count or
a deadline, noting what it saw (`Seen`) for the count-for-count check against the database."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from tests.faults import Seen

WAIT = 60.0
TURNS = ("echo please", "hello")


@dataclass(slots=True)
class LoadResult:
    """What the clients saw, and how long their turns took (ms)."""

    seen: Seen = field(default_factory=Seen)
    turns: int = 0
    refused: int = 0  # sessions answered 503 (admission control)
    latencies_ms: list[float] = field(default_factory=list[float])


async def _events_until_final(ws: ClientConnection) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        events.append(event)
        if event["type"] == "error":
            raise AssertionError(f"error event under load: {event}")
        if event["type"] == "response.done" and not any(
                item.get("type") == "mcp_call" for item in event["response"]["output"]):
            return events


async def _turn(ws: ClientConnection, text: str) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    await ws.send(json.dumps({"type": "response.create"}))
    return await _events_until_final(ws)


async def run_load(url: str, token: str, *, sessions: int, turns: int | None = None,
                   duration_s: float | None = None, connect_at_once: int = 50) -> LoadResult:
    """Open `sessions` sessions (all live together), then take turns in each until `turns`
    per session or `duration_s` have passed."""
    result = LoadResult()
    ramp = asyncio.Semaphore(connect_at_once)  # the listen backlog is finite
    all_live = asyncio.Barrier(sessions)
    deadline = time.monotonic() + duration_s if duration_s is not None else None

    async def one() -> None:
        async with ramp:
            try:
                ws = await websockets.connect(
                    url, additional_headers={"Authorization": f"Bearer {token}"},
                    compression=None, max_size=None, open_timeout=WAIT)
            except InvalidStatus as exc:
                if exc.response.status_code != 503:
                    raise
                result.refused += 1
                ws = None
        if ws is None:
            await asyncio.wait_for(all_live.wait(), WAIT)
            return
        async with ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == \
                "session.created"
            await ws.send(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "output_modalities": ["text"]}}))
            while json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] != \
                    "session.updated":
                pass
            await asyncio.wait_for(all_live.wait(), WAIT)
            n = 0
            while (turns is not None and n < turns) or (
                    deadline is not None and time.monotonic() < deadline):
                started = time.perf_counter()
                result.seen.add(await _turn(ws, TURNS[n % len(TURNS)]))
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.turns += 1
                n += 1

    await asyncio.gather(*(one() for _ in range(sessions)))
    return result
