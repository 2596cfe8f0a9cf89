"""The yardstick: a minimal WebSocket relay that forwards frames untouched.

    python bench/relay.py UPSTREAM_URL      # prints "PORT <n>" once listening

`ws://127.0.0.1:PORT/v1/realtime?model=X` is relayed to `UPSTREAM_URL/realtime?model=X`:
no parsing, no deflate, one task per direction. Anything the orchestrator does beyond this is
what the benchmark calls its cost. BENCH_CPROFILE=FILE arms cProfile on SIGUSR1/SIGUSR2
(bench/profiling.py).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from urllib.parse import urlsplit

import profiling
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def pump(source, sink) -> None:  # type: ignore[no-untyped-def]
    try:
        async for frame in source:
            await sink.send(frame)
    except ConnectionClosed:
        pass
    finally:
        await sink.close()


def handler(base: str):  # type: ignore[no-untyped-def]
    async def relay(client: ServerConnection) -> None:
        assert client.request is not None
        query = urlsplit(client.request.path).query
        async with connect(f"{base}/realtime?{query}", compression=None, max_size=None) as up:
            await asyncio.gather(pump(client, up), pump(up, client))
    return relay


async def main(base: str) -> None:
    async with serve(handler(base), "127.0.0.1", 0, compression=None, max_size=None) as server:
        profiling.install()
        print(f"PORT {next(iter(server.sockets)).getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(sys.argv[1]))
    except ImportError:
        asyncio.run(main(sys.argv[1]))
