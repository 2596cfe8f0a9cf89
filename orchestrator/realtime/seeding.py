"""Carry a conversation into a fresh upstream session.

Used by a handoff to an agent on another model or provider, and meant for surviving an
upstream drop or its session-length cap: `History` keeps the conversation as plain items
(text of user and assistant turns, function calls and their outputs), taken from the
upstream's own `conversation.item.done` events; `seed` configures a new upstream for an agent
(`session.update`: instructions, tools, voice) and recreates those items in it, consuming
the upstream's acknowledgements so the client never sees the history twice.

What does not carry over: audio (only its transcript, from the item or from the later
transcription event), images, and items older than the history's bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, cast

from orchestrator.errors import UpstreamError
from orchestrator.realtime import protocol
from orchestrator.realtime.protocol import JsonObject
from orchestrator.upstream.base import Upstream, UpstreamClosed

log = logging.getLogger(__name__)

HISTORY_ITEMS = 500  # items kept; older ones are dropped first


def _text_parts(item: JsonObject, kind: str) -> list[JsonObject]:
    """The item's text (typed text, or the transcript of audio) as parts of type `kind`."""
    texts: list[str] = []
    for part in cast(list[Any], item.get("content") or []):
        if not isinstance(part, dict):
            continue
        fields = cast(dict[str, Any], part)
        text = fields.get("text") if "text" in fields else fields.get("transcript")
        if isinstance(text, str) and text:
            texts.append(text)
    return [{"type": kind, "text": " ".join(texts)}] if texts else []


def seed_item(item: JsonObject) -> JsonObject | None:
    """The item as a client may create it in a new session, or None if nothing carries over."""
    kind, item_id = item.get("type"), item.get("id")
    seeded: JsonObject
    if kind == "message":
        role = item.get("role")
        parts = _text_parts(item, "output_text" if role == "assistant" else "input_text")
        if role not in ("user", "assistant", "system") or not parts:
            return None
        seeded = {"type": "message", "role": role, "content": parts}
    elif kind == "function_call":
        seeded = {"type": "function_call", "call_id": item.get("call_id"),
                  "name": item.get("name"), "arguments": item.get("arguments") or "{}"}
    elif kind == "function_call_output":
        seeded = {"type": "function_call_output", "call_id": item.get("call_id"),
                  "output": item.get("output") or ""}
    else:
        return None
    if isinstance(item_id, str):
        seeded["id"] = item_id
    return seeded


def _awaits_transcript(item: JsonObject) -> bool:
    parts = cast(list[Any], item.get("content") or [])
    return (item.get("type") == "message" and item.get("role") == "user"
            and isinstance(item.get("id"), str)
            and any(isinstance(p, dict) and cast(dict[str, Any], p).get("type") == "input_audio"
                    for p in parts))


class History:
    """The conversation so far, as items a new upstream session can be seeded with."""

    def __init__(self, limit: int = HISTORY_ITEMS) -> None:
        self._items: OrderedDict[str, JsonObject] = OrderedDict()
        self._limit = limit
        self._anonymous = 0

    def observe(self, item: JsonObject) -> None:
        """Keep a finished item (a later version of the same item replaces it in place).

        A user's audio message without a transcript yet keeps its place, empty, until
        `transcript` fills it in."""
        seeded = seed_item(item)
        if seeded is None and _awaits_transcript(item):
            empty: list[JsonObject] = []
            seeded = {"type": "message", "role": "user", "content": empty, "id": item["id"]}
        if seeded is None:
            return
        key = seeded.get("id")
        if not isinstance(key, str):
            self._anonymous += 1
            key = f"#{self._anonymous}"
        self._items[key] = seeded
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def transcript(self, item_id: object, text: object) -> None:
        """The transcript of a user's audio message arrived (after the item was done)."""
        kept = self._items.get(item_id) if isinstance(item_id, str) else None
        if kept is not None and isinstance(text, str) and text and not kept["content"]:
            kept["content"] = [{"type": "input_text", "text": text}]

    def items(self) -> list[JsonObject]:
        """The kept items with something to say, oldest first."""
        return [i for i in self._items.values() if i.get("content") != []]


async def seed(upstream: Upstream, session: JsonObject, items: list[JsonObject], *,
               timeout_s: float) -> JsonObject:
    """Configure a freshly opened upstream with `session` and recreate `items` in it.

    Returns the upstream's `session.updated` session. UpstreamError if the upstream refuses,
    closes, or does not answer within `timeout_s`.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await _seed(upstream, session, items)
    except TimeoutError:
        raise UpstreamError(f"the new model session did not answer within {timeout_s} s") from None
    except UpstreamClosed as exc:
        raise UpstreamError(f"the new model session closed: {exc.reason}") from None


async def _seed(upstream: Upstream, session: JsonObject, items: list[JsonObject]) -> JsonObject:
    await _expect(upstream, "session.created")
    await upstream.send(protocol.dumps({"type": "session.update",
                                        "event_id": protocol.new_id("event"), "session": session}))
    updated = await _expect(upstream, "session.updated")
    waiting: set[str] = set()
    for item in items:
        item = dict(item)
        item_id = item.setdefault("id", protocol.new_id("item"))
        waiting.add(str(item_id))
        await upstream.send(protocol.dumps({"type": "conversation.item.create",
                                            "event_id": protocol.new_id("event"), "item": item}))
    while waiting:
        event = await _next(upstream)
        if event.get("type") == "conversation.item.done":
            waiting.discard(str(protocol.member(event.get("item"), "id")))
    shown = updated.get("session")
    return cast(JsonObject, shown) if isinstance(shown, dict) else {}


async def _expect(upstream: Upstream, kind: str) -> JsonObject:
    while True:
        event = await _next(upstream)
        if event.get("type") == kind:
            return event


async def _next(upstream: Upstream) -> JsonObject:
    """The next event; an `error` ends the seeding (the history must arrive whole)."""
    raw = await upstream.recv()
    event = protocol.parse(raw.decode() if isinstance(raw, bytes) else raw)
    if event.get("type") == "error":
        error = protocol.member(event.get("error"), "message")
        raise UpstreamError(f"the new model session refused the seeding: {error}")
    return event
