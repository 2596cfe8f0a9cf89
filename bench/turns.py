"""Quick turn-latency probe: the same scripted turns sent directly to the sandbox model and
through the orchestrator (`openai` provider → sandbox over loopback), on one machine.

    .venv/bin/python bench/turns.py [--turns 200]

Prints p50/p95/p99 of: time to the first text delta and to `response.done` for a plain text
turn, and the whole tool turn (call on mcp-server-time + the reply) through the orchestrator.
The full harness (audio at real-time pace, N concurrent sessions, CPU and RSS) is issue #5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvicorn
import websockets
from pydantic import SecretStr

from orchestrator.app import create_app
from orchestrator.config import Settings
from orchestrator.upstream.sandbox import start_sandbox

REPO = Path(__file__).resolve().parent.parent
AGENTS = REPO / "bench" / "agents"
TOKEN = "bench-token"


async def turn(ws: Any, text: str) -> tuple[float, float]:
    """(first delta, final response.done) in ms for one user turn."""
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "response.create"}))
    first = None
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == "response.output_text.delta" and first is None:
            first = time.perf_counter()
        if event["type"] == "response.done" and not any(
                i["type"] in ("mcp_call", "function_call") for i in event["response"]["output"]):
            end = time.perf_counter()
            return ((first or end) - t0) * 1000, (end - t0) * 1000


async def run(url: str, text: str, turns: int) -> list[tuple[float, float]]:
    """`turns` sequential turns on one connection (after a warm-up turn)."""
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                                  compression=None, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["text"]}}))
        while json.loads(await ws.recv())["type"] != "session.updated":
            pass
        await turn(ws, text)
        return [await turn(ws, text) for _ in range(turns)]


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1)."""
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def report(name: str, samples: list[tuple[float, float]]) -> None:
    """One table row per measure."""
    for label, values in (("first delta", [s[0] for s in samples]),
                          ("response.done", [s[1] for s in samples])):
        print(f"| {name} | {label} | {pct(values, .5):.2f} | {pct(values, .95):.2f} | "
              f"{pct(values, .99):.2f} |")


async def main(turns: int) -> None:
    sandbox = await start_sandbox(agents_dir=AGENTS)
    os.environ["BENCH_SANDBOX_URL"] = f"ws://127.0.0.1:{sandbox.port}/v1"
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(agents_dir=AGENTS, database_url=f"sqlite+aiosqlite:///{tmp / 'b.db'}",
                        var_dir=tmp, admin_token=SecretStr(TOKEN))
    app = create_app(settings)
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvicorn does when it binds
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, ws="websockets-sansio", loop="none",
                                           ws_per_message_deflate=False, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await app.state.ready.wait()
    port = sock.getsockname()[1]
    try:
        direct = f"ws://127.0.0.1:{sandbox.port}/v1/realtime?model=bench"
        relayed = f"ws://127.0.0.1:{port}/v1/realtime?model=bench-relay"
        print("| path | measure | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|")
        report("text turn, direct to sandbox", await run(direct, "hello", turns))
        report("text turn, through orchestrator", await run(relayed, "hello", turns))
        inproc = f"ws://127.0.0.1:{port}/v1/realtime?model=bench"
        report("text turn, orchestrator + in-process scripted model",
               await run(inproc, "hello", turns))
        report("tool turn (mcp-server-time), through orchestrator",
               await run(relayed, "time in tokyo", turns))
    finally:
        server.should_exit = True
        await task
        await sandbox.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200)
    asyncio.run(main(parser.parse_args().turns))
