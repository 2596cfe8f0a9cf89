"""A GA realtime server on 127.0.0.1 that a test drives frame by frame, for model behaviour
the scripted model cannot produce (several calls in one response, a response the model starts
by itself, refusals): the test writes every server event and reads every client event the
orchestrator sends upstream.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from tests.realtime_client import Event, RealtimeTestClient, connect
from tests.server import REPO, RunningServer, serve

REVIEW_AGENTS = REPO / "tests" / "fixtures" / "review"  # `fake`, `fakeb` reach FakeUpstream
POLICY_AGENTS = REPO / "tests" / "fixtures" / "policy"  # `remote` reaches it as REMOTE_URL
TIMEOUT = 15

@dataclass
class FakeConn:
    """One orchestrator connection to the fake model; the test writes every server event."""

    ws: ServerConnection
    session: dict[str, Any] = field(default_factory=lambda: {
        "type": "realtime", "object": "realtime.session", "id": "sess_review",
        "model": "fake-model", "output_modalities": ["audio"], "instructions": "",
        "tools": [], "tool_choice": "auto",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "turn_detection": None},
                  "output": {"format": {"type": "audio/pcm", "rate": 24000},
                             "voice": "alloy"}},
    })
    refuse_voice_change: bool = False
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def new_id(self, prefix: str) -> str:
        """A fresh id of the upstream's style."""
        return f"{prefix}_review{next(self._ids)}"

    async def emit(self, kind: str, **fields: Any) -> None:
        """Send one server event."""
        await self.ws.send(json.dumps({"type": kind, "event_id": self.new_id("event"), **fields}))

    async def recv(self) -> Event:
        """The next client event the orchestrator sent upstream."""
        return json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))

    async def expect(self, kind: str) -> Event:
        """The next client event, which must be of type `kind`."""
        event = await self.recv()
        assert event["type"] == kind, f"expected {kind}, got {event}"
        return event

    async def ack(self, create: Event) -> str:
        """Answer a `conversation.item.create` as the GA server does; returns the item id."""
        item = {**create["item"], "object": "realtime.item", "status": "completed"}
        item.setdefault("id", self.new_id("item"))
        await self.emit("conversation.item.added", item=item)
        await self.emit("conversation.item.done", item=item)
        return item["id"]

    async def update(self, event: Event) -> None:
        """Apply a `session.update` and answer it (or refuse a voice change, if told to)."""
        patch = event["session"]
        voice = patch.get("audio", {}).get("output", {}).get("voice")
        current = self.session["audio"]["output"]["voice"]
        if self.refuse_voice_change and voice not in (None, current):
            await self.emit("error", error={
                "type": "invalid_request_error", "code": "cannot_update_voice",
                "message": "Cannot update a session's voice after audio has been output.",
                "param": "session.audio.output.voice", "event_id": event.get("event_id")})
            return
        for key, value in patch.items():
            if key == "audio":
                for side, settings in value.items():
                    self.session["audio"][side].update(settings)
            else:
                self.session[key] = value
        await self.emit("session.updated", session=self.session)

    async def handshake(self) -> None:
        """`session.created`, then the agent's `session.update` and its `session.updated`."""
        await self.emit("session.created", session=self.session)
        await self.update(await self.expect("session.update"))

    async def begin(self) -> str:
        """`response.created`; returns the response id."""
        rid = self.new_id("resp")
        await self.emit("response.created", response={
            "id": rid, "object": "realtime.response", "status": "in_progress", "output": []})
        return rid

    async def call(self, rid: str, index: int, name: str, arguments: str, *,
                   complete: bool = True) -> dict[str, Any]:
        """A function call item; with `complete=False` the response is cancelled mid-arguments."""
        call_id, item_id = self.new_id("call"), self.new_id("item")
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "function_call",
                                "status": "in_progress", "name": name, "call_id": call_id,
                                "arguments": ""}
        await self.emit("response.output_item.added", response_id=rid, output_index=index,
                        item=item)
        await self.emit("conversation.item.added", item=item)
        ctx = {"response_id": rid, "item_id": item_id, "output_index": index, "call_id": call_id}
        half = len(arguments) // 2
        await self.emit("response.function_call_arguments.delta", **ctx, delta=arguments[:half])
        if complete:
            await self.emit("response.function_call_arguments.delta", **ctx,
                            delta=arguments[half:])
            await self.emit("response.function_call_arguments.done", **ctx, name=name,
                            arguments=arguments)
        item = {**item, "status": "completed" if complete else "incomplete",
                "arguments": arguments if complete else arguments[:half]}
        await self.emit("conversation.item.done", item=item)
        await self.emit("response.output_item.done", response_id=rid, output_index=index,
                        item=item)
        return item

    async def open_message(self, rid: str, index: int) -> dict[str, Any]:
        """Start an assistant text message (item and content part added)."""
        item: dict[str, Any] = {"id": self.new_id("item"), "object": "realtime.item",
                                "type": "message", "role": "assistant", "status": "in_progress",
                                "content": []}
        await self.emit("response.output_item.added", response_id=rid, output_index=index,
                        item=item)
        await self.emit("conversation.item.added", item=item)
        await self.emit("response.content_part.added", response_id=rid, item_id=item["id"],
                        output_index=index, content_index=0, part={"type": "text", "text": ""})
        return item

    async def delta(self, rid: str, index: int, item: dict[str, Any], text: str) -> None:
        """One text delta of an open message."""
        await self.emit("response.output_text.delta", response_id=rid, item_id=item["id"],
                        output_index=index, content_index=0, delta=text)

    async def close_message(self, rid: str, index: int, item: dict[str, Any],
                            text: str) -> dict[str, Any]:
        """Finish a message whose deltas spelled `text`."""
        ctx = {"response_id": rid, "item_id": item["id"], "output_index": index,
               "content_index": 0}
        await self.emit("response.output_text.done", **ctx, text=text)
        await self.emit("response.content_part.done", **ctx, part={"type": "text", "text": text})
        done = {**item, "status": "completed", "content": [{"type": "output_text", "text": text}]}
        await self.emit("conversation.item.done", item=done)
        await self.emit("response.output_item.done", response_id=rid, output_index=index,
                        item=done)
        return done

    async def say(self, rid: str, index: int, text: str) -> dict[str, Any]:
        """A whole assistant text message."""
        item = await self.open_message(rid, index)
        await self.delta(rid, index, item, text)
        return await self.close_message(rid, index, item, text)

    async def end(self, rid: str, output: list[dict[str, Any]], status: str = "completed",
                  ) -> None:
        """`response.done`."""
        details = {"type": "cancelled", "reason": "client_cancelled"} \
            if status == "cancelled" else None
        await self.emit("response.done", response={
            "id": rid, "object": "realtime.response", "status": status,
            "status_details": details, "output": output,
            "usage": {"total_tokens": 3, "input_tokens": 2, "output_tokens": 1}})

    async def turn(self) -> str:
        """Take a client turn (its item acknowledged, then its `response.create`) and begin the
        response; returns the response id."""
        await self.ack(await self.expect("conversation.item.create"))
        await self.expect("response.create")
        return await self.begin()

    async def answer_turn(self, text: str) -> None:
        """A client turn (item + `response.create`) answered with one text message."""
        rid = await self.turn()
        await self.end(rid, [await self.say(rid, 0, text)])


class FakeUpstream:
    """A GA server on 127.0.0.1: performs the handshake, then hands each connection over."""

    def __init__(self) -> None:
        self.conns: asyncio.Queue[FakeConn] = asyncio.Queue()
        self.url = ""

    async def _handler(self, ws: ServerConnection) -> None:
        conn = FakeConn(ws)
        await conn.handshake()
        self.conns.put_nowait(conn)
        await ws.wait_closed()

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[FakeUpstream]:
        """Serve until the block ends."""
        async with ws_serve(self._handler, "127.0.0.1", 0, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/v1"
            yield self


SENTINEL: Event = {"type": "conversation.item.retrieve", "event_id": "sentinel",
                   "item_id": "item_sentinel"}


async def upstream_until_sentinel(up: FakeConn) -> list[Event]:
    """Client events relayed upstream up to (not including) the test's sentinel retrieve."""
    seen: list[Event] = []
    while (event := await up.recv())["type"] != "conversation.item.retrieve":
        seen.append(event)
    return seen


async def seeded_until_response(up: FakeConn) -> list[dict[str, Any]]:
    """The items the orchestrator creates upstream (each acknowledged) until `response.create`."""
    items: list[dict[str, Any]] = []
    while (event := await up.recv())["type"] != "response.create":
        assert event["type"] == "conversation.item.create", event
        items.append(event["item"])
        await up.ack(event)
    return items


# --- the served orchestrator with a fake upstream ---------------------------------------------


@dataclass(frozen=True)
class Review:
    """The served orchestrator and the fake upstream."""

    server: RunningServer
    fake: FakeUpstream

    def client(self, agent: str, query: str = "", *, text_only: bool = False,
               ) -> AbstractAsyncContextManager[RealtimeTestClient]:
        """A strict test client on `agent`."""
        return connect(self.server.realtime_url(agent) + query, self.server.token,
                       text_only=text_only)

    async def upstream(self) -> FakeConn:
        """The fake upstream side of the latest `fake`/`fakeb` connection."""
        return await asyncio.wait_for(self.fake.conns.get(), TIMEOUT)

    def session(self) -> Any:
        """The single live RealtimeSession."""
        [live] = list(self.server.services.live_sessions)
        return live


@pytest.fixture
async def review(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Review]:
    """The real server on the review agents (SQLite), with the fake upstream running."""
    async with FakeUpstream().running() as fake:
        monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
        monkeypatch.setenv("REVIEW_UPSTREAM_URL", fake.url)
        database = f"sqlite+aiosqlite:///{tmp_path / 'review.db'}"
        async with serve(database, tmp_path, agents_dir=REVIEW_AGENTS) as server:
            yield Review(server, fake)


@dataclass(frozen=True)
class Cross:
    """The served orchestrator and the remote agent's GA server."""

    server: RunningServer
    remote: FakeUpstream

    async def upstream(self) -> FakeConn:
        """The remote side of the latest connection (its handshake already done)."""
        return await asyncio.wait_for(self.remote.conns.get(), TIMEOUT)


@pytest.fixture
async def cross(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                ) -> AsyncIterator[Cross]:
    """The real server on the policy agents with `remote` aimed at a local GA server."""
    async with FakeUpstream().running() as remote:
        monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
        monkeypatch.setenv("REMOTE_URL", remote.url)
        async with serve(database_url, tmp_path, agents_dir=POLICY_AGENTS) as server:
            yield Cross(server, remote)
