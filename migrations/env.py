"""Alembic environment of orchestrator (async).

Two ways in:
- `orchestrator.store.db.upgrade()` hands over an open connection in
  `config.attributes["connection"]`; we migrate on it, on the caller's event loop.
- The `alembic` command line: we open our own engine on a fresh event loop, with the URL from
  `config.attributes["database_url"]`, else `ORCHESTRATOR_DATABASE_URL` (Settings).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool

from orchestrator.config import Settings
from orchestrator.store.db import create_engine
from orchestrator.store.tables import metadata

config = context.config
target_metadata = metadata


def database_url() -> str:
    """The URL given by `upgrade()`, else the one from the settings."""
    url = config.attributes.get("database_url")
    if isinstance(url, str):
        return url
    return Settings().resolved_database_url()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on one connection, in one transaction."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode recreates the table.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Open an engine of our own and migrate through it."""
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (`alembic upgrade head --sql`)."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate on the connection we were given, or on one of our own."""
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


# Only the command line configures logging: inside the app it would replace the app's handlers.
if config.attributes.get("connection") is None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
