"""Server-run tool calls within a session: interception, execution, continuation, handoffs.

Rules (design §2, §6): a call starts executing at `response.function_call_arguments.done`;
once the upstream's `response.done` has arrived and every server call of that response has
finished, the outputs are sent, then exactly one `response.create`, and never while another
response is active. A handoff's `session.update` goes before the outputs so the next response
already speaks as the new agent. A client's `response.create` waits while server calls of the
turn are unresolved; a client's `response.cancel` of a response whose calls still run cancels
those calls and the continuation. Whether a call runs at all is the tool policy's answer
(`tools/policy.py`); this module keeps the turn's books around it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from orchestrator.agents.loader import LoadedAgent
from orchestrator.errors import ProtocolError
from orchestrator.realtime import protocol
from orchestrator.realtime.approvals import Approvals
from orchestrator.realtime.calls import Presenter, ServerCall
from orchestrator.realtime.handoffs import Handoffs
from orchestrator.realtime.outbox import Deferred
from orchestrator.realtime.protocol import JsonObject
from orchestrator.realtime.seeding import History
from orchestrator.tools.policy import CallGate, approval_refusal, refused, result_status
from orchestrator.tools.router import (
    HandoffBinding,
    McpBinding,
    RefusedBinding,
    Toolset,
    build_toolset,
    run_tool,
)
from orchestrator.tools.types import ToolResult
from orchestrator.upstream.script import SAY_EXACTLY

if TYPE_CHECKING:
    from orchestrator.realtime.session import RealtimeSession

log = logging.getLogger(__name__)

# Per-response settings a client gave in `response.create` that the continuation keeps.
_KEPT_RESPONSE_FIELDS = ("output_modalities", "audio", "instructions", "max_output_tokens")
_ALIASES_KEPT = 512


class TurnTools:
    """The server-run calls of one session, and what they do to the conversation."""

    def __init__(self, session: RealtimeSession, presenter: Presenter, agent: LoadedAgent) -> None:
        self.session = session
        self.presenter = presenter
        self.agent = agent
        self.toolset: Toolset = build_toolset(agent.spec, session.deps.pool)
        self.client_tools: list[JsonObject] = []
        self.calls: dict[str, ServerCall] = {}  # by upstream item id, until continued
        self.policy = CallGate()  # every call id ever run or refused (never run twice)
        self.by_response: dict[str, list[ServerCall]] = {}
        self.finished: dict[str, str] = {}  # response id -> final status, for responses with calls
        self.client_call_responses: set[str] = set()
        self.hidden_items: set[str] = set()
        self.output_agents: dict[str, str] = {}  # call id -> agent, until its output is recorded
        self.aliases: OrderedDict[str, str | None] = OrderedDict()  # hidden item -> shown one
        self.deferred_creates: list[str] = []
        self.holding_creates = False
        self.active_response: str | None = None
        self.create_in_flight: str | None = None  # event id of our response.create
        self.continuation_due = False
        self.response_params: JsonObject = {}
        self.held_items: dict[str, str] = {}  # output items of responses with calls -> response
        self.approvals = Approvals(lambda frame: session.outbox.put(frame, ordered=False))
        self.history = History()  # to seed a new upstream on a cross-model handoff
        self.filler_in_flight = False
        self.handoffs = Handoffs(self)
        self.filler_response: str | None = None  # while a filler line is being said

    @property
    def server_tool_names(self) -> frozenset[str]:
        """Names of the tools this orchestrator runs for the current agent."""
        return frozenset(self.toolset.bindings)

    # --- what the session asks --------------------------------------------------------------

    def holds(self, event: JsonObject) -> bool:
        """True if `event` belongs to a response with server calls not yet continued."""
        rid = event.get("response_id") or protocol.member(event.get("response"), "id")
        if isinstance(rid, str):
            return rid in self.by_response
        item_id = protocol.member(event.get("item"), "id") or event.get("item_id")
        return isinstance(item_id, str) and (item_id in self.calls or item_id in self.held_items)

    @property
    def renumbering(self) -> bool:
        """True while hidden (`tool_events=none`) calls leave gaps in `output_index`."""
        return self.presenter.mode == "none" and bool(self.by_response)

    @property
    def parse_outputs(self) -> bool:
        """True while output deltas cannot pass untouched: hidden calls shift their indexes,
        or a filler line's frames must overtake frames held for a running call."""
        return self.renumbering or self.filler_response is not None

    def renumbered(self, event: JsonObject) -> str | None:
        """`event` with its `output_index` closed up over hidden calls, or None if unchanged."""
        index, rid = event.get("output_index"), event.get("response_id")
        if not isinstance(index, int) or not isinstance(rid, str):
            return None
        shift = sum(1 for c in self.by_response.get(rid, ()) if c.output_index < index)
        return protocol.dumps({**event, "output_index": index - shift}) if shift else None

    def output_agent(self, item: JsonObject, default: str) -> str:
        """The agent a finished item is recorded under (a call's output: the calling agent)."""
        call_id = item.get("call_id")
        if item.get("type") == "function_call_output" and isinstance(call_id, str):
            return self.output_agents.pop(call_id, default)
        return default

    def shown_previous(self, event: JsonObject) -> JsonObject | None:
        """`event` with a `previous_item_id` the client has seen, or None if it needs no change."""
        previous = event.get("previous_item_id")
        if not isinstance(previous, str) or previous not in self.aliases:
            return None
        return {**event, "previous_item_id": self._visible(previous)}

    def _visible(self, item_id: str | None) -> str | None:
        seen = 0
        while item_id is not None and item_id in self.aliases and seen < _ALIASES_KEPT:
            item_id = self.aliases[item_id]
            seen += 1
        return item_id

    def _alias(self, hidden: str, shown: str | None) -> None:
        self.aliases[hidden] = shown
        if len(self.aliases) > _ALIASES_KEPT:
            self.aliases.popitem(last=False)

    # --- interception ----------------------------------------------------------------------

    async def item_event(self, event: JsonObject, frame: str, *, done: bool) -> None:
        """`conversation.item.added|done` and `response.output_item.added|done`."""
        item = event.get("item")
        if not isinstance(item, dict):
            await self.session.forward(event, frame)
            return
        if event.get("type") == "conversation.item.done":
            self.history.observe(item)  # type: ignore[arg-type]
        item_id = item.get("id")  # type: ignore[union-attr]
        call = self.calls.get(item_id) if isinstance(item_id, str) else None
        if call is None and event.get("type") == "response.output_item.added":
            call = self._new_call(event, item)  # type: ignore[arg-type]
        if call is None:
            rid = event.get("response_id")
            if isinstance(rid, str) and rid in self.by_response and isinstance(item_id, str):
                self.held_items[item_id] = rid
            if item_id in self.hidden_items:
                if done:
                    self.hidden_items.discard(item_id)  # type: ignore[arg-type]
                return
            shown = self.shown_previous(event)
            await self.session.forward(shown or event,
                                       frame if shown is None else protocol.dumps(shown))
            return
        if event.get("type") == "conversation.item.added":
            call.previous_item_id = event.get("previous_item_id")  # type: ignore[assignment]
            if self.presenter.mode == "none":
                self._alias(call.item_id, self._visible(call.previous_item_id))
        shown_event = self.shown_previous(event) or event
        if not done:
            await self.session.outbox.put_many(self.presenter.item_added(call, shown_event))
            return
        render = (self.presenter.item_done if event.get("type") == "conversation.item.done"
                  else self.presenter.item_added)
        await self.session.outbox.defer(
            Deferred(lambda: call.done, lambda: render(call, shown_event)))

    def hold_create(self, frame: str) -> bool:
        """Keep a client's `response.create` while server calls of its turn are unresolved.

        The first one after an approval answer is dropped: hosted-MCP clients send it to
        resume the turn, which here resumes by itself."""
        if self.holding_creates and not self.approvals.take_resume():
            self.deferred_creates.append(frame)
        return self.holding_creates

    def _new_call(self, event: JsonObject, item: JsonObject) -> ServerCall | None:
        if item.get("type") != "function_call":
            return None
        name, call_id, item_id = item.get("name"), item.get("call_id"), item.get("id")
        response_id = str(event.get("response_id") or "")
        if not self.toolset.owns(str(name)) and self._client_declares(name):
            self.client_call_responses.add(response_id)
            return None
        if not isinstance(call_id, str) or not isinstance(item_id, str):
            return None
        call = ServerCall(
            call_id=call_id, item_id=item_id, name=str(name), response_id=response_id,
            output_index=int(event.get("output_index") or 0),
            binding=self.toolset.bindings.get(str(name)) or self.toolset.refusal(str(name)),
            agent=self.agent.spec.name,
        )
        self.calls[item_id] = call
        self.by_response.setdefault(response_id, []).append(call)
        self.holding_creates = True
        return call

    def _client_declares(self, name: object) -> bool:
        return any(t.get("name") == name for t in self.client_tools)

    async def arguments_event(self, event: JsonObject, frame: str) -> None:
        """`response.function_call_arguments.delta|done`."""
        item_id = event.get("item_id")
        call = self.calls.get(item_id) if isinstance(item_id, str) else None
        if call is None:
            await self.session.forward(event, frame)
            return
        if event.get("type") == "response.function_call_arguments.delta":
            await self.session.outbox.put_many(
                self.presenter.arguments_delta(call, str(event.get("delta") or "")))
            return
        if call.started:
            return
        call.arguments = str(event.get("arguments") or "")
        call.started = True
        binding = call.binding
        refusal = self.policy.admit(
            call.call_id, call.name, self.agent.spec.name,
            binding.status if isinstance(binding, RefusedBinding) else None)
        if refusal is not None:  # never executed: answered at once, and recorded
            call.policy, call.result = refusal.status, refusal.result
            call.row_call_id = refusal.row_call_id
            self.session.rec.tool_call(call)
        else:
            call.task = self.session.spawn(self._execute(call))
        await self.session.outbox.put_many(self.presenter.arguments_done(call))

    async def response_created(self, event: JsonObject) -> None:
        """A response began upstream (ours, the client's, or one the model started itself)."""
        self.active_response = str(protocol.member(event.get("response"), "id") or "")
        self.create_in_flight = None
        if self.filler_in_flight:
            self.filler_response = self.active_response
        self.filler_in_flight = False

    async def response_done(self, event: JsonObject, frame: str) -> None:
        """The upstream finished a response: continue after its server calls."""
        response = event.get("response")
        rid = str(response.get("id") or "") if isinstance(response, dict) else ""  # type: ignore[union-attr]
        if self.active_response == rid:
            self.active_response = None
        if self.filler_response == rid:
            self.filler_response = None
        calls = self.by_response.get(rid)
        if not calls:
            await self.session.forward(event, frame)
        else:
            status = str(response.get("status") or "") if isinstance(response, dict) else ""  # type: ignore[union-attr]
            self.finished[rid] = self.finished.get(rid) or status
            mine = {c.item_id: c for c in calls}
            await self.session.outbox.defer(Deferred(
                lambda: all(c.done for c in calls),
                lambda: [self.presenter.response_done(event, mine, self.finished.get(rid))],
            ))
            await self._maybe_continue(rid)
        await self._after_response()

    async def _after_response(self) -> None:
        """No response is active any more: send what waited for that."""
        if self.active_response is not None or self.create_in_flight is not None:
            return
        if self.continuation_due:
            self.continuation_due = False
            await self._create()
        elif not self.by_response:
            await self._release_creates()

    async def create_refused(self, code: str | None) -> None:
        """The upstream refused our `response.create`."""
        self.create_in_flight = None
        if self.filler_in_flight:  # only the filler is lost; the turn goes on
            self.filler_in_flight = False
            log.warning("the model refused the filler response (%s)", code)
            if self.continuation_due and self.active_response is None:
                self.continuation_due = False
                await self._create()
            return
        if code == "conversation_already_has_active_response" and self.active_response:
            self.continuation_due = True  # retried when that response is done
            return
        log.warning("the model refused the continuation response (%s); the turn ends here", code)
        await self._release_creates()

    def upstream_lost(self) -> None:
        """The upstream session is gone: a `response.create` of ours it never answered is due
        again on the next one (a filler line is dropped)."""
        if self.create_in_flight is not None and not self.filler_in_flight:
            self.continuation_due = True
        self.create_in_flight = None
        self.filler_in_flight = False

    async def upstream_restored(self) -> None:
        """A new upstream session carries the conversation: send what waited for one."""
        await self._after_response()

    async def client_item(self, event: JsonObject, event_id: str | None) -> bool:
        """A client's `conversation.item.create`: True if it was an approval answer (kept
        here), ProtocolError if it may not go upstream, else False."""
        if await self.approvals.answer(event, event_id):
            return True
        self.check_client_item(event, event_id)
        return False

    def check_client_item(self, event: JsonObject, event_id: str | None) -> None:
        """Refuse a client's output for a call the server runs."""
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") == "function_call_output":  # type: ignore[union-attr]
            call_id = item.get("call_id")  # type: ignore[union-attr]
            if isinstance(call_id, str) and self.policy.server_runs(call_id):
                raise ProtocolError(
                    f"Call {call_id} is executed by the server; its output cannot be set by the "
                    "client.", code="invalid_value", event_id=event_id, param="item.call_id")

    def client_create(self, event: JsonObject) -> None:
        """Remember a client's per-response settings for the continuation of its turn."""
        response = event.get("response")
        fields: JsonObject = response if isinstance(response, dict) else {}  # type: ignore[assignment]
        self.response_params = {k: fields[k] for k in _KEPT_RESPONSE_FIELDS if k in fields}

    def client_cancel(self, event: JsonObject) -> bool:
        """Absorb a `response.cancel` of a response whose server calls still run.

        The upstream's response is already over; to the client it is still in progress. The
        calls are cancelled, the response is shown as cancelled, nothing continues it.
        """
        wanted = event.get("response_id")
        for rid, calls in self.by_response.items():
            if rid not in self.finished or (wanted not in (None, rid)):
                continue
            if all(c.done for c in calls):
                continue
            self.finished[rid] = "cancelled"
            for call in calls:
                if call.task is not None and not call.done:
                    call.cancelled = True
                    call.task.cancel()
            return True
        return False

    # --- execution -------------------------------------------------------------------------

    async def _execute(self, call: ServerCall) -> None:
        try:
            call.result = await self._run(call)
        except asyncio.CancelledError:
            if not call.cancelled:
                self.session.rec.tool_call(call)  # the session is ending: recorded as cancelled
                raise
            call.result = refused("cancelled by the client", "tool")
        except Exception as exc:  # a bug in a tool path must not end the conversation
            log.exception("tool call %s failed unexpectedly", call.name)
            call.result = refused(f"internal error: {type(exc).__name__}", "protocol")
        self.session.rec.tool_call(call)
        # The output goes upstream first: the model waits on it, the client's frames do not.
        await self._maybe_continue(call.response_id)
        await self.session.outbox.flush()

    async def _run(self, call: ServerCall) -> ToolResult:
        binding = call.binding
        assert not isinstance(binding, RefusedBinding)
        if isinstance(binding, McpBinding):
            if binding.approval:
                refusal = await self._approve(call, binding)
                if refusal is not None:
                    return refusal
            filler = (self.session.spawn(self._filler(call, binding))
                      if binding.filler is not None else None)
            try:
                result = await run_tool(self.session.deps.pool, binding, call.arguments)
            finally:
                if filler is not None:
                    filler.cancel()
            call.policy = result_status(result)
            return result
        return await self.handoffs.run(call, binding)

    async def _filler(self, call: ServerCall, binding: McpBinding) -> None:
        """Past the threshold, have the model say the filler line: an out-of-band response
        (`conversation: none`, so the line stays out of the context), sent only while no
        other response is active or requested; the continuation then waits for it."""
        await asyncio.sleep(binding.filler_after_s)
        if call.result is not None or self.active_response is not None \
                or self.create_in_flight is not None:
            return
        self.filler_in_flight = True
        self.create_in_flight = await self.session.send_internal({
            "type": "response.create", "response": {
                "conversation": "none", "instructions": SAY_EXACTLY + str(binding.filler),
                "tools": [], "tool_choice": "none", "metadata": {"orchestrator": "filler"},
            }})

    async def _approve(self, call: ServerCall, binding: McpBinding) -> ToolResult | None:
        """Ask the client; None if approved, else the refusal the model gets."""
        answer = await self.approvals.ask(call.server_label, call.name, call.arguments,
                                          binding.approval_timeout_s)
        refusal = approval_refusal(call.name, answer.verdict, answer.reason)
        if refusal is None:
            return None
        call.policy = refusal.status
        return refusal.result

    async def _maybe_continue(self, rid: str) -> None:
        calls = self.by_response.get(rid, [])
        status = self.finished.get(rid)
        if status is None or not calls or not all(c.done for c in calls):
            return
        del self.by_response[rid]
        executed = [c for c in calls if c.result is not None and c.started]
        handoffs = [c for c in executed if isinstance(c.binding, HandoffBinding)
                    and c.result is not None and not c.result.is_error]
        if handoffs and status == "completed":
            await self.handoffs.switch(handoffs[-1])
        await self.handoffs.discard(calls)
        for call in executed:
            await self._send_output(call)
        await self.session.outbox.flush()  # rendered before _forget drops the final status
        self._forget(rid, calls)
        if executed and status == "completed" and rid not in self.client_call_responses:
            if self.active_response is not None or self.create_in_flight is not None:
                self.continuation_due = True
            else:
                await self._create()
        elif not self.by_response:
            await self._release_creates()
        self.client_call_responses.discard(rid)

    async def _send_output(self, call: ServerCall) -> None:
        assert call.result is not None
        item_id = protocol.new_id("item")
        self.hidden_items.add(item_id)
        self.output_agents[call.call_id] = call.agent
        self._alias(item_id, call.item_id if self.presenter.mode == "mcp"
                    else self._visible(call.item_id))
        await self.session.send_internal({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "id": item_id, "call_id": call.call_id,
            "output": call.result.output,
        }})

    def _forget(self, rid: str, calls: list[ServerCall]) -> None:
        self.finished.pop(rid, None)
        for call in calls:
            self.calls.pop(call.item_id, None)
        for item_id in [i for i, r in self.held_items.items() if r == rid]:
            del self.held_items[item_id]

    async def _create(self) -> None:
        self.session.rec.mark_turn_end()
        event: JsonObject = {"type": "response.create"}
        if self.response_params:
            event["response"] = dict(self.response_params)
        self.create_in_flight = await self.session.send_internal(event)

    async def _release_creates(self) -> None:
        self.holding_creates = False
        creates, self.deferred_creates = self.deferred_creates, []
        for frame in creates:
            self.session.rec.mark_turn_end()
            await self.session.send_upstream(frame)
