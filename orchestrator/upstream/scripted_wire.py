"""The client events the scripted model accepts, as strict pydantic models.

The scripted model answers bad input the way the GA service does: an `error` event with
`invalid_request_error`, a `code` (`unknown_parameter`, `missing_required_parameter`,
`invalid_type`, `invalid_value`) and the dotted `param` path, and the session goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from orchestrator.errors import ProtocolError


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ---- session -----------------------------------------------------------------------------


class PcmFormat(_Wire):
    """16-bit PCM, 24 kHz mono."""

    type: Literal["audio/pcm"]
    rate: Literal[24000] = 24000


class PcmuFormat(_Wire):
    """G.711 μ-law."""

    type: Literal["audio/pcmu"]


class PcmaFormat(_Wire):
    """G.711 A-law."""

    type: Literal["audio/pcma"]


AudioFormatParam = Annotated[PcmFormat | PcmuFormat | PcmaFormat, Field(discriminator="type")]


class ServerVadParam(_Wire):
    """`server_vad` turn detection."""

    type: Literal["server_vad"]
    threshold: float | None = Field(default=None, ge=0, le=1)
    prefix_padding_ms: int | None = Field(default=None, ge=0)
    silence_duration_ms: int | None = Field(default=None, ge=0)
    idle_timeout_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


class SemanticVadParam(_Wire):
    """`semantic_vad` turn detection."""

    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


TurnDetectionParam = Annotated[ServerVadParam | SemanticVadParam, Field(discriminator="type")]


class NoiseReductionParam(_Wire):
    """Input noise reduction."""

    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = None


class TranscriptionParam(_Wire):
    """Input transcription settings (accepted and echoed; the sandbox does not transcribe)."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class AudioInputParam(_Wire):
    """`session.audio.input`."""

    format: AudioFormatParam | None = None
    transcription: TranscriptionParam | None = None
    noise_reduction: NoiseReductionParam | None = None
    turn_detection: TurnDetectionParam | None = None


class VoiceIdParam(_Wire):
    """A custom voice."""

    id: str


class AudioOutputParam(_Wire):
    """`session.audio.output`."""

    format: AudioFormatParam | None = None
    voice: str | VoiceIdParam | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)


class AudioParam(_Wire):
    """`session.audio`."""

    input: AudioInputParam | None = None
    output: AudioOutputParam | None = None


class FunctionToolParam(_Wire):
    """A function tool (the flat GA shape)."""

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class McpToolParam(BaseModel):
    """A hosted MCP tool: kept as given (the scripted model never calls it)."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["mcp"]
    server_label: str


ToolParam = Annotated[FunctionToolParam | McpToolParam, Field(discriminator="type")]


class NamedToolChoice(_Wire):
    """Force one function or MCP tool."""

    type: Literal["function", "mcp"]
    name: str | None = None
    server_label: str | None = None


class SessionParam(_Wire):
    """The `session` of a `session.update` (GA, `type: realtime`)."""

    type: Literal["realtime"]
    model: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = Field(
        default=None, min_length=1, max_length=1
    )
    instructions: str | None = None
    audio: AudioParam | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    tracing: Literal["auto"] | dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


# ---- items -------------------------------------------------------------------------------

_CONTENT_BY_ROLE = {
    "user": {"input_text", "input_audio", "input_image"},
    "system": {"input_text"},
    "assistant": {"output_text", "output_audio"},
}


class ContentPartParam(_Wire):
    """One content part of a message item."""

    type: Literal["input_text", "input_audio", "input_image", "output_text", "output_audio"]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class _ItemBase(_Wire):
    id: str | None = Field(default=None, min_length=1, max_length=64)
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None


class MessageItemParam(_ItemBase):
    """A system, user or assistant message."""

    type: Literal["message"]
    role: Literal["user", "assistant", "system"]
    content: list[ContentPartParam]

    @model_validator(mode="after")
    def _content_fits_role(self) -> MessageItemParam:
        allowed = _CONTENT_BY_ROLE[self.role]
        for part in self.content:
            if part.type not in allowed:
                raise ValueError(f"a {self.role} message cannot hold {part.type!r} content")
        return self


class FunctionCallItemParam(_ItemBase):
    """A function call (normally produced by the model)."""

    type: Literal["function_call"]
    name: str
    arguments: str
    call_id: str | None = None


class FunctionCallOutputItemParam(_ItemBase):
    """The output of a function call."""

    type: Literal["function_call_output"]
    call_id: str
    output: str


ItemParam = Annotated[
    MessageItemParam | FunctionCallItemParam | FunctionCallOutputItemParam,
    Field(discriminator="type"),
]


class ItemReferenceParam(_Wire):
    """A reference to a conversation item, valid in `response.input` only."""

    type: Literal["item_reference"]
    id: str


InputItemParam = Annotated[
    MessageItemParam | FunctionCallItemParam | FunctionCallOutputItemParam | ItemReferenceParam,
    Field(discriminator="type"),
]


# ---- responses ---------------------------------------------------------------------------


class ResponseAudioOutputParam(_Wire):
    """`response.audio.output`."""

    format: AudioFormatParam | None = None
    voice: str | VoiceIdParam | None = None


class ResponseAudioParam(_Wire):
    """`response.audio`."""

    output: ResponseAudioOutputParam | None = None


class ResponseParam(_Wire):
    """The `response` of a `response.create`: overrides for this one response."""

    output_modalities: list[Literal["text", "audio"]] | None = Field(
        default=None, min_length=1, max_length=1
    )
    instructions: str | None = None
    audio: ResponseAudioParam | None = None
    tools: list[ToolParam] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    metadata: dict[str, str] | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    conversation: str | None = None
    input: list[InputItemParam] | None = None


# ---- client events -----------------------------------------------------------------------


class _Event(_Wire):
    event_id: str | None = None


class SessionUpdateEvent(_Event):
    """`session.update`."""

    type: Literal["session.update"]
    session: SessionParam


class InputAudioBufferAppendEvent(_Event):
    """`input_audio_buffer.append`."""

    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommitEvent(_Event):
    """`input_audio_buffer.commit`."""

    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClearEvent(_Event):
    """`input_audio_buffer.clear`."""

    type: Literal["input_audio_buffer.clear"]


class OutputAudioBufferClearEvent(_Event):
    """`output_audio_buffer.clear` (WebRTC/SIP only)."""

    type: Literal["output_audio_buffer.clear"]


class ConversationItemCreateEvent(_Event):
    """`conversation.item.create`."""

    type: Literal["conversation.item.create"]
    item: ItemParam
    previous_item_id: str | None = None


class ConversationItemRetrieveEvent(_Event):
    """`conversation.item.retrieve`."""

    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemDeleteEvent(_Event):
    """`conversation.item.delete`."""

    type: Literal["conversation.item.delete"]
    item_id: str


class ConversationItemTruncateEvent(_Event):
    """`conversation.item.truncate`."""

    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ResponseCreateEvent(_Event):
    """`response.create`."""

    type: Literal["response.create"]
    response: ResponseParam | None = None


class ResponseCancelEvent(_Event):
    """`response.cancel`."""

    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = (
    SessionUpdateEvent | InputAudioBufferAppendEvent | InputAudioBufferCommitEvent
    | InputAudioBufferClearEvent | OutputAudioBufferClearEvent | ConversationItemCreateEvent
    | ConversationItemRetrieveEvent | ConversationItemDeleteEvent | ConversationItemTruncateEvent
    | ResponseCreateEvent | ResponseCancelEvent
)

_EVENT_MODELS: dict[str, type[ClientEvent]] = {
    "session.update": SessionUpdateEvent,
    "input_audio_buffer.append": InputAudioBufferAppendEvent,
    "input_audio_buffer.commit": InputAudioBufferCommitEvent,
    "input_audio_buffer.clear": InputAudioBufferClearEvent,
    "output_audio_buffer.clear": OutputAudioBufferClearEvent,
    "conversation.item.create": ConversationItemCreateEvent,
    "conversation.item.retrieve": ConversationItemRetrieveEvent,
    "conversation.item.delete": ConversationItemDeleteEvent,
    "conversation.item.truncate": ConversationItemTruncateEvent,
    "response.create": ResponseCreateEvent,
    "response.cancel": ResponseCancelEvent,
}


def parse_client_event(raw: Mapping[str, Any]) -> ClientEvent:
    """Validate one decoded client event; raise ProtocolError shaped like a GA error."""
    event_id = raw.get("event_id")
    event_id = event_id if isinstance(event_id, str) else None
    kind = raw.get("type")
    model = _EVENT_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        if kind is None:
            raise ProtocolError("Missing required parameter: 'type'.",
                                code="missing_required_parameter", event_id=event_id, param="type")
        raise ProtocolError(f"Invalid value: {kind!r}. Supported values are: "
                            + ", ".join(repr(k) for k in _EVENT_MODELS) + ".",
                            code="invalid_value", event_id=event_id, param="type")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _to_protocol_error(exc.errors()[0], raw, event_id) from None


_TYPE_ERRORS = ("_type", "model_attributes_type", "is_instance_of", "dict_type", "list_type")


def _to_protocol_error(
    error: ErrorDetails, raw: Mapping[str, Any], event_id: str | None
) -> ProtocolError:
    param = _param_path(error["loc"], raw)
    kind = error["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        param = f"{param}.type" if param else "type"
    if kind == "extra_forbidden":
        code, message = "unknown_parameter", f"Unknown parameter: '{param}'."
    elif kind in ("missing", "union_tag_not_found"):
        code, message = "missing_required_parameter", f"Missing required parameter: '{param}'."
    elif kind.endswith(_TYPE_ERRORS):
        code, message = "invalid_type", f"Invalid type for '{param}': {error['msg']}."
    else:
        code, message = "invalid_value", f"Invalid value for '{param}': {error['msg']}."
    return ProtocolError(message, code=code, event_id=event_id, param=param)


def _param_path(loc: tuple[int | str, ...], raw: Any) -> str:
    """`session.tools[0].name` from a pydantic location, skipping union member tags."""
    path = ""
    node: Any = raw
    for position, part in enumerate(loc):
        if isinstance(node, Mapping) and part == cast(Mapping[str, Any], node).get("type"):
            continue  # the tag of a union member, not a field
        if isinstance(node, Mapping) and isinstance(part, str) and part in node:
            path = f"{path}.{part}" if path else part
            node = cast(Mapping[str, Any], node)[part]
        elif isinstance(node, list) and isinstance(part, int):
            path = f"{path}[{part}]"
            entries = cast(list[Any], node)
            node = entries[part] if part < len(entries) else None
        elif position == len(loc) - 1 and isinstance(part, str) and part.isidentifier():
            path = f"{path}.{part}" if path else part  # a missing key: not in the raw data
    return path
