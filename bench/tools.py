"""Tool dispatch overhead: what the orchestrator adds around a server-run tool call.

    python bench/tools.py [--calls 300]       # one JSON line out

The upstream (bench/upstream.py, with its dispatch hook) notes when it sends a call's
`response.function_call_arguments.done` and when that call's `function_call_output` comes
back; the MCP pool's `call` is timed around the tool itself (bench/mcp_fast.py, an echo
over stdio). Overhead per call = round trip at the upstream - the MCP call's own time; it
includes two loopback hops (upstream → orchestrator → upstream). Calls run one at a time,
the orchestrator in its own process (bench/serve.py, which times `McpPool.call`), upstream
and client in this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve
import upstream


def call_id(frame: str) -> str:
    event = orjson.loads(frame)
    item = event.get("item")
    return str((item if isinstance(item, dict) else event).get("call_id"))


WARMUP = 5


async def turn(ws: Any) -> None:
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "echo"}]}}))
    await ws.send(json.dumps({"type": "response.create"}))
    async with asyncio.timeout(30):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "response.done" and not any(
                    i["type"] == "mcp_call" for i in event["response"]["output"]):
                return


async def measure(calls: int) -> dict[str, Any]:
    sent: dict[str, int] = {}
    back: dict[str, int] = {}

    def hook(what: str, frame: str, now: int) -> None:
        (sent if what == "arguments_done" else back)[call_id(frame)] = now

    server, port = await upstream.start(serve.AGENTS, hook)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tools-"))
    timings = tmp / "timings.json"
    orch = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(serve.__file__)), str(tmp), str(timings),
        cwd=serve.AGENTS.parent.parent, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "BENCH_SANDBOX_URL": f"ws://127.0.0.1:{port}/v1"})
    try:
        assert orch.stdout is not None
        line = (await asyncio.wait_for(orch.stdout.readline(), 60)).decode()
        if not line.startswith("PORT "):
            raise RuntimeError("the orchestrator did not start")
        url = f"ws://127.0.0.1:{line.split()[1]}/v1/realtime?model=bench-tool-relay"
        async with connect(url, additional_headers={"Authorization": f"Bearer {serve.TOKEN}"},
                           compression=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "output_modalities": ["text"]}}))
            while json.loads(await ws.recv())["type"] != "session.updated":
                pass
            for _ in range(WARMUP):
                await turn(ws)
            sent.clear(), back.clear()
            for _ in range(calls):
                await turn(ws)
    finally:
        if orch.returncode is None:
            orch.terminate()
        await asyncio.wait_for(orch.wait(), 30)
        server.close()  # type: ignore[attr-defined]
    own = json.loads(timings.read_text())[WARMUP:]
    trips = [back[c] - sent[c] for c in sent if c in back]
    overhead = [(t - o) / 1e6 for t, o in zip(trips, own, strict=False)]
    return {"calls": len(trips), "overhead_ms": overhead,
            "round_trip_ms": [t / 1e6 for t in trips], "mcp_call_ms": [o / 1e6 for o in own]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    import uvloop

    json.dump(uvloop.run(measure(parser.parse_args().calls)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
