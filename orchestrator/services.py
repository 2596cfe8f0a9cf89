"""The long-lived parts one process shares, built once by the app's lifespan.

Routes reach them through dependencies (`admin/deps.py`), never through globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.agents.registry import Registry
from orchestrator.config import Settings
from orchestrator.store.recorder import SqlRecorder
from orchestrator.tools.mcp_pool import McpPool


@dataclass(slots=True)
class Services:
    """What the gateway and the admin API need."""

    settings: Settings
    registry: Registry
    pool: McpPool
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    recorder: SqlRecorder
    live_sessions: set[object] = field(default_factory=set[object])
    admin_token: str = ""
    api_keys: frozenset[str] = frozenset()
