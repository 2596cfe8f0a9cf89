"""The audit API on conversations held through the realtime endpoint (scripted model, real MCP
servers): every conversation filter, pagination, timeline, transcript export, erasure, tool
calls and stats, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.admin_world import TIMEOUT, admin_server, converse, http_client, ids, settled
from tests.realtime_client import connect
from tests.server import RunningServer


async def _started(server: RunningServer, http: httpx.AsyncClient, n: int) -> str:
    """The newest conversation's id, once the recorder has written what it holds (n in all)."""
    await asyncio.wait_for(server.services.recorder.flush(), TIMEOUT)
    data = (await http.get("/admin/conversations")).json()["data"]
    assert len(data) == n
    return data[0]["id"]


@pytest.fixture
async def world(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient, dict[str, str]]]:
    """Four conversations: `time` (two Tokyo calls), `broken` (a failing tool), `handoff`
    (desk -> billing, then billing's echo tool) and `billing` (billing alone)."""
    async with admin_server(database_url, tmp_path, monkeypatch) as server, \
            http_client(server) as http:
        names: dict[str, str] = {}
        plan = [("time", "desk", ("What time is it in Tokyo?", "And Tokyo again?")),
                ("broken", "desk", ("The printer is broken",)),
                ("handoff", "desk", ("I want a refund", "refund please")),
                ("billing", "billing", ("hello",))]
        for n, (label, agent, turns) in enumerate(plan, start=1):
            await converse(server, agent, *turns)
            await settled(server)
            names[label] = await _started(server, http, n)
        yield server, http, names


async def _list(http: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await http.get("/admin/conversations", params=params)
    assert response.status_code == 200, response.text
    return ids(response.json())


async def _conversation_filters(
    world: tuple[RunningServer, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, http, c = world
    newest_first = [c["billing"], c["handoff"], c["broken"], c["time"]]
    assert await _list(http) == newest_first
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"agent": "desk"}, [c["handoff"], c["broken"], c["time"]]),
        ({"agent": "billing"}, [c["billing"]]),
        ({"status": "completed"}, newest_first),
        ({"status": "active"}, []),
        ({"tool": "get_current_time"}, [c["time"]]),
        ({"tool": "echo"}, [c["handoff"]]),
        ({"tool_status": "failed"}, [c["broken"]]),
        ({"tool": "fail", "tool_status": "completed"}, []),
        ({"tool": "get_current_time", "tool_status": "completed"}, [c["time"]]),
        ({"has_error": "true"}, [c["broken"]]),
        ({"has_error": "false"}, [c["billing"], c["handoff"], c["time"]]),
        ({"handoff_to": "billing"}, [c["handoff"]]),
        ({"handoff_to": "desk"}, []),
        ({"q": "tokyo"}, [c["time"]]),
        ({"q": "TOKYO again"}, [c["time"]]),
        ({"q": "refu"}, [c["handoff"]]),  # words match as prefixes
        ({"q": "printer broken"}, [c["broken"]]),
        ({"q": "printer tokyo"}, []),
        ({"q": "\"*) OR ("}, []),  # search syntax is never interpreted
        ({"min_duration_s": "0"}, newest_first),
        ({"min_duration_s": "86400"}, []),
    ]
    for params, expected in cases:
        assert await _list(http, **params) == expected, params
    listed = {row["id"]: row for row in
              (await http.get("/admin/conversations")).json()["data"]}
    # since/until on started_at: exactly the middle two.
    since, until = listed[c["broken"]]["started_at"], listed[c["billing"]]["started_at"]
    assert await _list(http, since=since, until=until) == [c["handoff"], c["broken"]]
    # min_duration_s splits at the longest conversation.
    durations = sorted((row["duration_ms"], cid) for cid, row in listed.items())
    threshold = (durations[-1][0] + durations[-2][0]) / 2 / 1000
    if durations[-1][0] - durations[-2][0] > 1:  # apart by more than a millisecond
        assert await _list(http, min_duration_s=threshold) == [durations[-1][1]]


async def _pagination_timeline_and_transcripts(
    world: tuple[RunningServer, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, http, c = world
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    for _ in range(10):
        body = (await http.get("/admin/conversations", params=params)).json()
        seen += ids(body)
        if body["next_cursor"] is None:
            break
        params = {"limit": 1, "cursor": body["next_cursor"]}
    assert seen == [c["billing"], c["handoff"], c["broken"], c["time"]]

    detail = (await http.get(f"/admin/conversations/{c['handoff']}")).json()
    kinds = [e["kind"] for e in detail["timeline"]]
    assert "handoff" in kinds and "tool_call" in kinds and detail["current_agent"] == "billing"
    assert [e["at"] for e in detail["timeline"]] == sorted(e["at"] for e in detail["timeline"])

    url = f"/admin/conversations/{c['time']}/transcript"
    as_json = await http.get(url)
    assert as_json.headers["content-type"].startswith("application/json")
    entries = as_json.json()["entries"]
    assert as_json.json()["conversation"]["id"] == c["time"]
    assert [e["role"] for e in entries] == ["user", "tool", "assistant", "user", "tool",
                                            "assistant"]
    assert entries[0]["text"] == "What time is it in Tokyo?"
    assert entries[1]["tool"] == "get_current_time" and "Asia/Tokyo" in entries[1]["output"]
    lines = (await http.get(url, params={"format": "jsonl"})).text.splitlines()
    assert [json.loads(line) for line in lines] == entries
    text = (await http.get(url, params={"format": "text"})).text
    assert "user: What time is it in Tokyo?" in text
    assert "time.get_current_time(" in text and "assistant: Tokyo time:" in text
    handoff_text = (await http.get(f"/admin/conversations/{c['handoff']}/transcript",
                                   params={"format": "text"})).text
    assert "handoff desk -> billing" in handoff_text
    assert (await http.get("/admin/conversations/nope/transcript")).status_code == 404
    assert (await http.get(url, params={"format": "pdf"})).status_code == 422


async def _erasure_keeps_a_tombstone(
    world: tuple[RunningServer, httpx.AsyncClient, dict[str, str]],
) -> None:
    server, http, c = world
    erased = await http.delete(f"/admin/conversations/{c['time']}")
    assert erased.status_code == 200, erased.text
    tomb = erased.json()
    assert tomb["id"] == c["time"] and tomb["erased_at"] is not None
    assert tomb["started_at"] and tomb["ended_at"] and tomb["tool_call_count"] == 2
    detail = (await http.get(f"/admin/conversations/{c['time']}")).json()
    assert [e for e in detail["timeline"] if e["kind"] == "item"] == []
    calls = [e for e in detail["timeline"] if e["kind"] == "tool_call"]
    assert len(calls) == 2 and all(e["arguments"] == "" and e["output"] is None for e in calls)
    assert "Tokyo" not in json.dumps(detail)
    assert await _list(http, q="tokyo") == []
    transcript = (await http.get(f"/admin/conversations/{c['time']}/transcript",
                                 params={"format": "text"})).text
    assert "Tokyo" not in transcript
    assert (await http.delete("/admin/conversations/nope")).status_code == 404
    # A live conversation cannot be erased while it is being recorded.
    async with connect(server.realtime_url("desk"), server.token) as live:
        await live.turn("hello")
        active = await _started(server, http, 5)
        assert (await http.delete(f"/admin/conversations/{active}")).status_code == 409


async def _tool_calls_and_stats(
    world: tuple[RunningServer, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, http, c = world
    calls = (await http.get("/admin/tool-calls")).json()["data"]
    # A handoff is a server-run call too (server `handoff`).
    assert [(t["server"], t["tool"], t["status"], t["agent"]) for t in calls] == [
        ("lab", "echo", "completed", "billing"), ("lab", "echo", "completed", "billing"),
        ("handoff", "transfer_to_billing", "completed", "desk"),
        ("lab", "fail", "failed", "desk"), ("time", "get_current_time", "completed", "desk"),
        ("time", "get_current_time", "completed", "desk")]
    assert calls[0]["conversation_id"] == c["handoff"] and calls[0]["agent"] == "billing"
    filters: list[tuple[dict[str, Any], int]] = [
        ({"tool": "get_current_time"}, 2), ({"server": "lab"}, 3), ({"agent": "billing"}, 2),
        ({"status": "failed"}, 1), ({"since": calls[1]["started_at"]}, 2),
        ({"until": calls[1]["started_at"]}, 4), ({"conversation_id": c["time"]}, 2),
        ({"agent": "desk", "status": "completed"}, 3), ({"tool": "nope"}, 0),
    ]
    for params, count in filters:
        body = (await http.get("/admin/tool-calls", params=params)).json()
        assert len(body["data"]) == count, params
    paged: list[int] = []
    params: dict[str, Any] = {"limit": 3}
    for _ in range(5):
        body = (await http.get("/admin/tool-calls", params=params)).json()
        paged += [t["id"] for t in body["data"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": 3, "cursor": body["next_cursor"]}
    assert paged == [t["id"] for t in calls]
    assert (await http.get("/admin/tool-calls", params={"cursor": "x"})).status_code == 400

    tools = {(s["server"], s["tool"]): s for s in
             (await http.get("/admin/stats/tools")).json()["data"]}
    time_stats = tools[("time", "get_current_time")]
    durations = sorted(t["duration_ms"] for t in calls if t["tool"] == "get_current_time")
    assert (time_stats["calls"], time_stats["errors"], time_stats["error_rate"]) == (2, 0, 0.0)
    # Nearest rank of two values: p50 is the smaller, p95 the larger.
    assert math.isclose(time_stats["p50_ms"], durations[0])
    assert math.isclose(time_stats["p95_ms"], durations[1])
    assert (tools[("lab", "fail")]["errors"], tools[("lab", "fail")]["error_rate"]) == (1, 1.0)
    # A bounded window is ranked in one query on SQLite: the same answers.
    bounded = (await http.get("/admin/stats/tools", params={"since": "2000-01-01T00:00:00Z"}))
    assert bounded.json()["data"] == list(tools.values())
    empty = await http.get("/admin/stats/tools", params={"since": "2999-01-01T00:00:00Z"})
    assert empty.json()["data"] == []

    agents = {a["agent"]: a for a in (await http.get("/admin/stats/agents")).json()["data"]}
    desk, billing = agents["desk"], agents["billing"]
    assert (desk["conversations"], billing["conversations"]) == (3, 1)
    assert (desk["tool_calls"], desk["tool_errors"], billing["tool_calls"]) == (4, 1, 2)
    assert desk["responses"] >= 5 and desk["failed_responses"] == 0
    assert desk["first_output_p50_ms"] is not None
    assert desk["first_output_p50_ms"] <= desk["first_output_p95_ms"]
    tokens = desk["tokens"]
    assert tokens["input_text_tokens"] > 0 and tokens["output_text_tokens"] > 0
    assert tokens["input_tokens"] == tokens["input_text_tokens"] + tokens["input_audio_tokens"]
    assert tokens["output_audio_tokens"] == 0  # the sessions were text-only
    window = {"since": "2999-01-01T00:00:00Z"}
    assert (await http.get("/admin/stats/agents", params=window)).json()["data"] == []


async def test_audit_api(world: tuple[RunningServer, httpx.AsyncClient, dict[str, str]]) -> None:
    """One recorded world per backend (building it is the costly part); erasure goes last."""
    await _conversation_filters(world)
    await _pagination_timeline_and_transcripts(world)
    await _tool_calls_and_stats(world)
    await _erasure_keeps_a_tombstone(world)
