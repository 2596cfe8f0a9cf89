"""The only module that knows realtime event names and JSON shapes.

On the hot path frames are forwarded untouched: `sniff_type` finds an event's `type` without
decoding the payload when the frame starts with it (the common case for every producer we
know), and falls back to a full parse otherwise.

Client frames are untrusted: only an `input_audio_buffer.append` that `is_plain_audio_append`
proves unambiguous goes upstream undecoded; every other client event is parsed
(`parse_client`: JSON object, nesting bounded) and re-encoded, so the upstream sees exactly
the event the session's rules judged (a duplicate `"type"` key cannot smuggle one event past
them as another).
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
# A client's `event_id` at the start of a frame too large to parse (for its `error` event).
_EVENT_ID_PREFIX = re.compile(
    r'^\s*\{\s*(?:"type"\s*:\s*"[a-z_.]*"\s*,\s*)?"event_id"\s*:\s*"([^"\\]{1,128})"')

# Client events nested deeper than this (objects and arrays) are refused: no event of the
# protocol comes near it, and a deep tree is only good for exhausting whoever walks it.
MAX_CLIENT_DEPTH = 64
# A plain `input_audio_buffer.append` (see `is_plain_audio_append`): the part before the
# audio string's content, and the part from its closing quote to the end of the frame.
_EVENT_ID_MEMBER = r'"event_id"\s*:\s*"[^"\\]*"\s*'
_APPEND_TYPE_MEMBER = r'(?P<type>"type"\s*:\s*"input_audio_buffer\.append"\s*)'
_APPEND_HEAD = re.compile(
    rf'\s*\{{\s*(?:{_EVENT_ID_MEMBER},\s*)?(?:{_APPEND_TYPE_MEMBER},\s*)?'
    rf'(?:{_EVENT_ID_MEMBER},\s*)?"audio"\s*:\s*"', re.ASCII)
_APPEND_TAIL = re.compile(
    rf'"\s*(?:,\s*{_EVENT_ID_MEMBER})?(?:,\s*{_APPEND_TYPE_MEMBER})?'
    rf'(?:,\s*{_EVENT_ID_MEMBER})?\}}\s*', re.ASCII)

# `{type, audio}` in either order, compact or as `json.dumps` spaces it (the `openai` SDK sends
# dicts so), and as its models' `to_json` indents them: literal prefix and
# suffix tests, then the audio string must run from one to the other (no quote, no backslash).
_APPEND_EXACT = (
    ('{"type": "input_audio_buffer.append", "audio": "', '"}'),
    ('{"audio": "', '", "type": "input_audio_buffer.append"}'),
    ('{"type":"input_audio_buffer.append","audio":"', '"}'),
    ('{"audio":"', '","type":"input_audio_buffer.append"}'),
    ('{\n  "audio": "', '",\n  "type": "input_audio_buffer.append"\n}'),
)

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


def is_plain_audio_append(frame: str) -> bool:
    """True if `frame` is an `input_audio_buffer.append` any JSON reader takes for one.

    The whole frame must be `{`, at most an `event_id` and exactly one `type` (with that
    value) around one `audio` string holding no quote or backslash, then `}`: no other key can
    hide in it, escaped or not. Two short regex matches and two memchr scans, whatever the
    audio's size; anything else is parsed and re-encoded.
    """
    for start, finish in _APPEND_EXACT:  # the shapes clients send, without a regex
        if frame.startswith(start) and frame.endswith(finish):
            end = len(frame) - len(finish)
            if frame.find('"', len(start)) == end and frame.find("\\", len(start), end) == -1:
                return True
    head = _APPEND_HEAD.match(frame)
    if head is None:
        return False
    end = frame.find('"', head.end())
    if end == -1 or frame.find("\\", head.end(), end) != -1:
        return False
    tail = _APPEND_TAIL.fullmatch(frame, end)
    return tail is not None and (head.group("type") is None) != (tail.group("type") is None)


def sniff_event_id(frame: str) -> str | None:
    """The `event_id` at the start of a frame (not decoded; for frames refused unparsed)."""
    match = _EVENT_ID_PREFIX.match(frame[:300])
    return match.group(1) if match else None


def utf8_size(frame: str | bytes) -> int:
    """The frame's size in bytes as it travelled (UTF-8), without copying ASCII text."""
    if isinstance(frame, bytes) or frame.isascii():
        return len(frame)
    return len(frame.encode("utf-8", "surrogatepass"))


def parse_client(frame: str) -> JsonObject:
    """Decode a client frame: a JSON object nested at most `MAX_CLIENT_DEPTH` levels."""
    event = parse(frame)
    # Only a frame with that many brackets can be that deep; most are skipped unwalked.
    if frame.count("{") + frame.count("[") > MAX_CLIENT_DEPTH and _too_deep(event):
        raise ProtocolError(
            f"The event is nested deeper than {MAX_CLIENT_DEPTH} levels.", code="invalid_event",
            event_id=client_event_id(event))
    return event


def _too_deep(event: JsonObject) -> bool:
    stack: list[tuple[Any, int]] = [(event, 1)]
    while stack:  # iterative: a deep tree must not exhaust the interpreter's stack
        value, depth = stack.pop()
        children: list[Any]
        if isinstance(value, dict):
            children = list(cast(JsonObject, value).values())
        elif isinstance(value, list):
            children = cast(list[Any], value)
        else:
            continue
        if depth > MAX_CLIENT_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def encode_client(event: JsonObject) -> str:
    """Re-encode a parsed client event for the upstream (what the session judged is what
    the upstream gets)."""
    try:
        return dumps(event)
    except orjson.JSONEncodeError as exc:
        raise ProtocolError(f"The event cannot be re-encoded: {exc}", code="invalid_event",
                            event_id=client_event_id(event)) from None


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
