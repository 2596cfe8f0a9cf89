"""`/admin/api-keys`: create (the key is shown once), list, revoke realtime API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import keys
from orchestrator.admin.deps import SessionDep

router = APIRouter(prefix="/api-keys")


class ApiKeyCreate(BaseModel):
    """Body of `POST /admin/api-keys`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, description="What the key is for")]


class ApiKeyRead(BaseModel):
    """A stored API key: its id, name and first characters, never the key."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    """A new API key; `key` is shown this once and stored only as its sha256."""

    key: str


class ApiKeyList(BaseModel):
    """Every API key, revoked ones included."""

    data: list[ApiKeyRead]


@router.post("", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_api_key(body: ApiKeyCreate, session: SessionDep) -> ApiKeyCreated:
    """Create a realtime API key (it cannot use `/admin`)."""
    row, key = await keys.create_api_key(session, body.name)
    return ApiKeyCreated(**ApiKeyRead.model_validate(row).model_dump(), key=key)


@router.get("", response_model=ApiKeyList)
async def list_api_keys(session: SessionDep) -> ApiKeyList:
    """Every API key (without the keys themselves)."""
    rows = await keys.list_api_keys(session)
    return ApiKeyList(data=[ApiKeyRead.model_validate(r) for r in rows])


@router.delete("/{key_id}", response_model=ApiKeyRead)
async def revoke_api_key(key_id: str, session: SessionDep) -> ApiKeyRead:
    """Revoke a key: from now on it opens nothing."""
    row = await keys.revoke_api_key(session, key_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no API key {key_id!r}")
    return ApiKeyRead.model_validate(row)
