"""The `orchestrator` command line (design §4.2)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Self-hosted orchestration for realtime voice agents.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
conversations_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(conversations_app, name="conversations")


def main() -> None:
    """Console-script entry point."""
    app()
