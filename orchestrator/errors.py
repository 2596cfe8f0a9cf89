"""The exception tree of orchestrator.

```
OrchestratorError
├── ConfigError        bad agent YAML / MCP server definitions; carries `problems`
├── ProtocolError      a client or upstream frame we cannot accept; carries `code`, `event_id`
├── ToolError          an MCP server or tool failed; turned into an error result, never raised
│                      past the tool router
└── UpstreamError      the model connection failed (connect refused, closed, protocol)
```
Only programmer and configuration errors propagate; failures at run time become events
(`error` toward the client) or error results (toward the model).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem at a position in a file (1-based line and column)."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class OrchestratorError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(OrchestratorError):
    """Agent or MCP server definitions are invalid."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ProtocolError(OrchestratorError):
    """A frame that violates the realtime protocol."""

    def __init__(
        self, message: str, *, code: str = "invalid_request_error", event_id: str | None = None,
        param: str | None = None,
    ) -> None:
        self.code = code
        self.event_id = event_id
        self.param = param
        super().__init__(message)


class ToolError(OrchestratorError):
    """An MCP server or tool failed."""


class UpstreamError(OrchestratorError):
    """The upstream model connection failed."""
