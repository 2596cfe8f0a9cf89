"""The current set of agents and MCP server definitions of one agents directory.

A reload swaps in a new `AgentSet` in one assignment. Sessions hold their own `LoadedAgent`,
so a reload never changes a live conversation; only new sessions and handoffs see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from orchestrator.agents.loader import AgentSet, LoadedAgent, load_agents
from orchestrator.agents.spec import McpServerSpec
from orchestrator.errors import Problem


class Registry:
    """Agents loaded from `agents_dir`, with their database versions once assigned."""

    def __init__(self, agents_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.agents_dir = agents_dir
        self._env = env
        self._set = AgentSet(agents={}, servers={}, servers_path=None)
        self._versions: dict[str, tuple[str, int]] = {}

    def load(self) -> list[Problem]:
        """Replace everything with what the directory holds now; returns its problems."""
        self._set, problems = load_agents(self.agents_dir, self._env)
        return problems

    def reload(self) -> list[Problem]:
        """Load again, keeping the previous definition of any agent or server now invalid."""
        new, problems = load_agents(self.agents_dir, self._env)
        old = self._set
        agents = dict(new.agents)
        for name, agent in old.agents.items():
            # Still on disk but no longer valid: serve the last good definition meanwhile.
            if name not in agents and agent.path.exists():
                agents[name] = agent
        servers = dict(new.servers)
        for name, server in old.servers.items():
            if name not in servers and (new.declared_servers is None or name in
                                        new.declared_servers):
                servers[name] = server
        self._set = AgentSet(
            agents=agents, servers=servers, servers_path=new.servers_path,
            declared_servers=new.declared_servers, server_positions=new.server_positions,
        )
        return problems

    @property
    def agent_set(self) -> AgentSet:
        """The whole current set (agents, servers, where they were read)."""
        return self._set

    @property
    def agents(self) -> Mapping[str, LoadedAgent]:
        """The current agents by name."""
        return self._set.agents

    @property
    def servers(self) -> Mapping[str, McpServerSpec]:
        """The current MCP server definitions by name."""
        return self._set.servers

    def get(self, name: str) -> LoadedAgent | None:
        """The current definition of an agent, or None."""
        return self._set.agents.get(name)

    def names(self) -> list[str]:
        """Names of the current agents, sorted."""
        return sorted(self._set.agents)

    def set_version(self, name: str, sha256: str, version: int) -> None:
        """Remember the version the database gave to the definition of `name` with `sha256`."""
        self._versions[name] = (sha256, version)

    def version(self, name: str) -> int | None:
        """The version of the current definition of `name`; None if not (yet) assigned."""
        agent = self._set.agents.get(name)
        known = self._versions.get(name)
        if agent is None or known is None or known[0] != agent.sha256:
            return None
        return known[1]
