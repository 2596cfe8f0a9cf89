"""The byte-level side of one MCP server connection: its transport and its stderr.

`transport()` opens a stdio process or a streamable-HTTP session, whichever the spec names,
and wraps its read stream in an `EofWatch`, so the connection learns the server died the
moment the stream ends rather than at its next call. A stdio server's stderr is drained into a
bounded `StderrTail`, kept for diagnosis (a flood of output costs reads, never our memory).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TextIO, cast

import anyio
import httpx2
from mcp import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from orchestrator.agents.loader import resolve_command
from orchestrator.agents.spec import McpServerSpec

# Pitfall 3: an httpx read timeout tears the whole connection down, so it must sit above the
# longest tool timeout a spec allows (3600 s); per-call timeouts do the real bounding.
HTTP_READ_TIMEOUT_S = 3700.0
STDERR_LINES = 100
STDERR_LINE_CHARS = 1000


class _Receiving(Protocol):
    async def receive(self) -> SessionMessage | Exception: ...
    async def aclose(self) -> None: ...


class EofWatch:
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

    def __aiter__(self) -> EofWatch:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Close the wrapped stream."""
        await self._inner.aclose()

    async def __aenter__(self) -> EofWatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class StderrTail:
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


@asynccontextmanager
async def transport(
    spec: McpServerSpec, stderr: StderrTail, on_eof: Callable[[], None],
) -> AsyncGenerator[Any]:
    """The server's transport, its read stream watched for the end of the connection."""
    async with _raw_transport(spec, stderr) as (read_stream, write_stream):
        yield EofWatch(read_stream, on_eof), write_stream


@asynccontextmanager
async def _raw_transport(spec: McpServerSpec, stderr: StderrTail) -> AsyncGenerator[Any]:
    if spec.command is not None:
        command, *args = resolve_command(spec)
        params = StdioServerParameters(
            command=command, args=args, env=dict(spec.env) or None, cwd=spec.cwd,
        )
        async with (
            _stderr_pipe(stderr) as errlog,
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
async def _stderr_pipe(tail: StderrTail) -> AsyncGenerator[TextIO]:
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
