"""The state the scripted model keeps: the session configuration and the conversation."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import cast

from orchestrator.errors import ProtocolError
from orchestrator.upstream.scripted_run import Event, new_id

TURN_DEFAULTS: dict[str, Event] = {
    "server_vad": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                   "silence_duration_ms": 500, "idle_timeout_ms": None,
                   "create_response": True, "interrupt_response": True},
    "semantic_vad": {"type": "semantic_vad", "eagerness": "auto", "create_response": True,
                     "interrupt_response": True},
}
# semantic_vad has no silence knob; its eagerness maps to one.
SEMANTIC_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 250}
# session.update semantics: `null` clears these, and leaves every other field unchanged.
_NULLABLE = frozenset({"turn_detection", "noise_reduction", "transcription", "tracing",
                       "truncation", "prompt", "reasoning"})


def default_session(model: str) -> Event:
    """The session a new connection starts with, as `session.created` shows it."""
    pcm: Event = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime", "object": "realtime.session", "id": new_id("sess"),
        "expires_at": int(time.time()) + 3600, "model": model, "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {"format": dict(pcm), "transcription": None, "noise_reduction": None,
                      "turn_detection": dict(TURN_DEFAULTS["server_vad"])},
            "output": {"format": dict(pcm), "voice": "marin", "speed": 1.0},
        },
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None,
        "truncation": "auto", "prompt": None,
    }


def merge_session(base: Event, patch: Event) -> None:
    """Apply a `session.update` patch in place: only the fields sent change.

    Objects merge key by key, except tagged ones (with a `type`: formats, turn detection),
    which are replaced whole; lists are replaced.
    """
    for key, value in patch.items():
        if value is None and key not in _NULLABLE:
            continue
        current, patch_value = as_object(base.get(key)), as_object(value)
        if current is not None and patch_value is not None and "type" not in patch_value:
            merge_session(current, patch_value)
        else:
            base[key] = copy.deepcopy(value)


def as_object(value: object) -> Event | None:
    """`value` as a JSON object, or None."""
    return cast(Event, value) if isinstance(value, dict) else None


def content_parts(item: Event) -> list[Event]:
    """The content parts of a message item ([] for other items)."""
    content = item.get("content")
    return cast(list[Event], content) if isinstance(content, list) else []


def without_audio(item: Event) -> Event:
    """Items in added/done events leave out audio bytes, as the GA service does."""
    content = content_parts(item)
    if not any("audio" in part for part in content):
        return item
    return {**item, "content": [{k: v for k, v in part.items() if k != "audio"}
                                for part in content]}


def count_tokens(items: Sequence[Event], instructions: str) -> tuple[int, int]:
    """Plausible (text, audio) input token counts: a token per word, ten per second of audio."""
    text = len(instructions.split())
    audio = 0
    for item in items:
        for key in ("arguments", "output"):
            text += len(str(item.get(key) or "").split())
        for part in content_parts(item):
            text += len(str(part.get("text") or part.get("transcript") or "").split())
            audio += len(str(part.get("audio") or "")) * 3 // 4 // 4800
    return text, audio


class Conversation:
    """The default conversation: items in order, as GA item dicts."""

    def __init__(self) -> None:
        self.items: list[Event] = []

    def find(self, item_id: str) -> Event:
        """The item with this id; ProtocolError `item_not_found` otherwise."""
        for item in self.items:
            if item.get("id") == item_id:
                return item
        raise ProtocolError(f"Item with item_id '{item_id}' not found.", code="item_not_found",
                            param="item_id")

    def has(self, item_id: str) -> bool:
        """Whether an item has this id."""
        return any(item.get("id") == item_id for item in self.items)

    def delete(self, item_id: str) -> None:
        """Remove an item; ProtocolError `item_not_found` if there is none."""
        item = self.find(item_id)
        del self.items[next(i for i, other in enumerate(self.items) if other is item)]

    def insert(self, item: Event, previous_item_id: str | None) -> str | None:
        """Insert after `previous_item_id` (`root`: first; None: last); return the one before."""
        if previous_item_id is None:
            position = len(self.items)
        elif previous_item_id == "root":
            position = 0
        else:
            try:
                position = self.items.index(self.find(previous_item_id)) + 1
            except ProtocolError:
                raise ProtocolError(f"Previous item with id '{previous_item_id}' not found.",
                                    code="item_not_found", param="previous_item_id") from None
        self.items.insert(position, item)
        return self.items[position - 1]["id"] if position > 0 else None
