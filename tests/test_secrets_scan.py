"""Secrets never reach the logs, the admin API, the client's events or the database.

One run uses every kind of secret: an agent on the `openai` provider (pointed at the sandbox)
whose `api_key` is a `${VAR}`, an MCP server over HTTP whose `Authorization` header is a
`${VAR}`, a stdio MCP server whose environment holds a `${VAR}`, the admin token, configured and
created API keys, and a client secret. It drives conversations with a tool call, a failing tool
call and protocol errors, reads every admin listing, with every logger at DEBUG (websockets
prints each handshake header there), then looks for each secret everywhere.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.redaction import MASK, REDACTOR, Redactor, expanded_secrets
from orchestrator.upstream.sandbox import start_sandbox
from tests.admin_world import admin_server, http_client, settled
from tests.mcp_servers.toolbox_http import toolbox_over_http
from tests.realtime_client import connect
from tests.server import REPO, RunningServer

TIMEOUT = 30.0

MCP_SERVERS = """\
mcp_servers:
  lab:
    command: [python, -m, tests.mcp_servers.toolbox]
    cwd: ${{ORCH_TEST_REPO}}
    env: {{LAB_TOKEN: "${{SCAN_LAB_TOKEN}}"}}
  web:
    url: {web_url}
    headers: {{Authorization: "Bearer ${{SCAN_WEB_TOKEN}}"}}
"""
TOOLS = """\
tools:
  - mcp: web
    allow: [echo]
  - mcp: lab
    allow: [fail]
"""
SCRIPT = """\
name: vault-script
description: The script the sandbox plays for the vault.
model: scripted
instructions: You guard the vault.
{tools}script:
  - when: echo
    call: echo
    arguments: {{text: vault-is-open}}
    say: "Echo: {{output}}"
  - when: broken
    call: fail
    arguments: {{message: the vault door jammed}}
    say: "The tool said: {{output}}"
  - say: "Vault here."
"""
VAULT = """\
name: vault
description: The vault, on the openai provider.
model: openai/vault-script
base_url: http://127.0.0.1:{port}/v1
api_key: ${{SCAN_UPSTREAM_KEY}}
instructions: You guard the vault.
{tools}"""


@pytest.fixture
async def web_url() -> AsyncIterator[str]:
    """The toolbox over streamable HTTP in its own process."""
    async with toolbox_over_http(TIMEOUT) as url:
        yield url


def _secret(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


async def _conversations(server: RunningServer, key: str, secret: str) -> list[str]:
    """Talk to the vault: a tool call, a failing one, two protocol errors; the raw frames."""
    frames: list[str] = []
    async with connect(server.realtime_url("vault"), key) as client:
        assert "vault-is-open" in json.dumps(await client.turn("echo please"))
        assert "jammed" in json.dumps(await client.turn("it is broken"))
        await client.send("{not json")
        await client.until_type("error")
        await client.send({"type": "conversation.item.create", "item": {"type": "nonsense"}})
        await client.until_type("error")
        frames += [json.dumps(e) for e in client.seen]
    async with connect(server.realtime_url("vault"), secret) as client:
        await client.turn("hello")
        frames += [json.dumps(e) for e in client.seen]
    with pytest.raises(websockets.InvalidStatus):  # a client secret for another agent
        async with connect(server.realtime_url("vault-script"), secret):
            pass
    return frames


async def _admin_bodies(server: RunningServer) -> list[str]:
    """Every admin listing and detail the run produced."""
    bodies: list[str] = []
    async with http_client(server) as http:
        attached = await http.post("/admin/mcp-servers", json={
            "name": "attached", "command": [sys.executable, "-m", "tests.mcp_servers.toolbox"],
            "cwd": str(REPO), "env": {"LAB_TOKEN": "${SCAN_LAB_TOKEN}"}})
        assert attached.status_code in (200, 201), attached.text
        bodies.append(attached.text)
        paths = ["/admin/agents", "/admin/agents/vault", "/admin/agents/vault/versions",
                 "/admin/mcp-servers", "/admin/mcp-servers/web/tools", "/admin/api-keys",
                 "/admin/tool-calls", "/admin/stats/tools", "/admin/stats/agents",
                 "/admin/conversations", "/healthz", "/metrics"]
        for path in paths:
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text)
            bodies.append(response.text)
        conversations = (await http.get("/admin/conversations")).json()["data"]
        assert len(conversations) >= 2
        for row in conversations:
            for suffix in ("", "/transcript", "/transcript?format=text"):
                response = await http.get(f"/admin/conversations/{row['id']}{suffix}")
                assert response.status_code == 200, response.text
                bodies.append(response.text)
        tool_calls = (await http.get("/admin/tool-calls")).json()["data"]
        assert {c["status"] for c in tool_calls} >= {"completed", "failed"}, tool_calls
    return bodies


async def _database_text(engine: AsyncEngine) -> str:
    """Every column of every row of every table (FTS shadow tables included)."""
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert {"conversations", "items", "tool_calls", "api_keys", "client_secrets",
                "mcp_servers", "agent_versions"} <= set(names)
        dumped: list[str] = []
        for name in names:
            rows = (await connection.execute(text(f'SELECT * FROM "{name}"'))).all()
            dumped += [f"{name}: {row!r}" for row in rows]
    return "\n".join(dumped)


async def test_no_secret_leaks_anywhere(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, web_url: str,
) -> None:
    values = {name: _secret(name.lower()) for name in (
        "SCAN_UPSTREAM_KEY", "SCAN_WEB_TOKEN", "SCAN_LAB_TOKEN", "CONFIGURED_KEY")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", values["CONFIGURED_KEY"])
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "mcp_servers.yaml").write_text(MCP_SERVERS.format(web_url=web_url))
    (agents / "vault-script.yaml").write_text(SCRIPT.format(tools=TOOLS))
    caplog.set_level(logging.DEBUG)
    sandbox = await start_sandbox("127.0.0.1", 0, agents)
    try:
        (agents / "vault.yaml").write_text(VAULT.format(port=sandbox.port, tools=TOOLS))
        async with admin_server(database_url, tmp_path, monkeypatch, agents_dir=agents) as server:
            values["admin token"] = server.token
            async with http_client(server) as http:
                created = await http.post("/admin/api-keys", json={"name": "scan"})
                values["created api key"] = created.json()["key"]
            async with http_client(server, token=values["CONFIGURED_KEY"]) as http:
                minted = await http.post("/v1/realtime/client_secrets",
                                         json={"session": {"type": "realtime", "model": "vault"}})
                values["client secret"] = minted.json()["value"]
            frames = await _conversations(server, values["created api key"],
                                          values["client secret"])
            await settled(server)
            bodies = await _admin_bodies(server)
            database = await _database_text(server.services.engine)
    finally:
        await sandbox.aclose()
    logs = caplog.text
    places = {"logs": logs, "admin responses": "\n".join(bodies),
              "client events": "\n".join(frames), "database": database}
    leaks = [(secret, place) for secret, value in values.items()
             for place, content in places.items() if value in content]
    assert not leaks, leaks
    # The run did log what carried a secret (the upstream handshake), masked.
    assert "> Authorization: Bearer " + MASK in logs
    assert "< Authorization: Bearer " + MASK in logs  # the sandbox's side of it
    assert "tool_calls" in database and "vault-is-open" in database
    # Every `${VAR}` value that went into a header, an environment or a key is masked from the
    # start; the one that is only a working directory is not (it is no secret).
    for name in ("SCAN_UPSTREAM_KEY", "SCAN_WEB_TOKEN", "SCAN_LAB_TOKEN", "CONFIGURED_KEY"):
        assert values[name] in REDACTOR, name
    assert str(REPO) not in REDACTOR


def test_the_redactor_masks_headers_shapes_and_known_values() -> None:
    redactor = Redactor()
    redactor.add(["s3cret-value-42", "short", None])
    cases = {
        "> Authorization: Bearer abcdefgh1234": "> Authorization: Bearer ***",
        "{'api-key': 'k-123456789'}": "{'api-key': '***'}",
        "[(b'authorization', b'Basic dXNlcjpwYXNz')]": "[(b'authorization', b'Basic ***')]",
        "x-api-key=plainvalue99": "x-api-key=***",
        "key sk-proj-AAAABBBBCCCCDDDD in text": "key sk-*** in text",
        "secret ek_Zm9vYmFyYmF6cXV4 here": "secret ek_*** here",
        "orch_sk_abcdefghijklmnop,": "orch_sk_***,",
        "token orch-admin-abcdefghijkl.": "token orch-admin-***",
        "proto openai-insecure-api-key.anything-goes": "proto openai-insecure-api-key.***",
        "value=s3cret-value-42!": "value=***!",
        "short stays short": "short stays short",
        "desk-key is not a header": "desk-key is not a header",
    }
    for raw, masked in cases.items():
        assert redactor.redact(raw) == masked, raw


def test_records_keep_their_argument_types_when_masked() -> None:
    redactor = Redactor()
    redactor.add(["s3cret-value-42"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s got %d for %s", (
        "client", 3, b"Bearer s3cret-value-42"), None)
    try:
        raise RuntimeError("boom s3cret-value-42")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    redactor.redact_record(record)
    assert record.getMessage() == "client got 3 for Bearer ***"
    assert record.exc_text is not None and "boom ***" in record.exc_text
    assert "s3cret" not in logging.Formatter().format(record)


def test_serve_never_prints_a_configured_token(tmp_path: Path) -> None:
    token, key = _secret("configured-admin"), _secret("configured-key")
    shutil.copytree(REPO / "agents", tmp_path / "agents")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.update(PYTHONPATH=str(REPO), ORCHESTRATOR_ADMIN_TOKEN=token, ORCHESTRATOR_API_KEYS=key)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)], cwd=tmp_path,
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        output: list[str] = []
        for line in proc.stdout:  # bounded: the process ends when it fails or is stopped
            output.append(line)
            if "Uvicorn running on" in line:
                break
        headers = {"Authorization": f"Bearer {token}"}
        response = httpx.get(f"http://127.0.0.1:{port}/admin/agents", headers=headers)
        assert response.status_code == 200, "".join(output)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=TIMEOUT)
    printed = "".join(output) + rest
    assert "admin token: (set by ORCHESTRATOR_ADMIN_TOKEN, not shown)" in printed
    assert token not in printed and key not in printed
    assert not (tmp_path / "var" / "admin_token").exists()


def test_only_values_in_secret_fields_count_as_secrets() -> None:
    texts = ["cwd: ${HOME_DIR}\nheaders: {Authorization: 'Bearer ${TOKEN}'}\napi_key: ${KEY}"]
    env = {"HOME_DIR": "/srv/agents/home", "TOKEN": "tok-123456789", "KEY": "key-123456789",
           "OPENAI_API_KEY": "sk-default-0123456789"}
    found = expanded_secrets(texts, env, ["Bearer tok-123456789", "key-123456789"])
    assert set(found) == {"tok-123456789", "Bearer tok-123456789", "key-123456789",
                          "sk-default-0123456789"}
