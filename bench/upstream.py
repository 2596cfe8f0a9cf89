"""The benchmark's upstream: the scripted model as a GA WebSocket server, stamping its audio.

    python bench/upstream.py [--agents DIR]      # prints "PORT <n>" once listening

Each session is a real `ScriptedModel` (the sandbox's model) with audio paced at real time.
Two things differ from `orchestrator sandbox`, both so that the upstream measures rather than
limits:
- every `response.output_audio.delta` leaves with its send time in its `event_id`
  (`bt<monotonic ns>`), which every path relays untouched: the client's receive time minus
  it is the one-way latency of that path (one machine, one monotonic clock);
- `input_audio_buffer.append` frames are counted and dropped before the model (its pydantic
  validation of 50 appends a second per session would make the upstream, not the path under
  test, the bottleneck); the benchmark's input audio is silence, which the model's VAD ignores.

`dispatch` (used by bench/tools.py in process) is told when a function call's arguments leave
and when its `function_call_output` comes back.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from orchestrator.upstream.sandbox import Scripts, load_scripts, requested_agent
from orchestrator.upstream.scripted import ScriptedModel

AUDIO_PREFIX = '{"type":"response.output_audio.delta","event_id":"'
ARGS_DONE_PREFIX = '{"type":"response.function_call_arguments.done"'
APPEND_MARK = '"input_audio_buffer.append"'
OUTPUT_MARK = '"function_call_output"'
Hook = Callable[[str, str, int], None]  # (what, frame, monotonic ns)


def stamp(frame: str, now_ns: int) -> str:
    """An audio delta with its event id replaced by its send time."""
    end = frame.index('"', len(AUDIO_PREFIX))
    return f"{AUDIO_PREFIX}bt{now_ns}{frame[end:]}"


class BenchUpstream:
    """Serves scripted sessions; counts what it drops."""

    def __init__(self, scripts: Scripts, hook: Hook | None = None) -> None:
        self.scripts = scripts
        self.hook = hook
        self.appends = 0

    async def session(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        agent = requested_agent(ws.request.path) or ""
        model = ScriptedModel(self.scripts[agent], model=agent, pace_audio=True)
        writer = asyncio.create_task(self._write(model, ws))
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode()
                if APPEND_MARK in text[:60]:
                    self.appends += 1
                    continue
                if self.hook is not None and OUTPUT_MARK in text:
                    self.hook("output", text, time.monotonic_ns())
                await model.handle_frame(text)
        except ConnectionClosed:
            pass
        finally:
            model.close()
            await writer

    async def _write(self, model: ScriptedModel, ws: ServerConnection) -> None:
        while (frame := await model.outgoing.get()) is not None:
            now = time.monotonic_ns()
            if frame.startswith(AUDIO_PREFIX):
                frame = stamp(frame, now)
            elif self.hook is not None and frame.startswith(ARGS_DONE_PREFIX):
                self.hook("arguments_done", frame, now)
            try:
                await ws.send(frame)
            except ConnectionClosed:
                model.close()
                return


async def start(agents: Path, hook: Hook | None = None, port: int = 0) -> tuple[object, int]:
    """Start serving on 127.0.0.1; returns (server, port)."""
    upstream = BenchUpstream(load_scripts(agents), hook)
    server = await serve(upstream.session, "127.0.0.1", port, compression=None, max_size=None)
    return server, next(iter(server.sockets)).getsockname()[1]


async def main(agents: Path) -> None:
    server, port = await start(agents)
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=Path, default=Path(__file__).parent / "agents")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.agents))
    except ImportError:
        asyncio.run(main(args.agents))
    sys.exit(0)
