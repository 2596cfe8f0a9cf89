"""The toolbox server over streamable HTTP: `python -m tests.mcp_servers.toolbox_http [PORT]`.

Binds 127.0.0.1 (port 0 by default: a free one), then prints `LISTENING <port>` on stdout,
so a test waits for that line instead of polling the port.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import uvicorn

try:
    from tests.mcp_servers.toolbox import build_server
except ImportError:  # run by file path: the toolbox sits next to this file
    from toolbox import build_server  # type: ignore[no-redef]


_REPO = Path(__file__).resolve().parents[2]


async def serve(port: int) -> None:
    """Serve until killed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)  # connections queue until uvicorn accepts them
    # uvicorn leaves Nagle on for sockets it is handed: small responses then wait ~40 ms for
    # the peer's delayed ACK. Accepted sockets inherit this option.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    app = build_server().streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on")
    server = uvicorn.Server(config)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    await server.serve(sockets=[sock])


@asynccontextmanager
async def toolbox_over_http(timeout_s: float = 20.0) -> AsyncIterator[str]:
    """Run this server in its own process for a test; yields its `/mcp` URL, kills it after."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.mcp_servers.toolbox_http",
        cwd=_REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
        assert line.startswith(b"LISTENING "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/mcp"
    finally:
        proc.kill()
        await proc.wait()


def main() -> None:
    """Parse the optional port and serve."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    anyio.run(serve, port)


if __name__ == "__main__":
    main()
