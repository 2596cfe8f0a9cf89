"""Admin authentication: `Authorization: Bearer <admin token>`; the check is in `keys.py`."""

from __future__ import annotations

from fastapi import HTTPException, status
from fastapi.security import HTTPBearer

# auto_error=False: a missing header gets our 401 (with WWW-Authenticate), not FastAPI's own.
admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminToken",
    description="The admin token (ORCHESTRATOR_ADMIN_TOKEN, or the one printed by `serve`).",
)


def unauthorized() -> HTTPException:
    """The 401 answer for a missing or wrong admin token."""
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid admin token",
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden() -> HTTPException:
    """The 403 answer for a valid key that is not the admin token (an API key, a client secret)."""
    return HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="admin token required")
