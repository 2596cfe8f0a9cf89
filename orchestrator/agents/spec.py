"""Pydantic models of the agent YAML files and `mcp_servers.yaml` (design §4.4, §4.5)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9-]+$"
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolAttachment(_Strict):
    """Tools of one MCP server made available to an agent."""

    mcp: str = Field(description="Name of a server in mcp_servers.yaml")
    allow: list[str] | None = Field(default=None, description="Allowlist; default: all tools")
    prefix: str | None = Field(
        default=None, pattern=r"^[a-zA-Z0-9_-]*$",
        description="Prepended to each tool name as the model sees it",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=3600)
    deny: list[str] = Field(
        default_factory=list[str], description="Tools never shown to nor run for the model")
    require_approval: list[str] | str = Field(
        default_factory=list[str],
        description="Tools (or `always`: all) the client must approve before each call",
    )
    approval_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    filler: str | None = Field(
        default=None, min_length=1,
        description="Said by the model when a call runs longer than `filler_after_s`",
    )
    filler_after_s: float = Field(default=2.0, gt=0, le=3600)

    @field_validator("require_approval")
    @classmethod
    def _approval_form(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str) and value != "always":
            raise ValueError("must be a list of tool names or `always`")
        return value

    @model_validator(mode="after")
    def _allow_deny_disjoint(self) -> ToolAttachment:
        both = sorted(set(self.allow or ()) & set(self.deny))
        if both:
            raise ValueError(f"tools both allowed and denied: {', '.join(both)}")
        return self

    def needs_approval(self, tool: str) -> bool:
        """Whether a call of `tool` (its name on the server) waits for the client's approval."""
        return self.require_approval == "always" or tool in self.require_approval


class HandoffSpec(_Strict):
    """Another agent this agent may transfer the conversation to."""

    agent: str = Field(pattern=NAME_PATTERN)
    description: str = ""


class ScriptRule(_Strict):
    """One rule of the scripted (sandbox) model; the first matching rule answers a user turn."""

    when: str | None = Field(
        default=None, description="Case-insensitive regex searched in the user text")
    call: str | None = Field(default=None, description="A tool name as the model sees it")
    arguments: dict[str, Any] = Field(default_factory=dict[str, Any])
    say: str | None = Field(default=None, description="Reply text; {output} = the tool's output")
    handoff: str | None = Field(default=None, pattern=NAME_PATTERN)
    client: bool = Field(
        default=False,
        description="`call` names a tool the client declares itself (answered by the client)",
    )
    refused: bool = Field(
        default=False,
        description="`call` names a tool the agent may not run, on purpose (exercises the "
                    "refusal); the load-time check that the agent has it is skipped",
    )
    raw_arguments: str | None = Field(
        default=None, description="The exact arguments text to send (may be invalid JSON)")
    call_id: str | None = Field(
        default=None, description="A fixed call_id (repeat the rule to duplicate a call)")

    @field_validator("when")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_action(self) -> ScriptRule:
        if self.call is None and self.say is None and self.handoff is None:
            raise ValueError("a rule needs at least one of `call`, `say` or `handoff`")
        if self.call is not None and self.handoff is not None:
            raise ValueError("a rule cannot both `call` a tool and `handoff`")
        if self.raw_arguments is not None and self.arguments:
            raise ValueError("give `arguments` or `raw_arguments`, not both")
        return self


class TurnDetection(_Strict):
    """Turn detection passed upstream (`type: none` means manual turns)."""

    type: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    threshold: float | None = Field(default=None, ge=0, le=1)
    prefix_padding_ms: int | None = Field(default=None, ge=0)
    silence_duration_ms: int | None = Field(default=None, ge=0)
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None


class ClientPolicy(_Strict):
    """What a client's own `session.update` may change."""

    instructions: bool = Field(default=False, description="Client may replace the instructions")
    remove_tools: bool = Field(default=False, description="Client may drop the agent's tools")


class Reconnect(_Strict):
    """Re-establishing a lost upstream: a new model session seeded with the conversation."""

    attempts: int = Field(default=2, ge=1, le=10, description="Connection attempts per loss")
    backoff_s: float = Field(
        default=0.5, ge=0, le=60,
        description="Wait before the first attempt; doubled before each further one")


class AgentSpec(_Strict):
    """One agent, as written in `agents/<name>.yaml`."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    model: str = Field(description="provider/model, or `scripted`")
    base_url: str | None = None
    api_key: SecretStr | None = None
    voice: str | None = None
    instructions: str = ""
    output_modalities: list[Literal["text", "audio"]] | None = None
    turn_detection: TurnDetection | None = None
    tools: list[ToolAttachment] = Field(default_factory=list[ToolAttachment])
    handoffs: list[HandoffSpec] = Field(default_factory=list[HandoffSpec])
    script: list[ScriptRule] | None = None
    tool_events: Literal["mcp", "none"] = "mcp"
    client_policy: ClientPolicy = Field(default_factory=ClientPolicy)
    reconnect: Reconnect | None = Field(
        default=None, description="Re-establish a lost upstream (default: the session ends)")

    @field_validator("model")
    @classmethod
    def _model_form(cls, value: str) -> str:
        if value == "scripted":
            return value
        provider, sep, model = value.partition("/")
        if not sep or not model:
            raise ValueError("must be `provider/model` (e.g. openai/gpt-realtime) or `scripted`")
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
        return value

    @model_validator(mode="after")
    def _script_only_for_scripted(self) -> AgentSpec:
        if self.script is not None and self.model != "scripted":
            raise ValueError("`script` is only used with `model: scripted`")
        return self

    @property
    def provider(self) -> str:
        """`scripted` or the part before the slash."""
        return "scripted" if self.model == "scripted" else self.model.partition("/")[0]

    @property
    def upstream_model(self) -> str:
        """The model name sent upstream (the part after the slash)."""
        return "scripted" if self.model == "scripted" else self.model.partition("/")[2]


PROVIDERS = ("openai",)


class McpServerSpec(_Strict):
    """One MCP server: stdio (`command`) or streamable HTTP (`url`)."""

    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict[str, str])
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict[str, SecretStr])
    connect_timeout_s: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of `command` (stdio) or `url` (streamable HTTP)")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError("`url` must start with http:// or https://")
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        """Which transport this server uses."""
        return "stdio" if self.command is not None else "http"


class McpServersFile(_Strict):
    """The top level of `mcp_servers.yaml`."""

    mcp_servers: dict[str, McpServerSpec] = Field(default_factory=dict[str, McpServerSpec])

    @field_validator("mcp_servers")
    @classmethod
    def _names(cls, value: dict[str, McpServerSpec]) -> dict[str, McpServerSpec]:
        for name in value:
            if not re.match(r"^[a-zA-Z0-9_-]+$", name):
                raise ValueError(f"server name {name!r} must match [a-zA-Z0-9_-]+")
        return value


def handoff_tool_name(agent: str) -> str:
    """The function name a handoff has for the model: `transfer_to_<agent>`."""
    return "transfer_to_" + agent.replace("-", "_")
