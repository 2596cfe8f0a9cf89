"""`/admin/mcp-servers`: health and tools of the pooled servers; attach one at run time
(persisted in `mcp_servers`, restored at start) and detach it (in-flight calls finish first).

A definition attached at run time is stored as given, so it may hold secrets only as `${VAR}`
references: every header and environment value must contain one, and is expanded from the
process environment when the server is launched (on this and on every other replica).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator import redaction
from orchestrator.admin.deps import ServicesDep, SessionDep
from orchestrator.agents.document import DocumentError, parse_document
from orchestrator.agents.spec import McpServerSpec
from orchestrator.store.tables import McpServer
from orchestrator.tools.mcp_pool import McpPool
from orchestrator.tools.types import ServerStatus

log = logging.getLogger(__name__)
router = APIRouter(prefix="/mcp-servers")

_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}")


class McpServerRead(BaseModel):
    """Health of one pooled MCP server."""

    name: str
    transport: str
    connected: bool
    tool_count: int
    restarts: int
    last_error: str | None
    attached_at_runtime: bool


class McpServerList(BaseModel):
    """Every pooled MCP server."""

    data: list[McpServerRead]


class McpToolRead(BaseModel):
    """One tool a server offers."""

    name: str
    description: str
    input_schema: dict[str, Any]


class McpToolList(BaseModel):
    """The tools of one server."""

    data: list[McpToolRead]


class McpServerCreate(BaseModel):
    """Body of `POST /admin/mcp-servers`: a name and an `mcp_servers.yaml` entry."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]+$", max_length=100)]
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict[str, str])
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict[str, str])
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 20.0

    def definition(self) -> dict[str, Any]:
        """The server entry as stored (references unexpanded)."""
        return self.model_dump(exclude={"name"}, exclude_none=True)


def literal_secrets(body: McpServerCreate) -> list[str]:
    """Header and env entries whose value holds no `${VAR}` reference."""
    fields = [("headers", body.headers), ("env", body.env)]
    return [f"{kind}.{key}" for kind, values in fields for key, value in values.items()
            if not _REFERENCE.search(value)]


def expand(name: str, definition: dict[str, Any]) -> McpServerSpec:
    """The stored definition with its `${VAR}` references expanded from the environment."""
    text = json.dumps(definition)
    document = parse_document(text.encode(), f"<mcp server {name}>", dict(os.environ))
    if document.problems:
        raise ValueError("; ".join(str(p) for _, p in document.problems))
    spec = McpServerSpec.model_validate(document.data)
    fields = [*(v.get_secret_value() for v in spec.headers.values()), *spec.env.values()]
    redaction.REDACTOR.add(redaction.expanded_secrets([text], os.environ, fields))
    return spec


async def _runtime_names(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(McpServer.name))).all())


@router.get("", response_model=McpServerList)
async def list_servers(services: ServicesDep, session: SessionDep) -> McpServerList:
    """Every pooled server with its health."""
    runtime = await _runtime_names(session)
    return McpServerList(data=[
        _read(s, s.name in runtime) for s in sorted(services.pool.status(), key=lambda s: s.name)
    ])


def _read(health: ServerStatus, runtime: bool) -> McpServerRead:
    return McpServerRead(
        name=health.name, transport=health.transport, connected=health.connected,
        tool_count=health.tool_count, restarts=health.restarts, last_error=health.last_error,
        attached_at_runtime=runtime,
    )


@router.get("/{name}/tools", response_model=McpToolList)
async def list_tools(name: str, services: ServicesDep) -> McpToolList:
    """The tools a server offers (its cached list)."""
    if not services.pool.has_server(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no MCP server {name!r}")
    return McpToolList(data=[
        McpToolRead(name=t.name, description=t.description, input_schema=t.input_schema)
        for t in services.pool.tools(name)
    ])


@router.post("", response_model=McpServerRead, status_code=status.HTTP_201_CREATED)
async def attach_server(
    body: McpServerCreate, services: ServicesDep, session: SessionDep
) -> McpServerRead:
    """Attach a server now and on every later start; secrets only as `${VAR}` references."""
    literal = literal_secrets(body)
    if literal:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "values must be ${VAR} references, not literals: " + ", ".join(literal))
    if services.pool.has_server(body.name):
        raise HTTPException(status.HTTP_409_CONFLICT, f"MCP server {body.name!r} exists")
    try:
        spec = expand(body.name, body.definition())
    except ValidationError as exc:
        # Only the messages: an input value may hold an expanded secret.
        messages = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, messages) from None
    except (DocumentError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    session.add(McpServer(name=body.name, definition=body.definition()))
    await session.commit()
    await services.pool.add_server(body.name, spec)
    return _read(next(s for s in services.pool.status() if s.name == body.name), True)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def detach_server(name: str, services: ServicesDep, session: SessionDep) -> None:
    """Detach a server: calls in flight finish first (bounded), new ones fail."""
    if not services.pool.has_server(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no MCP server {name!r}")
    await session.execute(delete(McpServer).where(McpServer.name == name))
    await session.commit()
    await services.pool.remove_server(name)


async def restore_attached(sessionmaker: async_sessionmaker[AsyncSession], pool: McpPool) -> None:
    """Attach the servers stored by `POST /admin/mcp-servers` (at process start)."""
    async with sessionmaker() as session:
        rows = (await session.scalars(select(McpServer))).all()
    for row in rows:
        if pool.has_server(row.name):
            continue
        try:
            await pool.add_server(row.name, expand(row.name, dict(row.definition)))
        except (DocumentError, ValidationError, ValueError) as exc:
            log.error("attached MCP server %r cannot start: %s", row.name, type(exc).__name__)
