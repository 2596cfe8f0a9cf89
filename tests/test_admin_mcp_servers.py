"""`/admin/mcp-servers`: health, tools, attach at run time (persisted, restored, secrets only
as `${VAR}` references) and detach."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from orchestrator.store.tables import McpServer
from tests.admin_world import admin_server, http_client
from tests.conftest import sqlite_url

LAB2 = {
    "name": "lab2", "command": ["python", "-m", "tests.mcp_servers.toolbox"],
    "cwd": "${ORCH_TEST_REPO}", "env": {"LAB_TOKEN": "${LAB_SECRET}"},
}


async def _health_and_tools(http: httpx.AsyncClient) -> None:
        servers = {s["name"]: s for s in (await http.get("/admin/mcp-servers")).json()["data"]}
        assert sorted(servers) == ["lab", "time"]
        assert servers["time"]["connected"] is True and servers["time"]["transport"] == "stdio"
        assert servers["time"]["tool_count"] >= 2 and servers["time"]["last_error"] is None
        assert servers["lab"]["attached_at_runtime"] is False
        tools = (await http.get("/admin/mcp-servers/time/tools")).json()["data"]
        assert "get_current_time" in [t["name"] for t in tools]
        assert tools[0]["input_schema"]["type"] == "object"
        assert (await http.get("/admin/mcp-servers/nope/tools")).status_code == 404


async def test_health_attach_persist_restore_detach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite only: two server lifecycles with stdio MCP servers are the slowest part of the
    # suite, and the stored row is plain JSON on both backends.
    database_url = sqlite_url(tmp_path / "db.sqlite")
    monkeypatch.setenv("LAB_SECRET", "s3cret-value")
    async with admin_server(database_url, tmp_path, monkeypatch) as server, \
            http_client(server) as http:
        await _health_and_tools(http)
        literal = {**LAB2, "env": {"LAB_TOKEN": "s3cret-value"}}
        refused = await http.post("/admin/mcp-servers", json=literal)
        assert refused.status_code == 422 and "env.LAB_TOKEN" in refused.text
        assert "s3cret-value" not in refused.text
        header = {"name": "web", "url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": "abc"}}
        assert (await http.post("/admin/mcp-servers", json=header)).status_code == 422
        attached = await http.post("/admin/mcp-servers", json=LAB2)
        assert attached.status_code == 201, attached.text
        assert attached.json()["connected"] is True and attached.json()["attached_at_runtime"]
        assert (await http.post("/admin/mcp-servers", json=LAB2)).status_code == 409
        assert "s3cret-value" not in (await http.get("/admin/mcp-servers")).text
        async with server.services.sessionmaker() as session:
            stored = (await session.scalars(select(McpServer))).all()
        assert [(s.name, s.definition["env"]) for s in stored] == [
            ("lab2", {"LAB_TOKEN": "${LAB_SECRET}"})]

    # A restart restores it; detaching removes it for good.
    async with admin_server(database_url, tmp_path, monkeypatch) as server, \
            http_client(server) as http:
        servers = {s["name"]: s for s in (await http.get("/admin/mcp-servers")).json()["data"]}
        assert servers["lab2"]["connected"] and servers["lab2"]["attached_at_runtime"]
        tools = (await http.get("/admin/mcp-servers/lab2/tools")).json()["data"]
        assert "echo" in [t["name"] for t in tools]
        # A call in flight finishes before the server is detached.
        pool = server.services.pool
        in_flight = asyncio.create_task(pool.call("lab2", "slow", {"seconds": 0.3}))
        await asyncio.sleep(0)  # one step: the call is now in flight (no waiting on time)
        assert (await http.delete("/admin/mcp-servers/lab2")).status_code == 204
        assert (await in_flight).output == "slept 0.3"
        assert (await http.delete("/admin/mcp-servers/lab2")).status_code == 404
        names = [s["name"] for s in (await http.get("/admin/mcp-servers")).json()["data"]]
        assert names == ["lab", "time"]
        async with server.services.sessionmaker() as session:
            assert (await session.scalars(select(McpServer))).all() == []
