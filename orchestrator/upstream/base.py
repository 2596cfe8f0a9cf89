"""The upstream model connection: raw GA-protocol frames in both directions.

A provider that speaks something other than the GA protocol translates at its own edge, so
the session has one set of rules. `send` and `recv` carry JSON text frames unchanged.
"""

from __future__ import annotations

from typing import Protocol


class UpstreamClosed(Exception):
    """The upstream connection is closed; `reason` says why."""

    def __init__(self, reason: str, *, clean: bool) -> None:
        self.reason = reason
        self.clean = clean
        super().__init__(reason)


class Upstream(Protocol):
    """One realtime session with a model."""

    async def send(self, frame: str) -> None:
        """Send one client event (JSON text) upstream. Raises UpstreamClosed."""
        ...

    async def recv(self) -> str | bytes:
        """The next server event frame, untouched. Raises UpstreamClosed at the end."""
        ...

    async def aclose(self) -> None:
        """Close the connection; idempotent."""
        ...
