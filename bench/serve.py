"""The orchestrator as the benchmark runs it: its own process, configured as `orchestrator serve`.

    BENCH_SANDBOX_URL=ws://127.0.0.1:P/v1 python bench/serve.py VAR_DIR [TIMINGS_JSON]
    # prints "PORT <n>"; stops on SIGTERM

uvicorn as `orchestrator serve` configures it (`serving.server_config`: the sans-I/O WebSocket
protocol, uvloop, no permessage-deflate, design §5), the
bench agents, a fresh SQLite database under VAR_DIR, bearer token `bench-token`. With
TIMINGS_JSON, every `McpPool.call` is timed and the durations (ns, in call order) are
written there on exit (bench/tools.py subtracts them from the dispatch round trip).
BENCH_CPROFILE=FILE arms cProfile on SIGUSR1/SIGUSR2 (bench/profiling.py).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import profiling
import uvicorn
from pydantic import SecretStr

from orchestrator.app import create_app
from orchestrator.config import Settings
from orchestrator.serving import server_config

AGENTS = Path(__file__).resolve().parent / "agents"
TOKEN = "bench-token"


def listener() -> socket.socket:
    """A bound listening socket with TCP_NODELAY (uvicorn sets it only on sockets it binds)."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


async def start(var_dir: Path) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Serve the bench agents on a free port; returns (server, its task, port)."""
    settings = Settings(agents_dir=AGENTS, database_url=f"sqlite+aiosqlite:///{var_dir / 'b.db'}",
                        var_dir=var_dir, admin_token=SecretStr(TOKEN))
    app = create_app(settings)
    sock = listener()
    server = uvicorn.Server(server_config(app, loop="none", log_level="warning",
                                          ws_max_size=32 * 1024 * 1024))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await app.state.ready.wait()
    return server, task, sock.getsockname()[1]


def time_tool_calls(server: uvicorn.Server) -> list[int]:
    """Time every MCP call of the served app from now on; returns the growing list."""
    pool = server.config.app.state.services.pool  # type: ignore[attr-defined]
    durations: list[int] = []
    real_call = pool.call

    async def timed_call(*args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic_ns()
        try:
            return await real_call(*args, **kwargs)
        finally:
            durations.append(time.monotonic_ns() - t0)

    pool.call = timed_call
    return durations


async def main(var_dir: Path) -> list[int]:
    server, task, port = await start(var_dir)
    durations = time_tool_calls(server)
    profiling.install()
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.should_exit = True
    await task
    return durations


if __name__ == "__main__":
    import uvloop

    timed = uvloop.run(main(Path(sys.argv[1])))
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(timed))
