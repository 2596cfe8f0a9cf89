"""Open the upstream connection an agent's `model:` names (design §2 step 1, §4.4)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from orchestrator.agents.spec import AgentSpec
from orchestrator.config import Settings
from orchestrator.errors import UpstreamError
from orchestrator.upstream.base import Upstream
from orchestrator.upstream.openai import OpenAIUpstream, realtime_url
from orchestrator.upstream.scripted import ScriptedUpstream


async def open_upstream(
    agent: AgentSpec, *, connect_timeout_s: float = 10.0, env: Mapping[str, str] | None = None,
    ping_interval_s: float | None = 20.0, ping_timeout_s: float | None = 20.0,
) -> Upstream:
    """A connected upstream for `agent`; UpstreamError if it cannot be opened."""
    if agent.provider == "scripted":
        return ScriptedUpstream(agent.script or [])
    if agent.provider == "openai":
        env = os.environ if env is None else env
        key = agent.api_key.get_secret_value() if agent.api_key is not None else None
        key = key or env.get("OPENAI_API_KEY")
        if not key:
            raise UpstreamError(
                f"agent {agent.name!r} uses {agent.model} but has no API key: set "
                "OPENAI_API_KEY or give the agent an `api_key:`")
        url = realtime_url(agent.base_url, agent.upstream_model)
        return await OpenAIUpstream.connect(url, key, timeout_s=connect_timeout_s,
                                            ping_interval_s=ping_interval_s,
                                            ping_timeout_s=ping_timeout_s)
    raise UpstreamError(f"agent {agent.name!r}: unknown provider {agent.provider!r}")


async def open_configured(agent: AgentSpec, settings: Settings) -> Upstream:
    """`open_upstream` with the service's connect timeout and keepalive settings."""
    return await open_upstream(
        agent, connect_timeout_s=settings.upstream_connect_timeout_s,
        ping_interval_s=settings.upstream_ping_interval_s,
        ping_timeout_s=settings.upstream_ping_timeout_s)
