"""Credential checks shared by the realtime gateway and the admin API."""

from __future__ import annotations

import hmac


def token_matches(presented: str | None, expected: str) -> bool:
    """Whether `presented` equals `expected`, in constant time; never true for an unset one."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
