"""`POST /v1/realtime/client_secrets`: OpenAI's shape, bound to one agent, expiring."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import websockets
from openai.types.realtime import ClientSecretCreateResponse
from sqlalchemy import update

from orchestrator.keys import digest
from orchestrator.store.tables import ClientSecret
from tests.admin_world import admin_server, converse, http_client
from tests.realtime_client import connect

REQUEST = {
    "expires_after": {"anchor": "created_at", "seconds": 120},
    "session": {"type": "realtime", "model": "desk", "instructions": "Be brief."},
}


async def test_client_secret_is_bound_and_expires(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", "server-side-key")
    async with admin_server(database_url, tmp_path, monkeypatch) as server:
        async with http_client(server, token="server-side-key") as http:
            response = await http.post("/v1/realtime/client_secrets", json=REQUEST)
            assert response.status_code == 200, response.text
            created = ClientSecretCreateResponse.model_validate(response.json())
            secret = created.value
            assert secret.startswith("ek_")
            assert abs(created.expires_at - (time.time() + 120)) < 30
            assert created.session.type == "realtime" and created.session.model == "desk"
            # Bad requests.
            for body, code in [
                ({"session": {"type": "realtime", "model": "nobody"}}, 400),
                ({**REQUEST, "expires_after": {"seconds": 5}}, 422),
                ({"session": {"type": "transcription"}}, 422),
                ({**REQUEST, "extra": 1}, 422),
            ]:
                assert (await http.post("/v1/realtime/client_secrets", json=body)
                        ).status_code == code, body

        # Opens its agent, as bearer token and as browser subprotocol ...
        events = await converse(server, "desk", "hello", token=secret)
        assert any(e["type"] == "response.done" for e in events)
        protocols = ["realtime", f"openai-insecure-api-key.{secret}"]
        async with connect(server.realtime_url("desk"), None, subprotocols=protocols) as client:
            assert "Front desk here." in str(await client.turn("hello"))
        # ... but not another agent, not /admin, and mints no further secrets.
        with pytest.raises(websockets.InvalidStatus):
            await converse(server, "billing", "hello", token=secret)
        async with http_client(server, token=secret) as http:
            assert (await http.get("/admin/conversations")).status_code == 403
            assert (await http.post("/v1/realtime/client_secrets", json=REQUEST)
                    ).status_code == 403
        async with httpx.AsyncClient(base_url=server.http) as anonymous:
            assert (await anonymous.post("/v1/realtime/client_secrets", json=REQUEST)
                    ).status_code == 401

        # Expired: the stored row's expiry is in the past.
        async with server.services.sessionmaker() as session:
            await session.execute(
                update(ClientSecret).where(ClientSecret.sha256 == digest(secret))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
            await session.commit()
        with pytest.raises(websockets.InvalidStatus):
            await converse(server, "desk", "hello", token=secret)

        # Long-expired secrets are purged as new ones are made.
        async with server.services.sessionmaker() as session:
            await session.execute(
                update(ClientSecret).where(ClientSecret.sha256 == digest(secret))
                .values(expires_at=datetime.now(UTC) - timedelta(days=2)))
            await session.commit()
        async with http_client(server, token="server-side-key") as http:
            assert (await http.post("/v1/realtime/client_secrets", json=REQUEST)
                    ).status_code == 200
        async with server.services.sessionmaker() as session:
            assert await session.get(ClientSecret, digest(secret)) is None
