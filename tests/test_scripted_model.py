"""The scripted model speaks the GA server side: every frame it emits validates strictly."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest

from orchestrator.agents.spec import ScriptRule
from orchestrator.upstream.base import UpstreamClosed
from orchestrator.upstream.script import AFTER_TOOL_TEXT, NO_MATCH_TEXT
from orchestrator.upstream.scripted import ScriptedUpstream
from orchestrator.upstream.synth import (
    CHUNK_MS,
    WORD_MS,
    AudioFormat,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
    word_audio,
)
from tests.wire import assert_response_flow, validate_client_event, validate_server_event

TIMEOUT = 5
Event = dict[str, Any]

SCRIPT = [
    ScriptRule(when="time", call="get_current_time", arguments={"timezone": "Asia/Tokyo"},
               say="Here is the time: {output}"),
    ScriptRule(when="weather", call="get_weather", arguments={"city": "Paris"}),
    ScriptRule(when="weather", say="It is sunny."),
    ScriptRule(when="bill|invoice", handoff="billing", say="Let me transfer you."),
    ScriptRule(when=r"hello|hi\b", say="Hello! Ask me the time."),
]
BILLING = [
    ScriptRule(when="bill", say="Billing here: your invoice is paid."),
    ScriptRule(handoff="front-desk"),
]


class Client:
    """A test client of the scripted upstream; every frame it reads is validated."""

    def __init__(self, upstream: ScriptedUpstream) -> None:
        self.upstream = upstream
        self.frames: list[Event] = []

    async def send(self, event: Event, *, valid: bool = True) -> None:
        if valid:
            validate_client_event(event)
        await self.upstream.send(json.dumps(event))

    async def recv(self) -> Event:
        raw = await asyncio.wait_for(self.upstream.recv(), TIMEOUT)
        validate_server_event(raw)
        event: Event = json.loads(raw)
        assert event["event_id"].startswith("event_")
        self.frames.append(event)
        return event

    async def until(self, kind: str) -> list[Event]:
        """Read up to and including the next event of type `kind`."""
        got: list[Event] = []
        while True:
            got.append(await self.recv())
            if got[-1]["type"] == kind:
                return got

    async def say(self, text: str, **response: Any) -> list[Event]:
        """A user text turn and its response; returns the events through response.done."""
        await self.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        await self.until("conversation.item.done")
        await self.send({"type": "response.create", **({"response": response} if response else {})})
        return await self.until("response.done")

    async def answer(self, call: Event, output: str) -> list[Event]:
        await self.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call["call_id"], "output": output}})
        await self.send({"type": "response.create"})
        return await self.until("response.done")


async def _client(script: list[ScriptRule] = SCRIPT, *, modality: str = "text",
                  pace_audio: bool = False, **session: Any) -> Client:
    client = Client(ScriptedUpstream(script, pace_audio=pace_audio))
    assert (await client.recv())["type"] == "session.created"
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "output_modalities": [modality], **session}})
    assert (await client.recv())["type"] == "session.updated"
    return client


def _types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def _done(events: list[Event]) -> Event:
    assert events[-1]["type"] == "response.done"
    return events[-1]["response"]


# ---- session -------------------------------------------------------------------------------


async def test_session_created_has_the_full_default_session() -> None:
    client = Client(ScriptedUpstream([], model="scripted"))
    session = (await client.recv())["session"]
    assert session["id"].startswith("sess_") and session["object"] == "realtime.session"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert (session["instructions"], session["tools"], session["tool_choice"],
            session["max_output_tokens"]) == ("", [], "auto", "inf")


async def test_session_update_changes_only_the_fields_sent() -> None:
    client = Client(ScriptedUpstream([]))
    await client.recv()
    tool = {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "instructions": "Be brief.", "tools": [tool],
        "audio": {"output": {"voice": "cedar"}, "input": {"turn_detection": None}}}})
    first = (await client.recv())["session"]
    assert first["instructions"] == "Be brief." and first["tools"] == [tool]
    assert first["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000},
                                        "voice": "cedar", "speed": 1.0}
    assert first["audio"]["input"]["turn_detection"] is None
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}},
                                      "input": {"turn_detection": {"type": "semantic_vad"}}}}})
    second = (await client.recv())["session"]
    assert second["instructions"] == "Be brief." and second["audio"]["output"]["voice"] == "cedar"
    assert second["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert second["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad", "eagerness": "auto", "create_response": True,
        "interrupt_response": True}


@pytest.mark.parametrize(("session", "code", "param"), [
    ({"instructions": "x"}, "missing_required_parameter", "session.type"),
    ({"type": "realtime", "modalities": ["text"]}, "unknown_parameter", "session.modalities"),
    ({"type": "transcription"}, "invalid_value", "session.type"),
    ({"type": "realtime", "output_modalities": ["text", "audio"]}, "invalid_value",
     "session.output_modalities"),
    ({"type": "realtime", "audio": {"output": {"format": {"type": "pcm16"}}}}, "invalid_value",
     "session.audio.output.format.type"),
    ({"type": "realtime", "tools": [{"type": "function", "name": 3}]}, "invalid_type",
     "session.tools[0].name"),
])
async def test_session_update_errors(session: Event, code: str, param: str) -> None:
    client = Client(ScriptedUpstream([]))
    await client.recv()
    await client.send({"type": "session.update", "event_id": "evt_1", "session": session},
                      valid=False)
    error = (await client.recv())["error"]
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "invalid_request_error", code, param, "evt_1")


# ---- text, audio, tools, handoffs ----------------------------------------------------------


async def test_text_turn_follows_the_ga_order() -> None:
    client = await _client()
    await client.send({"type": "conversation.item.create", "item": {
        "id": "msg_client_1", "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Hello there"}]}})
    added = await client.until("conversation.item.done")
    assert [e["item"]["id"] for e in added] == ["msg_client_1", "msg_client_1"]
    await client.send({"type": "response.create", "response": {"metadata": {"turn": "1"}}})
    events = await client.until("response.done")
    assert _types(events) == [
        "response.created", "response.output_item.added", "conversation.item.added",
        "response.content_part.added", *["response.output_text.delta"] * 5,
        "response.output_text.done", "response.content_part.done", "conversation.item.done",
        "response.output_item.done", "response.done"]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["metadata"] == {"turn": "1"}
    assert events[2]["previous_item_id"] == "msg_client_1"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "Hello! Ask me the time."
    response = _done(events)
    assert response["status"] == "completed" and response["metadata"] == {"turn": "1"}
    assert response["output"][0]["content"] == [{"type": "output_text", "text": deltas}]
    assert response["usage"]["output_tokens"] > 0 and response["usage"]["input_tokens"] > 0
    assert_response_flow(client.frames)


async def test_audio_turn_streams_transcript_and_audio() -> None:
    client = await _client(modality="audio")
    events = await client.say("hi")
    text = "Hello! Ask me the time."
    kinds = _types(events)
    assert kinds[:4] == ["response.created", "response.output_item.added",
                         "conversation.item.added", "response.content_part.added"]
    assert kinds[-6:] == ["response.output_audio.done", "response.output_audio_transcript.done",
                          "response.content_part.done", "conversation.item.done",
                          "response.output_item.done", "response.done"]
    assert events[3]["part"]["type"] == "audio"
    transcript = "".join(e["delta"] for e in events
                         if e["type"] == "response.output_audio_transcript.delta")
    assert transcript == text
    audio = b"".join(base64.b64decode(e["delta"]) for e in events
                     if e["type"] == "response.output_audio.delta")
    words = len(text.split())
    assert len(audio) == words * WORD_MS * 48  # pcm16 at 24 kHz: 48 bytes per ms
    done = _done(events)
    assert done["output_modalities"] == ["audio"]
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": text}]
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    assert_response_flow(client.frames)


@pytest.mark.parametrize("kind", ["pcmu", "pcma"])
async def test_audio_follows_the_g711_output_format(kind: str) -> None:
    fmt = {"type": f"audio/{kind}"}
    client = await _client(modality="audio", audio={"output": {"format": fmt}})
    events = await client.say("hi")
    chunks = [base64.b64decode(e["delta"]) for e in events
              if e["type"] == "response.output_audio.delta"]
    assert {len(c) for c in chunks} == {8 * CHUNK_MS}  # 8 kHz, one byte per sample
    assert _done(events)["audio"]["output"]["format"] == {"type": f"audio/{kind}"}


async def test_response_overrides_modality_and_format() -> None:
    client = await _client(modality="text")
    events = await client.say("hi", output_modalities=["audio"],
                              audio={"output": {"format": {"type": "audio/pcma"}}})
    assert "response.output_audio.delta" in _types(events)
    assert _done(events)["audio"]["output"]["format"] == {"type": "audio/pcma"}


async def test_tool_call_round_trip_says_the_output() -> None:
    client = await _client()
    events = await client.say("What time is it?")
    assert _types(events) == [
        "response.created", "response.output_item.added", "conversation.item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "conversation.item.done", "response.output_item.done", "response.done"]
    call = _done(events)["output"][0]
    assert call["type"] == "function_call" and call["name"] == "get_current_time"
    assert call["call_id"].startswith("call_") and json.loads(call["arguments"]) == {
        "timezone": "Asia/Tokyo"}
    args_done = events[4]
    assert (args_done["call_id"], args_done["name"], args_done["arguments"]) == (
        call["call_id"], call["name"], call["arguments"])
    reply = await client.answer(call, "10:42")
    assert reply[0]["type"] == "conversation.item.added"  # the output item is acknowledged
    assert _done(reply)["output"][0]["content"][0]["text"] == "Here is the time: 10:42"
    assert_response_flow(client.frames)


async def test_a_call_without_say_falls_through_to_the_next_rule() -> None:
    client = await _client()
    call = _done(await client.say("weather please"))["output"][0]
    assert call["name"] == "get_weather"
    reply = await client.answer(call, "{}")
    assert _done(reply)["output"][0]["content"][0]["text"] == "It is sunny."
    # Both weather rules have fired in this turn: another response says the default.
    await client.send({"type": "response.create"})
    assert _done(await client.until("response.done"))["output"][0]["content"][0]["text"] == (
        NO_MATCH_TEXT)


async def test_handoff_then_the_new_script_answers_the_same_turn() -> None:
    client = await _client()
    events = await client.say("A question about my bill")
    output = _done(events)["output"]
    assert [o["type"] for o in output] == ["message", "function_call"]
    assert output[0]["content"][0]["text"] == "Let me transfer you."
    assert (output[1]["name"], output[1]["arguments"]) == ("transfer_to_billing", "{}")
    client.upstream.use_script(BILLING)
    reply = await client.answer(output[1], "transferred")
    assert _done(reply)["output"][0]["content"][0]["text"] == "Billing here: your invoice is paid."
    assert_response_flow(client.frames)


async def test_rules_do_not_loop_after_a_handoff() -> None:
    client = await _client([ScriptRule(handoff="other")])
    call = _done(await client.say("anything"))["output"][0]
    assert call["name"] == "transfer_to_other"
    # The rule already fired in this user turn: no second transfer, a short default.
    reply = await client.answer(call, "ok")
    assert _done(reply)["output"][0]["content"][0]["text"] == AFTER_TOOL_TEXT


async def test_no_rule_matches() -> None:
    client = await _client([ScriptRule(when="never", say="x")])
    assert _done(await client.say("hello"))["output"][0]["content"][0]["text"] == NO_MATCH_TEXT


# ---- cancel, concurrency, out of band ------------------------------------------------------


async def test_cancel_before_any_output() -> None:
    client = await _client()
    await client.send({"type": "response.create"})
    await client.send({"type": "response.cancel"})
    events = await client.until("response.done")
    assert _types(events) == ["response.created", "response.done"]
    done = _done(events)
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}


async def test_cancel_mid_audio_closes_the_item_as_incomplete() -> None:
    client = await _client(modality="audio", pace_audio=True)
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    started = time.monotonic()
    await client.send({"type": "response.cancel", "event_id": "cancel_1"})
    events = await client.until("response.done")
    assert time.monotonic() - started < 1.0  # well before the 1.5 s the reply would last
    assert _types(events)[-6:] == [
        "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "conversation.item.done", "response.output_item.done",
        "response.done"]
    done = _done(events)
    assert done["status"] == "cancelled" and done["output"][0]["status"] == "incomplete"
    assert_response_flow(client.frames)


async def test_cancel_without_active_response_is_an_error_and_the_session_goes_on() -> None:
    client = await _client()
    await client.send({"type": "response.cancel", "event_id": "c1"})
    error = (await client.recv())["error"]
    assert (error["code"], error["event_id"]) == ("response_cancel_not_active", "c1")
    assert _done(await client.say("hi"))["status"] == "completed"


async def test_second_response_while_one_is_active_is_refused() -> None:
    client = await _client()
    await client.send({"type": "response.create"})
    await client.send({"type": "response.create", "event_id": "dup"})
    events = await client.until("response.done")
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [(e["code"], e["event_id"]) for e in errors] == [
        ("conversation_already_has_active_response", "dup")]


async def test_out_of_band_response_stays_out_of_the_conversation() -> None:
    client = await _client()
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    await client.until("conversation.item.done")
    await client.send({"type": "response.create", "response": {
        "conversation": "none", "metadata": {"purpose": "summary"}, "input": [
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "what time"}]}]}})
    events = await client.until("response.done")
    assert "conversation.item.added" not in _types(events)
    done = _done(events)
    assert done["conversation_id"] is None and done["metadata"] == {"purpose": "summary"}
    assert done["output"][0]["name"] == "get_current_time"  # matched the inline input
    assert _done(await client.say("hi"))["status"] == "completed"  # not counted as active


# ---- conversation items --------------------------------------------------------------------


async def test_item_insert_retrieve_delete() -> None:
    client = await _client()
    message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]}
    await client.send({"type": "conversation.item.create", "item": {**message, "id": "one"}})
    await client.until("conversation.item.done")
    await client.send({"type": "conversation.item.create", "previous_item_id": "root",
                       "item": {**message, "id": "zero"}})
    added = (await client.until("conversation.item.done"))[0]
    assert added["previous_item_id"] is None
    await client.send({"type": "conversation.item.create", "previous_item_id": "zero",
                       "item": {**message, "id": "half"}})
    assert (await client.until("conversation.item.done"))[0]["previous_item_id"] == "zero"
    await client.send({"type": "conversation.item.retrieve", "item_id": "half"})
    retrieved = await client.recv()
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["id"] == "half" and retrieved["item"]["status"] == "completed"
    await client.send({"type": "conversation.item.delete", "item_id": "half"})
    deleted = await client.recv()
    assert (deleted["type"], deleted["item_id"]) == ("conversation.item.deleted", "half")
    await client.send({"type": "conversation.item.delete", "item_id": "half", "event_id": "d2"})
    error = (await client.recv())["error"]
    assert (error["code"], error["param"], error["event_id"]) == ("item_not_found", "item_id",
                                                                  "d2")


async def test_truncate_an_assistant_audio_item() -> None:
    client = await _client(modality="audio")
    item = _done(await client.say("hi"))["output"][0]
    await client.send({"type": "conversation.item.truncate", "item_id": item["id"],
                       "content_index": 0, "audio_end_ms": 10_000})
    assert (await client.recv())["error"]["param"] == "audio_end_ms"
    await client.send({"type": "conversation.item.truncate", "item_id": item["id"],
                       "content_index": 0, "audio_end_ms": 500})
    truncated = await client.recv()
    assert (truncated["type"], truncated["audio_end_ms"]) == ("conversation.item.truncated", 500)
    await client.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
    kept = (await client.recv())["item"]["content"][0]["transcript"]
    assert kept == "Hello! Ask"  # the words whose audio had started by 500 ms


@pytest.mark.parametrize(("frame", "code", "param"), [
    ("{not json", "invalid_json", None),
    ("[1, 2]", "invalid_type", None),
    ('{"event_id": "e1"}', "missing_required_parameter", "type"),
    ('{"type": "no.such.event", "event_id": "e1"}', "invalid_value", "type"),
    ('{"type": "response.create", "event_id": "e1", "response": {"output_modalities": "text"}}',
     "invalid_type", "response.output_modalities"),
    ('{"type": "conversation.item.create", "event_id": "e1", "item": {"type": "message", '
     '"role": "user"}}', "missing_required_parameter", "item.content"),
    ('{"type": "conversation.item.create", "event_id": "e1", "item": {"type": "mcp_call"}}',
     "invalid_value", "item.type"),
    ('{"type": "conversation.item.create", "event_id": "e1", "previous_item_id": "nope", '
     '"item": {"type": "message", "role": "user", "content": []}}',
     "item_not_found", "previous_item_id"),
    ('{"type": "conversation.item.truncate", "event_id": "e1", "item_id": "x", '
     '"content_index": 0, "audio_end_ms": "5"}', "invalid_type", "audio_end_ms"),
    ('{"type": "input_audio_buffer.commit", "event_id": "e1"}',
     "input_audio_buffer_commit_empty", None),
    ('{"type": "input_audio_buffer.append", "event_id": "e1", "audio": "***"}',
     "invalid_value", "audio"),
    ('{"type": "response.cancel", "event_id": "e1", "extra": 1}', "unknown_parameter", "extra"),
])
async def test_malformed_events_get_an_error_and_the_session_goes_on(
    frame: str, code: str, param: str | None,
) -> None:
    client = await _client()
    await client.upstream.send(frame)
    error = await client.recv()
    assert error["type"] == "error"
    assert (error["error"]["type"], error["error"]["code"], error["error"]["param"]) == (
        "invalid_request_error", code, param)
    assert error["error"]["event_id"] == ("e1" if "e1" in frame else None)
    assert _done(await client.say("hi"))["status"] == "completed"


# ---- input audio ---------------------------------------------------------------------------


def _speech(ms: int) -> bytes:
    """`ms` of our own tone "speech" as PCM16."""
    chunks = word_audio("speech", AudioFormat("pcm"))
    data = b"".join(base64.b64decode(c) for c in chunks)
    return (data * (ms // WORD_MS + 1))[: ms * 48]


async def _append(client: Client, data: bytes) -> None:
    for start in range(0, len(data), 4800):  # 100 ms per event, like a live client
        await client.send({"type": "input_audio_buffer.append",
                           "audio": base64.b64encode(data[start : start + 4800]).decode()})


async def test_server_vad_commits_and_answers() -> None:
    client = await _client()  # server_vad is the default turn detection
    await _append(client, bytes(48 * 400) + _speech(900) + bytes(48 * 800))
    events = await client.until("response.done")
    kinds = _types(events)
    assert kinds[:6] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", "conversation.item.added",
                         "conversation.item.done", "response.created"]
    started, stopped = events[0], events[1]
    assert started["audio_start_ms"] == 100  # speech at 400 ms minus 300 ms of prefix padding
    assert stopped["audio_end_ms"] >= 400 + 900 + 500 - 100
    assert started["item_id"] == stopped["item_id"] == events[2]["item_id"]
    user_item = events[3]["item"]
    assert user_item["content"] == [{"type": "input_audio", "transcript": None}]  # no bytes
    await client.send({"type": "conversation.item.retrieve", "item_id": user_item["id"]})
    audio = (await client.recv())["item"]["content"][0]["audio"]
    assert 900 * 48 <= len(base64.b64decode(audio)) <= (300 + 900 + 800) * 48


async def test_barge_in_cancels_the_response() -> None:
    client = await _client(modality="audio", pace_audio=True)
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    await _append(client, _speech(200))
    events = await client.until("response.done")
    assert "input_audio_buffer.speech_started" in _types(events)
    assert _done(events)["status_details"] == {"type": "cancelled", "reason": "turn_detected"}


async def test_manual_commit_without_turn_detection() -> None:
    client = await _client(audio={"input": {"turn_detection": None}})
    await _append(client, _speech(300))
    await client.send({"type": "input_audio_buffer.commit", "event_id": "commit_1"})
    events = await client.until("conversation.item.done")
    assert _types(events) == ["input_audio_buffer.committed", "conversation.item.added",
                              "conversation.item.done"]
    await client.send({"type": "input_audio_buffer.clear"})
    assert (await client.recv())["type"] == "input_audio_buffer.cleared"  # no auto response
    await client.send({"type": "response.create"})
    assert _done(await client.until("response.done"))["status"] == "completed"


# ---- lifecycle and codecs ------------------------------------------------------------------


async def test_close_ends_recv_and_send() -> None:
    upstream = ScriptedUpstream(SCRIPT)
    await upstream.aclose()
    with pytest.raises(UpstreamClosed) as closed:
        await upstream.recv()
    assert closed.value.clean
    with pytest.raises(UpstreamClosed):
        await upstream.send('{"type": "response.create"}')
    await upstream.aclose()  # idempotent


async def test_close_during_a_paced_response_stops_it() -> None:
    client = await _client(modality="audio", pace_audio=True)
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    generating = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert generating  # the paced response is still running
    await client.upstream.aclose()
    with pytest.raises(UpstreamClosed):
        await asyncio.wait_for(client.upstream.recv(), TIMEOUT)
    await asyncio.wait_for(asyncio.gather(*generating, return_exceptions=True), TIMEOUT)
    assert all(t.cancelled() for t in generating)


def test_g711_codecs_round_trip() -> None:
    assert all(alaw_encode(alaw_decode(b)) == b for b in range(256))
    assert all(ulaw_encode(ulaw_decode(b)) == b for b in range(256) if b != 0x7F)  # -0 == +0
    for sample in (-32768, -1000, -10, 0, 10, 1000, 32767):
        assert abs(ulaw_decode(ulaw_encode(sample)) - sample) <= max(8, abs(sample) // 16)
        assert abs(alaw_decode(alaw_encode(sample)) - sample) <= max(16, abs(sample) // 16)


async def test_throughput_of_the_scripted_model(capsys: pytest.CaptureFixture[str]) -> None:
    """Events per second of unpaced audio replies (reported, loosely bounded)."""
    words = " ".join(f"word{i}" for i in range(50))
    client = await _client([ScriptRule(say=words)], modality="audio")
    upstream, frames = client.upstream, 0
    started = time.perf_counter()
    turn = json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}})
    for _ in range(20):
        await upstream.send(turn)
        await upstream.send('{"type": "response.create"}')
        while True:
            frames += 1
            if '"response.done"' in await asyncio.wait_for(upstream.recv(), TIMEOUT):
                break
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nscripted model: {frames / elapsed:,.0f} events/s "
              f"({frames} events, {20 * 50 * WORD_MS / 1000:.0f} s of audio in {elapsed:.2f} s)")
    assert frames == 20 * (2 + 50 * 4 + 10)
    assert frames / elapsed > 2_000


# ---- the validator itself ------------------------------------------------------------------

_DELTA = {"type": "response.output_audio.delta", "event_id": "e1", "response_id": "r1",
          "item_id": "i1", "output_index": 0, "content_index": 0, "delta": "AAA="}


@pytest.mark.parametrize(("event", "needle"), [
    ({"type": "no.such.event", "event_id": "e"}, "unknown server event type"),
    ({k: v for k, v in _DELTA.items() if k != "event_id"}, "event_id"),
    ({**_DELTA, "output_index": "0"}, "output_index"),  # lax mode would coerce it
    ({**_DELTA, "audio": "beta-era field"}, "['audio']"),
    ({"type": "conversation.item.added", "event_id": "e", "item": {
        "type": "mcp_call", "id": "m", "server_label": "time", "name": "n", "arguments": "{}",
        "status": "completed"}}, "item: ['status']"),
])
def test_validator_rejects(event: Event, needle: str) -> None:
    with pytest.raises(AssertionError) as rejected:
        validate_server_event(json.dumps(event))
    assert needle in str(rejected.value)


def test_validator_accepts() -> None:
    validate_server_event(_DELTA)
    validate_server_event({"type": "session.updated", "event_id": "e", "session": {
        "type": "realtime", "id": "sess_1", "object": "realtime.session", "expires_at": 1}})
    validate_server_event({"type": "conversation.item.done", "event_id": "e", "item": {
        "type": "mcp_call", "id": "m", "server_label": "time", "name": "n", "arguments": "{}",
        "output": "ok", "error": None}})
    validate_client_event({"type": "response.create", "response": {
        "conversation": "none", "input": [{"type": "item_reference", "id": "item_1"}]}})


def test_response_flow_catches_disorder() -> None:
    created = {"type": "response.created", "event_id": "e", "response": {"id": "r1"}}
    delta = {**_DELTA, "response_id": "r1"}
    with pytest.raises(AssertionError, match="is not open"):
        assert_response_flow([created, delta], complete=False)
    with pytest.raises(AssertionError, match="never finished"):
        assert_response_flow([created])
