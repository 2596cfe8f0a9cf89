"""`GET /admin/conversations[/{id}]`: admin auth, filters, pagination, the timeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from orchestrator.admin.routes import router
from orchestrator.cli import app as cli
from orchestrator.ratelimit import AuthThrottle
from tests.conftest import T0, WriteRecords, conversation_records

TOKEN = "orch-admin-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def recorded_url(migrated_url: str, write_records: WriteRecords) -> str:
    """A database holding conv_0 … conv_4 (newest last); conv_2's tool call failed."""
    await write_records([
        row
        for n in range(5)
        for row in conversation_records(
            f"conv_{n}", started_at=T0 + timedelta(minutes=n),
            agent="billing" if n == 1 else "concierge", tool_failed=n == 2,
            handoff_to="billing" if n == 3 else None,
        )
    ])
    return migrated_url


@pytest.fixture
async def client(
    recorded_url: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The admin router alone, over the recorded audit trail."""
    app = FastAPI()
    app.include_router(router)
    # The routes read only these attributes of `orchestrator.services.Services`.
    app.state.services = SimpleNamespace(
        sessionmaker=sessionmaker, admin_token=TOKEN, api_keys=frozenset[str](),
        throttle=AuthThrottle())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as client:
        yield client


# Each case is a loop inside one test: the fixture (a fresh database) is the costly part.
UNAUTHORIZED = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": "Bearer "},
]


async def test_without_the_admin_token_401(client: httpx.AsyncClient) -> None:
    for headers in UNAUTHORIZED:
        for path in ("/admin/conversations", "/admin/conversations/conv_0"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401, (headers, path)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "conv_0" not in response.text


async def test_list_newest_first(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/conversations", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert [c["id"] for c in body["data"]] == ["conv_4", "conv_3", "conv_2", "conv_1", "conv_0"]
    assert body["next_cursor"] is None
    newest = body["data"][0]
    assert newest["agent"] == "concierge" and newest["status"] == "completed"
    assert newest["started_at"] == "2026-01-15T09:04:00Z"
    assert (newest["item_count"], newest["tool_call_count"], newest["total_tokens"]) == (3, 1, 42)
    assert newest["duration_ms"] == 1000.0


FILTERS: list[tuple[dict[str, str], list[str]]] = [
    ({"agent": "billing"}, ["conv_1"]),
    ({"has_error": "true"}, ["conv_2"]),
    ({"has_error": "false", "agent": "concierge"}, ["conv_4", "conv_3", "conv_0"]),
    ({"tool": "get_current_time", "status": "completed", "limit": "2"}, ["conv_4", "conv_3"]),
    ({"since": "2026-01-15T09:01:00Z", "until": "2026-01-15T09:03:00+00:00"},
     ["conv_2", "conv_1"]),
    ({"since": "2026-01-15T10:02:00+01:00"}, ["conv_4", "conv_3", "conv_2"]),
    ({"q": "TOKYO", "status": "failed"}, []),
    ({"q": "tokyo", "agent": "billing"}, ["conv_1"]),
]


async def test_list_filters(client: httpx.AsyncClient) -> None:
    for query, expected in FILTERS:
        response = await client.get("/admin/conversations", params=query, headers=AUTH)
        assert response.status_code == 200, response.text
        assert [c["id"] for c in response.json()["data"]] == expected, query


async def test_pages_through_with_the_cursor(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    params = {"limit": "2"}
    while True:
        body = (await client.get("/admin/conversations", params=params, headers=AUTH)).json()
        seen += [c["id"] for c in body["data"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": "2", "cursor": body["next_cursor"]}
    assert seen == ["conv_4", "conv_3", "conv_2", "conv_1", "conv_0"]


async def test_bad_parameters(client: httpx.AsyncClient) -> None:
    for query in ({"limit": "0"}, {"limit": "501"}, {"has_error": "maybe"}, {"since": "noon"}):
        response = await client.get("/admin/conversations", params=query, headers=AUTH)
        assert response.status_code == 422, query
    response = await client.get(
        "/admin/conversations", params={"cursor": "garbage"}, headers=AUTH
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "invalid cursor"}


async def test_detail_is_one_timeline(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/conversations/conv_3", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "conv_3" and body["current_agent"] == "billing"
    timeline = body["timeline"]
    assert [e["kind"] for e in timeline] == [
        "item", "response", "item", "tool_call", "response", "item", "handoff",
    ]
    assert timeline[0]["role"] == "user" and timeline[0]["text"] == "What time is it in Tokyo?"
    assert timeline[3]["tool"] == "get_current_time"
    assert timeline[3]["output"] == '{"time": "18:00"}'
    assert timeline[1]["usage"] == {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    assert timeline[6] == {
        "kind": "handoff", "at": "2026-01-15T09:03:00.400000Z", "from_agent": "concierge",
        "to_agent": "billing", "call_id": "call_h", "reason": "billing question",
    }


async def test_unknown_conversation_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/conversations/conv_nope", headers=AUTH)
    assert response.status_code == 404


async def test_openapi_documents_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"
    assert "/admin/conversations/{conversation_id}" in schema["paths"]


# --- the same audit trail from the terminal ---------------------------------------------------


def test_cli_conversations_list(recorded_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["conversations", "list", "--agent", "concierge", "--database-url", recorded_url],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "conv_" in line]
    assert [line.split()[1] for line in lines] == ["conv_4", "conv_3", "conv_2", "conv_0"]
    assert "2026-01-15 09:04:00" in lines[0] and "1.0s" in lines[0]


def test_cli_conversations_show(recorded_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["conversations", "show", "conv_2", "--database-url", recorded_url],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "user: What time is it in Tokyo?" in result.output
    assert "assistant: It is six pm." in result.output
    assert "time.get_current_time(" in result.output
    assert "error: server crashed" in result.output and "(40 ms)" in result.output


def test_cli_conversations_show_json_and_unknown(recorded_url: str) -> None:
    runner = CliRunner()
    shown = runner.invoke(
        cli, ["conversations", "show", "conv_3", "--json", "--database-url", recorded_url]
    )
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["id"] == "conv_3" and body["timeline"][-1]["kind"] == "handoff"
    missing = runner.invoke(
        cli, ["conversations", "show", "conv_nope", "--database-url", recorded_url]
    )
    assert missing.exit_code == 1
    assert "no conversation 'conv_nope'" in missing.output
