"""Strict checks of realtime frames against the official `openai` SDK types (reference §10).

Import from any test: `from tests.wire import validate_server_event`.

- `validate_server_event(frame)`: the SDK model for the frame's `type`, validated in strict
  mode (no coercion: `"0"` is not an int), plus a walk that flags unexpected extra fields (the
  SDK models allow extras, so a beta-shaped or misspelled field would pass silently).
  Allowed extras: `session.id|object|expires_at` on `session.created|updated`.
- `validate_client_event(frame)`: the same for client events (`item_reference` entries in
  `response.create.response.input` are checked against `ResponseItemReference` first, since
  the SDK's pydantic model rejects them although the API accepts them).
- `assert_response_flow(events)`: the GA ordering of §6.1/§6.2 over a decoded event stream.

Note for `mcp_call` items (`RealtimeMcpToolCall`): they have no `object` and no `status`
field, and `id`, `server_label`, `name`, `arguments` are required; `error` is a tagged object
(`protocol_error` {code, message} | `tool_execution_error` {message} | `http_error` {code,
message}). `response.mcp_call.in_progress|completed|failed` carry `item_id` and
`output_index` but no `response_id`; `response.mcp_call_arguments.delta|done` carry
`response_id`, `item_id`, `output_index` (and `delta` / `arguments`), no `call_id`/`name`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, cast, get_args, get_origin

from openai.types.realtime import (
    RealtimeClientEvent,
    RealtimeServerEvent,
    ResponseItemReference,
)
from pydantic import BaseModel, ValidationError

Frame = str | bytes | Mapping[str, Any]


def _models_by_type(union: Any) -> dict[str, type[BaseModel]]:
    members = get_args(union)
    if get_origin(union) is Annotated:
        members = get_args(members[0])
    return {get_args(m.model_fields["type"].annotation)[0]: m for m in members}


SERVER_EVENT_MODELS = _models_by_type(RealtimeServerEvent)
CLIENT_EVENT_MODELS = _models_by_type(RealtimeClientEvent)
_SESSION_EXTRAS = {"id", "object", "expires_at"}
_ALLOWED_EXTRAS: dict[tuple[str, str], set[str]] = {
    ("session.created", "session"): _SESSION_EXTRAS,
    ("session.updated", "session"): _SESSION_EXTRAS,
}


def _decode(frame: Frame) -> dict[str, Any]:
    if isinstance(frame, Mapping):
        return dict(frame)
    try:
        data: Any = json.loads(frame)
    except ValueError as exc:
        raise AssertionError(f"frame is not JSON ({exc}): {_snippet(frame)}") from None
    if not isinstance(data, dict):
        raise AssertionError(f"frame is not a JSON object: {_snippet(frame)}")
    return cast(dict[str, Any], data)


def _snippet(frame: Frame, limit: int = 400) -> str:
    text = frame if isinstance(frame, str) else (
        frame.decode(errors="replace") if isinstance(frame, bytes) else json.dumps(frame))
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def _validate(frame: Frame, model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    try:
        if isinstance(frame, str | bytes):
            return model.model_validate_json(frame, strict=True)
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise AssertionError(
            f"{data.get('type')!r} does not validate as {model.__name__}:\n{exc}\n"
            f"frame: {_snippet(frame)}") from None


def extra_fields(model: BaseModel, path: str = "") -> Iterator[tuple[str, set[str]]]:
    """(path, names) of every nested model that holds fields its SDK type does not declare."""
    if model.model_extra:
        yield path or "<event>", set(model.model_extra)
    for name in type(model).model_fields:
        yield from _extras_in(getattr(model, name), f"{path}.{name}" if path else name)


def _extras_in(value: Any, path: str) -> Iterator[tuple[str, set[str]]]:
    if isinstance(value, BaseModel):
        yield from extra_fields(value, path)
    elif isinstance(value, list | tuple):
        for index, entry in enumerate(cast(Sequence[Any], value)):
            yield from _extras_in(entry, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, entry in cast(dict[str, Any], value).items():
            yield from _extras_in(entry, f"{path}.{key}")


def _check_extras(kind: str, event: BaseModel, frame: Frame) -> None:
    problems: list[str] = []
    for path, names in extra_fields(event):
        unexpected = names - _ALLOWED_EXTRAS.get((kind, path), set())
        if unexpected:
            problems.append(f"{path}: {sorted(unexpected)}")
    if problems:
        raise AssertionError(f"{kind!r} has fields the SDK types do not declare: "
                             f"{'; '.join(problems)}\nframe: {_snippet(frame)}")


def _typed(frame: Frame, models: Mapping[str, type[BaseModel]], side: str,
           ) -> tuple[dict[str, Any], str, type[BaseModel]]:
    """The decoded frame, its `type` and the SDK model of that type; AssertionError if none."""
    data = _decode(frame)
    kind = str(data.get("type"))
    model = models.get(kind)
    if model is None:
        raise AssertionError(f"unknown {side} event type {kind!r}: {_snippet(frame)}")
    return data, kind, model


def validate_server_event(frame: Frame) -> BaseModel:
    """Validate one server event strictly; return the SDK model; AssertionError if invalid."""
    data, kind, model = _typed(frame, SERVER_EVENT_MODELS, "server")
    event = _validate(frame, model, data)
    _check_extras(kind, event, frame)
    return event


def validate_client_event(frame: Frame) -> BaseModel:
    """Validate one client event strictly; return the SDK model; AssertionError if invalid."""
    data, kind, model = _typed(frame, CLIENT_EVENT_MODELS, "client")
    raw_response: Any = data.get("response")
    response = cast(dict[str, Any], raw_response) if isinstance(raw_response, dict) else {}
    if kind == "response.create" and response.get("input"):
        kept: list[Any] = []
        for entry in cast(list[Any], response["input"]):
            reference = cast(dict[str, Any], entry) if isinstance(entry, dict) else {}
            if reference.get("type") == "item_reference":
                _validate(reference, ResponseItemReference, reference)
            else:
                kept.append(entry)
        data = {**data, "response": {**response, "input": kept}}
        frame = data
    event = _validate(frame, model, data)
    _check_extras(kind, event, frame)
    return event


# ---- ordering ------------------------------------------------------------------------------

_PART_EVENTS = {
    "response.output_text.delta", "response.output_text.done",
    "response.output_audio.delta", "response.output_audio.done",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
}
_ITEM_EVENTS = {
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress", "response.mcp_call.completed", "response.mcp_call.failed",
}


class _Flow:
    def __init__(self) -> None:
        self.open: dict[str, list[str]] = {}  # response id → output item ids, in order
        self.closed: set[str] = set()
        self.items: dict[str, str] = {}  # output item id → "open" | "done"
        self.parts: set[tuple[str, int]] = set()

    def check(self, position: int, ev: Mapping[str, Any]) -> None:
        kind = str(ev["type"])
        where = f"event #{position} {kind}"
        rid = str(ev.get("response_id"))
        if "response_id" in ev:
            assert rid in self.open, f"{where}: response {rid} is not in progress"
        if kind == "response.created":
            rid = ev["response"]["id"]
            assert rid not in self.open and rid not in self.closed, f"{where}: {rid} twice"
            self.open[rid] = []
        elif kind == "response.done":
            self._done(where, ev["response"])
        elif kind == "response.output_item.added":
            item_id = ev["item"]["id"]
            assert item_id not in self.items, f"{where}: item {item_id} added twice"
            assert ev["output_index"] == len(self.open[rid]), f"{where}: output_index out of order"
            self.open[rid].append(item_id)
            self.items[item_id] = "open"
        elif kind == "response.output_item.done":
            item_id = ev["item"]["id"]
            assert self.items.get(item_id) == "open", f"{where}: item {item_id} is not open"
            assert not any(p[0] == item_id for p in self.parts), f"{where}: a part is still open"
            self.items[item_id] = "done"
        elif kind in ("conversation.item.added", "conversation.item.done"):
            item_id = ev["item"].get("id")
            if item_id in self.items:
                assert self.items[item_id] == "open", f"{where}: {item_id} is not open"
        else:
            self._content(where, kind, ev)

    def _content(self, where: str, kind: str, ev: Mapping[str, Any]) -> None:
        item_id = str(ev.get("item_id"))
        if kind in _ITEM_EVENTS or kind in _PART_EVENTS or kind.startswith("response.content_part"):
            assert self.items.get(item_id) == "open", f"{where}: item {item_id} is not open"
        key = (item_id, ev.get("content_index", 0))
        if kind == "response.content_part.added":
            assert key not in self.parts, f"{where}: part {key} added twice"
            self.parts.add(key)
        elif kind == "response.content_part.done":
            assert key in self.parts, f"{where}: part {key} is not open"
            self.parts.discard(key)
        elif kind in _PART_EVENTS:
            assert key in self.parts, f"{where}: part {key} is not open"

    def _done(self, where: str, response: Mapping[str, Any]) -> None:
        rid = response["id"]
        assert rid in self.open, f"{where}: response {rid} is not in progress"
        added = self.open.pop(rid)
        self.closed.add(rid)
        assert all(self.items[i] == "done" for i in added), f"{where}: an output item is open"
        output = cast(list[dict[str, Any]], response.get("output") or [])
        listed = [item.get("id") for item in output]
        assert listed == added, f"{where}: output {listed} != items added {added}"


def assert_response_flow(events: Sequence[Frame], *, complete: bool = True) -> None:
    """Check the GA order of response events (§6.1, §6.2) over a stream of server events.

    `complete`: every response that started also ended. Events of other kinds are ignored.
    """
    flow = _Flow()
    for position, frame in enumerate(events):
        flow.check(position, _decode(frame))
    if complete:
        assert not flow.open, f"responses never finished: {sorted(flow.open)}"
