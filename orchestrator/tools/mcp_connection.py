"""One MCP server's connection, owned by one task that connects, serves and reconnects.

The owner task enters `async with Client(...)`, lists the tools, publishes the client as a
`Link`, and waits; calls from any session go through that one client (the SDK multiplexes
them). The task that enters a client must be the one that leaves it, hence one owner each.

```
connecting ──tools listed──► connected
connecting ──spawn or handshake failed, timed out──► down ──backoff──► connecting
connected  ──lost (EOF, connection closed)──► connecting   (first loss after a healthy spell)
                                          └─► restarting ──backoff──► connecting
any        ──stop──► stopped
```
Backoff: 0.2 s doubling to 10 s, reset once a connection has lived 30 s. A connected server
is probed every `ping_interval_s`; one that does not answer within `ping_timeout_s` is hung
(SIGSTOP, a blocked event loop, a deadlock) and is dropped like a dead one, then restarted.
`ready_link` lets a call wait for the restart of a server that was serving (`connecting`, or
`restarting` when due within the call's timeout); a server that fails to start is `down`, and
`ready_link` gives up at once. The negotiated protocol era is remembered so a reconnect skips
the probe; the tool list is refreshed on each change notice. Transports and stderr live in
`mcp_transport.py`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal, cast

import anyio
from mcp import Client, MCPError
from mcp.client import IncomingMessage
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.types import DiscoverResult, Implementation, Tool, ToolListChangedNotification
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from orchestrator.agents.spec import McpServerSpec
from orchestrator.tools.mcp_transport import StderrTail, transport
from orchestrator.tools.types import ToolInfo

# The pool's logger: one name for operators, and the one `orchestrator validate` quiets.
logger = logging.getLogger("orchestrator.tools.mcp_pool")

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
HEALTHY_S = 30.0  # a connection that lived this long resets the backoff
STOP_GRACE_S = 7.0  # the SDK's stdio close escalates EOF → SIGTERM → SIGKILL in ≤ ~6 s
MAX_TOOL_PAGES = 100
CLIENT_INFO = Implementation(name="orchestrator", version="0.1.0")

State = Literal["connecting", "connected", "restarting", "down", "stopped"]


@dataclass(eq=False, slots=True)
class Link:
    """One connection attempt; once published, the client that calls go through."""

    client: Client | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    since: float = field(default_factory=time.monotonic)


@dataclass(eq=False, slots=True)
class Connection:
    """One server's state, shared by its owner task and the callers."""

    name: str
    spec: McpServerSpec
    connect_timeout_s: float
    on_tools_changed: Callable[[Connection], None]  # after `tools` changed
    ping_interval_s: float | None = 10.0  # None: no liveness check
    ping_timeout_s: float = 10.0
    state: State = "connecting"
    link: Link | None = None
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
    stderr: StderrTail = field(default_factory=StderrTail)
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    attempt_scope: anyio.CancelScope | None = None
    task: asyncio.Task[None] | None = None

    # -- state, shared with the callers --------------------------------------------------------

    def set_state(self, state: State) -> None:
        """Change state and wake everything waiting for a change."""
        self.state = "stopped" if self.stopping else state
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()

    def publish(self, link: Link) -> None:
        """The attempt succeeded: calls may use this link."""
        self.link = link
        self.set_state("connected")
        self.first_attempt.set()

    def lose(self, link: Link, reason: str) -> None:
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

    async def ready_link(self, deadline: float) -> Link | None:
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

    def start(self) -> None:
        """Launch the owner task."""
        self.task = asyncio.create_task(self._own(), name=f"mcp-server:{self.name}")

    def request_stop(self) -> None:
        """Ask the owner task to leave: drop the link, or abandon a connect in progress."""
        self.stopping = True
        if self.link is not None:
            self.link.lost.set()
        if self.attempt_scope is not None and self.state == "connecting":
            self.attempt_scope.cancel()
        self.set_state("stopped")

    # -- the owner task ------------------------------------------------------------------------

    async def _own(self) -> None:
        """Connect, serve, and reconnect with backoff until the server is stopped."""
        while not self.stopping:
            await self._attempt()
            if self.stopping:
                break
            if self.delay > 0:
                logger.warning("MCP server %r: %s; reconnecting in %.1f s",
                               self.name, self.last_error, self.delay)
                with suppress(TimeoutError):
                    async with asyncio.timeout(self.delay):
                        await self._wait_stopped()
                if self.stopping:
                    break
            self.restarts += 1
            self.set_state("connecting")
        self.set_state("stopped")

    async def _wait_stopped(self) -> None:
        while self.state != "stopped":
            await self.changed.wait()

    async def _attempt(self) -> None:
        """One connection, from spawn to loss; records how it ended."""
        link = Link()
        stderr_mark = self.stderr.count
        reason = "connection closed"
        scope = anyio.CancelScope(deadline=anyio.current_time() + self.connect_timeout_s)
        self.attempt_scope = scope
        try:
            with scope:
                async with self._client(link) as client:
                    tools = await _list_tools(self.name, client)
                    scope.deadline = math.inf
                    self._remember_era(client)
                    link.client = client
                    self._set_tools(tools)
                    self.publish(link)
                    await self._serve(link)
            if scope.cancelled_caught and link.client is None:
                reason = f"connect timed out after {self.connect_timeout_s} s"
        except Exception as exc:  # any failure of a server is a reason to restart it, never ours
            reason = describe(exc)
            if any(isinstance(leaf, MCPError) for leaf in _leaves(exc)):
                self.mode, self.prior_discover = "auto", None  # the era may differ now: probe again
        finally:
            self.attempt_scope = None
        if self.stopping:
            return
        last = self.stderr.last_since(stderr_mark)
        if link.client is None:
            self.fail(f"{reason} (stderr: {last})" if last else reason)
            return
        # A no-op when the end of stream was seen first. No stderr here: after a long-lived
        # connection its last line is more likely old noise than the cause (see stderr_tail).
        self.lose(link, reason)

    async def _serve(self, link: Link) -> None:
        """Keep the tool list fresh until the link is lost or the server stopped."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow_tool_changes, link)
            if self.ping_interval_s is not None:
                tg.start_soon(self._check_liveness, link, self.ping_interval_s)
            await link.lost.wait()
            tg.cancel_scope.cancel()

    async def _check_liveness(self, link: Link, interval_s: float) -> None:
        """Ping the server now and then; no answer in time means it hangs: drop the link."""
        client = link.client
        assert client is not None
        while True:
            await anyio.sleep(interval_s)
            try:
                # Not `ping`: the 2026-07-28 protocol removed it. One page of the tool list is
                # cheap and answered in every era.
                with anyio.fail_after(self.ping_timeout_s):
                    await client.list_tools()
            except TimeoutError:
                reason = f"no answer to a liveness check within {self.ping_timeout_s:g} s"
                logger.warning("MCP server %r: %s; restarting it", self.name, reason)
                self.lose(link, reason)
                return
            except MCPError:
                continue  # it answered, if only to refuse: it is alive
            except Exception:  # the link's own loss is handled by the owner
                return

    @asynccontextmanager
    async def _client(self, link: Link) -> AsyncGenerator[Client]:
        async def on_message(message: IncomingMessage) -> None:
            if isinstance(message, ToolListChangedNotification):
                link.changed.set()

        client = Client(
            transport(self.spec, self.stderr, lambda: self.lose(link, "connection closed")),
            mode=self.mode, prior_discover=self.prior_discover,
            # The default for requests without their own timeout (tool list refreshes).
            read_timeout_seconds=self.connect_timeout_s,
            message_handler=on_message, cache=None, client_info=CLIENT_INFO,
        )
        async with client:
            yield client

    def _remember_era(self, client: Client) -> None:
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            self.mode, self.prior_discover = client.protocol_version, client.session.discover_result
        else:
            self.mode, self.prior_discover = "legacy", None

    async def _follow_tool_changes(self, link: Link) -> None:
        """Refresh the cached list on each change notice (legacy notification or `listen`)."""
        client = link.client
        assert client is not None
        async with anyio.create_task_group() as tg:
            if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                tg.start_soon(_listen_for_changes, self.name, client, link)
            while True:
                await link.changed.wait()
                link.changed.clear()
                try:
                    tools = await _list_tools(self.name, client)
                except Exception as exc:  # the link's own loss is handled by the owner
                    logger.info("MCP server %r: tool list refresh failed: %s",
                                self.name, describe(exc))
                    continue
                self._set_tools(tools)

    def _set_tools(self, tools: list[ToolInfo]) -> None:
        if tools != self.tools:
            self.tools = tools
            self.on_tools_changed(self)


def _backoff(failures: int) -> float:
    return 0.0 if failures == 0 else min(BACKOFF_MIN_S * 2 ** (failures - 1), BACKOFF_MAX_S)


async def _listen_for_changes(name: str, client: Client, link: Link) -> None:
    """On a 2026-era link, list changes arrive only through `subscriptions/listen`."""
    try:
        async with client.listen(tools_list_changed=True) as subscription:
            link.changed.set()  # catch a change between the first listing and the ack
            async for _event in subscription:
                link.changed.set()
    except (ListenNotSupportedError, SubscriptionLost, MCPError, TimeoutError) as exc:
        logger.info("MCP server %r: no tool list change notices (%s)", name, describe(exc))


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


async def stop_all(connections: list[Connection]) -> None:
    """Stop connections in parallel; past the grace, cancel their owner tasks."""
    for conn in connections:
        conn.request_stop()
    tasks = [conn.task for conn in connections if conn.task is not None]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=STOP_GRACE_S)


def describe(exc: BaseException) -> str:
    """A one-line reason from an exception, looking inside exception groups."""
    leaves = _leaves(exc)
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
