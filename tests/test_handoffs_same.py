"""Handoffs within one upstream session (issue 3): with the official `openai` SDK client, the
lobby hands a Tokyo question to the clock, whose own tool answers it; a handoff requested next
to a slower call of the same response; the OpenAI Agents SDK through a handoff.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.clients.launcher import run_driver
from tests.clients.venvs import ensure_venv
from tests.conftest import sqlite_url
from tests.events import is_final_done, timeline, tool_rows
from tests.fake_upstream import (
    POLICY_AGENTS,
    SENTINEL,
    Cross,
    cross,
    seeded_until_response,
    upstream_until_sentinel,
)
from tests.realtime_client import connect, text_of
from tests.server import REPO, RunningServer, serve
from tests.test_tool_policy import server
from tests.wire import assert_response_flow, validate_server_event

__all__ = ["cross", "server"]  # fixtures
TIMEOUT = 30
ANSWER = "Here is the time in Tokyo: nine in the evening"


async def _until_answer(conn: Any) -> list[dict[str, Any]]:
    """Raw server events (each validated) up to the response.done of the clock's answer."""
    frames: list[dict[str, Any]] = []
    while not (frames and is_final_done(frames[-1], ANSWER)):
        raw = await asyncio.wait_for(conn.recv_bytes(), TIMEOUT)
        validate_server_event(raw)
        frames.append(json.loads(raw))
    return frames


async def test_openai_sdk_conversation_through_a_handoff(server: RunningServer) -> None:
    client = AsyncOpenAI(base_url=f"{server.http}/v1", api_key=server.token)
    async with client.realtime.connect(model="lobby") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What time is it in Tokyo?"}]})
        await conn.response.create()
        frames = await _until_answer(conn)
    assert "error" not in [f["type"] for f in frames]
    assert_response_flow([f for f in frames if f["type"] != "session.created"])
    calls = [(f["item"]["name"], i) for i, f in enumerate(frames)
             if f["type"] == "conversation.item.done" and f["item"]["type"] == "mcp_call"]
    assert [name for name, _ in calls] == ["transfer_to_clock", "echo"]
    switched = next(i for i, f in enumerate(frames) if f["type"] == "session.updated"
                    and f["session"]["instructions"] == "You are the clock desk.")
    clock_created = max(i for i, f in enumerate(frames[:calls[1][1]])
                        if f["type"] == "response.created")
    assert calls[0][1] < switched < clock_created  # new agent in place before it answers
    assert text_of(frames) == ANSWER
    record = await timeline(server)
    [edge] = [e for e in record["timeline"] if e["kind"] == "handoff"]
    assert (edge["from_agent"], edge["to_agent"], edge["call_id"]) == (
        "lobby", "clock", tool_rows(record)[0]["call_id"])
    produced = [(e["type"], e.get("role"), e["agent"]) for e in record["timeline"]
                if e["kind"] == "item"]
    assert produced == [
        ("message", "user", "lobby"),
        ("function_call", None, "lobby"), ("function_call_output", None, "lobby"),
        ("function_call", None, "clock"), ("function_call_output", None, "clock"),
        ("message", "assistant", "clock"),
    ]
    assert [(r["tool"], r["agent"], r["status"]) for r in tool_rows(record)] == [
        ("transfer_to_clock", "lobby", "completed"), ("echo", "clock", "completed")]
    assert (record["agent"], record["current_agent"]) == ("lobby", "clock")


async def test_handoff_next_to_a_running_call(cross: Cross) -> None:
    """A slow call and a handoff in one response: the handoff's session.update goes first,
    then both outputs in call order, then exactly one response.create."""
    server = cross.server
    async with connect(server.realtime_url("remote"), server.token, text_only=False) as client:
        up = await cross.upstream()
        await client.say("do both")
        rid = await up.turn()
        slow = await up.call(rid, 0, "slow", '{"seconds": 0.5}')
        handoff = await up.call(rid, 1, "transfer_to_remote_b", '{"reason": "billing"}')
        await up.end(rid, [slow, handoff])
        update = await up.expect("session.update")
        await up.update(update)
        outputs = await seeded_until_response(up)
        reply = await up.begin()
        await up.end(reply, [await up.say(reply, 0, "Second desk here.")])
        await client.until(lambda e: is_final_done(e, "Second desk here."))
        await client.send(SENTINEL)
        extra = await upstream_until_sentinel(up)
    assert update["session"]["instructions"] == "You are the second remote desk."
    assert [t["name"] for t in update["session"]["tools"]] == ["echo"]
    assert [(o["call_id"], o["output"]) for o in outputs] == [
        (slow["call_id"], "slept 0.5"), (handoff["call_id"], '{"transferred_to":"remote-b"}')]
    assert extra == []  # no second response.create
    record = await timeline(server)
    [edge] = [e for e in record["timeline"] if e["kind"] == "handoff"]
    assert (edge["from_agent"], edge["to_agent"], edge["reason"]) == (
        "remote", "remote-b", "billing")


@pytest.fixture
async def sqlite_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        ) -> AsyncIterator[RunningServer]:
    """The policy agents on SQLite only (a client-compatibility test: the rows are asserted
    on both databases by the tests above)."""
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    async with serve(sqlite_url(tmp_path / "o.db"), tmp_path, agents_dir=POLICY_AGENTS) as running:
        yield running


@pytest.mark.slow
async def test_agents_sdk_through_a_handoff(sqlite_server: RunningServer) -> None:
    server = sqlite_server
    venv = await asyncio.to_thread(ensure_venv, "agents_sdk")
    result = await run_driver(venv.python, "agents_sdk_driver.py",
                              server.realtime_url("lobby"), server.token)
    report = result.report
    assert (result.returncode, report.get("exception"), report.get("timed_out")) == (
        0, None, False), result.describe()
    assert report.get("errors") == [] and report.get("error_logs") == [], result.describe()
    assert report.get("reply") == ANSWER, result.describe()
    assert "error" not in report["extra"]["server_event_types"]
    record = await timeline(server)
    assert [(e["from_agent"], e["to_agent"]) for e in record["timeline"]
            if e["kind"] == "handoff"] == [("lobby", "clock")]


