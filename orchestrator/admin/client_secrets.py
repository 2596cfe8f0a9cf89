"""`POST /v1/realtime/client_secrets`: ephemeral `ek_` secrets, OpenAI's request/response shape.

The secret is bound to the agent named by `session.model` and expires after
`expires_after.seconds` (10 to 7200, default 600). It opens realtime sessions with that agent only,
as the bearer token or the browser subprotocol, until it expires. The other session fields are
stored with the secret and echoed back; the agent's YAML governs the session itself (see
docs/admin.md).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.admin.auth import forbidden
from orchestrator.admin.deps import CredentialDep, ServicesDep, SessionDep
from orchestrator.keys import (
    DEFAULT_SECRET_TTL_S,
    MAX_SECRET_TTL_S,
    MIN_SECRET_TTL_S,
    Credential,
    create_client_secret,
)

router = APIRouter(tags=["realtime"])


class ExpiresAfter(BaseModel):
    """When the secret expires, counted from its creation."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"] = "created_at"
    seconds: Annotated[int, Field(ge=MIN_SECRET_TTL_S, le=MAX_SECRET_TTL_S)] = DEFAULT_SECRET_TTL_S


class SecretSession(BaseModel):
    """The session the secret is for; `model` names the agent it is bound to."""

    model_config = ConfigDict(extra="allow")

    type: Literal["realtime"] = "realtime"
    model: Annotated[str, Field(min_length=1, description="The agent the secret is bound to")]


class ClientSecretCreate(BaseModel):
    """Body of `POST /v1/realtime/client_secrets` (OpenAI's `ClientSecretCreateParams`)."""

    model_config = ConfigDict(extra="forbid")

    expires_after: ExpiresAfter = Field(default_factory=ExpiresAfter)
    session: SecretSession


class SessionRead(BaseModel):
    """The session of a client secret (OpenAI's `RealtimeSessionCreateResponse`)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["realtime.session"] = "realtime.session"
    type: Literal["realtime"] = "realtime"
    model: str
    expires_at: int


class ClientSecretRead(BaseModel):
    """An ephemeral client secret (OpenAI's `ClientSecretCreateResponse`)."""

    value: str
    expires_at: int
    session: SessionRead


def _minting(credential: CredentialDep) -> Credential:
    # A client secret must not mint further secrets (nor outlive its own expiry that way).
    if credential.kind == "client_secret":
        raise forbidden()
    return credential


@router.post("/v1/realtime/client_secrets", response_model=ClientSecretRead)
async def create(
    body: ClientSecretCreate, services: ServicesDep, session: SessionDep,
    _credential: Annotated[Credential, Depends(_minting)],
) -> ClientSecretRead:
    """Create an expiring `ek_` secret bound to the agent named by `session.model`."""
    agent = body.session.model
    if services.registry.get(agent) is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"unknown agent {agent!r}")
    settings: dict[str, Any] = body.session.model_dump(mode="json")
    value, expires_at = await create_client_secret(
        session, agent, settings, body.expires_after.seconds)
    expires = int(expires_at.timestamp())
    echoed = SessionRead.model_validate(
        {**settings, "id": "sess_" + secrets.token_hex(12), "expires_at": expires})
    return ClientSecretRead(value=value, expires_at=expires, session=echoed)
