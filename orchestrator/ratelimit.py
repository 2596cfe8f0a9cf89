"""The authentication throttle: a remote address that presents too many wrong credentials is
refused for a while (HTTP 429 with `Retry-After`), on the admin API, the client-secrets route
and the realtime endpoint (there before the WebSocket upgrade, as admission refuses with 503).

- Only a credential that was presented and matched nothing counts. A request without one
  cannot guess anything, and a success neither counts nor clears the failures before it.
- A blocked address is refused before its credential is looked at, so guessing stops
  entirely until the oldest failure in the window has aged out (a sliding window).
- Refused attempts do not count, so a client that keeps knocking is let in again on time.
- Memory is bounded: each address keeps at most `max_failures` timestamps, and at most
  `max_addresses` addresses are tracked; past that the one whose last failure is oldest is
  forgotten first.
- The address is the client as uvicorn reports it (`request.client.host`): the TCP peer, or
  the `X-Forwarded-For` client when the peer is one of uvicorn's `forwarded_allow_ips`
  (loopback by default); see docs/security.md.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse


class AuthThrottle:
    """Failures per remote address over a sliding window; `max_failures` None or 0 turns it
    off."""

    def __init__(self, *, max_failures: int | None = 10, window_s: float = 60.0,
                 max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures if max_failures is not None and max_failures > 0 \
            else None
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        self.refused = 0
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None if it is not blocked."""
        limit = self.max_failures
        failures = self._failures.get(address)
        if limit is None or failures is None or len(failures) < limit:
            return None
        wait = failures[0] + self.window_s - self.clock()
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))

    def failed(self, address: str) -> None:
        """`address` presented a credential that matched nothing."""
        if self.max_failures is None:
            return
        failures = self._failures.pop(address, None)
        if failures is None:
            failures = deque[float](maxlen=self.max_failures)
        failures.append(self.clock())
        self._failures[address] = failures  # most recently failed last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)

    def check(self, address: str) -> None:
        """Raise the 429 answer if `address` is blocked (for HTTP routes)."""
        wait = self.retry_after(address)
        if wait is not None:
            self.refused += 1
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=too_many(wait),
                                headers={"Retry-After": str(wait)})

    def denial(self, address: str) -> JSONResponse | None:
        """The 429 answer to a WebSocket upgrade from `address` if it is blocked, else None."""
        wait = self.retry_after(address)
        if wait is None:
            return None
        self.refused += 1
        body = {"type": "error", "error": {"type": "invalid_request_error",
                                           "code": "too_many_auth_failures",
                                           "message": too_many(wait)}}
        return JSONResponse(body, status_code=429, headers={"Retry-After": str(wait)})


def too_many(wait: int) -> str:
    """The message of a throttled answer."""
    return f"too many failed authentication attempts; retry in {wait} s"


def remote_of(client: object) -> str:
    """The remote address of a Starlette `request.client` / `websocket.client` (or `unknown`)."""
    host = getattr(client, "host", None)
    return host if isinstance(host, str) and host else "unknown"
