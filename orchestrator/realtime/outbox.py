"""Ordered delivery to the client with holes that fill in later.

Frames about a server-run tool call (its `conversation.item.done`, `response.output_item.done`,
the response's `response.done`) can only be shown once the tool has returned. The upstream pump
never waits for that: it parks a deferred entry and keeps reading; every later frame queues
behind it, and the queue drains as soon as the entry at its head is ready.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Send = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Deferred:
    """Frames rendered only once `ready()` is true."""

    ready: Callable[[], bool]
    render: Callable[[], list[str]]


class Outbox:
    """The single ordered path from the session to the client."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._queue: deque[str | Deferred] = deque()
        self._flushing = False

    @property
    def holding(self) -> bool:
        """True while frames wait behind an unfinished entry."""
        return bool(self._queue)

    async def put(self, frame: str, *, ordered: bool = True) -> None:
        """Send a frame now, or queue it behind a pending entry (unless it need not be
        `ordered` after them)."""
        if self._queue and ordered:
            self._queue.append(frame)
        else:
            await self._send(frame)

    async def put_many(self, frames: list[str]) -> None:
        """Send several frames in order."""
        for frame in frames:
            await self.put(frame)

    async def defer(self, entry: Deferred) -> None:
        """Queue frames that depend on work still running; send at once if already ready."""
        self._queue.append(entry)
        await self.flush()

    async def flush(self) -> None:
        """Send everything at the head of the queue that is ready."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._queue:
                head = self._queue[0]
                if isinstance(head, Deferred):
                    if not head.ready():
                        break
                    for frame in head.render():
                        await self._send(frame)
                else:
                    await self._send(head)
                self._queue.popleft()
        finally:
            self._flushing = False
