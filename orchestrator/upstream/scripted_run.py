"""One response of the scripted model: the GA event sequence of §6.1 / §6.2, and its cancel.

A run emits through its host (the model), which owns the conversation and the output queue.
It yields to the event loop after every word, so a `response.cancel` (or a barge-in) lands
mid-reply; with `pace_audio` the audio leaves at real-time pace.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from orchestrator.upstream.script import Call, Output, Say
from orchestrator.upstream.synth import CHUNK_MS, AudioFormat, word_audio

log = logging.getLogger(__name__)

Event = dict[str, Any]
WORD_PATTERN = re.compile(r"\s*\S+")  # a word with the space before it
_ARGS_CHUNK = 32


def new_id(prefix: str) -> str:
    """An id in the style of the GA service: `resp_…`, `item_…`, `call_…`."""
    return f"{prefix}_{secrets.token_hex(10)}"


class RunHost(Protocol):
    """What a run needs from the model that started it."""

    def emit(self, kind: str, fields: Event) -> None:
        """Queue one server event of type `kind`."""
        ...

    def note_call(self, call_id: str, call: Call) -> None:
        """Remember which rule produced a call, to answer its output later."""
        ...

    def add_output_item(self, item: Event) -> str | None:
        """Append a generated item to the conversation; return the previous item id."""
        ...

    def run_finished(self, run: ResponseRun) -> None:
        """The run is over (called just before its `response.done`)."""
        ...


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The effective settings of one response (session defaults + response overrides)."""

    modality: Literal["text", "audio"]
    audio_format: Event
    voice: str | Event
    metadata: dict[str, str] | None
    conversation_id: str | None
    max_output_tokens: int | str
    input_tokens: tuple[int, int]  # (text, audio)
    pace_audio: bool


class _Cancelled(Exception):
    pass


class ResponseRun:
    """Generates one response's events; `cancel` ends it early with status `cancelled`."""

    def __init__(self, host: RunHost, outputs: Sequence[Output], options: RunOptions) -> None:
        self.id = new_id("resp")
        self.host = host
        self.outputs = list(outputs)
        self.options = options
        self.output: list[Event] = []
        self.cancel_reason: Literal["client_cancelled", "turn_detected"] | None = None
        self.task: asyncio.Task[None] | None = None
        self.audio_ms: dict[str, int] = {}  # item id → ms of audio generated
        self._fmt = AudioFormat.from_wire(options.audio_format)
        self._waiter: asyncio.Future[None] | None = None
        self._open: _OpenItem | None = None
        self._out_tokens = [0, 0]  # (text, audio)
        self._chunks_sent = 0
        self._clock_start = 0.0

    @property
    def in_conversation(self) -> bool:
        """Whether the output goes into the default conversation."""
        return self.options.conversation_id is not None

    def response(self, status: str, details: Event | None = None) -> Event:
        """The response object as `response.created` / `response.done` carry it."""
        opts = self.options
        usage = self._usage() if status != "in_progress" else None
        return {
            "id": self.id, "object": "realtime.response", "status": status,
            "status_details": details, "output": self.output,
            "conversation_id": opts.conversation_id, "output_modalities": [opts.modality],
            "max_output_tokens": opts.max_output_tokens,
            "audio": {"output": {"format": opts.audio_format, "voice": opts.voice}},
            "usage": usage, "metadata": opts.metadata,
        }

    def cancel(self, reason: Literal["client_cancelled", "turn_detected"]) -> None:
        """Ask the run to stop at its next word or audio chunk."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def run(self) -> None:
        """Emit everything after `response.created`, through `response.done`."""
        try:
            for index, output in enumerate(self.outputs):
                await self._checkpoint()
                if isinstance(output, Say):
                    await self._say(index, output.text)
                else:
                    self._call(index, output)
        except _Cancelled:
            self._close_open()
            reason = self.cancel_reason or "client_cancelled"
            self._finish("cancelled", {"type": "cancelled", "reason": reason})
            return
        except Exception as exc:  # a bug here must not leave the conversation "active" forever
            log.exception("scripted response %s failed", self.id)
            error = {"type": "server_error", "code": None, "message": f"scripted model: {exc}"}
            self._finish("failed", {"type": "failed", "error": error})
            return
        self._finish("completed", None)

    def _finish(self, status: str, details: Event | None) -> None:
        self.host.run_finished(self)
        self.host.emit("response.done", {"response": self.response(status, details)})

    # ---- items -------------------------------------------------------------------------

    def _begin_item(self, index: int, item: Event) -> _OpenItem:
        self.output.append(item)
        self.host.emit("response.output_item.added",
                             {"response_id": self.id, "output_index": index, "item": item})
        previous = self.host.add_output_item(item) if self.in_conversation else None
        if self.in_conversation:
            self.host.emit("conversation.item.added",
                                 {"previous_item_id": previous, "item": item})
        self._open = _OpenItem(index, item, previous)
        return self._open

    def _end_item(self, status: str) -> None:
        opened = self._open
        assert opened is not None
        self._open = None
        opened.item["status"] = status
        if self.in_conversation:
            self.host.emit("conversation.item.done",
                                 {"previous_item_id": opened.previous, "item": opened.item})
        self.host.emit("response.output_item.done", {
            "response_id": self.id, "output_index": opened.index, "item": opened.item})

    async def _say(self, index: int, text: str) -> None:
        audio = self.options.modality == "audio"
        item: Event = {"id": new_id("item"), "object": "realtime.item", "type": "message",
                       "role": "assistant", "status": "in_progress", "content": []}
        opened = self._begin_item(index, item)
        opened.part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        self.host.emit("response.content_part.added", {**opened.ctx(self.id),
                                                             "part": opened.part})
        for word in WORD_PATTERN.findall(text):
            await self._checkpoint()
            opened.text.append(word)
            self._out_tokens[0] += 1
            if audio:
                self.host.emit("response.output_audio_transcript.delta",
                                     {**opened.ctx(self.id), "delta": word})
                await self._speak(opened, word)
            else:
                self.host.emit("response.output_text.delta",
                                     {**opened.ctx(self.id), "delta": word})
        self._close_part(opened)
        self._end_item("completed")

    async def _speak(self, opened: _OpenItem, word: str) -> None:
        for chunk in word_audio(word.strip(), self._fmt):
            await self._pace()
            self.host.emit("response.output_audio.delta",
                                 {**opened.ctx(self.id), "delta": chunk})
            self.audio_ms[opened.item["id"]] = self.audio_ms.get(opened.item["id"], 0) + CHUNK_MS
            self._out_tokens[1] += CHUNK_MS // 50

    def _close_part(self, opened: _OpenItem) -> None:
        text = "".join(opened.text)
        ctx = opened.ctx(self.id)
        if opened.part.get("type") == "audio":
            self.host.emit("response.output_audio.done", ctx)
            self.host.emit("response.output_audio_transcript.done",
                                 {**ctx, "transcript": text})
            opened.part = {"type": "audio", "transcript": text}
            opened.item["content"] = [{"type": "output_audio", "transcript": text}]
        else:
            self.host.emit("response.output_text.done", {**ctx, "text": text})
            opened.part = {"type": "text", "text": text}
            opened.item["content"] = [{"type": "output_text", "text": text}]
        self.host.emit("response.content_part.done", {**ctx, "part": opened.part})

    def _call(self, index: int, call: Call) -> None:
        call_id = call.rule.call_id or new_id("call")
        item: Event = {"id": new_id("item"), "object": "realtime.item", "type": "function_call",
                       "status": "in_progress", "name": call.name, "call_id": call_id,
                       "arguments": ""}
        self._begin_item(index, item)
        base = {"response_id": self.id, "item_id": item["id"], "output_index": index,
                "call_id": call_id}
        for start in range(0, len(call.arguments), _ARGS_CHUNK):
            self.host.emit("response.function_call_arguments.delta",
                                 {**base, "delta": call.arguments[start : start + _ARGS_CHUNK]})
        item["arguments"] = call.arguments
        self._out_tokens[0] += 1 + len(call.arguments) // 4
        self.host.emit("response.function_call_arguments.done",
                             {**base, "name": call.name, "arguments": call.arguments})
        self.host.note_call(call_id, call)
        self._end_item("completed")

    def _close_open(self) -> None:
        """Finish the item a cancel interrupted, as the GA service does (status incomplete)."""
        opened = self._open
        if opened is None:
            return
        if opened.part:
            self._close_part(opened)
        self._end_item("incomplete")

    # ---- pacing and cancellation ---------------------------------------------------------

    async def _checkpoint(self) -> None:
        # One loop turn per word keeps a long reply from starving other sessions.
        await asyncio.sleep(0)
        if self.cancel_reason is not None:
            raise _Cancelled

    async def _pace(self) -> None:
        if not self.options.pace_audio:
            return
        loop = asyncio.get_running_loop()
        if self._chunks_sent == 0:
            self._clock_start = loop.time()
        due = self._clock_start + self._chunks_sent * CHUNK_MS / 1000
        self._chunks_sent += 1
        if due > loop.time():
            self._waiter = loop.create_future()
            timer = loop.call_at(due, _resolve, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self.cancel_reason is not None:
            raise _Cancelled

    def _usage(self) -> Event:
        text_in, audio_in = self.options.input_tokens
        text_out, audio_out = self._out_tokens
        return {
            "total_tokens": text_in + audio_in + text_out + audio_out,
            "input_tokens": text_in + audio_in, "output_tokens": text_out + audio_out,
            "input_token_details": {"text_tokens": text_in, "audio_tokens": audio_in,
                                    "image_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _OpenItem:
    """The output item being generated, so a cancel can close it properly."""

    __slots__ = ("index", "item", "part", "previous", "text")

    def __init__(self, index: int, item: Event, previous: str | None) -> None:
        self.index = index
        self.item = item
        self.previous = previous
        self.part: Event = {}
        self.text: list[str] = []

    def ctx(self, response_id: str) -> Event:
        """The response_id / item_id / output_index / content_index of a content event."""
        return {"response_id": response_id, "item_id": self.item["id"],
                "output_index": self.index, "content_index": 0}
