"""Checks of the tool names an agent shows the model (design §4.4).

The model sees each MCP tool under `prefix + name` and each handoff as `transfer_to_<agent>`.
Some names are known from the YAML alone (allowlists, handoffs); the rest only once the MCP
servers have listed their tools. `static_problems` checks the first kind at load time;
`tool_problems` checks everything else, without repeating what the static check reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.agents.spec import TOOL_NAME_PATTERN, AgentSpec, handoff_tool_name
from orchestrator.errors import Problem
from orchestrator.tools.types import ToolInfo

if TYPE_CHECKING:
    from orchestrator.agents.document import Loc
    from orchestrator.agents.loader import LoadedAgent

_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
_SHOWN_TOOLS = 12  # how many of a server's tools a "has no tool" message lists


@dataclass(frozen=True, slots=True)
class _Visible:
    """One name the model sees, where it is written, and whether the YAML alone fixes it."""

    name: str
    loc: Loc
    origin: str
    static: bool


def static_problems(agent: LoadedAgent) -> list[Problem]:
    """Name clashes, bad names and impossible `call:`s decidable from the YAML alone."""
    names = _static_names(agent.spec)
    problems = _name_problems(agent, names, dynamic_only=False)
    known = {v.name for v in names}
    for i, rule in enumerate(agent.spec.script or []):
        if rule.call is not None and not (rule.client or rule.refused) and not _possible(
                agent.spec, rule.call, known):
            problems.append(_not_a_tool(agent, i, rule.call))
    return problems


def tool_problems(
    agent: LoadedAgent, tools_by_server: Mapping[str, Sequence[ToolInfo]],
) -> list[Problem]:
    """The checks that need the servers' tool lists; servers not in the mapping are skipped."""
    spec = agent.spec
    problems = _allowlist_problems(agent, tools_by_server)
    names = _static_names(spec) + _listed_names(spec, tools_by_server)
    problems += _name_problems(agent, names, dynamic_only=True)
    static = {v.name for v in _static_names(spec)}
    visible = {v.name for v in names}
    for i, rule in enumerate(spec.script or []):
        call = rule.call
        if (call is None or rule.client or rule.refused or call in visible
                or not _possible(spec, call, static)):
            continue  # fine, or already reported by static_problems
        if not _from_unreachable(spec, call, tools_by_server):
            problems.append(_not_a_tool(agent, i, call))
    return problems


def _static_names(spec: AgentSpec) -> list[_Visible]:
    names: list[_Visible] = []
    for i, tool in enumerate(spec.tools):
        for j, name in enumerate(tool.allow or []):
            origin = f"MCP server '{tool.mcp}'"
            loc = ("tools", i, "allow", j)
            names.append(_Visible((tool.prefix or "") + name, loc, origin, True))
    for k, handoff in enumerate(spec.handoffs):
        origin = f"the handoff to '{handoff.agent}'"
        names.append(_Visible(handoff_tool_name(handoff.agent), ("handoffs", k, "agent"), origin,
                              True))
    return names


def _listed_names(
    spec: AgentSpec, tools_by_server: Mapping[str, Sequence[ToolInfo]],
) -> list[_Visible]:
    """Names of every tool of each reachable server attached without an allowlist."""
    names: list[_Visible] = []
    for i, tool in enumerate(spec.tools):
        listed = tools_by_server.get(tool.mcp)
        if tool.allow is not None or listed is None:
            continue
        for info in listed:
            if info.name in tool.deny:
                continue
            origin = f"MCP server '{tool.mcp}'"
            names.append(_Visible((tool.prefix or "") + info.name, ("tools", i, "mcp"), origin,
                                  False))
    return names


def _name_problems(agent: LoadedAgent, names: list[_Visible], *, dynamic_only: bool) -> list[
        Problem]:
    problems: list[Problem] = []
    seen: dict[str, _Visible] = {}
    for v in names:
        first = seen.setdefault(v.name, v)
        if dynamic_only and v.static and first.static:
            continue  # both sides known from the YAML: static_problems reported it
        if first is v and not _TOOL_NAME.match(v.name):
            problems.append(agent.problem(v.loc, f"tool name '{v.name}' is not a valid function "
                                          "name (letters, digits, _ or -, at most 64)"))
        elif first is not v:
            line = agent.locate(*first.loc)[0]
            problems.append(agent.problem(v.loc, f"duplicate tool name '{v.name}' ({v.origin}; "
                                          f"also {first.origin} at line {line}); "
                                          "set `prefix:` on one attachment"))
    return problems


def _allowlist_problems(
    agent: LoadedAgent, tools_by_server: Mapping[str, Sequence[ToolInfo]],
) -> list[Problem]:
    problems: list[Problem] = []
    for i, tool in enumerate(agent.spec.tools):
        listed = tools_by_server.get(tool.mcp)
        if tool.allow is None or listed is None:
            continue
        have = sorted(info.name for info in listed)
        shown = ", ".join(have[:_SHOWN_TOOLS]) + (", ..." if len(have) > _SHOWN_TOOLS else "")
        for j, name in enumerate(tool.allow):
            if name not in have:
                problems.append(agent.problem(("tools", i, "allow", j), f"MCP server '{tool.mcp}' "
                                              f"has no tool '{name}' (it has: {shown or 'none'})"))
    return problems


def _possible(spec: AgentSpec, call: str, static: set[str]) -> bool:
    """Whether `call` may name one of the agent's tools, judging from the YAML alone."""
    return call in static or any(
        t.allow is None and call.startswith(t.prefix or "") for t in spec.tools)


def _from_unreachable(
    spec: AgentSpec, call: str, tools_by_server: Mapping[str, Sequence[ToolInfo]],
) -> bool:
    return any(
        t.allow is None and t.mcp not in tools_by_server and call.startswith(t.prefix or "")
        for t in spec.tools)


def _not_a_tool(agent: LoadedAgent, rule: int, call: str) -> Problem:
    return agent.problem(("script", rule, "call"),
                         f"tool '{call}' is not one of this agent's tools")
