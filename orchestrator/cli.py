"""The `orchestrator` command line (design §4.2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

if TYPE_CHECKING:
    from rich.text import Text
    from sqlalchemy.ext.asyncio import AsyncSession

    from orchestrator.store.queries import TimelineEntry

app = typer.Typer(help="Self-hosted orchestration for realtime voice agents.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
conversations_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(conversations_app, name="conversations")


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address [env ORCHESTRATOR_HOST]"),
    port: int | None = typer.Option(None, help="Port [env ORCHESTRATOR_PORT]"),
    agents: Path | None = typer.Option(  # noqa: B008
        None, help="Agents directory [env ORCHESTRATOR_AGENTS_DIR]"),
    database_url: str | None = typer.Option(None, help="[env ORCHESTRATOR_DATABASE_URL]"),
) -> None:
    """Serve the realtime endpoint and the admin API (applies migrations first)."""
    from pydantic import SecretStr
    from rich.console import Console

    from orchestrator import redaction
    from orchestrator.app import admin_token, create_app, settings_secrets
    from orchestrator.config import Settings
    from orchestrator.serving import DrainingServer, server_config

    overrides = {k: v for k, v in {"host": host, "port": port, "agents_dir": agents,
                                   "database_url": database_url}.items() if v is not None}
    settings = Settings(**overrides)  # pyright: ignore[reportArgumentType]
    configured = settings.admin_token is not None
    token = admin_token(settings)
    settings = settings.model_copy(update={"admin_token": SecretStr(token)})
    # Before uvicorn logs anything: records from here on have their secrets masked.
    redaction.install(settings_secrets(settings))
    base = f"{settings.host}:{settings.port}"
    console = Console(highlight=False)
    console.print(f"[bold]orchestrator[/] agents from [cyan]{settings.agents_dir}[/], "
                  f"database [cyan]{_safe_url(settings.database_url)}[/]")
    console.print(f"  realtime  ws://{base}/v1/realtime?model=<agent>")
    console.print(f"  admin API http://{base}/admin   (docs: http://{base}/docs)")
    # A configured token is the operator's secret: it is never printed, a generated one is.
    shown = "(set by ORCHESTRATOR_ADMIN_TOKEN, not shown)" if configured else token
    console.print(f"  admin token: [yellow]{shown}[/]")
    application = create_app(settings)
    config = server_config(application, settings, host=settings.host, port=settings.port,
                           log_level="info")
    DrainingServer(config, application).run()  # SIGTERM: sessions drain first


def _safe_url(url: str) -> str:
    """A database URL with any password masked."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def chat(
    agent: str = typer.Argument(..., help="Agent name"),
    url: str = typer.Option("ws://127.0.0.1:8000", help="Orchestrator base URL"),
    key: str | None = typer.Option(None, envvar="ORCHESTRATOR_API_KEY",
                                   help="API key (default: the admin token under var/)"),
) -> None:
    """A text conversation with an agent over the realtime endpoint."""
    import asyncio

    from orchestrator.app import admin_token
    from orchestrator.chat import chat as run_chat
    from orchestrator.config import Settings

    base = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
    if not base.endswith("/v1/realtime"):
        base += "/v1/realtime"
    raise typer.Exit(asyncio.run(run_chat(f"{base}?model={agent}", key or admin_token(Settings()))))


@app.command()
def validate(
    paths: list[Path] | None = typer.Argument(  # noqa: B008
        None, help="Agent folders or files (default: $ORCHESTRATOR_AGENTS_DIR, else agents)"),
    no_mcp: bool = typer.Option(False, "--no-mcp", help="Do not start the MCP servers"),
) -> None:
    """Check agent and MCP server definitions; one `path:line:column: message` per problem."""
    import asyncio
    import logging
    import os

    from orchestrator.agents.validate import validate_report

    # The pool's retry warnings would repeat the "could not start" problem lines.
    logging.getLogger("orchestrator.tools.mcp_pool").setLevel(logging.ERROR)
    # Read the variable directly: Settings() would fail on unrelated bad settings.
    targets = paths or [Path(os.environ.get("ORCHESTRATOR_AGENTS_DIR") or "agents")]
    try:
        report = asyncio.run(validate_report(targets, check_mcp=not no_mcp))
    except Exception as exc:  # the contract is one line per problem, never a traceback
        typer.echo(f"orchestrator validate: internal error: {exc!r}", err=True)
        raise typer.Exit(2) from None
    for problem in report.problems:
        typer.echo(str(problem))
    if report.problems:
        raise typer.Exit(1)
    agents = f"{report.agents} agent{'s' if report.agents != 1 else ''}"
    servers = f"{report.servers} MCP server{'s' if report.servers != 1 else ''}"
    typer.echo(f"ok: {agents}, {servers}")



# --- db and conversations: the schema and the audit trail, read straight from the database ---


def _database_url(flag: str | None) -> str:
    """`--database-url`, else ORCHESTRATOR_DATABASE_URL / the default, made absolute."""
    from orchestrator.config import Settings

    settings = Settings(database_url=flag) if flag else Settings()
    return settings.resolved_database_url()


_DATABASE_URL_OPTION = typer.Option(None, help="[env ORCHESTRATOR_DATABASE_URL]")
_T = TypeVar("_T")


@db_app.command("upgrade")
def db_upgrade(database_url: str | None = _DATABASE_URL_OPTION) -> None:
    """Apply the database migrations (up to the newest)."""
    import asyncio

    from orchestrator.store.db import current_revision, upgrade

    url = _database_url(database_url)
    asyncio.run(upgrade(url))
    revision = asyncio.run(current_revision(url))
    typer.echo(f"database {_safe_url(url)} is at revision {revision} (head)")


def _query(url: str, read: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
    """Run one read on a short-lived engine."""
    import asyncio

    from sqlalchemy.ext.asyncio import async_sessionmaker

    from orchestrator.store.db import create_engine

    async def run() -> _T:
        engine = create_engine(url)
        try:
            async with async_sessionmaker(engine)() as session:
                return await read(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@conversations_app.command("list")
def conversations_list(
    agent: str | None = typer.Option(None, help="Only this agent's conversations"),
    status: str | None = typer.Option(None, help="active | completed | failed"),
    limit: int = typer.Option(20, min=1, max=500, help="How many, newest first"),
    database_url: str | None = _DATABASE_URL_OPTION,
) -> None:
    """The latest conversations as a table."""
    from rich.console import Console
    from rich.table import Table

    from orchestrator.store.queries import ConversationFilter, list_conversations

    filters = ConversationFilter(agent=agent, status=status)
    rows, _ = _query(_database_url(database_url), lambda s: list_conversations(
        s, filters, limit=limit))
    table = Table("id", "agent", "status", "started", "duration", "items", "tool calls")
    for column in table.columns:  # ids and times stay whole on a narrow terminal
        column.no_wrap = column.header in ("id", "started")
        column.justify = "right" if column.header in ("duration", "items", "tool calls") else "left"
    for row in rows:
        duration = "-" if row.duration_ms is None else f"{row.duration_ms / 1000:.1f}s"
        color = {"failed": "red", "active": "yellow"}.get(row.status, "green")
        table.add_row(row.id, row.agent, f"[{color}]{row.status}[/]",
                      row.started_at.strftime("%Y-%m-%d %H:%M:%S"), duration,
                      str(row.item_count), str(row.tool_call_count))
    Console().print(table)


@conversations_app.command("show")
def conversations_show(
    conversation_id: str = typer.Argument(..., help="Conversation id (conv_…)"),
    as_json: bool = typer.Option(False, "--json", help="Print the admin API's JSON"),
    database_url: str | None = _DATABASE_URL_OPTION,
) -> None:
    """One conversation's timeline: messages, tool calls, handoffs, responses."""
    from rich.console import Console

    from orchestrator.admin.schemas import ConversationDetailRead
    from orchestrator.store.queries import get_conversation

    detail = _query(_database_url(database_url), lambda s: get_conversation(s, conversation_id))
    if detail is None:
        typer.echo(f"no conversation {conversation_id!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(ConversationDetailRead.from_detail(detail).model_dump_json(indent=2))
        return
    console = Console(highlight=False)
    c = detail.conversation
    console.print(f"[bold]{c.id}[/]  agent {c.agent} v{c.agent_version}  {c.status}"
                  f" ({c.end_reason or 'active'})  tokens {c.total_tokens}")
    for entry in detail.timeline:
        console.print(_timeline_line(entry))


def _timeline_line(entry: TimelineEntry) -> Text:
    """One readable line per timeline entry; failures in red."""
    from rich.text import Text

    from orchestrator.store.queries import HandoffEntry, ItemEntry, ResponseEntry, ToolCallEntry

    line = Text(entry.at.strftime("%H:%M:%S.%f")[:-3] + "  ", style="dim")
    match entry:
        case ItemEntry(type="message"):
            line.append(f"{entry.role}: ", style="bold cyan" if entry.role == "user" else "bold")
            line.append(entry.text or "")
        case ItemEntry():
            line.append(f"· {entry.type} {entry.name or ''}", style="dim")
        case ToolCallEntry():
            failed = entry.status != "completed"
            line.append(f"{'✗' if failed else '⚙'} {entry.server}.{entry.tool}({entry.arguments})",
                        style="red" if failed else "magenta")
            result = f"error: {entry.error}" if failed else f"→ {entry.output}"
            line.append(f" {result}", style="red" if failed else "")
            line.append(f"  ({entry.duration_ms:.0f} ms)", style="dim")
        case HandoffEntry():
            line.append(f"↪ handoff {entry.from_agent} → {entry.to_agent}", style="yellow")
            line.append(f" ({entry.reason})" if entry.reason else "")
        case ResponseEntry():
            latency = entry.first_output_latency_ms
            first = "" if latency is None else f", first output {latency:.0f} ms"
            line.append(f"response {entry.status}, {entry.total_tokens} tokens{first}",
                        style="red" if entry.status == "failed" else "dim")
    return line


@app.command()
def sandbox(
    host: str = typer.Option("127.0.0.1", help="Bind address"),
    port: int = typer.Option(8001, help="Port"),
    agents: str = typer.Option("agents", help="Agents directory (its scripted agents)"),
    pace_audio: bool = typer.Option(False, "--pace-audio", help="Send audio at real-time pace"),
) -> None:
    """Serve the scripted model alone as a GA-protocol WebSocket server (no paid model)."""
    import asyncio
    import contextlib
    import logging

    from orchestrator.upstream.sandbox import serve_sandbox

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with contextlib.suppress(KeyboardInterrupt), runner:
        runner.run(serve_sandbox(host, port, agents, pace_audio=pace_audio))


def main() -> None:
    """Console-script entry point."""
    app()


def _register_admin_commands() -> None:
    from orchestrator.cli_admin import register

    register(app, conversations_app)


_register_admin_commands()
