"""Engines and schema migrations.

`create_engine()` builds an async engine tuned per backend; `upgrade()` applies the Alembic
migrations (`migrations/`) on the caller's event loop, so it works from `orchestrator db upgrade`
and from inside a running app's startup alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, event, pool, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

# The repository root holds alembic.ini and migrations/ (design §3).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQLITE_BUSY_TIMEOUT_MS = 5_000


def is_sqlite(url: str) -> bool:
    """Whether the URL points at SQLite."""
    return url.startswith("sqlite")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url` (`sqlite+aiosqlite://…` or `postgresql+asyncpg://…`).

    SQLite connections get WAL, synchronous=NORMAL, foreign keys and a busy timeout; extra
    keyword arguments go to `create_async_engine`.
    """
    if not is_sqlite(url):
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = create_async_engine(url, connect_args=connect_args, **kwargs)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets the admin API read while the recorder writes; NORMAL is durable under WAL
    # except for the last transactions on power loss, which is the usual trade.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration of this project, pointed at `url` when given."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if url is not None:
        config.attributes["database_url"] = url
    return config


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to `revision` on the database at `url`."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, alembic_config(url), revision)
    finally:
        await engine.dispose()


def _upgrade_on(connection: Connection, config: Config, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together migrate one at a time; the lock ends with the transaction.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    # env.py sees the connection and migrates on it instead of opening its own loop.
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


_MIGRATION_LOCK = 0x6F7263686D6967  # "orchmig": any constant shared by every replica


async def current_revision(url: str) -> str | None:
    """The migration revision the database is at (None before the first migration)."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_revision)
    finally:
        await engine.dispose()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
