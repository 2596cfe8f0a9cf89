"""Approvals (issue 3): a call of a tool under `require_approval` waits for the client's
`mcp_approval_response` to our `mcp_approval_request`; a refusal or no answer in time gives
the model an error output instead of running the tool. Every frame the test client receives
is validated against the openai SDK's server event types (tests/realtime_client.py).
"""

from __future__ import annotations

from typing import Any

from tests.realtime_client import Event, RealtimeTestClient, connect, text_of
from tests.server import RunningServer
from tests.test_review_findings import timeline
from tests.test_tool_policy import POLICY_AGENTS, said_output, server, tool_rows
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


async def test_approval_granted_runs_the_tool(server: RunningServer) -> None:
    async with connect(server.realtime_url("guard"), server.token) as client:
        await client.say("what is the sum")
        [*before, asked] = await client.until(is_request)
        request = asked["item"]
        assert (request["server_label"], request["name"], request["arguments"]) == (
            "lab", "add", '{"a":2,"b":3}')
        assert not any(e["type"] == "response.mcp_call.completed" for e in before)
        [*_, acked] = await answer(client, request, approve=True)
        assert acked["item"]["approve"] is True
        events = await client.until(lambda e: e["type"] == "response.done"
                                    and e["response"]["output"][0]["type"] == "message")
    assert text_of(events) == "Sum: 5"
    [row] = tool_rows(await timeline(server))
    assert (row["tool"], row["status"], row["output"]) == ("add", "completed", "5")


async def test_approval_denied_tells_the_model_why(server: RunningServer) -> None:
    async with connect(server.realtime_url("guard"), server.token) as client:
        await client.say("what is the sum")
        [*_, asked] = await client.until(is_request)
        await answer(client, asked["item"], approve=False, reason="not today")
        events = await client.until(lambda e: e["type"] == "response.done"
                                    and e["response"]["output"][0]["type"] == "message")
    assert said_output(events, "Sum: ")["error"] == "the user declined to run 'add': not today"
    [row] = tool_rows(await timeline(server))
    assert (row["tool"], row["status"], row["output"]) == (
        "add", "approval_denied", '{"error":"the user declined to run \'add\': not today"}')


async def test_approval_timeout_refuses_and_a_late_answer_is_an_error(
        server: RunningServer) -> None:
    async with connect(server.realtime_url("guard"), server.token) as client:
        await client.say("weather in paris")  # approval_timeout_s: 0.3
        events = await client.until(lambda e: e["type"] == "response.done"
                                    and e["response"]["output"][0]["type"] == "message")
        [request] = [e["item"] for e in events if is_request(e)]
        late = {"type": "conversation.item.create", "event_id": "late", "item": {
            "type": "mcp_approval_response", "id": "mcpa_late", "approval_request_id":
            request["id"], "approve": True}}
        await client.send(late)
        [error] = await client.until_type("error")
    assert "did not approve 'weather' in time" in said_output(events, "Weather: ")["error"]
    assert (error["error"]["event_id"], error["error"]["param"]) == (
        "late", "item.approval_request_id")
    [row] = tool_rows(await timeline(server))
    assert (row["tool"], row["status"]) == ("weather", "approval_timeout")
