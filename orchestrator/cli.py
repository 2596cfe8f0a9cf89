"""The `orchestrator` command line (design §4.2)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Self-hosted orchestration for realtime voice agents.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
conversations_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(conversations_app, name="conversations")


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address [env ORCHESTRATOR_HOST]"),
    port: int | None = typer.Option(None, help="Port [env ORCHESTRATOR_PORT]"),
    agents: Path | None = typer.Option(None, help="Agents directory [env ORCHESTRATOR_AGENTS_DIR]"),
    database_url: str | None = typer.Option(None, help="[env ORCHESTRATOR_DATABASE_URL]"),
) -> None:
    """Serve the realtime endpoint and the admin API (applies migrations first)."""
    import uvicorn
    from pydantic import SecretStr
    from rich.console import Console

    from orchestrator.app import admin_token, create_app
    from orchestrator.config import Settings

    overrides = {k: v for k, v in {"host": host, "port": port, "agents_dir": agents,
                                   "database_url": database_url}.items() if v is not None}
    settings = Settings(**overrides)  # pyright: ignore[reportArgumentType]
    token = admin_token(settings)
    settings = settings.model_copy(update={"admin_token": SecretStr(token)})
    base = f"{settings.host}:{settings.port}"
    console = Console(highlight=False)
    console.print(f"[bold]orchestrator[/] agents from [cyan]{settings.agents_dir}[/], "
                  f"database [cyan]{_safe_url(settings.database_url)}[/]")
    console.print(f"  realtime  ws://{base}/v1/realtime?model=<agent>")
    console.print(f"  admin API http://{base}/admin   (docs: http://{base}/docs)")
    console.print(f"  admin token: [yellow]{token}[/]")
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        ws="websockets-sansio", loop=_loop(), ws_per_message_deflate=False,
        ws_max_size=settings.max_client_frame_bytes * 2, log_level="info",
    )


def _loop() -> str:
    try:
        import uvloop  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        return "asyncio"
    return "uvloop"


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



def main() -> None:
    """Console-script entry point."""
    app()
