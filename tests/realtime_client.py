"""A raw-frame realtime test client: every frame it receives is validated strictly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.wire import validate_server_event

Event = dict[str, Any]
TIMEOUT = 30.0


class RealtimeTestClient:
    """Sends client events and waits on server events, with a timeout on every wait."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[Event] = []

    async def send(self, event: Event | str) -> None:
        """Send one event (a dict is JSON-encoded; a str is sent as is)."""
        await self.ws.send(event if isinstance(event, str) else json.dumps(event))

    async def recv(self) -> Event:
        """The next server event, validated against the SDK types."""
        raw = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        validate_server_event(raw)
        event: Event = json.loads(raw)
        self.seen.append(event)
        return event

    async def until(self, done: Callable[[Event], bool]) -> list[Event]:
        """Events up to and including the first for which `done` is true."""
        events: list[Event] = []
        while True:
            event = await self.recv()
            events.append(event)
            if done(event):
                return events

    async def until_type(self, kind: str) -> list[Event]:
        """Events up to and including the first of type `kind`."""
        return await self.until(lambda e: e["type"] == kind)

    async def say(self, text: str, **response: Any) -> None:
        """A user text message followed by `response.create`."""
        await self.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        await self.send({"type": "response.create", **({"response": response} if response else {})})

    async def turn(self, text: str, **response: Any) -> list[Event]:
        """One user turn, up to the response.done that carries no server tool call."""
        await self.say(text, **response)
        return await self.until(_final_done)


def _final_done(event: Event) -> bool:
    if event["type"] != "response.done":
        return False
    output = event["response"].get("output") or []
    return not any(item.get("type") == "mcp_call" for item in output)


def text_of(events: list[Event]) -> str:
    """The assistant text streamed in `events`."""
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


@asynccontextmanager
async def connect(url: str, token: str | None, *, text_only: bool = True,
                  subprotocols: list[str] | None = None) -> AsyncIterator[RealtimeTestClient]:
    """Connect, check `session.created`, and (by default) switch the session to text output."""
    headers = {"Authorization": f"Bearer {token}"} if token and not subprotocols else None
    async with websockets.connect(
        url, additional_headers=headers, compression=None, max_size=None, max_queue=None,
        subprotocols=subprotocols,  # type: ignore[arg-type]
    ) as ws:
        client = RealtimeTestClient(ws)
        first = await client.recv()
        assert first["type"] == "session.created", first
        if text_only:
            await client.send({"type": "session.update",
                               "session": {"type": "realtime", "output_modalities": ["text"]}})
            await client.until_type("session.updated")
        yield client
