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

from orchestrator.admin.auth import admin_bearer, unauthorized
from orchestrator.keys import token_matches
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


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    """Let the request through only with the admin token (401 otherwise)."""
    presented = credentials.credentials if credentials is not None else None
    if not token_matches(presented, get_services(request).admin_token):
        raise unauthorized()


AdminDep = Annotated[None, Depends(require_admin)]
