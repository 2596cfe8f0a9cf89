"""The `openai` provider: a GA Realtime WebSocket client (design §4.4).

It dials `{base_url}/realtime?model=<model>` the way the `openai` SDK builds it (`http` →
`ws`, `https` → `wss`; unlike the SDK, a `ws://` base stays plain), with `Authorization:
Bearer`, no `OpenAI-Beta` header and no permessage-deflate (it costs 10x the CPU per audio
frame, design §5). Frames pass through untouched. The API key never appears in a message.
A model server that stops answering (a hung process, a dead host, a silent network) is found
by WebSocket pings: no pong within `ping_timeout_s` closes the connection (1011), and the
session ends with an `error` event like any other upstream loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from orchestrator.errors import UpstreamError
from orchestrator.upstream.base import UpstreamClosed

DEFAULT_BASE_URL = "wss://api.openai.com/v1"
_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_CLEAN_CODES = (1000, 1001)


def realtime_url(base_url: str | None, model: str) -> str:
    """`{base}/realtime?model=<model>`, keeping any query the base URL already has."""
    parts = urlsplit(base_url or DEFAULT_BASE_URL)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise UpstreamError(f"base_url {base_url!r} must be an http(s):// or ws(s):// URL")
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("model", model)]
    path = parts.path.rstrip("/") + "/realtime"
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def _closed(exc: ConnectionClosed) -> UpstreamClosed:
    frame = exc.rcvd or exc.sent
    code = frame.code if frame is not None else 1006
    reason = frame.reason if frame is not None else "no close frame"
    text = f"upstream closed the connection (code {code}{': ' + reason if reason else ''})"
    return UpstreamClosed(text, clean=code in _CLEAN_CODES)


class OpenAIUpstream:
    """One GA Realtime WebSocket session with an OpenAI-compatible server."""

    def __init__(self, connection: ClientConnection) -> None:
        self._ws = connection

    @classmethod
    async def connect(
        cls, url: str, api_key: str, *, timeout_s: float,
        extra_headers: Mapping[str, str] | None = None,
        ping_interval_s: float | None = 20.0, ping_timeout_s: float | None = 20.0,
    ) -> OpenAIUpstream:
        """Open the WebSocket; raise UpstreamError (without the key) if that fails."""
        headers = {"Authorization": f"Bearer {api_key}", **(extra_headers or {})}
        try:
            ws = await connect(
                url, additional_headers=headers, compression=None, max_size=None,
                open_timeout=timeout_s, user_agent_header="orchestrator",
                ping_interval=ping_interval_s, ping_timeout=ping_timeout_s,
                # A peer that stopped answering will not answer our close either.
                close_timeout=ping_timeout_s if ping_timeout_s is not None else 10.0,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode(errors="replace")[:300] if exc.response.body else ""
            detail = f"HTTP {exc.response.status_code}{': ' + body if body else ''}"
            raise UpstreamError(_redact(f"{_where(url)} refused the connection: {detail}",
                                        api_key)) from None
        except TimeoutError:
            raise UpstreamError(f"{_where(url)} did not answer within {timeout_s:g} s") from None
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise UpstreamError(_redact(f"cannot connect to {_where(url)}: {exc}",
                                        api_key)) from None
        return cls(ws)

    async def send(self, frame: str) -> None:
        """Send one client event."""
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> str | bytes:
        """The next server frame, as received (text frames as str)."""
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def aclose(self) -> None:
        """Close the WebSocket (normal closure); idempotent."""
        await self._ws.close()


def _where(url: str) -> str:
    """The URL without its query string (which may carry an Azure-style key)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _redact(message: str, secret: str) -> str:
    return message.replace(secret, "***") if secret else message
