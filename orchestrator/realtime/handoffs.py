"""Handoff calls (`transfer_to_<agent>`): checking them, and moving the conversation.

Same upstream (same model, server and key): a `session.update` with the target's
instructions and tools (its voice in a separate update) goes before the call's output, so
the next response already speaks as the new agent. Another model or provider: the target's
upstream is connected while the call runs (an unreachable target is the call's own failure),
then seeded with the conversation (`seeding.py`) and swapped in before the output is sent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import orjson

from orchestrator.agents.loader import LoadedAgent
from orchestrator.agents.spec import AgentSpec
from orchestrator.errors import UpstreamError
from orchestrator.realtime import protocol
from orchestrator.realtime.calls import ServerCall
from orchestrator.realtime.policy import agent_session, client_view, voice_update
from orchestrator.realtime.seeding import seed
from orchestrator.tools.convert import error_result
from orchestrator.tools.router import HandoffBinding, build_toolset
from orchestrator.tools.types import ToolResult
from orchestrator.upstream.base import Upstream, follow_script
from orchestrator.upstream.factory import open_configured

if TYPE_CHECKING:
    from orchestrator.realtime.turns import TurnTools

log = logging.getLogger(__name__)


class Handoffs:
    """The handoff calls of one session."""

    def __init__(self, tools: TurnTools) -> None:
        self.tools = tools
        self.opened: dict[str, Upstream] = {}  # call id -> target upstream, until switched

    async def run(self, call: ServerCall, binding: HandoffBinding) -> ToolResult:
        """Check a handoff call; for another upstream, connect to it now."""
        try:
            handoff_reason(call.arguments)
        except ValueError as exc:
            call.policy = "invalid_arguments"
            return error_result(str(exc), "invalid")
        session = self.tools.session
        target = session.deps.registry.get(binding.agent)
        if target is None:
            return error_result(f"agent {binding.agent!r} is not available", "invalid")
        if not same_upstream(self.tools.agent.spec, target.spec):
            try:
                self.opened[call.call_id] = await open_configured(
                    target.spec, session.deps.settings)
            except UpstreamError as exc:
                log.warning("handoff to %r failed: %s", target.spec.name, exc)
                return _unreachable(target.spec.name)
        return ToolResult(output=orjson.dumps({"transferred_to": binding.agent}).decode())

    async def switch(self, call: ServerCall) -> None:
        """Make the call's target the current agent (before its output is sent)."""
        assert isinstance(call.binding, HandoffBinding)
        tools, session = self.tools, self.tools.session
        target = session.deps.registry.get(call.binding.agent)
        if target is None:
            return
        previous = tools.agent.spec.name
        if not same_upstream(tools.agent.spec, target.spec):
            if not await self._move(call, target):
                return
        else:
            await self._update(target)
        session.rec.handoff(previous, target.spec.name, call.call_id,
                            handoff_reason(call.arguments))

    async def discard(self, calls: list[ServerCall]) -> None:
        """Close upstreams opened for handoffs that did not happen."""
        for call in calls:
            unused = self.opened.pop(call.call_id, None)
            if unused is not None:
                await unused.aclose()

    async def _update(self, target: LoadedAgent) -> None:
        tools, session = self.tools, self.tools.session
        tools.agent = target
        tools.toolset = build_toolset(target.spec, session.deps.pool)
        # The voice goes in its own update: the upstream refuses a voice change once audio
        # was played, and that must not take the instructions and tools down with it.
        update = agent_session(target.spec, tools.toolset.definitions, tools.client_tools,
                               voice=False)
        await session.send_session_update("handoff", update)
        voice = voice_update(target.spec)
        if voice is not None:
            await session.send_session_update("voice", voice)
        follow_script(session.upstream, target.spec.script)

    async def _move(self, call: ServerCall, target: LoadedAgent) -> bool:
        """Seed the target's own upstream with the conversation and switch the session over;
        on failure the model gets an error output and nothing changes."""
        tools, session = self.tools, self.tools.session
        timeout_s = session.deps.settings.upstream_connect_timeout_s
        toolset = build_toolset(target.spec, session.deps.pool)
        configured = agent_session(target.spec, toolset.definitions, tools.client_tools)
        upstream = self.opened.pop(call.call_id, None)
        try:
            if upstream is None:
                upstream = await open_configured(target.spec, session.deps.settings)
            shown = await seed(upstream, configured, tools.history.items(), timeout_s=timeout_s)
        except UpstreamError as exc:
            log.warning("handoff to %r failed: %s", target.spec.name, exc)
            if upstream is not None:
                await upstream.aclose()
            call.result = _unreachable(target.spec.name)  # the client saw the call succeed
            return False
        tools.agent, tools.toolset = target, toolset
        await session.replace_upstream(upstream)
        await session.outbox.put(protocol.dumps({
            "type": "session.updated", "event_id": protocol.new_id("event"),
            "session": client_view(shown, tools.server_tool_names)}))
        return True


def _unreachable(agent: str) -> ToolResult:
    return error_result(f"agent {agent!r} could not be reached; the transfer did not happen",
                        "unavailable")


def same_upstream(current: AgentSpec, target: AgentSpec) -> bool:
    """Whether `target` can take over the current upstream session (same model, same server)."""
    return (current.model, current.base_url, current.api_key) == (
        target.model, target.base_url, target.api_key)


def handoff_reason(arguments: str) -> str | None:
    """The `reason` of a handoff call; ValueError if the arguments break `{reason?: string}`."""
    try:
        parsed: Any = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        raise ValueError("arguments are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("arguments must be a JSON object")
    fields = cast(dict[str, Any], parsed)
    extra = set(fields) - {"reason"}
    if extra:
        raise ValueError(f"unexpected arguments: {', '.join(sorted(extra))}")
    reason = fields.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("`reason` must be a string")
    return reason
