"""Alembic owns the schema: migrations apply, are repeatable, reversible and match the models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy import Connection, inspect, text
from typer.testing import CliRunner

from orchestrator.cli import app as cli
from orchestrator.store.db import alembic_config, create_engine, upgrade
from orchestrator.store.tables import metadata

TABLES = {
    "agent_versions", "mcp_servers", "conversations", "items", "tool_calls", "handoffs",
    "responses", "api_keys", "client_secrets",
}
# Full-text search lives outside the models: SQLite's FTS5 table (and its shadow tables) and
# PostgreSQL's expression index, both created by migration 0002.
FTS_NAMES = ("items_fts", "ix_items_text_fts")


def _not_fts(name: str | None, _type: str, _parent: object) -> bool:
    return name is None or not name.startswith(FTS_NAMES)


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"include_name": _not_fts})
    return compare_metadata(context, metadata)


def _tables(connection: Connection) -> set[str]:
    return {t for t in inspect(connection).get_table_names() if not t.startswith(FTS_NAMES)}


async def _inspect(url: str) -> tuple[set[str], list[Any], str | None]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(_tables)
            drift = await connection.run_sync(_drift) if "alembic_version" in tables else []
            head = None
            if "alembic_version" in tables:
                head = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        await engine.dispose()
    return tables, drift, head


async def test_migrations_match_the_models(database_url: str) -> None:
    await upgrade(database_url)
    tables, drift, head = await _inspect(database_url)
    assert tables == TABLES | {"alembic_version"}
    assert drift == []
    assert head == "0003"


async def test_upgrade_twice_is_a_no_op(migrated_url: str) -> None:
    await upgrade(migrated_url)
    tables, drift, head = await _inspect(migrated_url)
    assert TABLES <= tables
    assert (drift, head) == ([], "0003")


async def test_downgrade_to_base_then_upgrade_again(migrated_url: str) -> None:
    config = alembic_config(migrated_url)

    def downgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    engine = create_engine(migrated_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
    finally:
        await engine.dispose()
    tables, _, _ = await _inspect(migrated_url)
    assert tables & TABLES == set()
    await upgrade(migrated_url)
    tables, drift, _ = await _inspect(migrated_url)
    assert TABLES <= tables
    assert drift == []


async def test_upgrade_from_inside_an_app_startup(database_url: str) -> None:
    """The app's lifespan runs on a live event loop: upgrade() must work there."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncGenerator[None]:
        await upgrade(database_url)
        app.state.migrated = True
        yield

    app = FastAPI(lifespan=lifespan)
    async with app.router.lifespan_context(app):
        assert app.state.migrated is True
        tables, drift, _ = await _inspect(database_url)
    assert TABLES <= tables
    assert drift == []


def test_cli_db_upgrade(database_url: str) -> None:
    result = CliRunner().invoke(cli, ["db", "upgrade", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "0003" in result.output
    tables, drift, head = asyncio.run(_inspect(database_url))
    assert TABLES <= tables
    assert (drift, head) == ([], "0003")
