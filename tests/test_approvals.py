"""Approvals (issue 3): a call of a tool under `require_approval` waits for the client's
`mcp_approval_response` to our `mcp_approval_request`; a refusal or no answer in time gives
the model an error output instead of running the tool. Every frame the test client receives
is validated against the openai SDK's server event types (tests/realtime_client.py).
"""

from __future__ import annotations

from typing import Any

from tests.events import timeline, tool_rows
from tests.fake_upstream import POLICY_AGENTS
from tests.realtime_client import Event, RealtimeTestClient, connect, text_of
from tests.server import RunningServer
from tests.test_tool_policy import said_output, server
from tests.wire import validate_client_event

__all__ = ["POLICY_AGENTS", "server"]  # `server` is the policy agents' fixture


def is_request(event: Event) -> bool:
    """The `conversation.item.done` of an approval request."""
    return (event["type"] == "conversation.item.done"
            and event["item"]["type"] == "mcp_approval_request")


async def answer(client: RealtimeTestClient, request: dict[str, Any], approve: bool,
                 reason: str | None = None) -> list[Event]:
    """Answer `request` as a client does; the events up to our acknowledgement."""
    item: dict[str, Any] = {"type": "mcp_approval_response", "id": "mcpa_client_1",
                            "approval_request_id": request["id"], "approve": approve}
    if reason is not None:
        item["reason"] = reason
    event = {"type": "conversation.item.create", "item": item}
    validate_client_event(event)
    await client.send(event)
    return await client.until(lambda e: e["type"] == "conversation.item.done"
                              and e["item"]["type"] == "mcp_approval_response")


def final_text(event: Event) -> bool:
    """The `response.done` of a response that spoke (not one that only called a tool)."""
    return event["type"] == "response.done" and event["response"]["output"][0]["type"] == "message"


async def test_approval_granted_denied_and_timed_out(server: RunningServer) -> None:
    """Three turns of one conversation (one server start per database)."""
    async with connect(server.realtime_url("guard"), server.token) as client:
        # Granted: the call waits for the answer, then runs.
        await client.say("what is the sum")
        [*before, asked] = await client.until(is_request)
        request = asked["item"]
        assert (request["server_label"], request["name"], request["arguments"]) == (
            "lab", "add", '{"a":2,"b":3}')
        assert not any(e["type"] == "response.mcp_call.completed" for e in before)
        [*_, acked] = await answer(client, request, approve=True)
        assert acked["item"]["approve"] is True
        await client.send({"type": "response.create"})  # as hosted-MCP clients resume a turn
        granted = await client.until(final_text)
        # Denied, with a reason the model is told.
        await client.say("what is the sum")
        [*between, asked] = await client.until(is_request)
        await answer(client, asked["item"], approve=False, reason="not today")
        denied = await client.until(final_text)
        # No answer within approval_timeout_s (0.3 s); a late answer is an error.
        await client.say("weather in paris")
        timed_out = await client.until(final_text)
        [late_request] = [e["item"] for e in timed_out if is_request(e)]
        await client.send({"type": "conversation.item.create", "event_id": "late", "item": {
            "type": "mcp_approval_response", "id": "mcpa_late",
            "approval_request_id": late_request["id"], "approve": True}})
        [error] = await client.until_type("error")
    assert text_of(granted) == "Sum: 5"
    # The client's resume was absorbed: no extra reply before the next turn's request.
    assert not any(final_text(e) for e in between), text_of(between)
    assert said_output(denied, "Sum: ")["error"] == "the user declined to run 'add': not today"
    assert "did not approve 'weather' in time" in said_output(timed_out, "Weather: ")["error"]
    assert (error["error"]["event_id"], error["error"]["param"]) == (
        "late", "item.approval_request_id")
    rows = tool_rows(await timeline(server))
    assert [(r["tool"], r["status"], r["output"]) for r in rows] == [
        ("add", "completed", "5"),
        ("add", "approval_denied", '{"error":"the user declined to run \'add\': not today"}'),
        ("weather", "approval_timeout", rows[2]["output"])]
