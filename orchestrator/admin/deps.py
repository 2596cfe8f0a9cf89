"""FastAPI dependencies of the admin API, as `Annotated` aliases (`SessionDep`, `AdminDep`, …).

Everything comes from `request.app.state.services`, built by the app's lifespan; tests set that
attribute on a small app of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.admin.auth import admin_bearer, forbidden, unauthorized
from orchestrator.keys import Credential, authenticate
from orchestrator.ratelimit import remote_of
from orchestrator.services import Services


def get_services(request: Request) -> Services:
    """The process's services."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A database session for one request."""
    async with get_services(request).sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def credential_of(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> Credential:
    """The credential of the bearer token (401 if there is none or it is not valid; 429 while
    the caller's address is throttled for wrong ones)."""
    services = get_services(request)
    address = remote_of(request.client)
    services.throttle.check(address)
    presented = credentials.credentials if credentials is not None else None
    credential = await authenticate(
        presented, admin_token=services.admin_token, api_keys=services.api_keys,
        sessionmaker=services.sessionmaker,
    )
    if credential is None:
        if presented:
            services.throttle.failed(address)
        raise unauthorized()
    return credential


CredentialDep = Annotated[Credential, Depends(credential_of)]


async def require_admin(credential: CredentialDep) -> None:
    """Let the request through only with the admin token (401 without a valid key, 403 with
    a key that is not the admin token)."""
    if credential.kind != "admin":
        raise forbidden()


AdminDep = Annotated[None, Depends(require_admin)]
