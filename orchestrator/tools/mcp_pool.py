"""One shared connection per configured MCP server, for every session of the process.

Each server has an owner task: it enters `async with Client(...)`, lists the tools, publishes
the client, and waits; calls from any session go through that one client (the SDK multiplexes
them). The task that enters a client must be the one that leaves it, hence one owner each.

```
connecting ──tools listed──► connected
connecting ──spawn or handshake failed, timed out──► down ──backoff──► connecting
connected  ──lost (EOF, connection closed)──► connecting   (first loss after a healthy spell)
                                          └─► restarting ──backoff──► connecting
any        ──stop──► stopped
```
Backoff: 0.2 s doubling to 10 s, reset once a connection has lived 30 s. A call waits for the
restart of a server that was serving (`connecting`, or `restarting` when due within the call's
timeout), so the call after a crash reaches the new process; a server that fails to start is
`down`, and its calls fail at once. `call` never raises for a tool or server failure: it
returns an error `ToolResult` (see `convert.py`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO, cast

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters, stdio_client
from mcp.client import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.message import SessionMessage
from mcp.types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    DiscoverResult,
    Implementation,
    Tool,
    ToolListChangedNotification,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from orchestrator.agents.spec import McpServerSpec
from orchestrator.tools.convert import error_result, to_tool_result
from orchestrator.tools.types import ServerStatus, ToolInfo, ToolResult

logger = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
HEALTHY_S = 30.0  # a connection that lived this long resets the backoff
STOP_GRACE_S = 7.0  # the SDK's stdio close escalates EOF → SIGTERM → SIGKILL in ≤ ~6 s
CALL_GRACE_S = 0.25  # our own deadline sits just past the SDK's, so the SDK's path wins
# Pitfall 3: an httpx read timeout tears the whole connection down, so it must sit above the
# longest tool timeout a spec allows (3600 s); per-call timeouts do the real bounding.
HTTP_READ_TIMEOUT_S = 3700.0
MAX_TOOL_PAGES = 100
STDERR_LINES = 100
STDERR_LINE_CHARS = 1000
CLIENT_INFO = Implementation(name="orchestrator", version="0.1.0")

State = Literal["connecting", "connected", "restarting", "down", "stopped"]


class _Receiving(Protocol):
    async def receive(self) -> SessionMessage | Exception: ...
    async def aclose(self) -> None: ...


class _EofWatch:
    """A transport's read stream that reports its end: how the pool learns a server died."""

    def __init__(self, inner: _Receiving, on_eof: Callable[[], None]) -> None:
        self._inner = inner
        self._on_eof = on_eof

    @property
    def last_context(self) -> Any:
        """The sender's context, passed through (the SDK's dispatcher reads it by duck typing)."""
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        """The next message; on end of stream, report it, then re-raise."""
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_eof()
            raise

    def __aiter__(self) -> _EofWatch:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Close the wrapped stream."""
        await self._inner.aclose()

    async def __aenter__(self) -> _EofWatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _StderrTail:
    """The last lines a stdio server wrote to stderr; a flood costs reads, never our output."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=STDERR_LINES)
        self.count = 0
        self._partial = ""

    def feed(self, data: bytes) -> None:
        """Add a chunk of output, split into (truncated) lines."""
        parts = (self._partial + data.decode(errors="replace")).split("\n")
        self._partial = parts.pop()[-STDERR_LINE_CHARS:]
        for line in parts:
            if line.strip():
                self.lines.append(line.rstrip()[:STDERR_LINE_CHARS])
                self.count += 1

    def last_since(self, count: int) -> str | None:
        """The last line written after the first `count` lines, if any."""
        return self.lines[-1] if self.count > count and self.lines else None

    async def pump(self, fd: int) -> None:
        """Read the pipe until every writer has closed it."""
        os.set_blocking(fd, False)
        while True:
            await anyio.wait_readable(fd)
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                return
            self.feed(data)


@dataclass(eq=False, slots=True)
class _Link:
    """One connection attempt; once published, the client that calls go through."""

    client: Client | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    since: float = field(default_factory=time.monotonic)


@dataclass(eq=False, slots=True)
class _Server:
    """Everything the pool knows about one server, shared by its owner task and the callers."""

    name: str
    spec: McpServerSpec
    connect_timeout_s: float
    state: State = "connecting"
    link: _Link | None = None
    tools: list[ToolInfo] = field(default_factory=list[ToolInfo])
    restarts: int = 0
    failures: int = 0  # consecutive, since the last healthy connection
    delay: float = 0.0
    retry_at: float = 0.0  # time.monotonic() of the next attempt while `restarting`
    last_error: str | None = None
    mode: str = "auto"  # the negotiated era, remembered so a reconnect skips the probe
    prior_discover: DiscoverResult | None = None
    stopping: bool = False
    in_flight: int = 0
    stderr: _StderrTail = field(default_factory=_StderrTail)
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    attempt_scope: anyio.CancelScope | None = None
    task: asyncio.Task[None] | None = None

    def set_state(self, state: State) -> None:
        """Change state and wake everything waiting for a change."""
        self.state = "stopped" if self.stopping else state
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()

    def publish(self, link: _Link) -> None:
        """The attempt succeeded: calls may use this link."""
        self.link = link
        self.set_state("connected")
        self.first_attempt.set()

    def lose(self, link: _Link, reason: str) -> None:
        """A published link died: unpublish it and plan the restart (idempotent)."""
        link.lost.set()
        if self.link is not link:
            return
        self.link = None
        self.last_error = reason
        if time.monotonic() - link.since >= HEALTHY_S:
            self.failures = 0
        self.delay = _backoff(self.failures)
        self.failures += 1
        self.retry_at = time.monotonic() + self.delay
        # With no delay the owner reconnects at once: stay `connecting` so calls wait for it.
        self.set_state("connecting" if self.delay == 0 else "restarting")

    def fail(self, reason: str) -> None:
        """An attempt failed before it was published."""
        self.last_error = reason
        self.failures += 1
        self.delay = _backoff(self.failures)
        self.set_state("down")
        self.first_attempt.set()

    async def ready_link(self, deadline: float) -> _Link | None:
        """The published link, waiting for a restart in progress until `deadline`."""
        while self.link is None:
            changed = self.changed
            remaining = deadline - time.monotonic()
            if self.state not in ("connecting", "restarting") or remaining <= 0:
                return None
            if self.state == "restarting" and self.retry_at >= deadline:
                return None
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return None
        return self.link

    def request_stop(self) -> None:
        """Ask the owner task to leave: drop the link, or abandon a connect in progress."""
        self.stopping = True
        if self.link is not None:
            self.link.lost.set()
        if self.attempt_scope is not None and self.state == "connecting":
            self.attempt_scope.cancel()
        self.set_state("stopped")


def _backoff(failures: int) -> float:
    return 0.0 if failures == 0 else min(BACKOFF_MIN_S * 2 ** (failures - 1), BACKOFF_MAX_S)


class McpPool:
    """The process's MCP connections: one per configured server, shared by all sessions."""

    def __init__(
        self,
        servers: Mapping[str, McpServerSpec],
        *,
        connect_timeout_s: float = 20.0,
        default_call_timeout_s: float = 10.0,
    ) -> None:
        self._specs = dict(servers)
        self._servers: dict[str, _Server] = {}
        self._connect_timeout_s = connect_timeout_s
        self._default_call_timeout_s = default_call_timeout_s
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
        await _stop_all(servers)

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
        await _stop_all([srv])
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
        self, srv: _Server, tool: str, arguments: dict[str, Any], timeout_s: float,
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
            srv.lose(link, _describe(exc))
            return error_result(f"MCP server {srv.name!r} is unavailable: {_describe(exc)}",
                                "unavailable")
        except Exception as exc:  # a result the SDK rejects (output schema, validation)
            return error_result(f"MCP call failed: {_describe(exc)}", "protocol")
        return to_tool_result(result)

    # -- owner tasks ---------------------------------------------------------------------------

    def _launch(self, name: str, spec: McpServerSpec) -> _Server:
        if self._closed:
            raise RuntimeError("the MCP pool is closed")
        # The pool's timeout is the default; a server's own `connect_timeout_s` overrides it.
        own = "connect_timeout_s" in spec.model_fields_set
        timeout = spec.connect_timeout_s if own else self._connect_timeout_s
        srv = _Server(name=name, spec=spec, connect_timeout_s=timeout)
        self._servers[name] = srv
        srv.task = asyncio.create_task(self._own(srv), name=f"mcp-server:{name}")
        return srv

    async def _await_first_attempts(self, servers: list[_Server]) -> None:
        with anyio.move_on_after(self._connect_timeout_s):
            for srv in servers:
                await srv.first_attempt.wait()

    async def _own(self, srv: _Server) -> None:
        """Connect, serve, and reconnect with backoff until the server is stopped."""
        while not srv.stopping:
            await self._attempt(srv)
            if srv.stopping:
                break
            if srv.delay > 0:
                logger.warning("MCP server %r: %s; reconnecting in %.1f s",
                               srv.name, srv.last_error, srv.delay)
                with suppress(TimeoutError):
                    async with asyncio.timeout(srv.delay):
                        await _wait_stop(srv)
                if srv.stopping:
                    break
            srv.restarts += 1
            srv.set_state("connecting")
        srv.set_state("stopped")

    async def _attempt(self, srv: _Server) -> None:
        """One connection, from spawn to loss; records how it ended."""
        link = _Link()
        stderr_mark = srv.stderr.count
        reason = "connection closed"
        scope = anyio.CancelScope(deadline=anyio.current_time() + srv.connect_timeout_s)
        srv.attempt_scope = scope
        try:
            with scope:
                async with self._client(srv, link) as client:
                    tools = await _list_tools(srv.name, client)
                    scope.deadline = math.inf
                    self._remember_era(srv, client)
                    link.client = client
                    self._set_tools(srv, tools)
                    srv.publish(link)
                    await self._serve(srv, link)
            if scope.cancelled_caught and link.client is None:
                reason = f"connect timed out after {srv.connect_timeout_s} s"
        except Exception as exc:  # any failure of a server is a reason to restart it, never ours
            reason = _describe(exc)
            if any(isinstance(leaf, MCPError) for leaf in _leaves(exc)):
                srv.mode, srv.prior_discover = "auto", None  # the era may have changed: probe again
        finally:
            srv.attempt_scope = None
        if srv.stopping:
            return
        last = srv.stderr.last_since(stderr_mark)
        if link.client is None:
            srv.fail(f"{reason} (stderr: {last})" if last else reason)
            return
        # A no-op when the end of stream was seen first. No stderr here: after a long-lived
        # connection its last line is more likely old noise than the cause (see stderr_tail).
        srv.lose(link, reason)

    async def _serve(self, srv: _Server, link: _Link) -> None:
        """Keep the tool list fresh until the link is lost or the server stopped."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow_tool_changes, srv, link)
            await link.lost.wait()
            tg.cancel_scope.cancel()

    @asynccontextmanager
    async def _client(self, srv: _Server, link: _Link) -> AsyncGenerator[Client]:
        async def on_message(message: IncomingMessage) -> None:
            if isinstance(message, ToolListChangedNotification):
                link.changed.set()

        client = Client(
            _transport(srv, lambda: srv.lose(link, "connection closed")),
            mode=srv.mode, prior_discover=srv.prior_discover,
            # The default for requests without their own timeout (tool list refreshes).
            read_timeout_seconds=srv.connect_timeout_s,
            message_handler=on_message, cache=None, client_info=CLIENT_INFO,
        )
        async with client:
            yield client

    def _remember_era(self, srv: _Server, client: Client) -> None:
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            srv.mode, srv.prior_discover = client.protocol_version, client.session.discover_result
        else:
            srv.mode, srv.prior_discover = "legacy", None

    async def _follow_tool_changes(self, srv: _Server, link: _Link) -> None:
        """Refresh the cached list on each change notice (legacy notification or `listen`)."""
        client = link.client
        assert client is not None
        async with anyio.create_task_group() as tg:
            if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                tg.start_soon(_listen_for_changes, srv.name, client, link)
            while True:
                await link.changed.wait()
                link.changed.clear()
                try:
                    tools = await _list_tools(srv.name, client)
                except Exception as exc:  # the link's own loss is handled by the owner
                    logger.info("MCP server %r: tool list refresh failed: %s",
                                srv.name, _describe(exc))
                    continue
                self._set_tools(srv, tools)

    def _set_tools(self, srv: _Server, tools: list[ToolInfo]) -> None:
        if tools != srv.tools:
            srv.tools = tools
            if self._servers.get(srv.name) is srv:
                self._notify(srv.name)

    def _notify(self, name: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(name)
            except Exception:
                logger.exception("on_tools_changed callback failed for MCP server %r", name)


@asynccontextmanager
async def _transport(srv: _Server, on_eof: Callable[[], None]) -> AsyncGenerator[Any]:
    """The server's transport, its read stream watched for the end of the connection."""
    async with _raw_transport(srv) as (read_stream, write_stream):
        yield _EofWatch(read_stream, on_eof), write_stream


@asynccontextmanager
async def _raw_transport(srv: _Server) -> AsyncGenerator[Any]:
    spec = srv.spec
    if spec.command is not None:
        params = StdioServerParameters(
            command=_resolve_command(spec.command[0]), args=spec.command[1:],
            env=dict(spec.env) or None, cwd=spec.cwd,
        )
        async with (
            _stderr_pipe(srv.stderr) as errlog,
            stdio_client(params, errlog=errlog) as streams,
        ):
            yield streams
        return
    assert spec.url is not None
    headers = {key: value.get_secret_value() for key, value in spec.headers.items()}
    timeout = httpx2.Timeout(30.0, read=HTTP_READ_TIMEOUT_S)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(spec.url, http_client=http) as streams,
    ):
        yield streams


@asynccontextmanager
async def _stderr_pipe(tail: _StderrTail) -> AsyncGenerator[TextIO]:
    """A pipe for the server's stderr, drained into `tail` while the server lives."""
    read_fd, write_fd = os.pipe()
    errlog = cast(TextIO, os.fdopen(write_fd, "w"))
    try:
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def pump() -> None:
                await tail.pump(read_fd)
                done.set()

            tg.start_soon(pump)
            try:
                yield errlog
            finally:
                errlog.close()
                # The server is stopped by now; read what it wrote last, unless a grandchild
                # still holds the pipe open.
                with anyio.move_on_after(0.5, shield=True):
                    await done.wait()
                tg.cancel_scope.cancel()
    finally:
        errlog.close()
        os.close(read_fd)


async def _listen_for_changes(name: str, client: Client, link: _Link) -> None:
    """On a 2026-era link, list changes arrive only through `subscriptions/listen`."""
    try:
        async with client.listen(tools_list_changed=True) as subscription:
            link.changed.set()  # catch a change between the first listing and the ack
            async for _event in subscription:
                link.changed.set()
    except (ListenNotSupportedError, SubscriptionLost, MCPError, TimeoutError) as exc:
        logger.info("MCP server %r: no tool list change notices (%s)", name, _describe(exc))


async def _list_tools(name: str, client: Client) -> list[ToolInfo]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return [
        ToolInfo(server=name, name=tool.name, description=tool.description or tool.title or "",
                 input_schema=dict(tool.input_schema))
        for tool in tools
    ]


async def _wait_stop(srv: _Server) -> None:
    while srv.state != "stopped":
        await srv.changed.wait()


async def _stop_all(servers: list[_Server]) -> None:
    """Stop servers in parallel; past the grace, cancel their owner tasks."""
    for srv in servers:
        srv.request_stop()
    tasks = [srv.task for srv in servers if srv.task is not None]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=STOP_GRACE_S)


def _resolve_command(executable: str) -> str:
    """`python`/`python3` mean the orchestrator's own interpreter (design §4.4)."""
    return sys.executable if executable in ("python", "python3") else executable


def _describe(exc: BaseException) -> str:
    """A one-line reason from an exception, looking inside exception groups."""
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            return f"{leaf.error.message} (MCP error {leaf.error.code})"
    leaf = leaves[0] if leaves else exc
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [exc]
