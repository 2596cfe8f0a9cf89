"""The tools one agent shows the model, and what each name runs (design §2, §4.4, §6).

An agent's tool set is its MCP tools (from the pool's cached lists, filtered by each
attachment's allowlist, renamed by its prefix) plus one `transfer_to_<agent>` function per
handoff. A name outside the set is never executed; arguments are checked (JSON object,
then the tool's input schema) before a call leaves for the server.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, cast

from jsonschema import exceptions as schema_errors
from jsonschema import validators

from orchestrator.agents.spec import TOOL_NAME_PATTERN, AgentSpec, handoff_tool_name
from orchestrator.tools.convert import error_result
from orchestrator.tools.mcp_pool import McpPool
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
    """A model-visible name bound to one tool of one MCP server."""

    server: str
    tool: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class HandoffBinding:
    """A model-visible name that transfers the conversation to another agent."""

    agent: str


Binding = McpBinding | HandoffBinding


@dataclass(frozen=True, slots=True)
class Toolset:
    """The tools of one agent: what the model sees, and what each name runs."""

    bindings: dict[str, Binding]
    definitions: list[dict[str, Any]]

    def owns(self, name: str) -> bool:
        """Whether the orchestrator runs this function itself (else it is the client's)."""
        return name in self.bindings


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

    for attachment in agent.tools:
        allowed = set(attachment.allow) if attachment.allow is not None else None
        for info in pool.tools(attachment.mcp):
            if allowed is None or info.name in allowed:
                binding = McpBinding(attachment.mcp, info.name, attachment.timeout_s)
                add((attachment.prefix or "") + info.name, binding,
                    info.description or info.name, object_schema(info.input_schema))
    for handoff in agent.handoffs:
        description = handoff.description or (
            f"Transfer the conversation to the {handoff.agent} agent."
        )
        add(handoff_tool_name(handoff.agent), HandoffBinding(handoff.agent), description,
            HANDOFF_PARAMETERS)
    return Toolset(bindings=bindings, definitions=definitions)


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
    try:
        arguments: object = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError as exc:
        return error_result(f"arguments are not valid JSON: {exc}", "invalid")
    if not isinstance(arguments, dict):
        return error_result("arguments must be a JSON object", "invalid")
    checked = cast(dict[str, Any], arguments)
    problem = schema_problem(_find_tool(pool, binding), checked)
    if problem is not None:
        return error_result(f"invalid arguments for {binding.tool!r}: {problem}", "invalid")
    return await pool.call(binding.server, binding.tool, checked, timeout_s=binding.timeout_s)


def _find_tool(pool: McpPool, binding: McpBinding) -> ToolInfo | None:
    return next((info for info in pool.tools(binding.server) if info.name == binding.tool), None)


def schema_problem(info: ToolInfo | None, arguments: dict[str, Any]) -> str | None:
    """Why `arguments` break the tool's input schema, or None (also for an unusable schema)."""
    if info is None or not info.input_schema:
        return None  # the pool answers for a tool it does not know
    validator = _validator(info)
    if validator is None:
        return None
    error = cast(
        "schema_errors.ValidationError | None",
        schema_errors.best_match(validator.iter_errors(arguments)),  # pyright: ignore[reportUnknownMemberType]
    )
    if error is None:
        return None
    parts = cast("list[object]", list(error.absolute_path))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    message = error.message
    return f"{'/'.join(str(p) for p in parts)}: {message}" if parts else message


# Compiling a validator costs far more than using it: keep one per cached schema object
# (the pool replaces ToolInfo objects on refresh, so a changed schema gets a new one).
_validators: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {}


def _validator(info: ToolInfo) -> Any:
    key = (info.server, info.name)
    cached = _validators.get(key)
    if cached is not None and cached[0] is info.input_schema:
        return cached[1]
    validator_class: Any = validators.validator_for(info.input_schema)
    try:
        validator_class.check_schema(info.input_schema)
    except schema_errors.SchemaError:
        validator = None  # a server's broken schema is the server's business, not the model's
    else:
        validator = validator_class(info.input_schema)
    _validators[key] = (info.input_schema, validator)
    return validator
