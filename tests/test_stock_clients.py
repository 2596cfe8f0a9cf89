"""Stock OpenAI-Realtime clients work unchanged against the server (design §2 step 3, §4.3).

Each client runs from its own virtualenv (`tests/clients/venvs.py`, built on first use) as a
subprocess driver that performs one tool-calling turn against the real server served in this
test's event loop: "What time is it in Tokyo?" → the server runs `get_current_time` on the real
mcp-server-time process → "Here is the time in Tokyo: {output}". The audit trail must hold it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.launcher import DriverResult, run_driver
from tests.clients.venvs import BUILD_TIMEOUT_S, LOCK_TIMEOUT_S, ensure_venv
from tests.server import RunningServer, serve

PREFIX = "Here is the time in Tokyo: "
SETTLE_TIMEOUT_S = 30
# LiveKit 1.8.9 keeps no `mcp_call` items in its chat mirror: it warns on the item, then on the
# next item whose previous_item_id names it (reference/clients.md: harmless).
LIVEKIT_KNOWN_WARNINGS = (
    re.compile(r"failed to insert item `[^`]+`: unsupported item type: mcp_call"),
    re.compile(r"placed a chat history item after an unknown item; appended it instead"),
)

pytestmark = [
    pytest.mark.slow,
    # A cold run builds the client venv inside the test (bounded by venvs.py's own limits).
    pytest.mark.timeout(LOCK_TIMEOUT_S + BUILD_TIMEOUT_S + 120),
]


async def _client_python(client: str) -> Path:
    """The client venv's interpreter, building the venv first if needed."""
    venv = await asyncio.to_thread(ensure_venv, client)
    if venv.built:
        print(f"\n{client} venv built in {venv.seconds:.1f} s")
    return venv.python


def _tool_output(result: DriverResult) -> dict[str, Any]:
    """Check the driver's report and return the tool output quoted in the reply."""
    report = result.report
    assert result.returncode == 0, result.describe()
    assert report.get("exception") is None, result.describe()
    assert not report.get("timed_out"), result.describe()
    assert report.get("errors") == [], result.describe()
    assert report.get("error_logs") == [], result.describe()
    reply = report.get("reply") or ""
    assert reply.startswith(PREFIX), result.describe()
    output = json.loads(reply[len(PREFIX):])
    assert output["timezone"] == "Asia/Tokyo"
    stamp = datetime.fromisoformat(output["datetime"])
    assert stamp.utcoffset() == timedelta(hours=9)
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5), "not the real, current time"
    return output


async def _recorded_tool_call(server: RunningServer) -> dict[str, Any]:
    """The one conversation's single tool call, read through the admin API."""
    await asyncio.wait_for(server.services.live_sessions.wait_empty(), SETTLE_TIMEOUT_S)
    await asyncio.wait_for(server.services.recorder.flush(), SETTLE_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers,
                                 timeout=SETTLE_TIMEOUT_S) as http:
        listing = await http.get("/admin/conversations", params={"agent": "demo"})
        assert listing.status_code == 200, listing.text
        conversations = listing.json()["data"]
        assert len(conversations) == 1, conversations
        detail = await http.get(f"/admin/conversations/{conversations[0]['id']}")
        assert detail.status_code == 200, detail.text
    timeline = detail.json()["timeline"]
    user = [e["text"] for e in timeline if e["kind"] == "item" and e.get("role") == "user"]
    assert "What time is it in Tokyo?" in user, timeline
    calls = [e for e in timeline if e["kind"] == "tool_call"]
    assert len(calls) == 1, timeline
    call = calls[0]
    assert (call["server"], call["tool"], call["status"]) == ("time", "get_current_time",
                                                              "completed")
    assert json.loads(call["arguments"]) == {"timezone": "Asia/Tokyo"}
    return call


async def _turn(
    tmp_path: Path, database_url: str, client: str, driver: str,
    url_of: Callable[[RunningServer], str], *extra: str,
) -> tuple[DriverResult, dict[str, Any]]:
    """Serve, run the driver once, check its reply against the recorded tool call."""
    python = await _client_python(client)
    async with serve(database_url, tmp_path) as server:
        result = await run_driver(python, driver, url_of(server), server.token, *extra)
        output = _tool_output(result)
        call = await _recorded_tool_call(server)
    assert json.loads(call["output"])["datetime"] == output["datetime"]
    return result, output


async def test_openai_agents_sdk(database_url: str, tmp_path: Path) -> None:
    result, _ = await _turn(tmp_path, database_url, "agents_sdk", "agents_sdk_driver.py",
                            lambda s: s.realtime_url("demo"))
    server_events: list[str] = result.report["extra"]["server_event_types"]
    # The SDK validated every frame strictly: a failure would have shown as an error above.
    assert "error" not in server_events
    assert "response.mcp_call.completed" in server_events, server_events
    assert "response.function_call_arguments.done" not in server_events
    mcp_call = result.report["extra"]["mcp_call"]
    assert (mcp_call["server_label"], mcp_call["name"]) == ("time", "get_current_time")
    assert result.report["warning_logs"] == [], result.describe()


async def test_pipecat(database_url: str, tmp_path: Path) -> None:
    result, _ = await _turn(tmp_path, database_url, "pipecat", "pipecat_driver.py",
                            lambda s: f"ws://127.0.0.1:{s.port}/v1/realtime",
                            "--model", "demo&tool_events=none")
    frames: list[str] = result.report["event_types"]
    assert "LLMTextFrame" in frames and "ErrorFrame" not in frames, frames
    # e.g. "No tracked function call found": a server-run call leaked to Pipecat as its own.
    assert result.report["warning_logs"] == [], result.describe()


async def test_livekit(database_url: str, tmp_path: Path) -> None:
    result, _ = await _turn(tmp_path, database_url, "livekit", "livekit_driver.py",
                            lambda s: f"{s.http}/v1", "--model", "demo")
    extra = result.report["extra"]
    # generate_reply() resolved: response.created echoed metadata.client_event_id.
    assert extra["generate_reply_user_initiated"] is True
    metadata = extra["response_metadata"]
    assert metadata and str(metadata[0]["client_event_id"]).startswith("response_create_")
    # update_chat_ctx() resolved: the user item came back under the id LiveKit chose.
    assert set(extra["client_item_ids"]) <= set(extra["added_item_ids"]), extra
    unknown = [w for w in result.report["warning_logs"]
               if not any(p.search(w) for p in LIVEKIT_KNOWN_WARNINGS)]
    assert unknown == [], result.describe()
