"""The admin tests' world: the real server on the admin fixture agents, and real conversations
through the realtime endpoint (scripted model, real MCP servers) to fill the audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.realtime_client import Event, connect
from tests.server import REPO, RunningServer, serve

AGENTS = REPO / "tests" / "fixtures" / "admin"
TIMEOUT = 30.0


@asynccontextmanager
async def admin_server(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: object
) -> AsyncIterator[RunningServer]:
    """The real server on the admin fixture agents (desk, billing; time and lab servers)."""
    monkeypatch.setenv("ORCH_TEST_REPO", str(REPO))
    async with serve(database_url, tmp_path, agents_dir=overrides.pop("agents_dir", AGENTS),
                     **overrides) as running:
        yield running


async def converse(server: RunningServer, agent: str, *turns: str,
                   token: str | None = None) -> list[Event]:
    """One realtime conversation: each turn said and answered, then the socket closed."""
    events: list[Event] = []
    async with connect(server.realtime_url(agent), token or server.token) as client:
        for text in turns:
            events += await client.turn(text)
    return events


async def settled(server: RunningServer) -> None:
    """Wait until every session has ended and every record is written."""
    await asyncio.wait_for(server.services.live_sessions.wait_empty(), TIMEOUT)
    await asyncio.wait_for(server.services.recorder.flush(), TIMEOUT)


@asynccontextmanager
async def http_client(server: RunningServer, token: str | None = None
                      ) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the server, with the admin token unless another is given."""
    headers = {"Authorization": f"Bearer {token or server.token}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=TIMEOUT) as http:
        yield http


def ids(body: dict[str, Any]) -> list[str]:
    """The ids of a list response's `data`."""
    return [row["id"] for row in body["data"]]
