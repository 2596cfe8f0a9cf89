"""`orchestrator conversations export`, `agents list|versions`, `keys create|list|revoke`,
against the database a running server writes to."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets
from click.testing import Result
from typer.testing import CliRunner

from orchestrator.cli import app as cli
from tests.admin_world import admin_server, converse, http_client, settled


async def _cli(*args: str) -> Result:
    # The CLI runs its own event loop: give it a thread.
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env={"COLUMNS": "200"})


async def test_cli_admin_commands(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ("--database-url", database_url)
    async with admin_server(database_url, tmp_path, monkeypatch) as server:
        await converse(server, "desk", "What time is it in Tokyo?")
        await settled(server)
        async with http_client(server) as http:
            conversation = (await http.get("/admin/conversations")).json()["data"][0]["id"]

        text = await _cli("conversations", "export", conversation, *db)
        assert text.exit_code == 0, text.output
        assert "user: What time is it in Tokyo?" in text.output
        assert "time.get_current_time(" in text.output
        lines = (await _cli("conversations", "export", conversation, "--format", "jsonl", *db))
        assert [json.loads(x)["role"] for x in lines.output.splitlines()] == [
            "user", "tool", "assistant"]
        assert (await _cli("conversations", "export", "conv_nope", *db)).exit_code == 1
        assert (await _cli("conversations", "export", conversation, "--format", "pdf", *db)
                ).exit_code == 2

        agents = await _cli("agents", "list", *db)
        assert agents.exit_code == 0, agents.output
        assert [line.split()[1:4] for line in agents.output.splitlines() if "desk" in line] == [
            ["desk", "│", "1"]]
        versions = await _cli("agents", "versions", "desk", *db)
        assert versions.exit_code == 0 and "│ 1 " in versions.output.replace("  ", " ")
        assert (await _cli("agents", "versions", "nobody", *db)).exit_code == 1

        created = await _cli("keys", "create", "kiosk", *db)
        assert created.exit_code == 0, created.output
        key_id, key = created.output.split()[0], created.output.splitlines()[1]
        assert key.startswith("orch_sk_")
        await converse(server, "desk", "hello", token=key)  # the server sees the new key
        listed = await _cli("keys", "list", *db)
        assert key_id in listed.output and "kiosk" in listed.output and key not in listed.output
        revoked = await _cli("keys", "revoke", key_id, *db)
        assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.output
        with pytest.raises(websockets.InvalidStatus):
            await converse(server, "desk", "hello", token=key)
        assert (await _cli("keys", "revoke", "key_nope", *db)).exit_code == 1
