"""Server-run tool calls: their state, and how they are shown to the client.

Toward the client a server-run call is an `mcp_call` item (as OpenAI shows its hosted MCP
tools) in `mcp` mode, or nothing at all in `none` mode; its upstream `function_call` and
`function_call_output` items are never shown as such (design §2 step 3).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from orchestrator.realtime import protocol
from orchestrator.realtime.protocol import JsonObject
from orchestrator.tools.router import Binding, HandoffBinding, McpBinding
from orchestrator.tools.types import ToolResult

ToolEvents = Literal["mcp", "none"]


@dataclass(slots=True)
class ServerCall:
    """One function call the orchestrator executes itself."""

    call_id: str
    item_id: str
    name: str
    response_id: str
    output_index: int
    binding: Binding
    agent: str
    arguments: str = ""
    started: bool = False
    result: ToolResult | None = None
    previous_item_id: str | None = None
    task: asyncio.Task[None] | None = None
    cancelled: bool = False  # by the client's response.cancel
    policy: str | None = None  # why the policy stopped it: denied, invalid_arguments, ...
    row_call_id: str | None = None  # a duplicate's own call id in the record
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)

    @property
    def server_label(self) -> str:
        """The MCP server's name, `handoff`, or `policy` for a refused name."""
        if isinstance(self.binding, McpBinding):
            return self.binding.server
        return "handoff" if isinstance(self.binding, HandoffBinding) else "policy"

    @property
    def tool_name(self) -> str:
        """The tool's own name on its server (without any prefix)."""
        return self.binding.tool if isinstance(self.binding, McpBinding) else self.name

    @property
    def done(self) -> bool:
        """True once the call has a result, or will never run (arguments never completed)."""
        return self.result is not None or not self.started

    def item(self) -> JsonObject:
        """The call as an `mcp_call` item, with its output or error once known."""
        result = self.result
        return protocol.mcp_call_item(
            self.item_id, self.server_label, self.name, self.arguments,
            output=result.output if result is not None else None,
            error=(result.error or "tool failed") if result is not None and result.is_error
            else None,
        )


@dataclass(slots=True)
class Presenter:
    """Renders a server call's lifecycle for one connection's `tool_events` mode."""

    mode: ToolEvents

    def item_added(self, call: ServerCall, event: JsonObject) -> list[str]:
        """The call's item in an `…item.added` event, or in `response.output_item.done`."""
        if self.mode == "none":
            return []
        shown = {k: v for k, v in event.items() if k != "item"}
        shown["item"] = call.item()
        return [protocol.dumps(shown)]

    def arguments_delta(self, call: ServerCall, delta: str) -> list[str]:
        """Streamed arguments."""
        if self.mode == "none":
            return []
        return [protocol.mcp_event(
            "response.mcp_call_arguments.delta", response_id=call.response_id,
            item_id=call.item_id, output_index=call.output_index, delta=delta,
        )]

    def arguments_done(self, call: ServerCall) -> list[str]:
        """Arguments complete; the call starts running."""
        if self.mode == "none":
            return []
        return [
            protocol.mcp_event(
                "response.mcp_call_arguments.done", response_id=call.response_id,
                item_id=call.item_id, output_index=call.output_index, arguments=call.arguments,
            ),
            protocol.mcp_event(
                "response.mcp_call.in_progress", item_id=call.item_id,
                output_index=call.output_index,
            ),
        ]

    def item_done(self, call: ServerCall, event: JsonObject) -> list[str]:
        """The call's outcome then its finished item (`conversation.item.done`)."""
        if self.mode == "none":
            return []
        frames: list[str] = []
        if call.result is not None:
            kind = "failed" if call.result.is_error else "completed"
            frames.append(protocol.mcp_event(
                f"response.mcp_call.{kind}", item_id=call.item_id, output_index=call.output_index,
            ))
        return [*frames, *self.item_added(call, event)]

    def response_done(self, event: JsonObject, calls: dict[str, ServerCall],
                      status: str | None = None) -> str:
        """`response.done` with server calls shown as `mcp_call` items (or left out); a
        response the client cancelled while its calls ran is shown as cancelled."""
        response = event.get("response")
        if not isinstance(response, dict):
            return protocol.dumps(event)
        if status == "cancelled":
            response = {**response, "status": "cancelled",  # type: ignore[dict-item]
                        "status_details": {"type": "cancelled", "reason": "client_cancelled"}}
        output: list[JsonObject] = []
        for item in response.get("output") or []:  # type: ignore[union-attr]
            call = calls.get(item.get("id")) if isinstance(item, dict) else None  # type: ignore[union-attr]
            if call is None:
                output.append(item)  # type: ignore[arg-type]
            elif self.mode == "mcp":
                output.append(call.item())
        return protocol.dumps({**event, "response": {**response, "output": output}})
