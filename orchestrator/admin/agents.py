"""`/admin/agents`: the loaded agents, their resolved tools and handoffs, their versions, and
hot reload from disk."""

from __future__ import annotations

import logging
import os
from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel
from sqlalchemy import select

from orchestrator import redaction
from orchestrator.admin.deps import ServicesDep, SessionDep
from orchestrator.agents.loader import LoadedAgent, check_tools
from orchestrator.agents.spec import ToolAttachment, handoff_tool_name
from orchestrator.services import Services
from orchestrator.store.tables import AgentVersion
from orchestrator.store.versions import ensure_agent_version

log = logging.getLogger(__name__)
router = APIRouter(prefix="/agents")


class AttachmentRead(BaseModel):
    """One `tools:` entry of an agent and the tools it resolves to right now."""

    mcp: str
    allow: list[str] | None
    prefix: str | None
    timeout_s: float
    connected: bool
    tools: list[str]  # as the model sees them (prefix included)
    missing: list[str]  # allowed but not offered by the server


class HandoffRead(BaseModel):
    """A handoff target, with the function name the model sees."""

    agent: str
    description: str
    tool: str


class AgentRead(BaseModel):
    """An agent as listed."""

    name: str
    description: str
    model: str
    version: int | None
    sha256: str
    path: str
    tools: list[str]
    handoffs: list[str]


class AgentList(BaseModel):
    """Every current agent, by name."""

    data: list[AgentRead]


class AgentDetailRead(AgentRead):
    """An agent with its instructions, resolved tool attachments and handoffs."""

    voice: str | None
    instructions: str
    tool_events: str
    attachments: list[AttachmentRead]
    handoff_targets: list[HandoffRead]


class AgentVersionRead(BaseModel):
    """One distinct definition of an agent ever loaded."""

    version: int
    sha256: str
    created_at: datetime
    current: bool
    definition: str


class AgentVersionList(BaseModel):
    """Every version of one agent, newest first."""

    data: list[AgentVersionRead]


class ReloadRead(BaseModel):
    """What a reload did: problems found (those agents keep their previous version)."""

    agents: list[AgentRead]
    added: list[str]
    changed: list[str]
    removed: list[str]
    problems: list[str]


def _attachment(services: Services, tool: ToolAttachment) -> AttachmentRead:
    listed = [t.name for t in services.pool.tools(tool.mcp)]
    visible = [n for n in listed if tool.allow is None or n in tool.allow]
    connected = any(s.connected for s in services.pool.status() if s.name == tool.mcp)
    return AttachmentRead(
        mcp=tool.mcp, allow=tool.allow, prefix=tool.prefix, timeout_s=tool.timeout_s,
        connected=connected, tools=[(tool.prefix or "") + n for n in visible],
        missing=[n for n in tool.allow or [] if n not in listed],
    )


def _agent(services: Services, loaded: LoadedAgent) -> AgentRead:
    spec = loaded.spec
    tools = [n for t in spec.tools for n in _attachment(services, t).tools]
    return AgentRead(
        name=spec.name, description=spec.description, model=spec.model,
        version=services.registry.version(spec.name), sha256=loaded.sha256,
        path=str(loaded.path), tools=tools, handoffs=[h.agent for h in spec.handoffs],
    )


@router.get("", response_model=AgentList)
async def list_agents(services: ServicesDep) -> AgentList:
    """The agents new sessions get, by name."""
    agents = sorted(services.registry.agents.items())
    return AgentList(data=[_agent(services, a) for _, a in agents])


def _loaded(services: Services, name: str) -> LoadedAgent:
    loaded = services.registry.get(name)
    if loaded is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {name!r}")
    return loaded


@router.get("/{name}", response_model=AgentDetailRead)
async def get_agent(name: str, services: ServicesDep) -> AgentDetailRead:
    """One agent: tools resolved per attachment (as the model sees them) and handoffs."""
    loaded = _loaded(services, name)
    spec = loaded.spec
    return AgentDetailRead(
        **_agent(services, loaded).model_dump(), voice=spec.voice,
        instructions=spec.instructions, tool_events=spec.tool_events,
        attachments=[_attachment(services, t) for t in spec.tools],
        handoff_targets=[
            HandoffRead(agent=h.agent, description=h.description, tool=handoff_tool_name(h.agent))
            for h in spec.handoffs
        ],
    )


@router.get("/{name}/versions", response_model=AgentVersionList)
async def list_versions(name: str, services: ServicesDep, session: SessionDep) -> AgentVersionList:
    """Every definition of the agent ever loaded, newest first; conversations name theirs."""
    rows = (await session.scalars(
        select(AgentVersion).where(AgentVersion.name == name)
        .order_by(AgentVersion.version.desc()))).all()
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {name!r}")
    current = services.registry.version(name)
    return AgentVersionList(data=[
        AgentVersionRead(version=r.version, sha256=r.sha256, created_at=r.created_at,
                         current=r.version == current, definition=r.definition)
        for r in rows
    ])


@router.post("/reload", response_model=ReloadRead)
async def reload_agents(services: ServicesDep) -> ReloadRead:
    """Read the agents directory again. Live sessions keep the definition they started with;
    an agent whose file is now invalid keeps its previous version (see `problems`)."""
    before = {name: a.sha256 for name, a in services.registry.agents.items()}
    problems = [str(p) for p in services.registry.reload()]
    registry = services.registry
    # New `${VAR}` values are masked in the logs from now on.
    redaction.register_agent_secrets(
        registry.agents_dir, registry.servers.values(),
        [a.spec.api_key for a in registry.agents.values()], os.environ)
    for name, loaded in registry.agents.items():
        version = await ensure_agent_version(
            services.sessionmaker, name, loaded.sha256, loaded.definition)
        registry.set_version(name, loaded.sha256, version)
    for name, spec in registry.servers.items():
        if not services.pool.has_server(name):  # a server new in mcp_servers.yaml
            await services.pool.add_server(name, spec)
    tools = {s.name: services.pool.tools(s.name) for s in services.pool.status() if s.connected}
    problems += [str(p) for p in check_tools(registry.agent_set, tools)]
    for problem in problems:
        log.error("%s", problem)
    after = {name: a.sha256 for name, a in registry.agents.items()}
    return ReloadRead(
        agents=[_agent(services, a) for _, a in sorted(registry.agents.items())],
        added=sorted(after.keys() - before.keys()),
        changed=sorted(n for n in after.keys() & before.keys() if after[n] != before[n]),
        removed=sorted(before.keys() - after.keys()), problems=problems,
    )
