"""An MCP server over stdio whose one tool answers at once (bench/tools.py measures what the
orchestrator adds around a tool call, not the tool)."""

from __future__ import annotations

from mcp.server import MCPServer

server = MCPServer("fast")


@server.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    server.run()
