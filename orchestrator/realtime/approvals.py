"""Approval of server-run calls by the client (tool policy `require_approval`).

The request is the protocol's own `mcp_approval_request` item, shown to the client as
`conversation.item.added` then `conversation.item.done` (it never goes upstream: the model
only knows its `function_call`). The client answers with `conversation.item.create` of an
`mcp_approval_response` item, which we acknowledge the same way. No answer within the
attachment's `approval_timeout_s` is a refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from orchestrator.errors import ProtocolError
from orchestrator.realtime import protocol
from orchestrator.realtime.protocol import JsonObject

Verdict = Literal["approved", "denied", "timeout"]
Show = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Answer:
    """The client's verdict on one request."""

    verdict: Verdict
    reason: str | None = None


class Approvals:
    """The approval requests of one session still waiting for the client."""

    def __init__(self, show: Show) -> None:
        self._show = show
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        self._resumes = 0  # answers whose client may still send a `response.create`

    async def ask(self, server_label: str, name: str, arguments: str, timeout_s: float,
                  ) -> Answer:
        """Show the client an `mcp_approval_request` and wait for its answer."""
        request_id = protocol.new_id("mcpr")
        item: JsonObject = {"type": "mcp_approval_request", "id": request_id,
                            "server_label": server_label, "name": name, "arguments": arguments}
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        try:
            await self._show_item(item)
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return Answer("timeout")
        finally:
            self._pending.pop(request_id, None)

    async def answer(self, event: JsonObject, event_id: str | None) -> bool:
        """Take a client's `mcp_approval_response` item; False if `event` is not one."""
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "mcp_approval_response":  # type: ignore[union-attr]
            return False
        request_id, approve = item.get("approval_request_id"), item.get("approve")  # type: ignore[union-attr]
        waiter = self._pending.get(request_id) if isinstance(request_id, str) else None
        if waiter is None or waiter.done():
            raise ProtocolError(
                f"No approval request {request_id!r} is waiting for an answer.",
                code="invalid_value", event_id=event_id, param="item.approval_request_id")
        if not isinstance(approve, bool):
            raise ProtocolError("`approve` must be a boolean.", code="invalid_value",
                                event_id=event_id, param="item.approve")
        reason = item.get("reason")  # type: ignore[union-attr]
        shown: JsonObject = {"type": "mcp_approval_response",
                             "id": item.get("id") or protocol.new_id("mcpa"),  # type: ignore[union-attr]
                             "approval_request_id": request_id, "approve": approve}
        if isinstance(reason, str):
            shown["reason"] = reason
        await self._show_item(shown)
        self._resumes += 1
        waiter.set_result(Answer("approved" if approve else "denied",
                                 reason if isinstance(reason, str) else None))
        return True

    def take_resume(self) -> bool:
        """True (once per answer) if a client's `response.create` may be the one that follows
        its approval answer, as with OpenAI's hosted MCP tools."""
        if not self._resumes:
            return False
        self._resumes -= 1
        return True

    async def _show_item(self, item: JsonObject) -> None:
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self._show(protocol.dumps(
                {"type": kind, "event_id": protocol.new_id("event"), "item": item}))
