"""Agent version numbers, shared by every replica through the database (design §7).

A version is one distinct definition (by sha256) of an agent; numbers count up per agent name.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator.store.tables import AgentVersion

MAX_ATTEMPTS = 20


async def ensure_agent_version(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, sha256: str, definition: str
) -> int:
    """The version number of (name, sha256): the existing one, or max + 1 for a new definition.

    Replicas may race to register different definitions; the loser's insert is ignored by the
    unique (name, version) key and it tries again with the next number.
    """
    for attempt in range(MAX_ATTEMPTS):
        try:
            version = await _try_insert(sessionmaker, name, sha256, definition)
        except (IntegrityError, OperationalError):
            # SQLite reports a lost write race as "database is locked"; PostgreSQL may still
            # raise a unique violation on a dialect without ON CONFLICT support. Try again.
            version = None
        if version is not None:
            return version
        await asyncio.sleep(0.005 * (attempt + 1))
    raise RuntimeError(f"could not register a version of agent {name!r}")


async def _try_insert(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, sha256: str, definition: str
) -> int | None:
    async with sessionmaker() as session, session.begin():
        existing = await _find(session, name, sha256)
        if existing is not None:
            return existing
        next_version = (
            select(
                literal(name), func.coalesce(func.max(AgentVersion.version), 0) + 1,
                literal(sha256), literal(definition),
            )
            .where(AgentVersion.name == name)
        )
        columns = ["name", "version", "sha256", "definition"]
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await session.execute(
            insert(AgentVersion).from_select(columns, next_version).on_conflict_do_nothing()
        )
        return await _find(session, name, sha256)


async def _find(session: AsyncSession, name: str, sha256: str) -> int | None:
    return await session.scalar(
        select(AgentVersion.version).where(
            AgentVersion.name == name, AgentVersion.sha256 == sha256
        )
    )
