"""End to end: the official `openai` SDK client talks to the real server; the scripted model
calls `get_current_time` on the real `mcp-server-time` process; the audit trail has it all."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from tests.server import RunningServer, serve
from tests.wire import validate_server_event

TIMEOUT = 30


async def _turn(conn: Any, text: str, frames: list[dict[str, Any]]) -> None:
    """Send one user text turn and collect raw frames until the turn's last response.done."""
    await conn.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    while True:
        raw = await asyncio.wait_for(conn.recv_bytes(), TIMEOUT)
        validate_server_event(raw)
        event = json.loads(raw)
        frames.append(event)
        if event["type"] == "response.done":
            output = event["response"].get("output") or []
            if not any(item.get("type") == "mcp_call" for item in output):
                return


async def _settled(server: RunningServer) -> None:
    """Wait until every session has ended and every record is written."""
    await asyncio.wait_for(server.services.live_sessions.wait_empty(), TIMEOUT)
    await asyncio.wait_for(server.services.recorder.flush(), TIMEOUT)


async def test_time_tool_end_to_end(database_url: str, tmp_path: Path) -> None:
    async with serve(database_url, tmp_path) as server:
        client = AsyncOpenAI(base_url=f"{server.http}/v1", api_key=server.token)
        frames: list[dict[str, Any]] = []
        async with client.realtime.connect(model="demo") as conn:
            first = json.loads(await asyncio.wait_for(conn.recv_bytes(), TIMEOUT))
            validate_server_event(json.dumps(first))
            assert first["type"] == "session.created"
            assert "friendly assistant" in first["session"]["instructions"]
            assert first["session"]["tools"] == []  # server-run tools are not shown as functions
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            updated = json.loads(await asyncio.wait_for(conn.recv_bytes(), TIMEOUT))
            assert updated["type"] == "session.updated"
            await _turn(conn, "What time is it in Tokyo?", frames)

        types = [f["type"] for f in frames]
        assert "error" not in types
        assert not any(f.get("item", {}).get("type") in ("function_call", "function_call_output")
                       for f in frames), "upstream function items must not reach the client"
        assert "response.function_call_arguments.done" not in types
        call_items = [f["item"] for f in frames
                      if f["type"] == "conversation.item.done" and f["item"]["type"] == "mcp_call"]
        assert len(call_items) == 1
        call = call_items[0]
        assert (call["server_label"], call["name"]) == ("time", "get_current_time")
        assert json.loads(call["arguments"]) == {"timezone": "Asia/Tokyo"}
        tool_output = json.loads(call["output"])
        assert tool_output["timezone"] == "Asia/Tokyo"
        assert "response.mcp_call.completed" in types
        assert types.index("response.mcp_call.in_progress") < types.index(
            "response.mcp_call.completed")
        text = "".join(f["delta"] for f in frames if f["type"] == "response.output_text.delta")
        assert tool_output["datetime"] in text
        assert text.startswith("Here is the time in Tokyo:")
        assert types.count("response.done") == 2

        await _settled(server)
        async with httpx.AsyncClient(base_url=server.http, timeout=TIMEOUT) as http:
            headers = {"Authorization": f"Bearer {server.token}"}
            listing = (await http.get("/admin/conversations", params={"agent": "demo"},
                                      headers=headers)).json()
            assert len(listing["data"]) == 1
            conv_id = listing["data"][0]["id"]
            detail = (await http.get(f"/admin/conversations/{conv_id}", headers=headers)).json()
        assert detail["status"] == "completed"
        assert detail["end_reason"] == "client_closed"
        timeline = detail["timeline"]
        kinds = [(e["kind"], e.get("type"), e.get("role")) for e in timeline]
        user = [e for e in timeline if e.get("role") == "user"]
        assert user and user[0]["text"] == "What time is it in Tokyo?"
        tool_calls = [e for e in timeline if e["kind"] == "tool_call"]
        assert len(tool_calls) == 1, kinds
        assert tool_calls[0]["tool"] == "get_current_time"
        assert tool_calls[0]["server"] == "time"
        assert json.loads(tool_calls[0]["arguments"]) == {"timezone": "Asia/Tokyo"}
        assert json.loads(tool_calls[0]["output"])["datetime"] == tool_output["datetime"]
        assert tool_calls[0]["status"] == "completed"
        assert tool_calls[0]["duration_ms"] > 0
        assistant = [e for e in timeline if e.get("role") == "assistant"]
        assert assistant and tool_output["datetime"] in assistant[-1]["text"]
        responses = [e for e in timeline if e["kind"] == "response"]
        assert len(responses) == 2
        assert all(r["status"] == "completed" for r in responses)
        assert all(r["first_output_latency_ms"] is not None for r in responses)
