"""The tools one agent shows the model, and what each name runs (design §2, §4.4, §6).

An agent's tool set is its MCP tools (from the pool's cached lists, filtered by each
attachment's allowlist, renamed by its prefix) plus one `transfer_to_<agent>` function per
handoff. A name outside the set is never executed; arguments are checked (`policy.py`: JSON
object, then the tool's input schema) before a call leaves for the server.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from orchestrator.agents.spec import (
    TOOL_NAME_PATTERN,
    AgentSpec,
    ToolAttachment,
    handoff_tool_name,
)
from orchestrator.tools.convert import error_result
from orchestrator.tools.mcp_pool import McpPool
from orchestrator.tools.policy import parse_arguments, schema_problem
from orchestrator.tools.types import ToolInfo, ToolResult

logger = logging.getLogger(__name__)

HANDOFF_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "description": "Why the caller is being transferred"},
    },
    "additionalProperties": False,
}
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class McpBinding:
    """A model-visible name bound to one tool of one MCP server, with its attachment's policy."""

    server: str
    tool: str
    timeout_s: float
    approval: bool = False
    approval_timeout_s: float = 60.0
    filler: str | None = None
    filler_after_s: float = 2.0


@dataclass(frozen=True, slots=True)
class HandoffBinding:
    """A model-visible name that transfers the conversation to another agent."""

    agent: str


@dataclass(frozen=True, slots=True)
class RefusedBinding:
    """A name the model produced that the current agent may not run: answered with an error,
    never executed. `status` is `denied` (a tool its attachment denies) or `unknown`."""

    status: str


Binding = McpBinding | HandoffBinding | RefusedBinding


@dataclass(frozen=True, slots=True)
class Toolset:
    """The tools of one agent: what the model sees, and what each name runs."""

    bindings: dict[str, Binding]
    definitions: list[dict[str, Any]]
    denied: frozenset[str] = frozenset()  # model-visible names of denied tools

    def owns(self, name: str) -> bool:
        """Whether the orchestrator runs this function itself (else it is the client's)."""
        return name in self.bindings

    def refusal(self, name: str) -> RefusedBinding:
        """How a call of a name outside the set is refused."""
        return RefusedBinding("denied" if name in self.denied else "unknown")


def build_toolset(agent: AgentSpec, pool: McpPool) -> Toolset:
    """The agent's MCP tools and handoffs; on a name clash the first one wins."""
    bindings: dict[str, Binding] = {}
    definitions: list[dict[str, Any]] = []

    def add(name: str, binding: Binding, description: str, parameters: dict[str, Any]) -> None:
        if name in bindings:
            return  # duplicates are a validation error reported elsewhere
        if not _TOOL_NAME.match(name):
            # The model API rejects the whole session update over one bad name: leave it out.
            logger.warning("agent %r: tool name %r is not a valid function name", agent.name, name)
            return
        bindings[name] = binding
        definitions.append(function_tool(name, description, parameters))

    denied: set[str] = set()
    for attachment in agent.tools:
        allowed = set(attachment.allow) if attachment.allow is not None else None
        denied.update((attachment.prefix or "") + name for name in attachment.deny)
        for info in pool.tools(attachment.mcp):
            if (allowed is None or info.name in allowed) and info.name not in attachment.deny:
                add((attachment.prefix or "") + info.name, _mcp_binding(attachment, info.name),
                    info.description or info.name, object_schema(info.input_schema))
    for handoff in agent.handoffs:
        description = handoff.description or (
            f"Transfer the conversation to the {handoff.agent} agent."
        )
        add(handoff_tool_name(handoff.agent), HandoffBinding(handoff.agent), description,
            HANDOFF_PARAMETERS)
    return Toolset(bindings=bindings, definitions=definitions,
                   denied=frozenset(denied - set(bindings)))


def _mcp_binding(attachment: ToolAttachment, tool: str) -> McpBinding:
    return McpBinding(
        attachment.mcp, tool, attachment.timeout_s,
        approval=attachment.needs_approval(tool),
        approval_timeout_s=attachment.approval_timeout_s,
        filler=attachment.filler, filler_after_s=attachment.filler_after_s,
    )


def function_tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A GA realtime function tool definition."""
    return {"type": "function", "name": name, "description": description,
            "parameters": parameters}


def object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema as function parameters: always an object with `properties`."""
    result = dict(schema)
    result["type"] = "object"
    result.setdefault("properties", {})
    return result


async def run_tool(pool: McpPool, binding: McpBinding, arguments_json: str) -> ToolResult:
    """Check the model's arguments, then call the tool with the binding's timeout.

    Arguments that are not a JSON object, or that break the tool's input schema, come back
    as an `invalid` error result and the tool is not called.
    """
    checked = parse_arguments(arguments_json)
    if isinstance(checked, str):
        return error_result(checked, "invalid")
    problem = schema_problem(_find_tool(pool, binding), checked)
    if problem is not None:
        return error_result(f"invalid arguments for {binding.tool!r}: {problem}", "invalid")
    return await pool.call(binding.server, binding.tool, checked, timeout_s=binding.timeout_s)


def _find_tool(pool: McpPool, binding: McpBinding) -> ToolInfo | None:
    return next((info for info in pool.tools(binding.server) if info.name == binding.tool), None)
