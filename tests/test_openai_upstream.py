"""The `openai` provider and the sandbox server, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request

from orchestrator.agents.spec import AgentSpec
from orchestrator.errors import UpstreamError
from orchestrator.upstream.base import Upstream, UpstreamClosed
from orchestrator.upstream.factory import open_upstream
from orchestrator.upstream.openai import OpenAIUpstream, realtime_url
from orchestrator.upstream.sandbox import SandboxHandle, load_scripts, start_sandbox
from orchestrator.upstream.scripted import ScriptedUpstream
from tests.wire import assert_response_flow, validate_server_event

TIMEOUT = 5
SECRET = "sk-test-do-not-leak-1234567890"
Event = dict[str, Any]

FRONT = """\
name: front
model: scripted
tools:
  - mcp: time
    allow: [get_current_time]
handoffs:
  - agent: billing
script:
  - when: "time"
    call: get_current_time
    arguments: {timezone: UTC}
    say: "The time is {output}"
  - when: "bill"
    handoff: billing
  - say: "Front desk here."
"""
BILLING = """\
name: billing
model: scripted
script:
  - when: "bill"
    say: "Billing: all paid."
"""
REAL = """\
name: real
model: openai/gpt-realtime
"""
SERVERS = """\
mcp_servers:
  time:
    command: [python, -m, mcp_server_time]
"""


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    for name, text in (("front", FRONT), ("billing", BILLING), ("real", REAL),
                       ("mcp_servers", SERVERS)):
        (folder / f"{name}.yaml").write_text(text)
    return folder


@pytest.fixture
async def sandbox(agents_dir: Path) -> AsyncIterator[SandboxHandle]:
    handle = await start_sandbox("127.0.0.1", 0, agents_dir)
    try:
        yield handle
    finally:
        await handle.aclose()


async def _recv(upstream: Upstream, frames: list[Event]) -> Event:
    raw = await asyncio.wait_for(upstream.recv(), TIMEOUT)
    validate_server_event(raw)
    event: Event = json.loads(raw)
    frames.append(event)
    return event


async def _until(upstream: Upstream, kind: str, frames: list[Event]) -> Event:
    while (event := await _recv(upstream, frames))["type"] != kind:
        pass
    return event


def _user(text: str) -> str:
    return json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


TEXT_ONLY = json.dumps({"type": "session.update",
                        "session": {"type": "realtime", "output_modalities": ["text"]}})
RESPOND = '{"type": "response.create"}'


# ---- URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "url"), [
    (None, "wss://api.openai.com/v1/realtime?model=gpt-realtime"),
    ("http://127.0.0.1:9/v1", "ws://127.0.0.1:9/v1/realtime?model=gpt-realtime"),
    ("https://example.test/v1/", "wss://example.test/v1/realtime?model=gpt-realtime"),
    ("ws://127.0.0.1:9/v1", "ws://127.0.0.1:9/v1/realtime?model=gpt-realtime"),
    ("https://x.test/openai?api-version=1", "wss://x.test/openai/realtime?api-version=1&model=gpt-realtime"),
])
def test_realtime_url(base: str | None, url: str) -> None:
    assert realtime_url(base, "gpt-realtime") == url


def test_realtime_url_refuses_other_schemes() -> None:
    with pytest.raises(UpstreamError, match="http"):
        realtime_url("ftp://example.test", "m")


# ---- OpenAIUpstream against the sandbox ----------------------------------------------------


async def test_function_call_round_trip_through_the_sandbox(sandbox: SandboxHandle) -> None:
    started = time.perf_counter()
    upstream = await OpenAIUpstream.connect(realtime_url(f"http://127.0.0.1:{sandbox.port}/v1",
                                                         "front"), SECRET, timeout_s=TIMEOUT)
    frames: list[Event] = []
    created = await _recv(upstream, frames)
    connect_ms = (time.perf_counter() - started) * 1000
    assert created["type"] == "session.created" and created["session"]["model"] == "front"
    await upstream.send(TEXT_ONLY)
    await _until(upstream, "session.updated", frames)
    await upstream.send(_user("what time is it?"))
    await upstream.send(RESPOND)
    call = (await _until(upstream, "response.done", frames))["response"]["output"][0]
    assert (call["type"], call["name"]) == ("function_call", "get_current_time")
    await upstream.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call["call_id"], "output": "12:00"}}))
    await upstream.send(RESPOND)
    done = await _until(upstream, "response.done", frames)
    assert done["response"]["output"][0]["content"][0]["text"] == "The time is 12:00"
    assert_response_flow(frames)
    await upstream.aclose()
    with pytest.raises(UpstreamClosed) as closed:
        await upstream.recv()
    assert closed.value.clean
    await upstream.aclose()  # idempotent
    print(f"\nconnect + session.created over loopback: {connect_ms:.1f} ms")


async def test_sandbox_follows_a_handoff_to_the_target_script(sandbox: SandboxHandle) -> None:
    upstream = await OpenAIUpstream.connect(
        f"ws://127.0.0.1:{sandbox.port}/v1/realtime?agent=front", SECRET, timeout_s=TIMEOUT)
    frames: list[Event] = []
    await upstream.send(TEXT_ONLY)
    await upstream.send(_user("my bill"))
    await upstream.send(RESPOND)
    call = (await _until(upstream, "response.done", frames))["response"]["output"][0]
    assert call["name"] == "transfer_to_billing"
    await upstream.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call["call_id"], "output": "{}"}}))
    await upstream.send(RESPOND)
    done = await _until(upstream, "response.done", frames)
    assert done["response"]["output"][0]["content"][0]["text"] == "Billing: all paid."
    await upstream.aclose()


def test_sandbox_serves_the_scripted_agents_only(agents_dir: Path) -> None:
    assert sorted(load_scripts(agents_dir)) == ["billing", "front"]


async def test_sandbox_rejects_unknown_agents_and_paths(sandbox: SandboxHandle) -> None:
    for path, needle in (("/v1/realtime?model=nobody", "unknown agent 'nobody'"),
                         ("/v1/realtime?model=real", "unknown agent 'real'"),
                         ("/v1/other?model=front", "not found")):
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{sandbox.port}{path}")
        assert refused.value.response.status_code == 404
        assert needle in refused.value.response.body.decode()


async def test_connect_errors_never_show_the_key(sandbox: SandboxHandle) -> None:
    with pytest.raises(UpstreamError) as refused:
        await OpenAIUpstream.connect(f"ws://127.0.0.1:{sandbox.port}/v1/realtime?model=nobody",
                                     SECRET, timeout_s=TIMEOUT)
    assert "404" in str(refused.value) and SECRET not in str(refused.value)
    port = sandbox.port
    await sandbox.aclose()
    with pytest.raises(UpstreamError) as unreachable:
        await OpenAIUpstream.connect(f"ws://127.0.0.1:{port}/v1/realtime?model=front", SECRET,
                                     timeout_s=TIMEOUT)
    assert SECRET not in str(unreachable.value)


async def test_connect_times_out_on_a_silent_server() -> None:
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers the upgrade; returns when the client gives up
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    async with server:
        with pytest.raises(UpstreamError, match=r"did not answer within 0\.3 s"):
            await OpenAIUpstream.connect(f"ws://127.0.0.1:{port}/v1/realtime?model=m", SECRET,
                                         timeout_s=0.3)
        assert time.monotonic() - started < 2
        await asyncio.wait_for(hung_up.wait(), TIMEOUT)


async def test_handshake_headers_and_close_codes() -> None:
    seen: list[Request] = []
    codes = iter([1000, 1011, 1001])

    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type": "hello"}')
        await ws.close(next(codes), "bye")

    def record(_: ServerConnection, request: Request) -> None:
        seen.append(request)

    async with serve(handler, "127.0.0.1", 0, process_request=record) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        results: list[tuple[str | bytes, bool]] = []
        for _ in range(3):
            upstream = await OpenAIUpstream.connect(
                f"ws://127.0.0.1:{port}/v1/realtime?model=m", SECRET, timeout_s=TIMEOUT,
                extra_headers={"X-Extra": "1"})
            frame = await upstream.recv()
            with pytest.raises(UpstreamClosed) as closed:
                await upstream.recv()
            with pytest.raises(UpstreamClosed):
                await upstream.send("{}")
            results.append((frame, closed.value.clean))
            await upstream.aclose()
    assert results == [('{"type": "hello"}', True), ('{"type": "hello"}', False),
                       ('{"type": "hello"}', True)]
    headers = seen[0].headers
    assert headers["Authorization"] == f"Bearer {SECRET}" and headers["X-Extra"] == "1"
    assert "OpenAI-Beta" not in headers and "Sec-WebSocket-Extensions" not in headers
    assert seen[0].path == "/v1/realtime?model=m"


# ---- factory -------------------------------------------------------------------------------


async def test_factory_opens_each_provider(sandbox: SandboxHandle) -> None:
    scripted = await open_upstream(AgentSpec(name="s", model="scripted"))
    assert isinstance(scripted, ScriptedUpstream)
    await scripted.aclose()
    remote = AgentSpec(name="r", model="openai/front", api_key=SecretStr(SECRET),
                       base_url=f"http://127.0.0.1:{sandbox.port}/v1")
    upstream = await open_upstream(remote, connect_timeout_s=TIMEOUT, env={})
    assert isinstance(upstream, OpenAIUpstream)
    assert (await _recv(upstream, []))["session"]["model"] == "front"
    await upstream.aclose()
    by_env = remote.model_copy(update={"api_key": None})
    upstream = await open_upstream(by_env, env={"OPENAI_API_KEY": SECRET})
    await upstream.aclose()


async def test_factory_errors_are_clear_and_secret_free(sandbox: SandboxHandle) -> None:
    keyless = AgentSpec(name="k", model="openai/gpt-realtime")
    with pytest.raises(UpstreamError, match="OPENAI_API_KEY"):
        await open_upstream(keyless, env={})
    wrong = AgentSpec(name="w", model="openai/nobody", api_key=SecretStr(SECRET),
                      base_url=f"http://127.0.0.1:{sandbox.port}/v1")
    with pytest.raises(UpstreamError) as refused:
        await open_upstream(wrong, env={})
    assert "404" in str(refused.value) and SECRET not in str(refused.value)


# ---- the official SDK client against the sandbox -------------------------------------------


async def test_official_sdk_client_talks_to_the_sandbox(sandbox: SandboxHandle) -> None:
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{sandbox.port}/v1", api_key="x")
    frames: list[Event] = []

    async def next_event(kind: str) -> Event:
        while True:
            raw = await asyncio.wait_for(conn.recv_bytes(), TIMEOUT)
            validate_server_event(raw)
            frames.append(json.loads(raw))
            if frames[-1]["type"] == kind:
                return frames[-1]

    async with client.realtime.connect(model="front") as conn:
        assert (await next_event("session.created"))["session"]["model"] == "front"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await next_event("session.updated")
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "the time please"}]})
        await conn.response.create(response={"metadata": {"client_event_id": "abc"}})
        created = await next_event("response.created")
        assert created["response"]["metadata"] == {"client_event_id": "abc"}
        call = (await next_event("response.done"))["response"]["output"][0]
        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": call["call_id"], "output": "noon"})
        await conn.response.create()
        done = await next_event("response.done")
        assert done["response"]["output"][0]["content"][0]["text"] == "The time is noon"
        await conn.response.cancel()
        assert (await next_event("error"))["error"]["code"] == "response_cancel_not_active"
    assert_response_flow(frames)


async def test_paced_sandbox_sends_audio_in_real_time(agents_dir: Path) -> None:
    handle = await start_sandbox("127.0.0.1", 0, agents_dir, pace_audio=True)
    try:
        upstream = await OpenAIUpstream.connect(
            realtime_url(f"http://127.0.0.1:{handle.port}/v1", "front"), SECRET,
            timeout_s=TIMEOUT)
        frames: list[Event] = []
        await _recv(upstream, frames)
        await upstream.send(_user("hello"))
        await upstream.send(RESPOND)
        await _until(upstream, "response.output_audio.delta", frames)
        started = time.monotonic()
        done = await _until(upstream, "response.done", frames)
        elapsed = time.monotonic() - started
        chunks = sum(1 for f in frames if f["type"] == "response.output_audio.delta")
        assert done["response"]["status"] == "completed"
        # "Front desk here." = 3 words = 9 chunks of 100 ms; the first left at once.
        assert chunks == 9 and 0.7 <= elapsed < 3
        await upstream.aclose()
    finally:
        await handle.aclose()
