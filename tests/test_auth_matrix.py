"""Every route, every bad credential: 401/403 (WebSocket: refused before the upgrade), never
500 and never data; then the throttle on repeated wrong credentials (ratelimit.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import update

from orchestrator.keys import digest
from orchestrator.ratelimit import AuthThrottle
from orchestrator.store.tables import ClientSecret
from tests.admin_world import admin_server, converse, http_client
from tests.server import RunningServer

API_KEY = "realtime-only-key-123"
OPEN_ROUTES = {"/healthz", "/metrics"}
SECRET_REQUEST = {"session": {"type": "realtime", "model": "desk"}}
OTHER_REMOTE = "127.0.0.2"  # the loopback network answers every 127.x address


async def _routes(server: RunningServer) -> list[tuple[str, str]]:
    """(method, path) of every operation the app documents, path parameters filled in."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        schema = (await http.get("/openapi.json")).json()
    routes = [(method.upper(), re.sub(r"\{[^}]+\}", "nobody", path))
              for path, operations in schema["paths"].items() if path not in OPEN_ROUTES
              for method in operations]
    assert ("POST", "/v1/realtime/client_secrets") in routes
    assert len([r for r in routes if r[1].startswith("/admin/")]) >= 15, routes
    return routes


async def _bad_credentials(server: RunningServer) -> dict[str, str]:
    """A wrong key, an expired client secret and a revoked API key."""
    async with http_client(server) as admin:
        created = (await admin.post("/admin/api-keys", json={"name": "doomed"})).json()
        assert (await admin.delete(f"/admin/api-keys/{created['id']}")).status_code == 200
    async with http_client(server, token=API_KEY) as http:
        response = await http.post("/v1/realtime/client_secrets", json=SECRET_REQUEST)
        assert response.status_code == 200, response.text
        expired = response.json()["value"]
    async with server.services.sessionmaker() as session:
        await session.execute(
            update(ClientSecret).where(ClientSecret.sha256 == digest(expired))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        await session.commit()
    return {"wrong": "not-a-key-at-all", "expired client secret": expired,
            "revoked api key": created["key"]}


async def _valid_secret(server: RunningServer) -> str:
    async with http_client(server, token=API_KEY) as http:
        return (await http.post("/v1/realtime/client_secrets", json=SECRET_REQUEST)).json()["value"]


def _no_data(response: httpx.Response) -> None:
    """An error answer carries its reason and nothing else."""
    assert response.status_code < 500, response.text
    assert set(response.json()) == {"detail"}, response.text


async def _refused_upgrade(server: RunningServer, key: str | None, *,
                           subprotocol: bool = False) -> int:
    """The HTTP status a realtime upgrade gets with `key` (fails if the socket opens)."""
    headers = {"Authorization": f"Bearer {key}"} if key and not subprotocol else None
    protocols = ["realtime", f"openai-insecure-api-key.{key}"] if subprotocol else None
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(server.realtime_url("desk"), additional_headers=headers,
                                      subprotocols=protocols):  # type: ignore[arg-type]
            pass
    return refused.value.response.status_code


async def test_every_route_refuses_every_bad_credential(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", API_KEY)
    async with admin_server(database_url, tmp_path, monkeypatch, auth_max_failures=None) as server:
        routes = await _routes(server)
        bad = await _bad_credentials(server)
        secret = await _valid_secret(server)
        cases: list[tuple[str, dict[str, str]]] = [("none", {}), *(
            (name, {"Authorization": f"Bearer {key}"}) for name, key in bad.items())]
        async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
            for method, path in routes:
                for name, headers in cases:
                    response = await http.request(method, path, headers=headers, json={})
                    assert response.status_code == 401, (method, path, name, response.text)
                    assert response.headers["WWW-Authenticate"] == "Bearer"
                    _no_data(response)
                if not path.startswith("/admin/"):
                    continue
                for name, key in [("api key", API_KEY), ("client secret", secret)]:
                    response = await http.request(
                        method, path, headers={"Authorization": f"Bearer {key}"}, json={})
                    assert response.status_code == 403, (method, path, name, response.text)
                    _no_data(response)

        # The realtime endpoint: closed before accept, which the client sees as a 403 upgrade.
        assert await _refused_upgrade(server, None) == 403
        for key in bad.values():
            assert await _refused_upgrade(server, key) == 403
            assert await _refused_upgrade(server, key, subprotocol=True) == 403
        # The good ones still open it: the refusals were about the credential.
        for key in (API_KEY, secret, server.token):
            assert any(e["type"] == "response.done"
                       for e in await converse(server, "desk", "hello", token=key))


@asynccontextmanager
async def _from(server: RunningServer, address: str, token: str) -> AsyncIterator[
        httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=server.http, transport=transport, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        yield http


async def _upgrade_from(server: RunningServer, address: str, key: str) -> int | None:
    """The refusal status of an upgrade from `address`, or None if the socket opened."""
    try:
        async with websockets.connect(
                server.realtime_url("desk"), additional_headers={"Authorization": f"Bearer {key}"},
                local_addr=(address, 0)) as ws:
            first: Any = await ws.recv()
            assert "session.created" in first
            return None
    except websockets.InvalidStatus as refused:
        response = refused.response
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert b"too_many_auth_failures" in response.body
        return response.status_code


async def test_repeated_failures_are_throttled_per_address(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", API_KEY)
    async with admin_server(database_url, tmp_path, monkeypatch, auth_max_failures=3,
                            auth_failure_window_s=600) as server:
        async with _from(server, "127.0.0.1", "wrong-key") as guesser:
            # Missing credentials guess nothing and do not count; successes do not either.
            async with httpx.AsyncClient(base_url=server.http) as anonymous:
                for _ in range(5):
                    assert (await anonymous.get("/admin/agents")).status_code == 401
            async with _from(server, "127.0.0.1", server.token) as good:
                assert (await good.get("/admin/agents")).status_code == 200
            for _ in range(3):
                assert (await guesser.get("/admin/agents")).status_code == 401
            throttled = await guesser.get("/admin/agents")
            assert throttled.status_code == 429, throttled.text
            assert 1 <= int(throttled.headers["Retry-After"]) <= 600
            _no_data(throttled)
        # Blocked before the credential is looked at: the good token from there waits too, on
        # every route that takes a credential, the realtime upgrade included (429, not 403).
        async with _from(server, "127.0.0.1", server.token) as same_address:
            assert (await same_address.get("/admin/conversations")).status_code == 429
            assert (await same_address.post("/v1/realtime/client_secrets",
                                             json=SECRET_REQUEST)).status_code == 429
        assert await _upgrade_from(server, "127.0.0.1", server.token) == 429
        # Another address is untouched.
        async with _from(server, OTHER_REMOTE, server.token) as other:
            assert (await other.get("/admin/agents")).status_code == 200
            # uvicorn trusts X-Forwarded-For only from its forwarded_allow_ips (loopback by
            # default): from 127.0.0.2 the header changes nothing ...
            forwarded = {"X-Forwarded-For": "127.0.0.1"}
            assert (await other.get("/admin/agents", headers=forwarded)).status_code == 200
        # ... while a proxy on 127.0.0.1 passes its client through, a client of its own.
        async with _from(server, "127.0.0.1", server.token) as proxy:
            forwarded = {"X-Forwarded-For": "203.0.113.7"}
            assert (await proxy.get("/admin/agents", headers=forwarded)).status_code == 200
        assert await _upgrade_from(server, OTHER_REMOTE, API_KEY) is None
        # Wrong keys at the realtime endpoint count as well.
        for _ in range(3):
            assert await _upgrade_from(server, OTHER_REMOTE, "wrong-key") == 403
        assert await _upgrade_from(server, OTHER_REMOTE, API_KEY) == 429
        assert server.services.throttle.refused >= 5


def test_the_throttle_window_slides_and_the_table_is_bounded() -> None:
    now = [1000.0]
    throttle = AuthThrottle(max_failures=2, window_s=10, max_addresses=3, clock=lambda: now[0])
    throttle.failed("a")
    now[0] += 4
    throttle.failed("a")
    assert throttle.retry_after("a") == 6  # until the first failure is 10 s old
    now[0] += 6
    assert throttle.retry_after("a") is None
    throttle.failed("a")  # the window now holds the failures at +4 and +10
    assert throttle.retry_after("a") == 4
    for address in ("b", "c", "d"):
        throttle.failed(address)
    assert len(throttle) == 3 and throttle.retry_after("a") is None  # "a" failed longest ago
    for off in (AuthThrottle(max_failures=None), AuthThrottle(max_failures=0)):
        for _ in range(100):
            off.failed("a")
        assert off.retry_after("a") is None and len(off) == 0
