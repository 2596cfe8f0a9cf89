"""Server-run tool calls within a session: interception, execution, continuation, handoffs.

Rules (design §2, §6): a call starts executing at `response.function_call_arguments.done`;
once the upstream's `response.done` has arrived and every server call of that response has
finished, the outputs are sent, then exactly one `response.create`. A handoff's
`session.update` goes before the outputs so the next response already speaks as the new agent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from orchestrator.agents.loader import LoadedAgent
from orchestrator.errors import ProtocolError
from orchestrator.realtime import protocol
from orchestrator.realtime.calls import Presenter, ServerCall
from orchestrator.realtime.outbox import Deferred
from orchestrator.realtime.policy import agent_session
from orchestrator.realtime.protocol import JsonObject
from orchestrator.tools.router import HandoffBinding, McpBinding, Toolset, build_toolset, run_tool
from orchestrator.tools.types import ToolResult

if TYPE_CHECKING:
    from orchestrator.realtime.session import RealtimeSession

log = logging.getLogger(__name__)


def _error_result(message: str, kind: str = "invalid") -> ToolResult:
    return ToolResult(output=orjson.dumps({"error": message}).decode(), is_error=True,
                      error=message, error_kind=kind)  # type: ignore[arg-type]


class TurnTools:
    """The server-run calls of one session, and what they do to the conversation."""

    def __init__(self, session: RealtimeSession, presenter: Presenter, agent: LoadedAgent) -> None:
        self.session = session
        self.presenter = presenter
        self.agent = agent
        self.toolset: Toolset = build_toolset(agent.spec, session.deps.pool)
        self.client_tools: list[JsonObject] = []
        self.calls: dict[str, ServerCall] = {}  # by upstream item id
        self.call_ids: dict[str, ServerCall] = {}
        self.by_response: dict[str, list[ServerCall]] = {}
        self.finished: dict[str, str] = {}  # response id -> final status, for responses with calls
        self.continued: set[str] = set()
        self.client_call_responses: set[str] = set()
        self.hidden_items: set[str] = set()
        self.deferred_creates: list[str] = []
        self.holding_creates = False

    @property
    def server_tool_names(self) -> frozenset[str]:
        """Names of the tools this orchestrator runs for the current agent."""
        return frozenset(self.toolset.bindings)

    # --- interception ----------------------------------------------------------------------

    async def item_event(self, event: JsonObject, frame: str, *, done: bool) -> None:
        """`conversation.item.added|done` and `response.output_item.added|done`."""
        item = event.get("item")
        if not isinstance(item, dict):
            await self.session.outbox.put(frame)
            return
        item_id = item.get("id")  # type: ignore[union-attr]
        call = self.calls.get(item_id) if isinstance(item_id, str) else None
        if call is None and event.get("type") == "response.output_item.added":
            call = self._new_call(event, item)  # type: ignore[arg-type]
        if call is None:
            if item_id in self.hidden_items:
                return
            await self.session.outbox.put(frame)
            return
        if not done:
            await self.session.outbox.put_many(self.presenter.item_added(call, event))
            return
        render = (self.presenter.item_done if event.get("type") == "conversation.item.done"
                  else self.presenter.output_item_done)
        await self.session.outbox.defer(Deferred(lambda: call.done, lambda: render(call, event)))

    def _new_call(self, event: JsonObject, item: JsonObject) -> ServerCall | None:
        if item.get("type") != "function_call":
            return None
        name, call_id, item_id = item.get("name"), item.get("call_id"), item.get("id")
        response_id = str(event.get("response_id") or "")
        if not self.toolset.owns(str(name)):
            self.client_call_responses.add(response_id)
            return None
        if not isinstance(call_id, str) or not isinstance(item_id, str):
            return None
        call = ServerCall(
            call_id=call_id, item_id=item_id, name=str(name), response_id=response_id,
            output_index=int(event.get("output_index") or 0),
            binding=self.toolset.bindings[str(name)], agent=self.agent.spec.name,
        )
        self.calls[item_id] = call
        self.by_response.setdefault(response_id, []).append(call)
        self.holding_creates = True
        return call

    async def arguments_event(self, event: JsonObject, frame: str) -> None:
        """`response.function_call_arguments.delta|done`."""
        item_id = event.get("item_id")
        call = self.calls.get(item_id) if isinstance(item_id, str) else None
        if call is None:
            await self.session.outbox.put(frame)
            return
        if event.get("type") == "response.function_call_arguments.delta":
            await self.session.outbox.put_many(
                self.presenter.arguments_delta(call, str(event.get("delta") or "")))
            return
        if call.started:
            return
        call.arguments = str(event.get("arguments") or "")
        if call.call_id in self.call_ids:  # a duplicated call id is never run twice
            call.result = _error_result(f"call_id {call.call_id} was already executed")
            call.started = True
        else:
            self.call_ids[call.call_id] = call
            call.started = True
            self.session.spawn(self._execute(call))
        await self.session.outbox.put_many(self.presenter.arguments_done(call))

    async def response_done(self, event: JsonObject, frame: str) -> None:
        """The upstream finished a response: continue after its server calls."""
        response = event.get("response")
        rid = str(response.get("id") or "") if isinstance(response, dict) else ""  # type: ignore[union-attr]
        calls = self.by_response.get(rid)
        if not calls:
            await self.session.outbox.put(frame)
            if not any(r not in self.continued for r in self.by_response):
                await self._release_creates()
            return
        status = str(response.get("status") or "") if isinstance(response, dict) else ""  # type: ignore[union-attr]
        self.finished[rid] = status
        await self.session.outbox.defer(Deferred(
            lambda: all(c.done for c in calls),
            lambda: [self.presenter.response_done(event, self.calls)],
        ))
        await self._maybe_continue(rid)

    def check_client_item(self, event: JsonObject, event_id: str | None) -> None:
        """Refuse a client's output for a call the server runs."""
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") == "function_call_output":  # type: ignore[union-attr]
            call_id = item.get("call_id")  # type: ignore[union-attr]
            if isinstance(call_id, str) and call_id in self.call_ids:
                raise ProtocolError(
                    f"Call {call_id} is executed by the server; its output cannot be set by the "
                    "client.", code="invalid_value", event_id=event_id, param="item.call_id")

    # --- execution -------------------------------------------------------------------------

    async def _execute(self, call: ServerCall) -> None:
        try:
            call.result = await self._run(call)
        except asyncio.CancelledError:
            self.session.rec.tool_call(call)  # recorded as cancelled
            raise
        except Exception as exc:  # a bug in a tool path must not end the conversation
            log.exception("tool call %s failed unexpectedly", call.name)
            call.result = _error_result(f"internal error: {type(exc).__name__}", "protocol")
        call.finished.set()
        self.session.rec.tool_call(call)
        await self.session.outbox.flush()
        await self._maybe_continue(call.response_id)

    async def _run(self, call: ServerCall) -> ToolResult:
        binding = call.binding
        if isinstance(binding, McpBinding):
            return await run_tool(self.session.deps.pool, binding, call.arguments)
        target = self.session.deps.registry.get(binding.agent)
        if target is None:
            return _error_result(f"agent {binding.agent!r} is not available")
        if target.spec.model != self.agent.spec.model:
            return _error_result(
                f"agent {binding.agent!r} runs on {target.spec.model}; handoffs across models "
                "are not supported yet")
        return ToolResult(output=orjson.dumps({"transferred_to": binding.agent}).decode())

    async def _maybe_continue(self, rid: str) -> None:
        calls = self.by_response.get(rid, [])
        status = self.finished.get(rid)
        if status is None or rid in self.continued or not all(c.done for c in calls):
            return
        self.continued.add(rid)
        executed = [c for c in calls if c.result is not None]
        handoffs = [c for c in executed if isinstance(c.binding, HandoffBinding)
                    and c.result is not None and not c.result.is_error]
        if handoffs:
            await self._switch_agent(handoffs[-1])
        for call in executed:
            assert call.result is not None
            item_id = protocol.new_id("item")
            self.hidden_items.add(item_id)
            await self.session.send_internal({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "id": item_id, "call_id": call.call_id,
                "output": call.result.output,
            }})
        if executed and status == "completed" and rid not in self.client_call_responses:
            self.session.rec.mark_turn_end()
            await self.session.send_internal({"type": "response.create"})
        else:
            await self._release_creates()

    async def _release_creates(self) -> None:
        self.holding_creates = False
        creates, self.deferred_creates = self.deferred_creates, []
        for frame in creates:
            self.session.rec.mark_turn_end()
            await self.session.send_upstream(frame)

    async def _switch_agent(self, call: ServerCall) -> None:
        assert isinstance(call.binding, HandoffBinding)
        target = self.session.deps.registry.get(call.binding.agent)
        if target is None:
            return
        previous = self.agent.spec.name
        self.agent = target
        self.toolset = build_toolset(target.spec, self.session.deps.pool)
        session = agent_session(target.spec, self.toolset.definitions, self.client_tools)
        await self.session.send_session_update("handoff", session)
        use_script = getattr(self.session.upstream, "use_script", None)
        if callable(use_script):
            use_script(target.spec.script or [])
        self.session.rec.handoff(previous, target.spec.name, call.call_id, _reason(call.arguments))


def _reason(arguments: str) -> str | None:
    try:
        parsed: Any = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return None
    reason = parsed.get("reason") if isinstance(parsed, dict) else None  # type: ignore[union-attr]
    return reason if isinstance(reason, str) else None
