"""`orchestrator validate`: every static check, plus (optionally) the MCP servers' tool lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.agents.loader import AgentSet, check_tools, load_agents, sort_problems
from orchestrator.agents.spec import McpServerSpec
from orchestrator.errors import Problem
from orchestrator.tools.mcp_pool import McpPool

_DEFAULT_CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What `validate` found: the problems, sorted, and how much was checked."""

    problems: list[Problem]
    agents: int
    servers: int


async def validate_paths(
    paths: Sequence[Path], *, check_mcp: bool, connect_timeout_s: float = 20,
) -> list[Problem]:
    """All problems of the agent definitions at `paths`, sorted by path and position."""
    report = await validate_report(paths, check_mcp=check_mcp, connect_timeout_s=connect_timeout_s)
    return report.problems


async def validate_report(
    paths: Sequence[Path], *, check_mcp: bool, connect_timeout_s: float = 20,
) -> ValidationReport:
    """Like `validate_paths`, with the number of valid agents and servers for a summary."""
    problems: list[Problem] = []
    agents = servers = 0
    for group in _groups(paths):
        agent_set, found = load_agents(group)
        problems += found
        if check_mcp and agent_set.servers:
            problems += await _check_servers(agent_set, connect_timeout_s)
        agents += len(agent_set.agents)
        servers += len(agent_set.servers)
    return ValidationReport(sort_problems(problems), agents, servers)


def _groups(paths: Sequence[Path]) -> list[list[Path]]:
    """Each directory is validated on its own; loose files together (one mcp_servers.yaml)."""
    folders = [[p] for p in paths if p.is_dir()]
    files = [p for p in paths if not p.is_dir()]
    return folders + ([files] if files else [])


async def _check_servers(agent_set: AgentSet, connect_timeout_s: float) -> list[Problem]:
    """Start every server, report those that fail, then check the agents against their tools."""
    pool = McpPool(agent_set.servers, connect_timeout_s=connect_timeout_s,
                   default_call_timeout_s=_DEFAULT_CALL_TIMEOUT_S)
    problems: list[Problem] = []
    try:
        await pool.start()
        statuses = pool.status()
        tools = {s.name: pool.tools(s.name) for s in statuses if s.connected}
    finally:
        await pool.aclose()
    for status in statuses:
        if not status.connected:
            spec = agent_set.servers[status.name]
            error = _redact(status.last_error or "unknown error", spec)
            line, column = agent_set.locate_server(status.name)
            problems.append(Problem(str(agent_set.servers_path), line, column,
                                    f"could not start MCP server '{status.name}': {error}"))
    return problems + check_tools(agent_set, tools)


def _redact(message: str, spec: McpServerSpec) -> str:
    """Mask header and environment values: an error text may quote them."""
    secrets = [v.get_secret_value() for v in spec.headers.values()] + list(spec.env.values())
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return message
