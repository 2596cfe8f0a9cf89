"""Fault 2, the recovering half: an agent with `reconnect:` whose model server (the sandbox, in
its own process, reached by the `openai` provider) is lost mid-response carries on. The session
opens a new model session, seeds it with the conversation, tells the client with an
`upstream_reconnected` error event it may ignore, and the official `openai` SDK client goes on
talking. Without `reconnect:`, or when no model server comes back, the conversation ends with
an `error` event and a clean close, and the record says why."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import sqlite_url
from tests.events import timeline as conversation
from tests.faults import REPO, sandbox_process, wait_until
from tests.server import RunningServer, serve
from tests.test_handoffs_cross import brief
from tests.wire import validate_server_event

AGENTS = REPO / "tests" / "fixtures" / "faults"
WAIT = 30.0
Event = dict[str, Any]


class SdkClient:
    """The official `openai` SDK realtime connection; every frame validated strictly."""

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self.conn = conn

    async def recv(self) -> Event:
        """The next server event, also parsed by the SDK itself."""
        raw = await asyncio.wait_for(self.conn.recv_bytes(), WAIT)
        validate_server_event(raw)
        self.conn.parse_event(raw)
        return json.loads(raw)

    async def until(self, done: Callable[[Event], bool]) -> list[Event]:
        """Events up to and including the first for which `done` holds."""
        events: list[Event] = []
        while not events or not done(events[-1]):
            events.append(await self.recv())
        return events

    async def say(self, text: str) -> None:
        """A user text message and `response.create`."""
        await self.conn.conversation.item.create(item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
        await self.conn.response.create()

    async def turn(self, text: str) -> str:
        """One user turn; the assistant's text once its last response is done."""
        await self.say(text)
        events = await self.until(final_done)
        return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def final_done(event: Event) -> bool:
    """A `response.done` that carries no server-run call (the turn's last)."""
    response: Event = event.get("response") or {}
    output: list[Event] = response.get("output") or []
    return event["type"] == "response.done" and not any(
        item.get("type") == "mcp_call" for item in output)


@asynccontextmanager
async def sdk_client(server: RunningServer, agent: str) -> AsyncGenerator[SdkClient]:
    """An SDK connection to `agent`, past `session.created`, switched to text output."""
    openai = AsyncOpenAI(base_url=f"{server.http}/v1", api_key=server.token)
    async with openai.realtime.connect(model=agent) as conn:
        client = SdkClient(conn)
        assert (await client.recv())["type"] == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await client.until(lambda e: e["type"] == "session.updated")
        yield client


class ModelLink:
    """The model server's address as the agent knows it: a relay to whichever sandbox process
    `target_port` names, keeping what the orchestrator sent on each connection. Once `stall` is
    set, a connection forwards the next `response.created` and nothing after it (a model gone
    silent mid-response); once `mute` names a connection (by number), nothing more from the
    model reaches the orchestrator on it. A model server that dies takes its link down with no
    close frame, as a dead host would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.stall = False
        self.mute: int | None = None
        self.received: list[list[Event]] = []  # per connection, what the orchestrator sent
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        """Relay one connection."""
        assert ws.request is not None
        sent: list[Event] = []
        number = len(self.received)
        self.received.append(sent)
        async with websockets.connect(f"ws://127.0.0.1:{self.target_port}{ws.request.path}",
                                      compression=None, max_size=None) as model:
            async def up() -> None:
                try:
                    async for message in ws:
                        sent.append(json.loads(message))
                        await model.send(message)
                except ConnectionClosed:
                    return
                await model.close()

            async def down() -> None:
                silent = False
                try:
                    async for message in model:
                        if not silent and self.mute != number:
                            await ws.send(message)
                        silent = silent or (self.stall and '"response.created"' in str(message))
                except ConnectionClosed:
                    ws.transport.abort()  # the model server is gone: no close frame either
                    return
                await ws.close()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(up())
                tg.create_task(down())

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[ModelLink]:
        """Listen on 127.0.0.1 (`port`) until the block ends."""
        server = await websockets.serve(self.handler, "127.0.0.1", 0, compression=None)
        self.port = next(iter(server.sockets)).getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


BEFORE = [
    ("message", "user", "echo please"),
    ("function_call", "echo", '{"text":"echoed"}'),
    ("function_call_output", "echoed"),
    ("message", "assistant", "Echo: echoed"),
    ("message", "user", "hello"),
    ("message", "assistant", "Desk here."),
    ("message", "user", "hello again"),
]


@pytest.mark.parametrize("fault", ["killed", "silent"])
async def test_a_lost_model_session_is_reestablished_with_the_history(
        fault: str, database_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    async with sandbox_process(tmp_path / "first") as first, \
            sandbox_process(tmp_path / "second") as second, \
            ModelLink(first.port).running() as link:
        monkeypatch.setenv("SANDBOX_URL", f"ws://127.0.0.1:{link.port}/v1")
        # The watchdog finds the silent model; the killed one is found by its socket closing.
        watchdog = 1.0 if fault == "silent" else 60.0
        async with serve(database_url, tmp_path, agents_dir=AGENTS,
                         upstream_response_timeout_s=watchdog) as server:
            async with sdk_client(server, "steady") as client:
                assert await client.turn("echo please") == "Echo: echoed"
                assert await client.turn("hello") == "Desk here."
                link.stall = True
                await client.say("hello again")
                await client.until(lambda e: e["type"] == "response.created")
                link.stall = False
                started = time.monotonic()
                if fault == "killed":
                    link.target_port = second.port
                    os.kill(first.proc.pid, signal.SIGKILL)
                events = await client.until(lambda e: e["type"] == "error")
                recovered = time.monotonic() - started
                print(f"model {fault}: carried on after {recovered:.2f} s")
                assert events[-1]["error"]["code"] == "upstream_reconnected"
                [lost] = [e for e in events if e["type"] == "response.done"]
                assert lost["response"]["status"] == "failed"
                assert await client.turn("echo please") == "Echo: echoed"
            record = await conversation(server)
    assert len(link.received) == 2
    configured = link.received[1][0]
    assert configured["type"] == "session.update"
    assert configured["session"]["instructions"] == "You are the test desk, and you stay."
    assert configured["session"]["output_modalities"] == ["text"]  # the client's setting kept
    assert "echo" in {t["name"] for t in configured["session"]["tools"]}
    created = [brief(e["item"]) for e in link.received[1]
               if e["type"] == "conversation.item.create"]
    assert created[:len(BEFORE)] == BEFORE
    assert created[len(BEFORE)] == ("message", "user", "echo please")

    assert (record["status"], record["end_reason"]) == ("completed", "client_closed")
    timeline = record["timeline"]
    [notice] = [e for e in timeline if e["kind"] == "item" and e["type"] == "upstream_reconnect"]
    assert notice["status"] == "completed"
    assert "attempt 1" in notice["text"]
    said = [(e["role"], e["text"]) for e in timeline
            if e["kind"] == "item" and e["type"] == "message"]
    assert said == [
        ("user", "echo please"), ("assistant", "Echo: echoed"), ("user", "hello"),
        ("assistant", "Desk here."), ("user", "hello again"),
        ("user", "echo please"), ("assistant", "Echo: echoed")]
    statuses = [e["status"] for e in timeline if e["kind"] == "response"]
    assert statuses.count("failed") == 1
    assert [(e["tool"], e["status"]) for e in timeline if e["kind"] == "tool_call"] == [
        ("echo", "completed"), ("echo", "completed")]


@pytest.mark.parametrize("agent", ["relay", "steady"])
async def test_without_reconnect_or_a_model_server_the_conversation_ends_cleanly(
        agent: str, database_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`relay` has no `reconnect:`; `steady` tries three times but nothing listens any more."""
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    async with sandbox_process(tmp_path / "only") as only:
        monkeypatch.setenv("SANDBOX_URL", f"ws://127.0.0.1:{only.port}/v1")
        async with serve(database_url, tmp_path, agents_dir=AGENTS) as server:
            async with sdk_client(server, agent) as client:
                assert await client.turn("hello") == "Desk here."
                await client.say("slow please")
                await client.until(lambda e: e["type"] == "response.mcp_call.in_progress")
                killed = time.monotonic()
                os.kill(only.proc.pid, signal.SIGKILL)
                events = await client.until(lambda e: e["type"] == "error")
                print(f"{agent}: error event {time.monotonic() - killed:.2f} s after the kill")
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(client.conn.recv_bytes(), WAIT)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
            assert events[-1]["error"]["code"] == "upstream_closed"
            record = await conversation(server)
    assert (record["status"], record["end_reason"]) == ("failed", "upstream_closed")
    timeline = record["timeline"]
    notes = [e for e in timeline if e["kind"] == "item" and e["type"] == "upstream_reconnect"]
    if agent == "relay":
        assert notes == []
    else:
        [note] = notes
        assert note["status"] == "failed"
        assert "after 3 attempt(s)" in note["text"]
    said = [e["text"] for e in timeline if e.get("role") == "assistant"]
    assert said == ["Desk here."]


async def test_a_session_update_the_lost_model_never_answered_is_answered_by_the_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    async with sandbox_process(tmp_path / "first") as first, \
            sandbox_process(tmp_path / "second") as second, \
            ModelLink(first.port).running() as link:
        monkeypatch.setenv("SANDBOX_URL", f"ws://127.0.0.1:{link.port}/v1")
        async with serve(sqlite_url(tmp_path / "orchestrator.db"), tmp_path,
                         agents_dir=AGENTS) as server:
            async with sdk_client(server, "steady") as client:
                assert await client.turn("hello") == "Desk here."
                link.mute = 0
                await client.conn.session.update(session={"type": "realtime", "tools": [{
                    "type": "function", "name": "lookup", "description": "Look up.",
                    "parameters": {"type": "object", "properties": {}}}]}, event_id="evt_tools")
                await wait_until(lambda: any(
                    e.get("event_id") == "evt_tools" for e in link.received[0]))
                link.target_port = second.port
                os.kill(first.proc.pid, signal.SIGKILL)
                events = await client.until(lambda e: e["type"] == "session.updated")
                assert [e["error"]["code"] for e in events if e["type"] == "error"] == [
                    "upstream_reconnected"]
                assert [t["name"] for t in events[-1]["session"]["tools"]] == ["lookup"]
                assert await client.turn("echo please") == "Echo: echoed"
    resent = [e for e in link.received[1] if e.get("event_id") == "evt_tools"]
    assert [t["name"] for t in resent[0]["session"]["tools"]][-1:] == ["lookup"]
