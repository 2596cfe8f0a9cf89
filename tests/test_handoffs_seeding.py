"""The seeding of a new upstream session (orchestrator/realtime/seeding.py), against the
scripted model as the new upstream: what carries over, and what the upstream then holds."""

from __future__ import annotations

import json

import pytest

from orchestrator.agents.spec import ScriptRule
from orchestrator.errors import UpstreamError
from orchestrator.realtime.seeding import History, seed, seed_item
from orchestrator.upstream.scripted import ScriptedUpstream


def test_history_keeps_text_calls_and_outputs_in_order_within_its_bound() -> None:
    history = History(limit=5)
    history.observe({"id": "i1", "type": "message", "role": "user",
                     "content": [{"type": "input_audio", "transcript": None}]})
    history.observe({"id": "i2", "type": "message", "role": "user",
                     "content": [{"type": "input_audio", "transcript": "hello there"}]})
    history.observe({"id": "i3", "type": "function_call", "call_id": "c1", "name": "echo",
                     "arguments": '{"text":"x"}', "status": "completed"})
    history.observe({"id": "i4", "type": "function_call_output", "call_id": "c1", "output": "x"})
    history.observe({"id": "i5", "type": "message", "role": "assistant", "status": "completed",
                     "content": [{"type": "output_audio", "transcript": "It says x."}]})
    history.observe({"id": "i6", "type": "mcp_call", "server_label": "s", "name": "n",
                     "arguments": "{}"})  # not an upstream item: ignored
    # i1 keeps its place, but has nothing to say until its transcript arrives.
    assert [i["id"] for i in history.items()] == ["i2", "i3", "i4", "i5"]
    history.transcript("i1", "first words")
    history.transcript("i2", "ignored: i2 had its own")
    items = history.items()
    assert [i["id"] for i in items] == ["i1", "i2", "i3", "i4", "i5"]
    assert [i["content"] for i in items[:2]] == [
        [{"type": "input_text", "text": "first words"}],
        [{"type": "input_text", "text": "hello there"}]]
    assert items[2] == {"type": "function_call", "call_id": "c1", "name": "echo",
                        "arguments": '{"text":"x"}', "id": "i3"}
    assert items[4]["content"] == [{"type": "output_text", "text": "It says x."}]
    history.observe({"id": "i7", "type": "function_call_output", "call_id": "c2", "output": "y"})
    assert [i["id"] for i in history.items()] == ["i2", "i3", "i4", "i5", "i7"]  # bound: 5
    assert seed_item({"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}) == {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "a b"}]}


async def test_seeded_scripted_upstream_holds_the_conversation() -> None:
    upstream = ScriptedUpstream([ScriptRule(say="Seeded.")])
    items = [
        {"id": "item_u1", "type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "What time is it?"}]},
        {"id": "item_c1", "type": "function_call", "call_id": "call_1", "name": "clock",
         "arguments": "{}"},
        {"id": "item_o1", "type": "function_call_output", "call_id": "call_1", "output": "9pm"},
    ]
    try:
        shown = await seed(upstream, {"type": "realtime", "instructions": "You are new."},
                           items, timeout_s=10)
        assert shown["instructions"] == "You are new."
        await upstream.send(json.dumps({"type": "conversation.item.retrieve",
                                        "item_id": "item_o1"}))
        retrieved = json.loads(await upstream.recv())
    finally:
        await upstream.aclose()
    assert retrieved["type"] == "conversation.item.retrieved"
    assert (retrieved["item"]["call_id"], retrieved["item"]["output"]) == ("call_1", "9pm")


async def test_a_refused_seed_is_an_upstream_error() -> None:
    upstream = ScriptedUpstream([])
    try:
        with pytest.raises(UpstreamError, match="refused the seeding"):
            await seed(upstream, {"type": "realtime"}, [
                {"id": "item_a", "type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "one"}]},
                {"id": "item_b", "type": "message", "role": "robot",
                 "content": [{"type": "input_text", "text": "no such role"}]},
            ], timeout_s=10)
    finally:
        await upstream.aclose()
