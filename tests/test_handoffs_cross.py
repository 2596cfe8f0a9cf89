"""A handoff to an agent on another model (issue 3): scripted `hop` → `remote`, an `openai/...`
agent whose `base_url` is a GA server this test drives frame by frame. The new upstream must
receive the agent's session and the conversation so far; the client carries on unaware.
"""

from __future__ import annotations

from typing import Any

from tests.events import is_final_done, timeline, tool_rows
from tests.fake_upstream import Cross, cross, seeded_until_response
from tests.realtime_client import Event, connect, text_of
from tests.server import RunningServer
from tests.test_tool_policy import server

__all__ = ["cross", "server"]  # fixtures; `server`: the policy agents without REMOTE_URL


def brief(item: dict[str, Any]) -> tuple[str, ...]:
    """An item as (type, role or name, text or arguments or output)."""
    if item["type"] == "message":
        return ("message", item["role"], item["content"][0]["text"])
    if item["type"] == "function_call":
        return ("function_call", item["name"], item["arguments"])
    return ("function_call_output", item["output"])


async def test_handoff_to_another_provider_seeds_the_new_upstream(cross: Cross) -> None:
    server = cross.server
    async with connect(server.realtime_url("hop"), server.token) as client:
        assert text_of(await client.turn("echo please")) == "Echo: hi"
        await client.say("transfer me")
        up = await cross.upstream()
        assert up.session["instructions"] == "You are the remote desk."
        assert {t["name"] for t in up.session["tools"]} == {"tally", "slow", "transfer_to_remote_b"}
        items = await seeded_until_response(up)
        rid = await up.begin()
        await up.end(rid, [await up.say(rid, 0, "Remote desk here.")])
        events: list[Event] = await client.until(lambda e: is_final_done(e, "Remote desk here."))
        await client.say("thanks")
        await up.answer_turn("You are welcome.")
        after = await client.until_type("response.done")
    assert [brief(i) for i in items] == [
        ("message", "user", "echo please"),
        ("function_call", "echo", '{"text":"hi"}'),
        ("function_call_output", "hi"),
        ("message", "assistant", "Echo: hi"),
        ("message", "user", "transfer me"),
        ("message", "assistant", "Transferring you."),
        ("function_call", "transfer_to_remote", "{}"),
        ("function_call_output", '{"transferred_to":"remote"}'),
    ]
    [updated] = [e for e in events if e["type"] == "session.updated"]
    assert updated["session"]["instructions"] == "You are the remote desk."
    assert text_of(events).endswith("Remote desk here.")
    assert text_of(after) == "You are welcome."
    record = await timeline(server)
    [edge] = [e for e in record["timeline"] if e["kind"] == "handoff"]
    assert (edge["from_agent"], edge["to_agent"]) == ("hop", "remote")
    spoken = [(e["agent"], e["text"]) for e in record["timeline"]
              if e["kind"] == "item" and e["type"] == "message" and e["role"] == "assistant"]
    assert spoken == [("hop", "Echo: hi"), ("hop", "Transferring you."),
                      ("remote", "Remote desk here."), ("remote", "You are welcome.")]
    assert [(r["tool"], r["agent"]) for r in tool_rows(record)] == [
        ("echo", "hop"), ("transfer_to_remote", "hop")]


async def test_unreachable_target_leaves_the_conversation_where_it_was(
        server: RunningServer) -> None:
    """Without REMOTE_URL the remote agent's server is 127.0.0.1:9, where nothing listens."""
    async with connect(server.realtime_url("hop"), server.token) as client:
        events = await client.turn("transfer me")
    [call] = [e["item"] for e in events if e["type"] == "conversation.item.done"
              and e["item"]["type"] == "mcp_call"]
    assert call["name"] == "transfer_to_remote"
    assert "'remote' could not be reached" in call["error"]["message"]
    assert text_of(events).endswith("Hop here.")  # the hop's script answers on
    record = await timeline(server)
    assert [e for e in record["timeline"] if e["kind"] == "handoff"] == []
    assert record["current_agent"] in (None, "hop")
    assert [(r["tool"], r["status"]) for r in tool_rows(record)] == [
        ("transfer_to_remote", "failed")]
