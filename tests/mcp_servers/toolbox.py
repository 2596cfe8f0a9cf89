"""A small MCP server for the pool's tests, over stdio (`python -m tests.mcp_servers.toolbox`).

Every tool is `async def` so concurrent calls never queue on the SDK's thread pool.
Runnable by file path too: it imports nothing from this repository.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ImageContent, TextContent

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
        """Raise an error with the given message (an is_error result)."""
        raise ValueError(message)

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

    @server.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Register a new tool `name` at run time and announce the list change."""

        async def extra() -> str:
            return name

        ctx.mcp_server.add_tool(extra, name=name, description=f"added at run time: {name}")
        await ctx.request_context.session.send_tool_list_changed()
        return f"added {name}"

    return server


def main() -> None:
    """Serve over stdio."""
    build_server().run()


if __name__ == "__main__":
    main()
