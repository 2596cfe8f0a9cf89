"""Session configuration: what an agent sends upstream, and how a client's
`session.update` is merged under the agent's policy (design §2 step 2)."""

from __future__ import annotations

import copy
from typing import Any

from orchestrator.agents.spec import AgentSpec
from orchestrator.errors import ProtocolError
from orchestrator.realtime.protocol import JsonObject


def agent_session(agent: AgentSpec, server_tools: list[JsonObject], client_tools: list[JsonObject],
                  *, voice: bool = True) -> JsonObject:
    """The `session` object of the `session.update` that configures the upstream for `agent`
    (without its voice when `voice` is false: see `voice_update`)."""
    session: JsonObject = {
        "type": "realtime",
        "instructions": agent.instructions,
        "tools": [*server_tools, *client_tools],
        "tool_choice": "auto",
    }
    if agent.output_modalities:
        session["output_modalities"] = list(agent.output_modalities)
    audio: dict[str, Any] = {}
    if agent.voice and voice:
        audio["output"] = {"voice": agent.voice}
    if agent.turn_detection is not None:
        detection = agent.turn_detection
        audio["input"] = {
            "turn_detection": None if detection.type == "none"
            else detection.model_dump(exclude_none=True)
        }
    if audio:
        session["audio"] = audio
    return session


def merge_client_update(
    agent: AgentSpec, update: JsonObject, server_tools: list[JsonObject], event_id: str | None,
) -> tuple[JsonObject, list[JsonObject] | None]:
    """The session object to send upstream for a client's `session.update`.

    Returns it with the client's own tools (None when the update does not touch tools).
    The agent's instructions and tools survive unless its `client_policy` allows otherwise.
    """
    session = update.get("session")
    if not isinstance(session, dict):
        raise ProtocolError("`session` must be an object.", code="invalid_value",
                            event_id=event_id, param="session")
    merged: JsonObject = copy.deepcopy(session)  # type: ignore[arg-type]
    kind = merged.get("type")
    if kind != "realtime":
        raise ProtocolError(
            "This endpoint serves realtime sessions: `session.type` must be \"realtime\".",
            code="missing_required_parameter" if kind is None else "invalid_value",
            event_id=event_id, param="session.type",
        )
    merged.pop("model", None)
    if "instructions" in merged and not agent.client_policy.instructions:
        del merged["instructions"]
    if merged.get("instructions") is None:
        merged.pop("instructions", None)
    client_tools: list[JsonObject] | None = None
    if "tools" in merged:
        client_tools = _client_tools(merged["tools"], server_tools, event_id)
        keep_agent = not agent.client_policy.remove_tools or bool(client_tools)
        merged["tools"] = [*(server_tools if keep_agent else []), *client_tools]
    return merged, client_tools


def _client_tools(tools: object, server_tools: list[JsonObject], event_id: str | None,
                  ) -> list[JsonObject]:
    if not isinstance(tools, list):
        raise ProtocolError("`session.tools` must be an array.", code="invalid_value",
                            event_id=event_id, param="session.tools")
    taken = {t["name"] for t in server_tools}
    result: list[JsonObject] = []
    for index, tool in enumerate(tools):  # type: ignore[misc]
        if not isinstance(tool, dict):
            raise ProtocolError("Each tool must be an object.", code="invalid_value",
                                event_id=event_id, param=f"session.tools[{index}]")
        name = tool.get("name")  # type: ignore[union-attr]
        if "name" in tool and not isinstance(name, str):  # type: ignore[operator]
            raise ProtocolError("A tool's `name` must be a string.", code="invalid_value",
                                event_id=event_id, param=f"session.tools[{index}].name")
        if tool.get("type") == "function" and name in taken:  # type: ignore[union-attr]
            raise ProtocolError(
                f"Tool name {name!r} is already provided by the agent; rename the client tool.",
                code="invalid_value", event_id=event_id, param=f"session.tools[{index}].name",
            )
        result.append(tool)  # type: ignore[arg-type]
    return result


def client_view(session: JsonObject, server_tool_names: frozenset[str]) -> JsonObject:
    """The session as shown to the client: server-run function tools are left out."""
    shown = dict(session)
    tools = shown.get("tools")
    if isinstance(tools, list):
        shown["tools"] = [
            t for t in tools  # type: ignore[misc]
            if not (isinstance(t, dict) and t.get("type") == "function"  # type: ignore[union-attr]
                    and t.get("name") in server_tool_names)  # type: ignore[union-attr]
        ]
    return shown


def voice_update(agent: AgentSpec) -> JsonObject | None:
    """A session object that changes only the output voice, if the agent has one (sent on its
    own: the upstream refuses a voice change once audio was played)."""
    if not agent.voice:
        return None
    return {"type": "realtime", "audio": {"output": {"voice": agent.voice}}}
