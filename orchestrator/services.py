"""The long-lived parts one process shares, built once by the app's lifespan.

Routes reach them through dependencies (`admin/deps.py`), never through globals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.agents.registry import Registry
from orchestrator.config import Settings
from orchestrator.ratelimit import AuthThrottle
from orchestrator.realtime.admission import Admission
from orchestrator.store.recorder import SqlRecorder
from orchestrator.tools.mcp_pool import McpPool


class LiveSessions:
    """The sessions this process is serving, with a way to wait until there are none."""

    def __init__(self) -> None:
        self._sessions: set[object] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, session: object) -> None:
        """A session started."""
        self._sessions.add(session)
        self._empty.clear()

    def discard(self, session: object) -> None:
        """A session ended."""
        self._sessions.discard(session)
        if not self._sessions:
            self._empty.set()

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[object]:
        return iter(list(self._sessions))

    async def wait_empty(self) -> None:
        """Return once no session is live."""
        await self._empty.wait()


@dataclass(slots=True)
class Services:
    """What the gateway and the admin API need."""

    settings: Settings
    registry: Registry
    pool: McpPool
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    recorder: SqlRecorder
    live_sessions: LiveSessions = field(default_factory=LiveSessions)
    admin_token: str = ""
    api_keys: frozenset[str] = frozenset()
    admission: Admission = field(
        default_factory=lambda: Admission(max_sessions=None, max_loop_lag_ms=None))
    throttle: AuthThrottle = field(default_factory=AuthThrottle)
