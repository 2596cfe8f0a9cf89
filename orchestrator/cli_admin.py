"""Admin commands of the CLI, straight on the database: `conversations export`,
`agents list|versions`, `keys create|list|revoke` (registered by `cli.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

agents_app = typer.Typer(help="Agent versions recorded in the database.", no_args_is_help=True)
keys_app = typer.Typer(help="Realtime API keys (stored hashed).", no_args_is_help=True)
_T = TypeVar("_T")
_DATABASE_URL_OPTION = typer.Option(None, help="[env ORCHESTRATOR_DATABASE_URL]")


def _url(flag: str | None) -> str:
    from orchestrator.config import Settings

    return (Settings(database_url=flag) if flag else Settings()).resolved_database_url()


def _run(flag: str | None, work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
    """Migrate if needed, then run `work` in one session on a short-lived engine."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from orchestrator.store.db import create_engine, upgrade

    url = _url(flag)

    async def run() -> _T:
        await upgrade(url)
        engine = create_engine(url)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def conversations_export(
    conversation_id: str = typer.Argument(..., help="Conversation id (conv_…)"),
    fmt: str = typer.Option("text", "--format", help="json | jsonl | text"),
    database_url: str | None = _DATABASE_URL_OPTION,
) -> None:
    """Print a conversation's transcript (messages, tool calls, handoffs)."""
    from orchestrator.admin.audit import render_transcript
    from orchestrator.store.queries import get_conversation

    formats: dict[str, Literal["json", "jsonl", "text"]] = {
        "json": "json", "jsonl": "jsonl", "text": "text"}
    if fmt not in formats:
        raise typer.BadParameter("json, jsonl or text", param_hint="--format")
    detail = _run(database_url, lambda s: get_conversation(s, conversation_id))
    if detail is None:
        typer.echo(f"no conversation {conversation_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(render_transcript(detail, formats[fmt]), nl=False)


@agents_app.command("list")
def agents_list(database_url: str | None = _DATABASE_URL_OPTION) -> None:
    """Every agent ever loaded, with its newest version."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import func, select

    from orchestrator.store.tables import AgentVersion

    async def read(session: AsyncSession) -> list[tuple[str, int, int]]:
        stmt = select(AgentVersion.name, func.max(AgentVersion.version), func.count()) \
            .group_by(AgentVersion.name).order_by(AgentVersion.name)
        return [(name, int(v), int(n)) for name, v, n in (await session.execute(stmt)).all()]

    table = Table("agent", "newest version", "versions")
    for name, newest, count in _run(database_url, read):
        table.add_row(name, str(newest), str(count))
    Console().print(table)


@agents_app.command("versions")
def agents_versions(
    name: str = typer.Argument(..., help="Agent name"),
    database_url: str | None = _DATABASE_URL_OPTION,
) -> None:
    """Every definition of one agent ever loaded, newest first."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from orchestrator.store.tables import AgentVersion

    async def read(session: AsyncSession) -> list[AgentVersion]:
        stmt = select(AgentVersion).where(AgentVersion.name == name) \
            .order_by(AgentVersion.version.desc())
        return list((await session.scalars(stmt)).all())

    rows = _run(database_url, read)
    if not rows:
        typer.echo(f"no agent {name!r}", err=True)
        raise typer.Exit(1)
    table = Table("version", "sha256", "first loaded")
    for row in rows:
        table.add_row(str(row.version), row.sha256[:16], f"{row.created_at:%Y-%m-%d %H:%M:%S}")
    Console().print(table)


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="What the key is for"),
    database_url: str | None = _DATABASE_URL_OPTION,
) -> None:
    """Create a realtime API key; it is printed once and stored only hashed."""
    from orchestrator.keys import create_api_key

    row, key = _run(database_url, lambda s: create_api_key(s, name))
    typer.echo(f"{row.id}  {row.name}")
    typer.echo(key)


@keys_app.command("list")
def keys_list(database_url: str | None = _DATABASE_URL_OPTION) -> None:
    """Every API key (never the key itself)."""
    from rich.console import Console
    from rich.table import Table

    from orchestrator.keys import list_api_keys

    table = Table("id", "name", "prefix", "created", "revoked")
    for row in _run(database_url, list_api_keys):
        revoked = "-" if row.revoked_at is None else f"[red]{row.revoked_at:%Y-%m-%d %H:%M}[/]"
        table.add_row(row.id, row.name, row.prefix + "…", f"{row.created_at:%Y-%m-%d %H:%M}",
                      revoked)
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="Key id (key_…)"),
    database_url: str | None = _DATABASE_URL_OPTION,
) -> None:
    """Revoke an API key."""
    from orchestrator.keys import revoke_api_key

    row = _run(database_url, lambda s: revoke_api_key(s, key_id))
    if row is None:
        typer.echo(f"no API key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {row.id} ({row.name})")


def register(app: typer.Typer, conversations_app: typer.Typer) -> None:
    """Add the admin commands to the `orchestrator` command line."""
    conversations_app.command("export")(conversations_export)
    app.add_typer(agents_app, name="agents")
    app.add_typer(keys_app, name="keys")
