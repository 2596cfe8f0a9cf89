"""Credentials: the one check the realtime gateway and the admin API both use, and the stored
API keys and ephemeral client secrets (design §4.3, §7).

Three kinds of credential:
- the admin token (settings or `var/admin_token`): everything;
- API keys (`ORCHESTRATOR_API_KEYS`, or created through the admin API and stored as sha256):
  the realtime endpoint and `POST /v1/realtime/client_secrets`, never `/admin`;
- client secrets (`ek_…`, stored as sha256 with an expiry): open a realtime session with the one
  agent they are bound to, until they expire.

Configured secrets are compared in constant time, every one of them, so the time taken does not
tell which matched. Stored ones are found by the sha256 of what was presented: the lookup
reveals nothing about a stored value, since the presenter does not control the digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator.store.tables import ApiKey, ClientSecret

API_KEY_PREFIX = "orch_sk_"
CLIENT_SECRET_PREFIX = "ek_"
SHOWN_PREFIX_CHARS = 12
DEFAULT_SECRET_TTL_S = 600
MIN_SECRET_TTL_S = 10
MAX_SECRET_TTL_S = 7200
PURGE_AFTER = timedelta(days=1)

CredentialKind = Literal["admin", "api_key", "client_secret"]


@dataclass(frozen=True, slots=True)
class Credential:
    """Who presented a valid key; a client secret carries its agent and session settings."""

    kind: CredentialKind
    agent: str | None = None
    session: dict[str, Any] = field(default_factory=dict[str, Any])

    def may_open(self, agent: str) -> bool:
        """Whether this credential may open a realtime session with `agent`."""
        return self.agent is None or self.agent == agent


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """A stored API key as listed: never the key itself."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def token_matches(presented: str | None, expected: str) -> bool:
    """Whether `presented` equals `expected`, in constant time; never true for an unset one."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def digest(key: str) -> str:
    """The sha256 (hex) under which a key is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def _any_matches(presented: str, candidates: Iterable[str]) -> bool:
    results = [token_matches(presented, c) for c in candidates]
    return any(results)


async def authenticate(
    presented: str | None,
    *,
    admin_token: str,
    api_keys: Iterable[str],
    sessionmaker: async_sessionmaker[AsyncSession] | None,
    now: datetime | None = None,
) -> Credential | None:
    """The credential `presented` stands for, or None if it is none of ours (or expired)."""
    if not presented:
        return None
    # Both checks run whatever the first one found, so timing does not tell which matched.
    is_admin, is_key = token_matches(presented, admin_token), _any_matches(presented, api_keys)
    if is_admin:
        return Credential("admin")
    if is_key:
        return Credential("api_key")
    if sessionmaker is None:
        return None
    async with sessionmaker() as session:
        if presented.startswith(CLIENT_SECRET_PREFIX):
            return await _client_secret(session, presented, now or datetime.now(UTC))
        return await _stored_api_key(session, presented)


async def _stored_api_key(session: AsyncSession, presented: str) -> Credential | None:
    hashed = digest(presented)
    stored = await session.scalar(
        select(ApiKey.sha256).where(ApiKey.sha256 == hashed, ApiKey.revoked_at.is_(None))
    )
    if stored is None or not hmac.compare_digest(stored, hashed):
        return None
    return Credential("api_key")


async def _client_secret(session: AsyncSession, presented: str, now: datetime) -> Credential | None:
    hashed = digest(presented)
    row = await session.get(ClientSecret, hashed)
    if row is None or not hmac.compare_digest(row.sha256, hashed) or row.expires_at <= now:
        return None
    return Credential("client_secret", agent=row.agent, session=dict(row.session))


# --- API keys ---------------------------------------------------------------------------------


async def create_api_key(session: AsyncSession, name: str) -> tuple[ApiKeyRow, str]:
    """Store a new API key (hashed); returns its row and the key, which is never shown again."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id="key_" + secrets.token_hex(8), name=name, prefix=key[:SHOWN_PREFIX_CHARS],
        sha256=digest(key), created_at=datetime.now(UTC), revoked_at=None,
    )
    session.add(row)
    await session.commit()
    return _key_row(row), key


async def list_api_keys(session: AsyncSession) -> list[ApiKeyRow]:
    """Every stored API key, oldest first, revoked ones included."""
    rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
    return [_key_row(r) for r in rows]


async def revoke_api_key(session: AsyncSession, key_id: str) -> ApiKeyRow | None:
    """Revoke a key (idempotent); None if there is no such key."""
    await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    await session.commit()
    row = await session.get(ApiKey, key_id, populate_existing=True)
    return _key_row(row) if row is not None else None


def _key_row(row: ApiKey) -> ApiKeyRow:
    return ApiKeyRow(id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at,
                     revoked_at=row.revoked_at)


# --- client secrets ---------------------------------------------------------------------------


async def create_client_secret(
    session: AsyncSession, agent: str, settings: dict[str, Any], ttl_s: int
) -> tuple[str, datetime]:
    """Store a new `ek_` secret bound to `agent`; returns it and when it expires."""
    value = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires_at = (now + timedelta(seconds=ttl_s)).replace(microsecond=0)
    # Secrets long expired are of no use to anyone: drop them as new ones are made.
    await session.execute(delete(ClientSecret).where(ClientSecret.expires_at < now - PURGE_AFTER))
    session.add(ClientSecret(sha256=digest(value), agent=agent, session=settings,
                             created_at=now, expires_at=expires_at))
    await session.commit()
    return value, expires_at
