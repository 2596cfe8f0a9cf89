"""The realtime session against the real server: tool errors, restarts, malformed frames,
presentation modes, client tools, session policy, auth, handoffs and the openai provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from orchestrator.upstream.sandbox import SandboxHandle, start_sandbox
from tests.events import timeline
from tests.realtime_client import Event, connect, text_of
from tests.server import REPO, RunningServer, serve

AGENTS = REPO / "tests" / "fixtures" / "e2e"
TIMEOUT = 30


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxHandle]:
    """The scripted model served over WebSocket: the upstream of the `relay` agent."""
    handle = await start_sandbox(agents_dir=AGENTS)
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.fixture
async def server(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 sandbox: SandboxHandle) -> AsyncIterator[RunningServer]:
    """The real server on the e2e agents, with a sandbox for the `relay` agent, on each database."""
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    monkeypatch.setenv("SANDBOX_URL", f"ws://127.0.0.1:{sandbox.port}/v1")
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", "key-one,key-two")
    async with serve(database_url, tmp_path, agents_dir=AGENTS) as running:
        yield running


def mcp_items(events: list[Event]) -> list[dict[str, Any]]:
    """The finished `mcp_call` items of a turn."""
    return [e["item"] for e in events
            if e["type"] == "conversation.item.done" and e["item"]["type"] == "mcp_call"]


def no_function_items(events: list[Event]) -> bool:
    """True if no upstream function call/output item or argument event reached the client."""
    return not any(
        e.get("item", {}).get("type") in ("function_call", "function_call_output")
        or e["type"].startswith("response.function_call_arguments") for e in events)


async def test_tool_error_reaches_the_model_as_an_error_output(server: RunningServer) -> None:
    async with connect(server.realtime_url("front"), server.token) as client:
        events = await client.turn("the tool is broken")
    [call] = mcp_items(events)
    assert call["name"] == "fail"
    assert call["error"]["type"] == "tool_execution_error"
    assert "printer is on fire" in call["error"]["message"]
    assert any(e["type"] == "response.mcp_call.failed" for e in events)
    assert "the printer is on fire" in text_of(events)
    assert no_function_items(events)
    record = await timeline(server)
    [row] = [e for e in record["timeline"] if e["kind"] == "tool_call"]
    assert row["status"] == "failed" and "printer is on fire" in row["error"]


async def test_killed_mcp_server_is_restarted_and_next_call_succeeds(
        server: RunningServer) -> None:
    async with connect(server.realtime_url("front"), server.token) as client:
        first = mcp_items(await client.turn("your pid please"))[0]
        crashed = mcp_items(await client.turn("crash now"))[0]
        second = mcp_items(await client.turn("and your pid again"))[0]
    assert "error" not in first and "error" in crashed
    assert "error" not in second, second
    assert int(second["output"]) != int(first["output"])
    lab = next(s for s in server.services.pool.status() if s.name == "lab")
    assert lab.restarts >= 1 and lab.connected


async def test_malformed_client_frames_get_errors_and_the_session_goes_on(
        server: RunningServer) -> None:
    bad_frames: list[tuple[str | bytes, str]] = [
        ("this is not json", "invalid_json"),
        ("[1, 2, 3]", "invalid_event"),
        ('{"type": 5, "event_id": "e1"}', "missing_required_parameter"),
        ('{"type": "no.such.event", "event_id": "e2"}', "invalid_event"),
        (b"\xff\xfe binary", "invalid_json"),
        ('{"type": "session.update", "event_id": "e3", "session": "nope"}', "invalid_value"),
        ('{"type": "session.update", "event_id": "e4", "session": {"instructions": "x"}}',
         "missing_required_parameter"),
    ]
    async with connect(server.realtime_url("front"), server.token) as client:
        for frame, code in bad_frames:
            await client.send(frame) if isinstance(frame, str) else await client.ws.send(frame)
            [error] = await client.until_type("error")
            assert error["error"]["code"] == code, (frame, error)
            sent = json.loads(frame) if isinstance(frame, str) and frame.startswith("{") else {}
            assert error["error"]["event_id"] == sent.get("event_id")
        events = await client.turn("what time is it in tokyo")
    assert "Tokyo time:" in text_of(events)


async def test_tool_events_none_hides_server_calls(server: RunningServer) -> None:
    url = server.realtime_url("front") + "&tool_events=none"
    async with connect(url, server.token) as client:
        await client.say("what time is it in tokyo")
        # With no mcp_call shown, the turn is two responses; wait for the one with text.
        events = await client.until(
            lambda e: e["type"] == "response.done" and bool(e["response"]["output"]))
        if not text_of(events):
            events += await client.until_type("response.done")
    assert not any("mcp" in e["type"] or e.get("item", {}).get("type") == "mcp_call"
                   for e in events)
    assert no_function_items(events)
    assert "Tokyo time:" in text_of(events)
    for event in events:
        if event["type"] == "response.done":
            assert all(i["type"] == "message" for i in event["response"]["output"])


async def test_client_declared_tool_is_passed_through(server: RunningServer) -> None:
    weather_tool = {"type": "function", "name": "get_weather", "description": "Weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    async with connect(server.realtime_url("front"), server.token) as client:
        await client.send({"type": "session.update",
                           "session": {"type": "realtime", "tools": [weather_tool]}})
        [*_, updated] = await client.until_type("session.updated")
        assert [t["name"] for t in updated["session"]["tools"]] == ["get_weather"]
        await client.say("what's the weather")
        events = await client.until_type("response.done")
        [done] = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        assert done["name"] == "get_weather"
        await client.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": done["call_id"], "output": "sunny, 21C"}})
        await client.send({"type": "response.create"})
        events = await client.until(
            lambda e: e["type"] == "response.done" and bool(e["response"]["output"])
            and e["response"]["output"][0]["type"] == "message")
    assert "Weather: sunny, 21C" in text_of(events)


async def test_client_update_cannot_replace_instructions_or_drop_agent_tools(
        server: RunningServer) -> None:
    async with connect(server.realtime_url("front"), server.token) as client:
        await client.send({"type": "session.update", "session": {
            "type": "realtime", "instructions": "You are a pirate.", "tools": []}})
        [*_, updated] = await client.until_type("session.updated")
        assert updated["session"]["instructions"] == "You are the front desk."
        events = await client.turn("time in tokyo?")
    assert mcp_items(events)[0]["name"] == "get_current_time"
    assert "Tokyo time:" in text_of(events)


async def test_client_cannot_answer_a_server_call(server: RunningServer) -> None:
    async with connect(server.realtime_url("front"), server.token) as client:
        events = await client.turn("time in tokyo?")
        call_id = None
        for event in events:
            if event["type"] == "response.done":
                for item in event["response"]["output"]:
                    if item["type"] == "mcp_call":
                        call_id = item["id"]
        assert call_id is not None
        # The client only knows the item id; a forged output for the upstream call is refused.
        record_call = next(iter(server.services.live_sessions))
        upstream_call_id = next(iter(record_call.tools.policy.call_ids))  # type: ignore[attr-defined]
        await client.send({"type": "conversation.item.create", "event_id": "forged", "item": {
            "type": "function_call_output", "call_id": upstream_call_id, "output": "lies"}})
        [error] = await client.until_type("error")
    assert error["error"]["event_id"] == "forged"
    assert error["error"]["param"] == "item.call_id"


async def test_metadata_is_echoed_and_client_item_ids_are_kept(server: RunningServer) -> None:
    async with connect(server.realtime_url("front"), server.token) as client:
        await client.send({"type": "conversation.item.create", "previous_item_id": "root", "item": {
            "id": "item_client_1", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "hello"}]}})
        [*_, added] = await client.until_type("conversation.item.added")
        assert added["item"]["id"] == "item_client_1"
        await client.send({"type": "response.create",
                           "response": {"metadata": {"client_event_id": "abc"}}})
        [*_, created] = await client.until_type("response.created")
        [*_, done] = await client.until_type("response.done")
    assert created["response"]["metadata"] == {"client_event_id": "abc"}
    assert done["response"]["metadata"] == {"client_event_id": "abc"}


async def test_auth_header_subprotocol_and_api_keys(server: RunningServer) -> None:
    url = server.realtime_url("front")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 403
    async with connect(url, None, subprotocols=["realtime", "openai-insecure-api-key.key-two"]
                       ) as client:
        assert client.ws.subprotocol == "realtime"
    async with connect(url, "key-one") as client:
        assert "Front desk here." in text_of(await client.turn("anything"))
    alias = f"ws://127.0.0.1:{server.port}/v1/realtime?agent=billing"  # `agent=` is an alias
    async with connect(alias, "key-two") as client:
        assert "Billing desk here." in text_of(await client.turn("anything"))


async def test_unknown_agent_gets_an_error_event(server: RunningServer) -> None:
    async with websockets.connect(
            server.realtime_url("nobody"),
            additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert error["type"] == "error" and error["error"]["code"] == "model_not_found"
        assert "front" in error["error"]["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)


async def test_handoff_switches_agent_within_the_session(server: RunningServer) -> None:
    async with connect(server.realtime_url("front"), server.token) as client:
        events = await client.turn("I want a refund")
    calls = mcp_items(events)
    assert [(c["server_label"], c["name"]) for c in calls] == [
        ("handoff", "transfer_to_billing"), ("lab", "echo")]
    assert json.loads(calls[0]["output"]) == {"transferred_to": "billing"}
    types = [e["type"] for e in events]
    updated = [i for i, t in enumerate(types) if t == "session.updated"]
    assert updated, "the client is told about the new agent's session"
    assert events[updated[0]]["session"]["instructions"].startswith("You are the billing desk")
    second_created = [i for i, t in enumerate(types) if t == "response.created"][1]
    assert updated[0] < second_created
    assert "Billing here: refund-policy-3-days" in text_of(events)
    record = await timeline(server)
    assert record["current_agent"] == "billing"
    [handoff] = [e for e in record["timeline"] if e["kind"] == "handoff"]
    assert (handoff["from_agent"], handoff["to_agent"]) == ("front", "billing")
    echo = next(e for e in record["timeline"] if e["kind"] == "tool_call" and e["tool"] == "echo")
    assert echo["agent"] == "billing"
    said = [e for e in record["timeline"] if e.get("role") == "assistant"]
    assert said[-1]["agent"] == "billing"


async def test_openai_provider_through_a_real_socket(server: RunningServer) -> None:
    async with connect(server.realtime_url("relay"), server.token) as client:
        events = await client.turn("what time is it in tokyo")
    [call] = mcp_items(events)
    assert (call["server_label"], call["name"]) == ("time", "get_current_time")
    output = json.loads(call["output"])
    assert output["timezone"] == "Asia/Tokyo"
    assert f"Tokyo time: {call['output']}" in text_of(events)
    record = await timeline(server)
    assert record["agent"] == "relay"
    assert [e["tool"] for e in record["timeline"] if e["kind"] == "tool_call"] == [
        "get_current_time"]


async def test_client_disconnect_mid_tool_call_is_recorded(server: RunningServer) -> None:
    async with connect(server.realtime_url("front"), server.token) as client:
        await client.say("something slow please")  # a 20 s tool; we leave while it runs
        await client.until_type("response.mcp_call.in_progress")
    record = await timeline(server)
    assert record["end_reason"] == "client_closed"
    [call] = [e for e in record["timeline"] if e["kind"] == "tool_call"]
    assert (call["tool"], call["status"], call["error"]) == ("slow", "failed", "cancelled")
    assert call["duration_ms"] < 15_000




async def test_audio_in_and_out_are_relayed_and_transcripts_recorded(
        server: RunningServer) -> None:
    silence = "AAAA" * 4000  # 12,000 bytes of PCM16 = 250 ms at 24 kHz
    async with connect(server.realtime_url("front"), server.token, text_only=False) as client:
        await client.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await client.until_type("session.updated")
        for _ in range(3):
            await client.send({"type": "input_audio_buffer.append", "audio": silence})
        await client.send({"type": "input_audio_buffer.commit"})
        await client.send({"type": "response.create"})
        events = await client.until_type("response.done")
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "time in tokyo"}]}})
        await client.send({"type": "response.create"})
        events += await client.until(lambda e: e["type"] == "response.done" and not any(
            i["type"] == "mcp_call" for i in e["response"]["output"]))
    types = [e["type"] for e in events]
    assert "input_audio_buffer.committed" in types
    assert types.count("response.output_audio.delta") >= 2
    transcript = "".join(e["delta"] for e in events
                         if e["type"] == "response.output_audio_transcript.delta")
    assert "Front desk here." in transcript and "Tokyo time:" in transcript
    record = await timeline(server)
    said = [e["text"] for e in record["timeline"] if e.get("role") == "assistant"]
    assert said[0] == "Front desk here." and said[-1].startswith("Tokyo time:")
    users = [e for e in record["timeline"] if e.get("role") == "user"]
    assert users[0]["type"] == "message" and users[0]["text"] is None  # audio, no transcript


async def test_unreachable_upstream_gets_a_clear_error(server: RunningServer) -> None:
    async with websockets.connect(
            server.realtime_url("unreachable"),
            additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert error["type"] == "error" and error["error"]["code"] == "upstream_unavailable"
        assert "nothing-listens-here" not in json.dumps(error)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1011


async def test_upstream_dropping_mid_session_ends_it_cleanly_and_is_recorded(
        server: RunningServer, sandbox: SandboxHandle) -> None:
    async with connect(server.realtime_url("relay"), server.token) as client:
        first = await client.turn("what time is it in tokyo")
        assert "Tokyo time:" in text_of(first)
        await sandbox.aclose()  # the model server goes away
        events = await client.until(lambda e: e["type"] == "error")
        assert events[-1]["error"]["code"] == "upstream_closed"
        with pytest.raises(websockets.ConnectionClosed):
            await client.recv()
    record = await timeline(server)
    # The sandbox closed with 1000: a clean end, but the conversation ended upstream.
    assert (record["status"], record["end_reason"]) == ("completed", "upstream_closed")
    assert [e["tool"] for e in record["timeline"] if e["kind"] == "tool_call"] == [
        "get_current_time"]
    assert any(e.get("role") == "assistant" and "Tokyo time:" in (e["text"] or "")
               for e in record["timeline"])
