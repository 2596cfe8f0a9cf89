"""The upstream model connection: raw GA-protocol frames in both directions.

A provider that speaks something other than the GA protocol translates at its own edge, so
the session has one set of rules. `send` and `recv` carry JSON text frames unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


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


def follow_script(upstream: Upstream, script: Sequence[Any] | None) -> None:
    """Point the in-process scripted model at an agent's script (after a handoff or a
    reconnection); other upstreams learn of the agent through its `session.update`."""
    use_script = getattr(upstream, "use_script", None)
    if callable(use_script):
        use_script(script or [])
