"""The quickstart path as a user runs it: `orchestrator serve` in a fresh folder (SQLite at
var/orchestrator.db, the example agents), `orchestrator chat demo`, then the audit trail from
`orchestrator conversations`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from openai import AsyncOpenAI

from tests.server import REPO
from tests.wire import validate_server_event

ORCHESTRATOR = [sys.executable, "-m", "orchestrator"]
TIMEOUT = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen[str]]]:
    """`orchestrator serve` running in a fresh folder holding a copy of the example agents."""
    shutil.copytree(REPO / "agents", tmp_path / "agents")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [*ORCHESTRATOR, "serve", "--port", str(port)], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    ready = threading.Event()
    output: list[str] = []

    def drain() -> None:  # reads the server's output so it never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "Uvicorn running on" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert ready.wait(TIMEOUT) and proc.poll() is None, "".join(output)
        yield tmp_path, port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        finally:
            proc.kill()
            reader.join(TIMEOUT)
            assert proc.stdout is not None
            proc.stdout.close()


def test_serve_chat_and_conversations(served: tuple[Path, int, subprocess.Popen[str]]) -> None:
    folder, port, proc = served
    token = (folder / "var" / "admin_token").read_text().strip()
    assert token
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    chat = subprocess.run(
        [*ORCHESTRATOR, "chat", "demo", "--url", f"ws://127.0.0.1:{port}", "--key", token],
        input="hello\nwhat time is it in Tokyo?\n", capture_output=True, text=True,
        timeout=TIMEOUT, cwd=folder, env=env | {"COLUMNS": "200"},
    )
    assert chat.returncode == 0, chat.stdout + chat.stderr
    assert "Hello! Ask me what time" in chat.stdout
    assert "time.get_current_time" in chat.stdout
    assert "Here is the time in Tokyo:" in chat.stdout
    assert "Asia/Tokyo" in chat.stdout

    proc.send_signal(signal.SIGTERM)  # a graceful stop flushes the recorder
    assert proc.wait(TIMEOUT) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    database = folder / "var" / "orchestrator.db"
    assert database.exists()
    url = f"sqlite+aiosqlite:///{database}"
    listing = subprocess.run([*ORCHESTRATOR, "conversations", "list", "--database-url", url],
                             capture_output=True, text=True, timeout=TIMEOUT, env=env | {
                                 "COLUMNS": "250"})
    assert listing.returncode == 0, listing.stderr
    assert "demo" in listing.stdout and "completed" in listing.stdout
    conv_id = next(w for w in listing.stdout.split() if w.startswith("conv_"))
    show = subprocess.run([*ORCHESTRATOR, "conversations", "show", conv_id, "--database-url", url],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env | {
                              "COLUMNS": "250"})
    assert show.returncode == 0, show.stderr
    assert "what time is it in Tokyo?" in show.stdout
    assert "get_current_time" in show.stdout
    assert "Here is the time in Tokyo" in show.stdout


def test_sandbox_command_serves_the_scripted_model() -> None:
    """`orchestrator sandbox`: the demo script over a GA WebSocket, for any realtime client."""
    port = _free_port()
    proc = subprocess.Popen(
        [*ORCHESTRATOR, "sandbox", "--port", str(port), "--agents", str(REPO / "agents")],
        text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the sandbox announces itself once it listens
            if "sandbox on ws://" in line:
                break
        else:
            pytest.fail("sandbox exited before listening")
        reply = asyncio.run(_sandbox_turn(port))
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)
        assert proc.stderr is not None
        proc.stderr.close()
    assert reply.startswith("Hello! Ask me what time it is")


async def _sandbox_turn(port: int) -> str:
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="any")
    async with client.realtime.connect(model="demo") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]})
        await conn.response.create()
        text = ""
        while True:
            raw = await asyncio.wait_for(conn.recv_bytes(), TIMEOUT)
            validate_server_event(raw)
            event = json.loads(raw)
            if event["type"] == "response.output_text.delta":
                text += event["delta"]
            if event["type"] == "response.done":
                return text


def test_stopping_the_server_ends_and_records_live_sessions(
        served: tuple[Path, int, subprocess.Popen[str]]) -> None:
    folder, port, proc = served
    token = (folder / "var" / "admin_token").read_text().strip()
    close_code = asyncio.run(_live_session_at_shutdown(port, token, proc))
    assert close_code == 1012  # service restart
    assert proc.wait(TIMEOUT) in (0, -signal.SIGTERM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    url = f"sqlite+aiosqlite:///{folder / 'var' / 'orchestrator.db'}"
    listing = subprocess.run([*ORCHESTRATOR, "conversations", "list", "--database-url", url],
                             capture_output=True, text=True, timeout=TIMEOUT,
                             env=env | {"COLUMNS": "250"})
    conv_id = next(w for w in listing.stdout.split() if w.startswith("conv_"))
    shown = subprocess.run(
        [*ORCHESTRATOR, "conversations", "show", conv_id, "--json", "--database-url", url],
        capture_output=True, text=True, timeout=TIMEOUT, env=env)
    detail = json.loads(shown.stdout)
    assert detail["end_reason"] == "shutdown" and detail["ended_at"] is not None
    assert any(e.get("role") == "assistant" for e in detail["timeline"])


async def _live_session_at_shutdown(port: int, token: str, proc: subprocess.Popen[str]) -> int:
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=demo"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_queue=None) as ws:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}))
        await ws.send(json.dumps({"type": "response.create",
                                  "response": {"output_modalities": ["text"]}}))
        while json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] != "response.done":
            pass
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code
