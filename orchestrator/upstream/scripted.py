"""The scripted model: a deterministic GA-protocol realtime model (design §4.5).

`ScriptedModel` speaks the server side of the protocol in process: it keeps the session, the
conversation and the input audio buffer, answers each client event as the GA service does,
and picks each reply from the agent's script (`script.py`); one reply is a `ResponseRun`
(`scripted_run.py`). `ScriptedUpstream` wraps it behind the `Upstream` interface, no socket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any, assert_never

import orjson

from orchestrator.agents.spec import ScriptRule
from orchestrator.errors import ProtocolError
from orchestrator.upstream.base import UpstreamClosed
from orchestrator.upstream.script import (
    SAY_EXACTLY,
    Call,
    Plan,
    Say,
    compile_script,
    plan_reply,
)
from orchestrator.upstream.scripted_run import WORD_PATTERN, Event, ResponseRun, RunOptions, new_id
from orchestrator.upstream.scripted_state import (
    SEMANTIC_SILENCE_MS,
    TURN_DEFAULTS,
    Conversation,
    as_object,
    content_parts,
    count_tokens,
    default_session,
    merge_session,
    without_audio,
)
from orchestrator.upstream.scripted_wire import (
    ConversationItemCreateEvent,
    ConversationItemDeleteEvent,
    ConversationItemRetrieveEvent,
    ConversationItemTruncateEvent,
    InputAudioBufferAppendEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    InputItemParam,
    ItemReferenceParam,
    OutputAudioBufferClearEvent,
    ResponseCancelEvent,
    ResponseCreateEvent,
    ResponseParam,
    SessionUpdateEvent,
    parse_client_event,
)
from orchestrator.upstream.synth import WORD_MS, AudioFormat, EnergyVad

HandoffScripts = Callable[[str], Sequence[ScriptRule] | None]
_MIN_COMMIT_MS = 100


class ScriptedModel:
    """The GA server side of one session, driven by a script; output frames go to `outgoing`."""

    def __init__(
        self, script: Sequence[ScriptRule], *, model: str = "scripted", pace_audio: bool = False,
        handoff_scripts: HandoffScripts | None = None,
    ) -> None:
        self.outgoing: asyncio.Queue[str | None] = asyncio.Queue()  # None: closed
        self.pace_audio = pace_audio
        self.session = default_session(model)
        self.conversation = Conversation()
        self._script = compile_script(script)
        self._handoff_scripts = handoff_scripts
        self._fired: set[str] = set()
        self._calls: dict[str, Call] = {}
        self._audio_ms: dict[str, int] = {}
        self._conversation_id = new_id("conv")
        self._active: ResponseRun | None = None
        self._runs: set[ResponseRun] = set()
        self._buffer = bytearray()
        self._vad: EnergyVad | None = None
        self._speech_item_id: str | None = None
        self._event_ids = map(f"event_{secrets.token_hex(4)}{{:x}}".format, itertools.count(1))
        self._closed = False
        self._configure_vad()
        self.emit("session.created", {"session": self.session})

    # ---- plumbing ----------------------------------------------------------------------

    def emit(self, kind: str, fields: Event) -> None:
        """Serialize one server event now (later changes to `fields` do not leak in)."""
        if not self._closed:
            event = {"type": kind, "event_id": next(self._event_ids), **fields}
            self.outgoing.put_nowait(orjson.dumps(event).decode())

    def use_script(self, script: Sequence[ScriptRule]) -> None:
        """Follow another script from the next response on (a handoff between agents)."""
        self._script = compile_script(script)

    def close(self) -> None:
        """Stop every response and end the output stream."""
        self._closed = True
        for run in self._runs:
            if run.task is not None:
                run.task.cancel()
        self._runs.clear()
        while not self.outgoing.empty():
            self.outgoing.get_nowait()
        self.outgoing.put_nowait(None)

    async def handle_frame(self, frame: str | bytes) -> None:
        """Handle one raw client frame (JSON text)."""
        try:
            event = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            self._error(ProtocolError(f"We could not parse the JSON body of your request. ({exc})",
                                      code="invalid_json"))
            return
        if not isinstance(event, dict):
            self._error(ProtocolError("A client event must be a JSON object.",
                                      code="invalid_type"))
            return
        await self.handle(event)  # pyright: ignore[reportUnknownArgumentType]

    async def handle(self, event: dict[str, Any]) -> None:
        """Handle one decoded client event; errors become `error` events."""
        try:
            self._dispatch(event)
        except ProtocolError as exc:
            if exc.event_id is None and isinstance(event.get("event_id"), str):
                exc.event_id = event["event_id"]
            self._error(exc)

    def _dispatch(self, raw: dict[str, Any]) -> None:
        event = parse_client_event(raw)
        match event:
            case SessionUpdateEvent():
                self._session_update(event)
            case InputAudioBufferAppendEvent():
                self._append(event)
            case InputAudioBufferCommitEvent():
                self._commit(None)
                self._auto_response()
            case InputAudioBufferClearEvent():
                self._buffer.clear()
                if self._vad is not None:
                    self._vad.reset()
                self.emit("input_audio_buffer.cleared", {})
            case OutputAudioBufferClearEvent():
                raise ProtocolError("output_audio_buffer.clear is only supported for WebRTC "
                                    "and SIP sessions.", code="invalid_value", param="type")
            case ConversationItemCreateEvent():
                self._item_create(event)
            case ConversationItemRetrieveEvent():
                item = self.conversation.find(event.item_id)
                self.emit("conversation.item.retrieved", {"item": item})
            case ConversationItemDeleteEvent():
                self.conversation.delete(event.item_id)
                self.emit("conversation.item.deleted", {"item_id": event.item_id})
            case ConversationItemTruncateEvent():
                self._truncate(event)
            case ResponseCreateEvent():
                self._response_create(event.response or ResponseParam())
            case ResponseCancelEvent():
                self._response_cancel(event.response_id)
            case _:
                assert_never(event)

    def _error(self, exc: ProtocolError) -> None:
        self.emit("error", {"error": {
            "type": "invalid_request_error", "code": exc.code, "message": str(exc),
            "param": exc.param, "event_id": exc.event_id}})

    # ---- session -----------------------------------------------------------------------

    def _session_update(self, event: SessionUpdateEvent) -> None:
        patch = event.session.model_dump(exclude_unset=True, exclude={"model"})
        merge_session(self.session, patch)
        audio = self.session["audio"]
        for side in ("input", "output"):
            fmt = as_object(audio[side].get("format"))
            if fmt is not None and fmt.get("type") == "audio/pcm":
                fmt["rate"] = 24000
        turn = self._turn_detection()
        if turn is not None:
            audio["input"]["turn_detection"] = {**TURN_DEFAULTS[str(turn["type"])], **turn}
        self._configure_vad()
        self.emit("session.updated", {"session": self.session})

    def _turn_detection(self) -> Event | None:
        return as_object(self.session["audio"]["input"].get("turn_detection"))

    def _configure_vad(self) -> None:
        turn = self._turn_detection()
        if turn is None:
            self._vad = None
            return
        if turn["type"] == "server_vad":
            silence = turn.get("silence_duration_ms")
        else:  # semantic_vad: its eagerness stands for a silence length
            silence = SEMANTIC_SILENCE_MS[str(turn.get("eagerness") or "auto")]
        threshold = float(turn.get("threshold") or 0.5)
        padding = int(turn.get("prefix_padding_ms") or 300)
        vad = EnergyVad(threshold, padding, int(silence if silence is not None else 500))
        if self._vad is not None:
            vad.position_ms = self._vad.position_ms
        self._vad = vad

    def _input_format(self) -> AudioFormat:
        return AudioFormat.from_wire(self.session["audio"]["input"].get("format"))

    # ---- conversation ------------------------------------------------------------------

    def _item_create(self, event: ConversationItemCreateEvent) -> None:
        item = event.item.model_dump(exclude_none=True)
        item_id = item.setdefault("id", new_id("item"))
        if self.conversation.has(item_id):
            raise ProtocolError(f"Item with id '{item_id}' already exists.",
                                code="invalid_value", param="item.id")
        item["object"], item["status"] = "realtime.item", "completed"
        if item["type"] == "function_call":
            item.setdefault("call_id", new_id("call"))
        previous = self.conversation.insert(item, event.previous_item_id)
        if item["type"] == "message" and item["role"] == "user":
            self._fired.clear()
        if item["type"] == "function_call_output":
            self._follow_handoff(str(item["call_id"]))
        self._announce_item(item, previous)

    def _announce_item(self, item: Event, previous: str | None) -> None:
        public = without_audio(item)
        self.emit("conversation.item.added", {"previous_item_id": previous, "item": public})
        self.emit("conversation.item.done", {"previous_item_id": previous, "item": public})

    def _follow_handoff(self, call_id: str) -> None:
        """In the standalone sandbox, answering a handoff call switches to the target's script."""
        call = self._calls.get(call_id)
        if call is None or call.rule.handoff is None or self._handoff_scripts is None:
            return
        script = self._handoff_scripts(call.rule.handoff)
        if script is not None:
            self.use_script(script)

    def _truncate(self, event: ConversationItemTruncateEvent) -> None:
        item = self.conversation.find(event.item_id)
        content = content_parts(item)
        if item.get("role") != "assistant" or event.content_index >= len(content) or (
                content[event.content_index].get("type") != "output_audio"):
            raise ProtocolError("Only assistant messages with audio can be truncated.",
                                code="invalid_value", param="item_id")
        duration = self._audio_ms.get(event.item_id, 0)
        if event.audio_end_ms > duration:
            raise ProtocolError(f"Audio content of {duration}ms is already shorter than "
                                f"{event.audio_end_ms}ms.", code="invalid_value",
                                param="audio_end_ms")
        part = content[event.content_index]
        heard = math.ceil(event.audio_end_ms / WORD_MS)
        words = WORD_PATTERN.findall(str(part.get("transcript") or ""))
        part["transcript"] = "".join(words[:heard])
        self._audio_ms[event.item_id] = event.audio_end_ms
        self.emit("conversation.item.truncated", {
            "item_id": event.item_id, "content_index": event.content_index,
            "audio_end_ms": event.audio_end_ms})

    # ---- input audio -------------------------------------------------------------------

    def _append(self, event: InputAudioBufferAppendEvent) -> None:
        try:
            data = base64.b64decode(event.audio, validate=True)
        except binascii.Error:
            raise ProtocolError("Invalid value for 'audio': not valid base64.",
                                code="invalid_value", param="audio") from None
        self._buffer += data
        if self._vad is None:
            return
        for edge in self._vad.feed(data, self._input_format()):
            if edge.kind == "started":
                self._speech_started(edge.ms)
            else:
                item_id = self._speech_item_id or new_id("item")
                self.emit("input_audio_buffer.speech_stopped",
                          {"audio_end_ms": edge.ms, "item_id": item_id})
                self._commit(item_id)
                self._auto_response()
        if not self._vad.speaking:
            self._keep_prefix()

    def _speech_started(self, start_ms: int) -> None:
        self._speech_item_id = new_id("item")
        self.emit("input_audio_buffer.speech_started",
                  {"audio_start_ms": start_ms, "item_id": self._speech_item_id})
        turn = self._turn_detection()
        if self._active is not None and turn is not None and turn.get("interrupt_response"):
            self._active.cancel("turn_detected")

    def _keep_prefix(self) -> None:
        """Between turns keep only the prefix padding, so silence does not pile up."""
        fmt, vad = self._input_format(), self._vad
        assert vad is not None
        keep = fmt.rate * fmt.sample_bytes * vad.prefix_padding_ms // 1000
        keep -= keep % fmt.sample_bytes
        if len(self._buffer) > keep:
            del self._buffer[: len(self._buffer) - keep]

    def _commit(self, item_id: str | None) -> None:
        duration = self._input_format().duration_ms(len(self._buffer))
        if duration < _MIN_COMMIT_MS:
            raise ProtocolError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{_MIN_COMMIT_MS}ms of audio, but buffer only has {duration:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty")
        item: Event = {
            "id": item_id or new_id("item"), "object": "realtime.item", "type": "message",
            "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "audio": base64.b64encode(self._buffer).decode(),
                         "transcript": None}],
        }
        self._buffer.clear()
        self._speech_item_id = None
        if self._vad is not None:
            self._vad.reset()
        previous = self.conversation.insert(item, None)
        self._fired.clear()
        self.emit("input_audio_buffer.committed",
                  {"previous_item_id": previous, "item_id": item["id"]})
        self._announce_item(item, previous)

    def _auto_response(self) -> None:
        turn = self._turn_detection()
        if turn is not None and turn.get("create_response") and self._active is None:
            self._response_create(ResponseParam())

    # ---- responses ---------------------------------------------------------------------

    def _response_create(self, params: ResponseParam) -> None:
        in_conversation = params.conversation != "none"
        if in_conversation and self._active is not None:
            raise ProtocolError(
                "Conversation already has an active response in progress: "
                f"{self._active.id}. Wait until the response is finished before creating a new "
                "one.", code="conversation_already_has_active_response")
        items = self.conversation.items if params.input is None else self._input_items(params.input)
        fired = self._fired if in_conversation else set(self._fired)
        plan = plan_reply(items, self._script, fired,
                          {call_id: call.rule for call_id, call in self._calls.items()})
        said = params.instructions or ""
        if not in_conversation and said.startswith(SAY_EXACTLY):  # a filler line
            plan = Plan([Say(said.removeprefix(SAY_EXACTLY))])
        if plan.fired is not None:
            fired.add(plan.fired.key)
        run = ResponseRun(self, plan.outputs, self._run_options(params, in_conversation, items))
        if in_conversation:
            self._active = run
        self._runs.add(run)
        self.emit("response.created", {"response": run.response("in_progress")})
        run.task = asyncio.get_running_loop().create_task(run.run())

    def _input_items(self, entries: list[InputItemParam]) -> list[Event]:
        items: list[Event] = []
        for index, entry in enumerate(entries):
            if isinstance(entry, ItemReferenceParam):
                try:
                    items.append(self.conversation.find(entry.id))
                except ProtocolError as exc:
                    exc.param = f"response.input[{index}].id"
                    raise
            else:
                items.append(entry.model_dump(exclude_none=True))
        return items

    def _run_options(self, params: ResponseParam, in_conversation: bool,
                     items: Sequence[Event]) -> RunOptions:
        session, out = self.session, self.session["audio"]["output"]
        override = params.audio.output if params.audio and params.audio.output else None
        fmt = override.format.model_dump() if override and override.format else out["format"]
        voice = override.voice if override and override.voice is not None else out["voice"]
        return RunOptions(
            modality=(params.output_modalities or session["output_modalities"])[0],
            audio_format=fmt, voice=voice if isinstance(voice, str) else voice.model_dump(),
            metadata=params.metadata,
            conversation_id=self._conversation_id if in_conversation else None,
            max_output_tokens=params.max_output_tokens or session["max_output_tokens"],
            input_tokens=count_tokens(items, session.get("instructions") or ""),
            pace_audio=self.pace_audio,
        )

    def _response_cancel(self, response_id: str | None) -> None:
        target = self._active
        if response_id is not None:
            target = next((run for run in self._runs if run.id == response_id), None)
        if target is None or target.cancel_reason is not None:
            raise ProtocolError("Cancellation failed: no active response found",
                                code="response_cancel_not_active")
        target.cancel("client_cancelled")

    # RunHost
    def add_output_item(self, item: Event) -> str | None:
        """Append a generated item to the conversation (RunHost)."""
        return self.conversation.insert(item, None)

    def note_call(self, call_id: str, call: Call) -> None:
        """Remember the rule behind a call (RunHost)."""
        self._calls[call_id] = call

    def run_finished(self, run: ResponseRun) -> None:
        """Forget a finished response (RunHost)."""
        if self._active is run:
            self._active = None
        self._runs.discard(run)
        self._audio_ms.update(run.audio_ms)


class ScriptedUpstream:
    """The scripted model behind the `Upstream` interface: in process, no socket."""

    def __init__(
        self, script: Sequence[ScriptRule], *, model: str = "scripted", pace_audio: bool = False,
    ) -> None:
        self.model = ScriptedModel(script, model=model, pace_audio=pace_audio)
        self._closed = False

    def use_script(self, script: Sequence[ScriptRule]) -> None:
        """Follow another agent's script (the session calls this on a handoff)."""
        self.model.use_script(script)

    async def send(self, frame: str) -> None:
        """Hand one client event to the model."""
        if self._closed:
            raise UpstreamClosed("scripted model closed", clean=True)
        await self.model.handle_frame(frame)

    async def recv(self) -> str:
        """The next server event frame."""
        frame = await self.model.outgoing.get()
        if frame is None:
            self.model.outgoing.put_nowait(None)  # later calls end the same way
            raise UpstreamClosed("scripted model closed", clean=True)
        return frame

    async def aclose(self) -> None:
        """Close the session; pending frames are dropped."""
        if not self._closed:
            self._closed = True
            self.model.close()
