"""One shared connection per configured MCP server, for every session of the process.

`McpPool` is the facade the rest of the service sees: it attaches and detaches servers, routes
each tool call to its server's connection, reports health, and tells subscribers when a
server's tool list changes. Everything about one server's connection (its owner task, the
state machine, restart with backoff, the transport) lives below it:

```
mcp_pool.py        McpPool: servers by name, call routing, status, add/remove, callbacks
 └─ mcp_connection.py  Connection: owner task, states, backoff, protocol era, tool refresh
     └─ mcp_transport.py   stdio / streamable-HTTP transport, end-of-stream watch, stderr tail
```
A call waits for the restart of a server that was serving (`connecting`, or `restarting` when
due within the call's timeout), so the call after a crash reaches the new process; a server
that fails to start is `down`, and its calls fail at once. `call` never raises for a tool or
server failure: it returns an error `ToolResult` (see `convert.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx2
from mcp import MCPError
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from orchestrator.agents.spec import McpServerSpec
from orchestrator.tools.convert import error_result, to_tool_result
from orchestrator.tools.mcp_connection import Connection, describe, stop_all
from orchestrator.tools.types import ServerStatus, ToolInfo, ToolResult

logger = logging.getLogger(__name__)

CALL_GRACE_S = 0.25  # our own deadline sits just past the SDK's, so the SDK's path wins


class McpPool:
    """The process's MCP connections: one per configured server, shared by all sessions."""

    def __init__(
        self,
        servers: Mapping[str, McpServerSpec],
        *,
        connect_timeout_s: float = 20.0,
        default_call_timeout_s: float = 10.0,
        ping_interval_s: float | None = 10.0,
        ping_timeout_s: float = 10.0,
    ) -> None:
        self._specs = dict(servers)
        self._servers: dict[str, Connection] = {}
        self._connect_timeout_s = connect_timeout_s
        self._default_call_timeout_s = default_call_timeout_s
        self._ping = (ping_interval_s, ping_timeout_s)
        self._callbacks: list[Callable[[str], None]] = []
        self._closed = False

    async def start(self) -> None:
        """Launch every server; return once each is connected or has failed (bounded)."""
        started = [self._launch(name, spec) for name, spec in self._specs.items()
                   if name not in self._servers]
        await self._await_first_attempts(started)

    async def aclose(self) -> None:
        """Stop every server concurrently (a stdio close can take seconds), bounded."""
        self._closed = True
        servers = list(self._servers.values())
        self._servers.clear()
        await stop_all(servers)

    def tools(self, server: str) -> list[ToolInfo]:
        """The server's cached tools (all pages); [] if unknown or never connected."""
        srv = self._servers.get(server)
        return list(srv.tools) if srv is not None else []

    def has_server(self, server: str) -> bool:
        """Whether a server of that name is attached."""
        return server in self._servers

    def stderr_tail(self, server: str) -> list[str]:
        """The last lines a stdio server wrote to stderr (for diagnosis)."""
        srv = self._servers.get(server)
        return list(srv.stderr.lines) if srv is not None else []

    def status(self) -> list[ServerStatus]:
        """Health of every attached server."""
        return [
            ServerStatus(
                name=srv.name, transport=srv.spec.transport, connected=srv.link is not None,
                tool_count=len(srv.tools), restarts=srv.restarts, last_error=srv.last_error,
            )
            for srv in self._servers.values()
        ]

    def on_tools_changed(self, callback: Callable[[str], None]) -> None:
        """Call `callback(server)` whenever a server's cached tool list changes."""
        self._callbacks.append(callback)

    async def add_server(self, name: str, spec: McpServerSpec) -> None:
        """Attach a server at run time; return once it is connected or has failed (bounded)."""
        if name in self._servers:
            raise ValueError(f"MCP server {name!r} is already attached")
        await self._await_first_attempts([self._launch(name, spec)])

    async def remove_server(self, name: str) -> None:
        """Detach a server: new calls fail, in-flight ones may finish (bounded); unknown: no-op."""
        srv = self._servers.pop(name, None)
        if srv is None:
            return
        if srv.in_flight:
            with anyio.move_on_after(self._default_call_timeout_s):
                await srv.idle.wait()
        await stop_all([srv])
        self._notify(name)

    async def call(
        self, server: str, tool: str, arguments: dict[str, Any], *, timeout_s: float | None = None,
    ) -> ToolResult:
        """Call a tool; every failure comes back as an error result, never as an exception."""
        srv = self._servers.get(server)
        if srv is None:
            return error_result(f"MCP server {server!r} is not attached", "unavailable")
        timeout = timeout_s if timeout_s is not None else self._default_call_timeout_s
        srv.in_flight += 1
        srv.idle.clear()
        try:
            return await self._call(srv, tool, arguments, timeout)
        finally:
            srv.in_flight -= 1
            if srv.in_flight == 0:
                srv.idle.set()

    async def _call(
        self, srv: Connection, tool: str, arguments: dict[str, Any], timeout_s: float,
    ) -> ToolResult:
        deadline = time.monotonic() + timeout_s
        link = await srv.ready_link(deadline)
        if link is None or link.client is None:
            reason = srv.last_error or f"not connected ({srv.state})"
            return error_result(f"MCP server {srv.name!r} is unavailable: {reason}", "unavailable")
        if all(info.name != tool for info in srv.tools):
            return error_result(f"unknown tool {tool!r} on MCP server {srv.name!r}", "invalid")
        remaining = max(deadline - time.monotonic(), 0.001)
        timed_out = error_result(f"tool {tool!r} timed out after {timeout_s} s", "timeout")
        client = link.client
        try:
            with anyio.fail_after(remaining + CALL_GRACE_S):
                result = await client.call_tool(tool, arguments, read_timeout_seconds=remaining)
        except TimeoutError:
            return timed_out
        except MCPError as exc:
            if exc.error.code == REQUEST_TIMEOUT:
                return timed_out
            if exc.error.code == CONNECTION_CLOSED:
                srv.lose(link, "connection closed")
                return error_result(
                    f"MCP server {srv.name!r} is unavailable: connection closed during the call",
                    "unavailable",
                )
            return error_result(f"MCP error {exc.error.code}: {exc.error.message}", "protocol")
        except (
            anyio.ClosedResourceError, anyio.BrokenResourceError, OSError, httpx2.TransportError,
        ) as exc:
            srv.lose(link, describe(exc))
            return error_result(f"MCP server {srv.name!r} is unavailable: {describe(exc)}",
                                "unavailable")
        except Exception as exc:  # a result the SDK rejects (output schema, validation)
            return error_result(f"MCP call failed: {describe(exc)}", "protocol")
        return to_tool_result(result)

    # -- connections -----------------------------------------------------------------------------

    def _launch(self, name: str, spec: McpServerSpec) -> Connection:
        if self._closed:
            raise RuntimeError("the MCP pool is closed")
        # The pool's timeout is the default; a server's own `connect_timeout_s` overrides it.
        own = "connect_timeout_s" in spec.model_fields_set
        timeout = spec.connect_timeout_s if own else self._connect_timeout_s
        srv = Connection(name=name, spec=spec, connect_timeout_s=timeout,
                         on_tools_changed=self._tools_changed,
                         ping_interval_s=self._ping[0], ping_timeout_s=self._ping[1])
        self._servers[name] = srv
        srv.start()
        return srv

    async def _await_first_attempts(self, servers: list[Connection]) -> None:
        with anyio.move_on_after(self._connect_timeout_s):
            for srv in servers:
                await srv.first_attempt.wait()

    def _tools_changed(self, srv: Connection) -> None:
        # A detached (or replaced) server's late refresh concerns no one.
        if self._servers.get(srv.name) is srv:
            self._notify(srv.name)

    def _notify(self, name: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(name)
            except Exception:
                logger.exception("on_tools_changed callback failed for MCP server %r", name)
