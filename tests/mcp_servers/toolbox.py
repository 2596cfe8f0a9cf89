"""A small MCP server for tests, over stdio (`python -m tests.mcp_servers.toolbox`).

Tools: echo(text), add(a, b), fail(message) (an is_error result), refuse(message) (a JSON-RPC
error), slow(seconds), crash() (the process exits mid-call), pid(), weather(city) (structured
content), picture() (text + an image block), tally() (counts its own runs), getenv(name),
shout(lines) (floods stderr), flood(lines) (junk on stdout), grow(name) (adds a tool and
announces the list change).
Every tool is `async def` so concurrent calls never queue on the SDK's thread pool.
With TOOLBOX_LEGACY=1 it behaves as a pre-2026 server. Runnable by file path too: it imports
nothing from this repository. `toolbox_http.py` serves the same tools over streamable HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from typing import Any

import anyio
from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    ErrorData,
    ImageContent,
    JSONRPCError,
    JSONRPCRequest,
    TextContent,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

# A 1x1 transparent PNG: a real image block for the conversion tests.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def build_server() -> MCPServer:
    """The toolbox server with all its tools registered."""
    server = MCPServer("toolbox")

    @server.tool()
    async def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    async def fail(message: str) -> str:
        """Fail with the given message (an is_error result)."""
        raise ToolError(message)

    @server.tool()
    async def refuse(message: str) -> str:
        """Answer with a JSON-RPC error instead of a result (a protocol-level failure)."""
        raise MCPError(code=INVALID_PARAMS, message=message)

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    async def crash() -> str:
        """Exit the server process hard, mid-call."""
        os._exit(1)

    @server.tool()
    async def pid() -> int:
        """The server's process id (to tell a restarted server apart)."""
        return os.getpid()

    @server.tool()
    async def weather(city: str) -> dict[str, Any]:
        """Structured content only: a dict result."""
        return {"city": city, "temperature_c": 21}

    @server.tool()
    async def picture() -> list[TextContent | ImageContent]:
        """A text block followed by an image block."""
        return [
            TextContent(type="text", text="a pixel"),
            ImageContent(type="image", data=base64.b64encode(_PNG).decode(), mime_type="image/png"),
        ]

    calls = {"tally": 0}

    @server.tool()
    async def tally() -> int:
        """How many times this tool has run in this process, this call included."""
        calls["tally"] += 1
        return calls["tally"]

    @server.tool()
    async def getenv(name: str) -> str:
        """An environment variable of the server process ("" when unset)."""
        return os.environ.get(name, "")

    @server.tool()
    async def shout(lines: int) -> str:
        """Write many lines to stderr (a server that floods its log)."""
        for i in range(lines):
            sys.stderr.write(f"shout line {i} " + "x" * 200 + "\n")
        sys.stderr.flush()
        return f"shouted {lines}"

    @server.tool()
    async def flood(lines: int) -> str:
        """Write many lines of junk to stdout, the protocol channel (a server gone haywire)."""
        junk = ("not json " + "y" * 200 + "\n").encode()
        for _ in range(lines):
            os.write(sys.stdout.fileno(), junk)
        return f"flooded {lines}"

    @server.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Register a new tool `name` at run time and announce the list change."""

        async def extra() -> str:
            return name

        ctx.mcp_server.add_tool(extra, name=name, description=f"added at run time: {name}")
        # 2026-era clients hear of changes through `subscriptions/listen`, older ones by a
        # plain notification.
        if ctx.request_context.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await ctx.notify_tools_changed()
        else:
            await ctx.request_context.session.send_tool_list_changed()
        return f"added {name}"

    return server


async def serve_legacy(server: MCPServer) -> None:
    """Serve over stdio as a server older than 2026-07-28: the `server/discover` probe is
    refused, so clients fall back to the `initialize` handshake (and plain notifications)."""
    lowlevel = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    async with stdio_server() as (read_stream, write_stream):
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def refuse_discover() -> None:
            async with send:
                async for item in read_stream:
                    message = item.message if isinstance(item, SessionMessage) else None
                    if isinstance(message, JSONRPCRequest) and message.method == "server/discover":
                        error = ErrorData(code=METHOD_NOT_FOUND, message="Method not found")
                        reply = JSONRPCError(jsonrpc="2.0", id=message.id, error=error)
                        await write_stream.send(SessionMessage(reply))
                    else:
                        await send.send(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(refuse_discover)
            await lowlevel.run(receive, write_stream, lowlevel.create_initialization_options())


def main() -> None:
    """Serve over stdio (TOOLBOX_LEGACY=1: as a pre-2026 server)."""
    server = build_server()
    if os.environ.get("TOOLBOX_LEGACY") == "1":
        anyio.run(serve_legacy, server)
    else:
        server.run()


if __name__ == "__main__":
    main()
