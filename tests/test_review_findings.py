"""Adversarial review of the realtime relay: event order around server-run calls, the single
continuation `response.create`, client interference, `tool_events=none`, session updates,
recording, per-session state.

Two upstreams: the scripted model (agents `desk`, `desk2`), and a fake GA server written
frame by frame in each test (agents `fake`, `fakeb`, reached through the `openai` provider),
for model behaviour the scripted model cannot produce (several calls in one response, a
response the model starts by itself, refusals). The findings section holds the defects the
review found, now fixed, as regression tests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.realtime.protocol import sniff_type
from tests.events import index_of, is_final_done, no_function_items, of_type, timeline
from tests.fake_upstream import SENTINEL, Review, upstream_until_sentinel
from tests.fake_upstream import review as review  # the fixture
from tests.realtime_client import Event, text_of
from tests.wire import assert_response_flow

# --- regression tests: behaviour that is right today ----------------------------------------


async def test_two_server_calls_and_a_message_in_one_response(review: Review) -> None:
    """Two calls then a message in one response: strict order, one continuation, records."""
    async with review.client("fake") as client:
        up = await review.upstream()
        await client.say("check a and b")
        rid = await up.turn()
        first = await up.call(rid, 0, "echo", '{"text": "alpha"}')
        second = await up.call(rid, 1, "echo", '{"text": "beta"}')
        said = await up.say(rid, 2, "Checking both.")
        await up.end(rid, [first, second, said])
        outputs = [await up.expect("conversation.item.create") for _ in range(2)]
        assert {o["item"]["call_id"] for o in outputs} == {first["call_id"], second["call_id"]}
        for output in outputs:
            await up.ack(output)
        await up.expect("response.create")
        rid2 = await up.begin()
        await up.end(rid2, [await up.say(rid2, 0, "alpha and beta.")])
        events = await client.until(lambda e: is_final_done(e, "alpha and beta."))
        await client.send(SENTINEL)
        assert await upstream_until_sentinel(up) == [], "nothing more after the continuation"
    assert_response_flow(events)
    assert no_function_items(events)
    done = [e["item"] for e in of_type(events, "conversation.item.done")
            if e["item"]["type"] == "mcp_call"]
    assert [(c["id"], c["output"]) for c in done] == [
        (first["id"], "alpha"), (second["id"], "beta")]
    for call in (first, second):
        completed = index_of(events, lambda e, c=call: e["type"] == "response.mcp_call.completed"
                             and e["item_id"] == c["id"])
        item_done = index_of(events, lambda e, c=call: e["type"] == "conversation.item.done"
                             and e["item"]["id"] == c["id"])
        assert completed < item_done
    record = await timeline(review.server)
    kinds = [(e["kind"], e.get("type")) for e in record["timeline"] if e["kind"] == "item"]
    assert kinds.count(("item", "function_call")) == 2
    assert kinds.count(("item", "function_call_output")) == 2
    assert kinds.count(("item", "message")) == 3
    assert len([e for e in record["timeline"] if e["kind"] == "tool_call"]) == 2
    responses = [e for e in record["timeline"] if e["kind"] == "response"]
    assert len(responses) == 2 and responses[1]["first_output_latency_ms"] is not None


async def test_client_tool_and_server_tool_in_one_response(review: Review) -> None:
    """A response with a client call and a server call: no continuation of ours; the client's
    own `response.create` follows the server call's output, exactly once."""
    lookup: dict[str, Any] = {
        "type": "function", "name": "lookup", "description": "Client-side lookup",
        "parameters": {"type": "object", "properties": {}}}
    async with review.client("fake") as client:
        up = await review.upstream()
        await client.send({"type": "session.update",
                           "session": {"type": "realtime", "tools": [lookup]}})
        await up.update(await up.expect("session.update"))
        await client.until_type("session.updated")
        await client.say("both kinds")
        rid = await up.turn()
        server_call = await up.call(rid, 0, "echo", '{"text": "srv"}')
        client_call = await up.call(rid, 1, "lookup", "{}")
        await up.end(rid, [server_call, client_call])
        events = await client.until_type("response.done")
        [args_done] = of_type(events, "response.function_call_arguments.done")
        assert args_done["name"] == "lookup"
        await client.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": args_done["call_id"], "output": "found"}})
        await client.send({"type": "response.create"})
        await client.send(SENTINEL)
        relayed = await upstream_until_sentinel(up)
    kinds = [(e["type"], e.get("item", {}).get("call_id")) for e in relayed]
    assert sorted(kinds[:2]) == sorted([
        ("conversation.item.create", server_call["call_id"]),
        ("conversation.item.create", client_call["call_id"])])
    assert kinds[2:] == [("response.create", None)]
    assert_response_flow(events)
    [mcp] = [i for i in events[-1]["response"]["output"] if i["type"] == "mcp_call"]
    assert mcp["output"] == "srv"


async def test_cancelled_response_with_unfinished_arguments(review: Review) -> None:
    """A call whose arguments never complete (response cancelled): nothing runs, no output or
    continuation is sent, the client's next `response.create` is not held."""
    async with review.client("fake") as client:
        up = await review.upstream()
        await client.say("start something")
        rid = await up.turn()
        partial = await up.call(rid, 0, "echo", '{"text": "never"}', complete=False)
        await up.end(rid, [partial], status="cancelled")
        events = await client.until_type("response.done")
        await client.say("something else")
        await client.send(SENTINEL)
        relayed = await upstream_until_sentinel(up)
    assert [e["type"] for e in relayed] == ["conversation.item.create", "response.create"]
    assert relayed[0]["item"]["type"] == "message"
    assert_response_flow(events)
    assert events[-1]["response"]["status"] == "cancelled"
    assert not of_type(events, "response.mcp_call.in_progress")
    record = await timeline(review.server)
    assert not [e for e in record["timeline"] if e["kind"] == "tool_call"]


async def test_client_response_create_during_a_server_call_is_held(review: Review) -> None:
    """A client `response.create` while a server call runs waits for the continuation: the
    client never gets `conversation_already_has_active_response`."""
    async with review.client("desk", text_only=True) as client:
        await client.say("something slow")
        events = await client.until_type("response.mcp_call.in_progress")
        await client.send({"type": "response.create", "event_id": "early"})
        events += await client.until(lambda e: is_final_done(e, "Desk here."))
    assert not of_type(events, "error")
    assert "Finally: slept 0.6" in text_of(events)
    assert len(of_type(events, "response.created")) == 3  # call, continuation, the client's
    assert_response_flow(events)


async def test_tool_events_none_hides_a_handoff_and_its_tools(review: Review) -> None:
    """`tool_events=none` across a handoff: no mcp/function frame, no server tool listed."""
    async with review.client("desk", "&tool_events=none", text_only=True) as client:
        await client.say("transfer me please")
        events = await client.until(lambda e: is_final_done(e, "Desk two here."))
    assert not any("mcp" in e["type"] or e.get("item", {}).get("type") == "mcp_call"
                   for e in events)
    assert no_function_items(events)
    [updated] = of_type(events, "session.updated")
    assert updated["session"]["instructions"] == "You are desk two."
    assert updated["session"]["tools"] == []
    assert_response_flow(events)


async def test_chained_calls_and_a_client_create_held_across_them(review: Review) -> None:
    """Calls chained over three responses: one continuation each; a client `response.create`
    sent meanwhile reaches the model only after the chain's last response."""
    async with review.client("fake") as client:
        up = await review.upstream()
        await client.say("chain")
        rid = await up.turn()
        await up.end(rid, [await up.call(rid, 0, "echo", '{"text": "one"}')])
        events = await client.until_type("response.mcp_call.in_progress")
        await client.send({"type": "response.create", "event_id": "mine"})
        creates: list[str | None] = []
        for index, text in enumerate(("two", "")):
            await up.ack(await up.expect("conversation.item.create"))
            creates.append((await up.expect("response.create")).get("event_id"))
            rid = await up.begin()
            if text:
                await up.end(rid, [await up.call(rid, 0, "echo", json.dumps({"text": text}))])
            else:
                await up.end(rid, [await up.say(rid, 0, f"Chain of {index + 1} done.")])
        creates.append((await up.expect("response.create")).get("event_id"))
        rid = await up.begin()
        await up.end(rid, [await up.say(rid, 0, "Again.")])
        events += await client.until(lambda e: is_final_done(e, "Again."))
    assert creates[2] == "mine" and "mine" not in creates[:2]
    assert not of_type(events, "error")
    assert_response_flow(events)


# --- findings of the relay review, all fixed ---------------------------------------------


async def test_continuation_waits_for_a_response_the_model_started(review: Review) -> None:
    async with review.client("fake") as client:
        up = await review.upstream()
        await client.say("slow one")
        rid = await up.turn()
        call = await up.call(rid, 0, "slow", '{"seconds": 0.5}')
        await up.end(rid, [call])
        # While the tool runs, the user speaks again and server VAD starts a response.
        vad = await up.begin()
        message = await up.open_message(vad, 0)
        await up.ack(await up.expect("conversation.item.create"))  # the tool's output
        await up.delta(vad, 0, message, "Yes?")
        await client.until_type("response.output_text.delta")
        await client.send(SENTINEL)
        relayed = await upstream_until_sentinel(up)
        assert [e["type"] for e in relayed] == [], "response.create sent while a response is active"
        await up.end(vad, [await up.close_message(vad, 0, message, "Yes?")])
        await up.expect("response.create")


async def test_refused_continuation_does_not_block_later_turns(review: Review) -> None:
    async with review.client("fake") as client:
        up = await review.upstream()
        await client.say("echo this")
        rid = await up.turn()
        call = await up.call(rid, 0, "echo", '{"text": "x"}')
        await up.end(rid, [call])
        await up.ack(await up.expect("conversation.item.create"))
        create = await up.expect("response.create")
        await up.emit("error", error={
            "type": "invalid_request_error", "code": "conversation_already_has_active_response",
            "message": "Conversation already has an active response in progress.",
            "param": None, "event_id": create["event_id"]})
        await client.until_type("response.done")
        await client.say("hello again")
        await client.send(SENTINEL)
        relayed = await upstream_until_sentinel(up)
    assert [e["type"] for e in relayed] == ["conversation.item.create", "response.create"]


async def test_handoff_refused_voice_change_still_switches_before_the_response(
        review: Review) -> None:
    async with review.client("fake") as client:
        up = await review.upstream()
        up.refuse_voice_change = True  # audio has been played: the voice is fixed
        await client.say("transfer me")
        rid = await up.turn()
        await up.end(rid, [await up.call(rid, 0, "transfer_to_fakeb", "{}")])
        while (event := await up.recv())["type"] != "response.create":
            if event["type"] == "session.update":
                await up.update(event)
            elif event["type"] == "conversation.item.create":
                await up.ack(event)
        assert up.session["instructions"] == "You are fake B."


async def test_refused_client_tools_do_not_poison_the_handoff(review: Review) -> None:
    bad_tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"},
                "bogus": True}
    async with review.client("desk", text_only=True) as client:
        await client.send({"type": "session.update", "event_id": "bad-tools",
                           "session": {"type": "realtime", "tools": [bad_tool]}})
        [*_, error] = await client.until_type("error")
        assert error["error"]["event_id"] == "bad-tools"
        await client.say("transfer me")
        await client.until(lambda e: is_final_done(e, "Desk two here."))
        await client.send({"type": "session.update", "session": {"type": "realtime"}})
        [*_, updated] = await client.until_type("session.updated")
    assert updated["session"]["instructions"] == "You are desk two."


async def test_continuation_keeps_the_client_response_overrides(review: Review) -> None:
    async with review.client("desk") as client:  # an audio session
        await client.say("echo please", output_modalities=["text"])
        events = await client.until(lambda e: is_final_done(e, "Echo: hi"))
    assert not of_type(events, "response.output_audio.delta")
    assert events[-1]["response"]["output_modalities"] == ["text"]


@pytest.mark.parametrize("query", ["", "&tool_events=none"])
async def test_previous_item_ids_refer_to_items_the_client_saw(review: Review, query: str,
                                                               ) -> None:
    async with review.client("desk", query, text_only=True) as client:
        await client.say("echo please")
        events = await client.until(lambda e: is_final_done(e, "Echo: hi"))
    shown = {e["item"]["id"] for e in events if e["type"] == "conversation.item.added"}
    dangling = [(e["item"]["id"], e["previous_item_id"]) for e in events
                if e["type"] == "conversation.item.added"
                and e.get("previous_item_id") not in (None, "root", *shown)]
    assert dangling == []


async def test_unrelated_frames_are_not_held_behind_a_running_tool(review: Review) -> None:
    async with review.client("desk", text_only=True) as client:
        await client.say("something slow")
        await client.until_type("response.mcp_call.in_progress")
        await client.send({"type": "conversation.item.create", "item": {
            "id": "item_meanwhile", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "are you there?"}]}})
        events = await client.until(lambda e: e["type"] == "conversation.item.added"
                                    and e["item"]["id"] == "item_meanwhile")
    assert not of_type(events, "response.mcp_call.completed")


async def test_error_for_a_client_update_without_event_id(review: Review) -> None:
    bad_tool = {"type": "function", "name": "lookup", "bogus": True}
    async with review.client("desk", text_only=True) as client:
        await client.send({"type": "session.update",
                           "session": {"type": "realtime", "tools": [bad_tool]}})
        [*_, error] = await client.until_type("error")
    assert error["error"]["code"] == "unknown_parameter"
    assert error["error"]["event_id"] is None


async def test_cancel_while_a_server_call_runs(review: Review) -> None:
    async with review.client("desk", text_only=True) as client:
        await client.say("something slow")
        events = await client.until_type("response.mcp_call.in_progress")
        await client.send({"type": "response.cancel", "event_id": "cancel-1"})
        events += await client.until_type("response.done")
        await client.send({"type": "conversation.item.retrieve", "event_id": "after",
                           "item_id": events[0]["item"]["id"]})
        events += await client.until_type("conversation.item.retrieved")
    refused = [e["error"]["code"] for e in of_type(events, "error")
               if e["error"]["event_id"] == "cancel-1"]
    continued = len(of_type(events, "response.created")) - 1
    assert (refused, continued) == ([], 0)


async def test_unhashable_client_tool_name_gets_an_error(review: Review) -> None:
    async with review.client("desk", text_only=True) as client:
        await client.send({"type": "session.update", "event_id": "odd-name", "session": {
            "type": "realtime", "tools": [{"type": "function", "name": ["x"]}]}})
        [*_, error] = await client.until_type("error")
        assert error["error"]["event_id"] == "odd-name"
        assert "Desk here." in text_of(await client.turn("hello"))


async def test_tool_events_none_output_indexes_stay_dense(review: Review) -> None:
    async with review.client("fake", "&tool_events=none") as client:
        up = await review.upstream()
        await client.say("call then talk")
        rid = await up.turn()
        call = await up.call(rid, 0, "echo", '{"text": "x"}')
        said = await up.say(rid, 1, "One moment.")
        await up.end(rid, [call, said])
        events = await client.until_type("response.done")
    assert_response_flow(events)


async def test_finished_calls_are_forgotten(review: Review) -> None:
    async with review.client("desk", text_only=True) as client:
        for _ in range(3):
            assert "Echo: hi" in text_of(await client.turn("echo please"))
        tools = review.session().tools
        kept = (len(tools.calls), len(tools.by_response), len(tools.finished))
    assert kept == (0, 0, 0)


async def test_handoff_output_is_attributed_to_the_calling_agent(review: Review) -> None:
    async with review.client("desk", text_only=True) as client:
        await client.say("transfer me please")
        await client.until(lambda e: is_final_done(e, "Desk two here."))
    record = await timeline(review.server)
    agents = {(e["type"], e["agent"]) for e in record["timeline"]
              if e["kind"] == "item" and e["type"].startswith("function_call")}
    assert agents == {("function_call", "desk"), ("function_call_output", "desk")}


async def test_handoff_with_malformed_arguments_is_refused(review: Review) -> None:
    async with review.client("fake") as client:
        up = await review.upstream()
        await client.say("transfer me")
        rid = await up.turn()
        await up.end(rid, [await up.call(rid, 0, "transfer_to_fakeb", '{"reason": ')])
        updates: list[Event] = []
        output = ""
        while (event := await up.recv())["type"] != "response.create":
            if event["type"] == "session.update":
                updates.append(event)
                await up.update(event)
            else:
                output = event["item"]["output"]
                await up.ack(event)
    assert (updates, "error" in json.loads(output)) == ([], True)


@pytest.mark.parametrize("frame", [
    '{"event_id":"evt_1","type":"input_audio_buffer.append","audio":"' + "A" * 4000 + '"}',
    '{"audio":"' + "A" * 4000 + '","type":"input_audio_buffer.append"}',
])
def test_audio_appends_are_sniffed_whatever_the_key_order(frame: str) -> None:
    assert sniff_type(frame) == "input_audio_buffer.append"
