"""API keys through the admin API, and who may use `/admin`: 401 without a valid key, 403 with
a realtime-only one (configured or created API key, client secret)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import select

from orchestrator.keys import digest
from orchestrator.store.tables import ApiKey
from tests.admin_world import admin_server, converse, http_client

CONFIGURED_KEY = "configured-realtime-key"


async def admin_routes(http: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(method, path) of every /admin operation in the OpenAPI document, parameters filled."""
    schema = (await http.get("/openapi.json")).json()
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in schema["paths"].items() if path.startswith("/admin")
        for method in operations
    ]


async def test_api_keys_lifecycle_and_admin_refusals(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", CONFIGURED_KEY)
    # One wrong key per route: more than the auth throttle lets through (test_auth_matrix.py).
    async with admin_server(database_url, tmp_path, monkeypatch,
                            auth_max_failures=None) as server:
        async with http_client(server) as admin:
            created = await admin.post("/admin/api-keys", json={"name": "kiosk"})
            assert created.status_code == 201, created.text
            body = created.json()
            key = body["key"]
            assert key.startswith("orch_sk_") and body["prefix"] == key[:12]
            listed = (await admin.get("/admin/api-keys")).json()["data"]
            assert [(k["id"], k["name"], k["revoked_at"]) for k in listed] == [
                (body["id"], "kiosk", None)]
            assert key not in (await admin.get("/admin/api-keys")).text
        async with server.services.sessionmaker() as session:
            stored = (await session.execute(select(ApiKey.sha256, ApiKey.prefix))).all()
        assert [r.sha256 for r in stored] == [digest(key)]  # only the hash is kept

        # The new key opens a realtime session ...
        events = await converse(server, "desk", "hello", token=key)
        assert any(e["type"] == "response.done" for e in events)

        # ... and no /admin route, nor does any other realtime-only credential.
        async with httpx.AsyncClient(base_url=server.http) as anonymous:
            routes = await admin_routes(anonymous)
            assert len(routes) >= 5
            for method, path in routes:
                assert (await anonymous.request(method, path)).status_code == 401, path
                bad = {"Authorization": "Bearer not-a-key"}
                assert (await anonymous.request(method, path, headers=bad)).status_code == 401
                for realtime_key in (key, CONFIGURED_KEY):
                    headers = {"Authorization": f"Bearer {realtime_key}"}
                    response = await anonymous.request(method, path, headers=headers)
                    assert response.status_code == 403, (method, path, response.text)

        async with http_client(server) as admin:
            revoked = await admin.delete(f"/admin/api-keys/{body['id']}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
            assert (await admin.delete("/admin/api-keys/key_nope")).status_code == 404
        with pytest.raises(websockets.InvalidStatus):
            await converse(server, "desk", "hello", token=key)
        async with httpx.AsyncClient(base_url=server.http) as anonymous:
            headers = {"Authorization": f"Bearer {key}"}
            assert (await anonymous.get("/admin/api-keys", headers=headers)).status_code == 401
