"""The composition root: `create_app(settings)` and the lifespan that builds and stops the
registry, the MCP pool, the database and the recorder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import async_sessionmaker

from orchestrator import redaction
from orchestrator.admin.client_secrets import router as client_secrets_router
from orchestrator.admin.mcp_servers import restore_attached
from orchestrator.admin.routes import router as admin_router
from orchestrator.agents.loader import check_tools
from orchestrator.agents.registry import Registry
from orchestrator.config import Settings
from orchestrator.metrics import MeteredRecorder, Metrics
from orchestrator.metrics import router as metrics_router
from orchestrator.ratelimit import AuthThrottle
from orchestrator.realtime.admission import Admission, Stoppable, drain
from orchestrator.realtime.gateway import RealtimeIO
from orchestrator.realtime.gateway import router as realtime_router
from orchestrator.services import Services
from orchestrator.store.db import create_engine, upgrade
from orchestrator.store.journal import Journal
from orchestrator.store.recorder import SqlRecorder
from orchestrator.store.versions import ensure_agent_version
from orchestrator.tools.mcp_pool import McpPool

log = logging.getLogger("orchestrator")


def admin_token(settings: Settings) -> str:
    """The configured admin token, or the one generated once and kept under `var/`."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = Path(settings.var_dir) / "admin_token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "orch-admin-" + secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def register_secrets(registry: Registry) -> None:
    """Mask in the logs what the agent files expanded into headers, environments and keys."""
    redaction.register_agent_secrets(
        registry.agents_dir, registry.servers.values(),
        [a.spec.api_key for a in registry.agents.values()], os.environ)


def settings_secrets(settings: Settings) -> list[str]:
    """The secrets in the settings: the admin token, the API keys, a database password."""
    from sqlalchemy.engine import make_url

    values = [k.get_secret_value() for k in settings.api_keys]
    if settings.admin_token is not None:
        values.append(settings.admin_token.get_secret_value())
    with contextlib.suppress(Exception):  # a URL sqlalchemy cannot parse fails later, clearly
        values.append(make_url(settings.database_url).password or "")
    return values


async def start_services(settings: Settings, metrics: Metrics | None = None) -> Services:
    """Build everything a process serves with; problems in agent files are logged, not fatal."""
    redaction.install(settings_secrets(settings))
    registry = Registry(settings.agents_dir)
    for problem in registry.load():
        log.error("%s", problem)
    register_secrets(registry)
    url = settings.resolved_database_url()
    await upgrade(url)
    engine = create_engine(url)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    for name, loaded in registry.agents.items():
        version = await ensure_agent_version(sessionmaker, name, loaded.sha256, loaded.definition)
        registry.set_version(name, loaded.sha256, version)
    pool = McpPool(registry.servers, connect_timeout_s=settings.mcp_connect_timeout_s,
                   default_call_timeout_s=settings.mcp_default_call_timeout_s,
                   ping_interval_s=settings.mcp_ping_interval_s,
                   ping_timeout_s=settings.mcp_ping_timeout_s)
    await pool.start()
    await restore_attached(sessionmaker, pool)
    for status in pool.status():
        if not status.connected:
            log.error("MCP server %r is not available: %s", status.name, status.last_error)
    tools = {s.name: pool.tools(s.name) for s in pool.status() if s.connected}
    for problem in check_tools(registry.agent_set, tools):
        log.error("%s", problem)
    journal = Journal(settings.recorder_journal_path
                      or Path(settings.var_dir) / "recorder-journal.jsonl")
    options: dict[str, Any] = {
        "batch_size": settings.recorder_batch_size,
        "flush_interval_s": settings.recorder_flush_interval_s,
        "close_grace_s": settings.recorder_close_grace_s,
        "journal": journal, "max_queue": settings.recorder_max_queue}
    recorder = SqlRecorder(engine, **options) if metrics is None \
        else MeteredRecorder(engine, metrics=metrics, **options)
    await recorder.start()
    admission = Admission(max_sessions=settings.max_sessions,
                          max_loop_lag_ms=settings.max_loop_lag_ms,
                          retry_after_s=settings.admission_retry_after_s)
    admission.start()
    token = admin_token(settings)
    redaction.install([token])
    return Services(
        settings=settings, registry=registry, pool=pool, engine=engine,
        sessionmaker=sessionmaker, recorder=recorder, admin_token=token,
        api_keys=frozenset(k.get_secret_value() for k in settings.api_keys),
        admission=admission,
        throttle=AuthThrottle(max_failures=settings.auth_max_failures,
                              window_s=settings.auth_failure_window_s,
                              max_addresses=settings.auth_throttle_max_addresses),
    )


async def drain_sessions(services: Services) -> bool:
    """Before the server closes its connections: refuse new sessions, end the live ones with
    a closing `error` event (recorded `shutdown`), within the shutdown grace."""
    live = [cast(Stoppable, session) for session in services.live_sessions]
    return await drain(services.admission, live, services.live_sessions.wait_empty,
                       services.settings.shutdown_grace_s)


async def stop_services(services: Services) -> None:
    """Drain the recorder, stop MCP servers, close the database."""
    try:
        await services.admission.aclose()
        await services.recorder.aclose()
    finally:
        try:
            await services.pool.aclose()
        finally:
            await services.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app for `settings` (read from the environment when omitted)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncGenerator[None]:
        services = await start_services(settings, app.state.metrics)
        app.state.services = services
        app.state.metrics.track(lambda: len(services.live_sessions),
                                lambda: services.recorder.queue_depth)
        app.state.ready.set()
        try:
            yield
        finally:
            await stop_services(services)

    app = FastAPI(title="orchestrator", version="0.1.0", lifespan=lifespan)
    app.state.ready = asyncio.Event()  # set once the lifespan has started everything
    app.include_router(realtime_router)
    app.include_router(admin_router)
    app.include_router(client_secrets_router)
    app.include_router(metrics_router)
    app.state.metrics = Metrics()
    app.add_middleware(RealtimeIO, tally=app.state.metrics.frames)

    @app.get("/healthz", include_in_schema=True)
    async def healthz() -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        services: Services = app.state.services
        servers = {s.name: s.connected for s in services.pool.status()}
        return JSONResponse({
            "status": "ok", "agents": sorted(services.registry.names()),
            "mcp_servers": servers, "live_sessions": len(services.live_sessions),
            "recorder_queue": services.recorder.queue_depth,
        })

    return app
