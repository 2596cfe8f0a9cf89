"""The only module that knows realtime event names and JSON shapes.

On the hot path frames are forwarded untouched: `sniff_type` finds an event's `type` without
decoding the payload when the frame starts with it (the common case for every producer we
know), and falls back to a full parse otherwise.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, cast

import orjson

from orchestrator.errors import ProtocolError

JsonObject = dict[str, Any]

# `type` first (most producers), or after a string `event_id` (models serialized in field
# order); or last, closing a flat object (the `openai` SDK's models put `audio` first).
_TYPE_PREFIX = re.compile(
    rb'^\s*\{\s*(?:"event_id"\s*:\s*"[^"\\]*"\s*,\s*)?"type"\s*:\s*"([a-z_.]+)"')
_TYPE_SUFFIX = re.compile(
    rb'[,{]\s*"type"\s*:\s*"([a-z_.]+)"\s*(?:,\s*"event_id"\s*:\s*"[^"\\]*"\s*)?\}\s*$')

CLIENT_EVENT_TYPES = frozenset({
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
})

# Upstream events whose first output marks the response's first-output latency.
FIRST_OUTPUT_TYPES = frozenset({
    "response.output_audio.delta",
    "response.output_text.delta",
    "response.output_audio_transcript.delta",
    "response.function_call_arguments.delta",
})


def new_id(prefix: str) -> str:
    """A fresh id in the upstream's style, e.g. `event_3kJ…`."""
    return f"{prefix}_{secrets.token_urlsafe(12).replace('-', 'x').replace('_', 'y')}"


def sniff_type(frame: str | bytes) -> str | None:
    """The event type if the frame starts or ends with it (the payload is not decoded).

    A match at the end is trusted only for a flat object (a single closing brace), so a
    nested `type` is never taken for the event's.
    """
    head = frame[:120].encode() if isinstance(frame, str) else frame[:120]
    match = _TYPE_PREFIX.match(head)
    if match is None:
        tail = frame[-120:].encode() if isinstance(frame, str) else frame[-120:]
        match = _TYPE_SUFFIX.search(tail)
        if match is not None and tail.rstrip().endswith(b"}}"):
            return None
    return match.group(1).decode() if match else None


def parse(frame: str | bytes) -> JsonObject:
    """Decode a frame to a JSON object or raise ProtocolError."""
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"The frame is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ProtocolError("An event must be a JSON object.", code="invalid_event")
    return value  # type: ignore[return-value]


def event_type(event: JsonObject) -> str:
    """The event's `type`, or ProtocolError if it has none."""
    kind = event.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            "The event has no string `type`.", code="missing_required_parameter",
            event_id=client_event_id(event), param="type",
        )
    return kind


def member(value: object, key: str) -> Any:
    """`value[key]` if `value` is a JSON object, else None (for untrusted nested fields)."""
    if isinstance(value, dict):
        return cast(JsonObject, value).get(key)
    return None


def string(value: object) -> str | None:
    """`value` if it is a string, else None."""
    return value if isinstance(value, str) else None


def client_event_id(event: JsonObject) -> str | None:
    """The client's `event_id`, if it gave a string one."""
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def dumps(event: JsonObject) -> str:
    """Serialize an event we originate."""
    return orjson.dumps(event).decode()


def error_event(
    message: str, *, code: str | None, event_id: str | None = None, param: str | None = None,
    error_type: str = "invalid_request_error",
) -> str:
    """An `error` server event (GA shape; `error.event_id` is the offending client event)."""
    return dumps({
        "type": "error",
        "event_id": new_id("event"),
        "error": {
            "type": error_type, "code": code, "message": message, "param": param,
            "event_id": event_id,
        },
    })


def error_from(exc: ProtocolError) -> str:
    """The `error` event for a ProtocolError."""
    return error_event(str(exc), code=exc.code, event_id=exc.event_id, param=exc.param)


def item_text(item: JsonObject) -> str | None:
    """The readable text of a message item (text parts and audio transcripts joined)."""
    parts: list[str] = []
    content: Any = item.get("content")
    for part in content if isinstance(content, list) else []:  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(part, dict):
            continue
        fields: JsonObject = part  # pyright: ignore[reportUnknownVariableType]
        text = fields.get("text")
        if text is None:
            text = fields.get("transcript")
        if isinstance(text, str) and text:
            parts.append(text)
    return "\n".join(parts) if parts else None


# --- events we originate toward the client -------------------------------------------------


def mcp_call_item(
    item_id: str, server_label: str, name: str, arguments: str,
    output: str | None = None, error: str | None = None,
) -> JsonObject:
    """An `mcp_call` item as OpenAI shows its hosted MCP tool calls."""
    item: JsonObject = {
        "type": "mcp_call", "id": item_id, "server_label": server_label, "name": name,
        "arguments": arguments,
    }
    if output is not None:
        item["output"] = output
    if error is not None:
        item["error"] = {"type": "tool_execution_error", "message": error}
    return item


def mcp_event(kind: str, **fields: Any) -> str:
    """A `response.mcp_call*` event with a fresh event id."""
    return dumps({"type": kind, "event_id": new_id("event"), **fields})
