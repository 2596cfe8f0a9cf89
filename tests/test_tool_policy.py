"""Tool policy and its guarantees (issue 3): allow/deny, names the agent does not have,
arguments checked against the tool's input schema and size limits, a call id run at most once.

Each test asserts the output the model saw (the scripted model says it back) and the recorded
`tool_calls` row, on SQLite and PostgreSQL. The agent is tests/fixtures/policy/guard.yaml.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agents.validate import validate_paths
from orchestrator.tools.policy import MAX_ARGUMENTS_BYTES, MAX_ARGUMENTS_DEPTH, parse_arguments
from tests.events import is_final_done, timeline, tool_rows
from tests.fake_upstream import POLICY_AGENTS
from tests.realtime_client import Event, connect, text_of
from tests.server import REPO, RunningServer, serve
from tests.wire import assert_response_flow


@pytest.fixture
async def server(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 ) -> AsyncIterator[RunningServer]:
    """The real server on the policy agents, on each database."""
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    async with serve(database_url, tmp_path, agents_dir=POLICY_AGENTS) as running:
        yield running


def said_output(events: list[Event], prefix: str) -> dict[str, Any]:
    """The JSON output the model said back after `prefix` (its rules say `prefix {output}`)."""
    text = text_of(events)
    assert text.startswith(prefix), text
    return json.loads(text[len(prefix):])


async def test_refused_calls_reach_the_model_and_the_record(server: RunningServer) -> None:
    """Deny, unknown name, schema, not JSON, duplicate call_id: one conversation (one server
    start per database keeps the suite short), each refusal asserted on its own turn."""
    async with connect(server.realtime_url("guard"), server.token) as client:
        denied = await client.turn("crash the server")
        unknown = await client.turn("call the ghost")
        schema = await client.turn("bad arguments please")
        broken = await client.turn("not json either")
        first = await client.turn("tally again")
        second = await client.turn("tally again")  # the model repeats the same call_id
        after = await client.turn("count")
    # Allow/deny: never executed, whatever the name; the model and the client are told.
    assert "denied to agent 'guard'" in said_output(denied, "Crash: ")["error"]
    assert "not a tool of agent 'guard'" in said_output(unknown, "Ghost: ")["error"]
    refused = [i for e in denied + unknown if e["type"] == "conversation.item.done"
               for i in [e["item"]] if i["type"] == "mcp_call"]
    assert [(c["server_label"], c["error"]["type"]) for c in refused] == [
        ("policy", "tool_execution_error")] * 2
    lab = next(s for s in server.services.pool.status() if s.name == "lab")
    assert lab.restarts == 0  # `crash` would have killed it
    # Schema validation and unparsable arguments: the validation message reaches the model.
    assert "invalid arguments for 'echo'" in said_output(schema, "Bad: ")["error"]
    assert "5 is not of type 'string'" in said_output(schema, "Bad: ")["error"]
    assert "not valid JSON" in said_output(broken, "Broken: ")["error"]
    # Duplicate call_id: run once; the repeat is refused and never reaches the server.
    assert text_of(first) == "Tally: 1"
    assert "call_id call_fixed_1 was already executed" in said_output(second, "Tally: ")["error"]
    assert text_of(after) == "Count: 2"
    rows = tool_rows(await timeline(server))
    assert [(r["tool"], r["server"], r["status"]) for r in rows] == [
        ("crash", "policy", "denied"), ("ghost_tool", "policy", "unknown"),
        ("echo", "lab", "invalid_arguments"), ("echo", "lab", "invalid_arguments"),
        ("tally", "lab", "completed"), ("tally", "lab", "duplicate"),
        ("tally", "lab", "completed")]
    assert all("was not run" in r["error"] for r in rows[:2])
    assert "not of type 'string'" in rows[2]["error"]
    assert [r["call_id"] for r in rows[4:6]] == ["call_fixed_1", "call_fixed_1#duplicate-1"]


def test_oversized_and_deeply_nested_arguments_are_refused() -> None:
    assert parse_arguments('{"text": "' + "x" * MAX_ARGUMENTS_BYTES + '"}') == (
        f"arguments exceed {MAX_ARGUMENTS_BYTES} bytes")
    deep = '{"a": ' * (MAX_ARGUMENTS_DEPTH + 1) + "1" + "}" * (MAX_ARGUMENTS_DEPTH + 1)
    assert parse_arguments(deep) == f"arguments are nested deeper than {MAX_ARGUMENTS_DEPTH} levels"
    abyss = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser's recursion limit
    assert parse_arguments('{"a": ' + abyss + "}") == (
        f"arguments are nested deeper than {MAX_ARGUMENTS_DEPTH} levels")
    assert parse_arguments('{"a": {"b": [1, 2]}}') == {"a": {"b": [1, 2]}}
    assert parse_arguments("[1]") == "arguments must be a JSON object"


async def test_filler_line_while_a_long_tool_runs(server: RunningServer) -> None:
    async with connect(server.realtime_url("guard"), server.token) as client:
        await client.say("answer slowly")
        events = await client.until(lambda e: is_final_done(e, "Finally"))
    types = [e["type"] for e in events]
    filler = next(i for i, e in enumerate(events) if e["type"] == "response.output_text.done"
                  and e["text"] == "One moment please.")
    assert filler < types.index("response.mcp_call.completed")
    assert text_of(events) == "One moment please.Finally: slept 0.8"
    assert_response_flow(events)
    assert types.count("response.created") == 3  # the call, the filler, the continuation
    record = await timeline(server)
    [row] = tool_rows(record)
    assert (row["tool"], row["status"]) == ("slow", "completed")
    assert [e["kind"] for e in record["timeline"]].count("response") == 3


async def test_policy_fields_are_validated_at_their_line(tmp_path: Path) -> None:
    (tmp_path / "mcp_servers.yaml").write_text("mcp_servers:\n  lab:\n    command: [python]\n")
    (tmp_path / "fenced.yaml").write_text(
        "name: fenced\nmodel: scripted\ntools:\n"
        "  - mcp: lab\n    allow: [echo]\n    deny: [echo]\n"
        "  - mcp: lab\n    prefix: x_\n    require_approval: sometimes\n"
        "    approval_timeout_s: 0\n    filler: ''\n")
    found = [str(p) for p in await validate_paths([tmp_path], check_mcp=False)]
    where = tmp_path / "fenced.yaml"
    assert found == [
        f"{where}:4:5: field 'tools[0]': tools both allowed and denied: echo",
        f"{where}:9:23: field 'tools[1].require_approval': must be a list of tool names or "
        "`always`",
        f"{where}:10:25: field 'tools[1].approval_timeout_s': Input should be greater than 0",
        f"{where}:11:13: field 'tools[1].filler': String should have at least 1 character",
    ]
