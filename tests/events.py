"""Reading back what a conversation did: the client events it produced, and its record as
the admin API returns it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.realtime_client import Event
from tests.server import RunningServer

TIMEOUT = 30


async def timeline(server: RunningServer) -> dict[str, Any]:
    """The single recorded conversation, once its session ended and was written."""
    await asyncio.wait_for(server.services.live_sessions.wait_empty(), TIMEOUT)
    await asyncio.wait_for(server.services.recorder.flush(), TIMEOUT)
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=TIMEOUT) as http:
        [conversation] = (await http.get("/admin/conversations")).json()["data"]
        return (await http.get(f"/admin/conversations/{conversation['id']}")).json()


def of_type(events: list[Event], kind: str) -> list[Event]:
    """The events of one type."""
    return [e for e in events if e["type"] == kind]


def index_of(events: list[Event], match: Callable[[Event], bool]) -> int:
    """Position of the first matching event (ValueError if none)."""
    return next(i for i, e in enumerate(events) if match(e))


def is_final_done(event: Event, text: str) -> bool:
    """The `response.done` of the message that says `text`."""
    return event["type"] == "response.done" and any(
        text in json.dumps(item) for item in event["response"]["output"]
        if item["type"] == "message")


def no_function_items(events: list[Event]) -> bool:
    """True if no upstream function call/output item or argument event reached the client."""
    return not any(
        e.get("item", {}).get("type") in ("function_call", "function_call_output")
        or e["type"].startswith("response.function_call_arguments") for e in events)


def tool_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded tool calls, in order."""
    return [e for e in record["timeline"] if e["kind"] == "tool_call"]
