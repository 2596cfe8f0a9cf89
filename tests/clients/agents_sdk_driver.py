"""One tool-calling turn through the OpenAI Agents SDK's realtime stack, as a user would write it.

Usage: `python agents_sdk_driver.py ws://H:P/v1/realtime?model=demo KEY [--timeout S]`.
The agent declares no tools: the server runs them and shows them as `mcp_call` items. The SDK
validates every server event against OpenAI's types and turns a failure into an `error` event.
"""

from __future__ import annotations

from typing import Any

from agents.realtime import (
    OpenAIRealtimeWebSocketModel,
    RealtimeAgent,
    RealtimeRunner,
    RealtimeSessionEvent,
)
from agents.realtime.items import AssistantMessageItem, AssistantText, RealtimeItem
from driver_support import QUESTION, DriverArgs, Observation, run


async def turn(args: DriverArgs, seen: Observation) -> None:
    """Connect, ask the question, stop when the turn that gave a completed assistant text ends."""
    agent = RealtimeAgent(name="demo-client", instructions="Answer briefly.")
    runner = RealtimeRunner(agent, model=OpenAIRealtimeWebSocketModel())
    session = await runner.run(model_config={
        "url": args.url, "api_key": args.key,
        "initial_model_settings": {"output_modalities": ["text"]},
    })
    async with session:
        await session.send_message(QUESTION)
        async for event in session:
            _observe(event, seen)
            if seen.reply is not None and event.type == "agent_end":
                return


def _observe(event: RealtimeSessionEvent, seen: Observation) -> None:
    seen.saw(event.type)
    if event.type == "error":
        seen.errors.append(repr(event.error)[:2000])
    elif event.type == "raw_model_event" and event.data.type == "raw_server_event":
        raw: dict[str, Any] = event.data.data
        server_type = str(raw.get("type"))
        seen.extra.setdefault("server_event_types", []).append(server_type)
        if server_type == "conversation.item.done" and raw["item"].get("type") == "mcp_call":
            seen.extra["mcp_call"] = raw["item"]
    elif event.type == "history_updated":
        seen.reply = _completed_reply(event.history) or seen.reply
    elif event.type == "history_added":
        seen.reply = _completed_reply([event.item]) or seen.reply


def _completed_reply(items: list[RealtimeItem]) -> str | None:
    for item in reversed(items):
        if isinstance(item, AssistantMessageItem) and item.status == "completed":
            text = "".join(part.text or "" for part in item.content
                           if isinstance(part, AssistantText))
            if text:
                return text
    return None


if __name__ == "__main__":
    run("agents_sdk", turn, __doc__ or "")
