"""Values exchanged between the MCP pool, the tool router and the session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """One tool of one MCP server, as cached by the pool."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any] = field(default_factory=dict[str, Any])


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call produced, already converted to `function_call_output` text.

    A failed call (tool error, timeout, server down, unknown tool) is a result with
    `is_error=True` and `error` set; the pool never raises for those.
    """

    output: str
    is_error: bool = False
    error: str | None = None
    error_kind: Literal["tool", "timeout", "unavailable", "protocol", "invalid"] | None = None


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """Health of one pooled MCP server."""

    name: str
    transport: Literal["stdio", "http"]
    connected: bool
    tool_count: int
    restarts: int
    last_error: str | None
