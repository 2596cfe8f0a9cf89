"""The orchestrator as the benchmark runs it: its own process, configured as `orchestrator serve`.

    BENCH_SANDBOX_URL=ws://127.0.0.1:P/v1 python bench/serve.py VAR_DIR   # prints "PORT <n>"

uvicorn with `ws="websockets-sansio"`, uvloop and no permessage-deflate (design §5), the
bench agents, a fresh SQLite database under VAR_DIR, bearer token `bench-token`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from orchestrator.app import create_app
from orchestrator.config import Settings

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
    server = uvicorn.Server(uvicorn.Config(app, ws="websockets-sansio", loop="none",
                                           ws_per_message_deflate=False, log_level="warning",
                                           ws_max_size=32 * 1024 * 1024))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await app.state.ready.wait()
    return server, task, sock.getsockname()[1]


async def main(var_dir: Path) -> None:
    server, task, port = await start(var_dir)
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.should_exit = True
    await task


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(Path(sys.argv[1])))
