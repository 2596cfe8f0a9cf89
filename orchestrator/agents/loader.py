"""Agent YAML files and `mcp_servers.yaml` → validated specs, or `path:line:column` problems.

`load_agents` never raises for bad input: every problem it finds is returned with the position
of the offending key or value, and the agents that are valid are returned beside them. Checks
that need the MCP servers' tool lists live in `check_tools` (run by `orchestrator validate` and
whenever the pool has listed the tools).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from orchestrator.agents.document import (
    Document,
    DocumentError,
    Loc,
    Positions,
    format_loc,
    parse_document,
)
from orchestrator.agents.spec import AgentSpec, McpServersFile, McpServerSpec
from orchestrator.agents.toolcheck import static_problems, tool_problems
from orchestrator.errors import Problem
from orchestrator.tools.types import ToolInfo

SERVERS_FILE = "mcp_servers.yaml"
_SERVERS_NAMES = frozenset({SERVERS_FILE, "mcp_servers.yml"})
_AGENT_SUFFIXES = (".yaml", ".yml")
_SERVER_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class LoadedAgent:
    """A valid agent with where it came from; `definition` is the raw text (secrets unexpanded)."""

    spec: AgentSpec
    path: Path
    sha256: str
    definition: str
    positions: Positions = field(default_factory=Positions, repr=False, compare=False)

    def locate(self, *loc: str | int) -> tuple[int, int]:
        """1-based (line, column) of a field path such as `("tools", 0, "allow", 1)`."""
        return self.positions.locate(loc)

    def problem(self, loc: Loc, message: str) -> Problem:
        """A problem at the position of `loc` in this agent's file."""
        line, column = self.locate(*loc)
        return Problem(str(self.path), line, column, message)


@dataclass(frozen=True, slots=True)
class AgentSet:
    """The valid agents of one directory (or file list) and the MCP servers they may use."""

    agents: dict[str, LoadedAgent]
    servers: dict[str, McpServerSpec]
    servers_path: Path | None
    # Names written in mcp_servers.yaml, valid or not (None: the file could not be read at all);
    # lets a reload keep the previous definition of a server whose new entry is invalid.
    declared_servers: frozenset[str] | None = None
    server_positions: Positions = field(default_factory=Positions, repr=False, compare=False)

    def locate_server(self, name: str) -> tuple[int, int]:
        """1-based (line, column) of a server's name in mcp_servers.yaml."""
        return self.server_positions.locate_key(("mcp_servers", name))


def resolve_command(spec: McpServerSpec) -> list[str]:
    """The stdio command line, with a leading `python`/`python3` meaning our own interpreter."""
    if spec.command is None:
        raise ValueError("not a stdio MCP server (it has a `url`)")
    head, *rest = spec.command
    return [sys.executable if head in ("python", "python3") else head, *rest]


def load_agents(
    paths: Sequence[Path] | Path, env: Mapping[str, str] | None = None,
) -> tuple[AgentSet, list[Problem]]:
    """Load a directory of agents (or individual agent files) and the MCP servers beside them."""
    env = os.environ if env is None else env
    files, servers_path, problems = _discover([paths] if isinstance(paths, Path) else paths)
    servers = _load_servers(servers_path, env) if servers_path else _Servers.none()
    problems += servers.problems
    loaded: list[LoadedAgent] = []
    for path in files:
        agent, found = _load_agent(path, env)
        problems += found
        if agent is not None:
            loaded.append(agent)
    agents, found = _cross_check(loaded, _known_stems(files), servers)
    problems += found
    agent_set = AgentSet(
        agents=agents, servers=servers.valid, servers_path=servers_path,
        declared_servers=servers.declared, server_positions=servers.positions,
    )
    return agent_set, sort_problems(problems)


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """Problems in reading order: by path, line, column."""
    return sorted(problems, key=lambda p: (p.path, p.line, p.column, p.message))


def check_tools(
    agent_set: AgentSet, tools_by_server: Mapping[str, Sequence[ToolInfo]],
) -> list[Problem]:
    """Checks that need the servers' tool lists; servers absent from the mapping are skipped."""
    problems: list[Problem] = []
    for agent in agent_set.agents.values():
        problems += tool_problems(agent, tools_by_server)
    return sort_problems(problems)


# --- files -------------------------------------------------------------------------------


def _discover(paths: Sequence[Path]) -> tuple[list[Path], Path | None, list[Problem]]:
    files: list[Path] = []
    problems: list[Problem] = []
    servers: Path | None = None
    first_dir: Path | None = None
    for path in paths:
        if path.is_dir():
            found = _agent_files(path)
            if not found:
                problems.append(Problem(str(path), 1, 1, "no agent files (*.yaml) in this folder"))
            files += found
            first_dir = first_dir or path
        elif path.is_file() and path.name in _SERVERS_NAMES:
            servers = servers or path
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), 1, 1, "no such file or directory"))
    folder = first_dir or (files[0].parent if files else None)
    if servers is None and folder is not None and (folder / SERVERS_FILE).is_file():
        servers = folder / SERVERS_FILE
    return files, servers, problems


def _agent_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.suffix in _AGENT_SUFFIXES and p.name not in _SERVERS_NAMES
        and not p.name.startswith(".") and p.is_file()
    )


def _read(path: Path, env: Mapping[str, str]) -> tuple[bytes, Document]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(Problem(str(path), 1, 1, f"cannot read file: {exc.strerror}")) from None
    return raw, parse_document(raw, str(path), env)


def _validation_problems(
    exc: ValidationError, path: Path, doc: Document,
) -> list[tuple[Loc, Problem]]:
    """Pydantic errors → problems at the position their `loc` names (or its nearest parent)."""
    result: list[tuple[Loc, Problem]] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc: Loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            position = doc.positions.locate_key(loc)
            message = f"unknown field '{format_loc(loc)}'"
        else:
            position = doc.positions.locate(loc)
            message = _error_text(error, loc, doc)
        problem = Problem(str(path), position[0], position[1], doc.redact(message))
        result.append((loc, problem))
    return result


def _error_text(error: ErrorDetails, loc: Loc, doc: Document) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error" and loc in doc.from_env:
        # Our validators quote the value; this one came from the environment and may be secret.
        text = "invalid value (from an environment variable, not shown)"
    elif error["type"] == "value_error" and "error" in ctx:
        text = str(ctx["error"])  # pydantic's "Value error, " prefix is noise
    else:
        text = error["msg"]
    return f"field '{format_loc(loc)}': {text}" if loc else text


def _validate(
    model: type[_Model], data: object, path: Path, doc: Document,
) -> tuple[_Model | None, list[tuple[Loc, Problem]]]:
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _validation_problems(exc, path, doc)


# --- agents ------------------------------------------------------------------------------


def _load_agent(path: Path, env: Mapping[str, str]) -> tuple[LoadedAgent | None, list[Problem]]:
    try:
        raw, doc = _read(path, env)
    except DocumentError as exc:
        return None, [exc.problem]
    spec, found = _validate(AgentSpec, doc.data, path, doc)
    problems = [p for _, p in doc.problems] + [p for _, p in found]
    if spec is None or doc.problems:
        return None, problems
    agent = LoadedAgent(
        spec=spec, path=path, sha256=hashlib.sha256(raw).hexdigest(),
        # Decoding succeeded in parse_document; the BOM, if any, is kept in the stored text.
        definition=raw.decode("utf-8"), positions=doc.positions,
    )
    if spec.name != path.stem:
        return None, [agent.problem(("name",), f"name '{spec.name}' must match the file name "
                                    f"'{path.stem}'")]
    return agent, []


def _known_stems(files: list[Path]) -> set[str]:
    """Stems of the given agent files and of the other agent files beside them.

    Agents whose files are broken (or were not named on the command line) still count as known
    handoff targets: a typo in one file is reported once, not again in every agent that hands
    off to it, and `validate one.yaml` judges handoffs as the registry would.
    """
    folders = {f.parent for f in files}
    return {f.stem for f in files} | {f.stem for d in folders for f in _agent_files(d)}


def _cross_check(
    loaded: list[LoadedAgent], known_stems: set[str], servers: _Servers,
) -> tuple[dict[str, LoadedAgent], list[Problem]]:
    agents: dict[str, LoadedAgent] = {}
    problems: list[Problem] = []
    duplicates: set[str] = set()
    for agent in loaded:
        first = agents.get(agent.spec.name)
        if first is None:
            agents[agent.spec.name] = agent
        else:
            duplicates.add(agent.spec.name)
            problems.append(agent.problem(
                ("name",), f"duplicate agent name '{agent.spec.name}' (also in {first.path})"))
    known = known_stems | set(agents)
    valid: dict[str, LoadedAgent] = {}
    for name, agent in agents.items():
        found = _references(agent, known, servers.declared) + static_problems(agent)
        problems += found
        if not found and name not in duplicates:
            valid[name] = agent
    return valid, problems


def _references(
    agent: LoadedAgent, known: set[str], servers: frozenset[str] | None,
) -> list[Problem]:
    """Names that must exist elsewhere: MCP servers, handoff targets, handoffs of the script."""
    spec = agent.spec
    problems: list[Problem] = []
    for i, tool in enumerate(spec.tools):
        if servers is not None and tool.mcp not in servers:
            message = f"unknown MCP server '{tool.mcp}' (not in {SERVERS_FILE})"
            problems.append(agent.problem(("tools", i, "mcp"), message))
    for i, handoff in enumerate(spec.handoffs):
        if handoff.agent == spec.name:
            problems.append(agent.problem(("handoffs", i, "agent"),
                                          "an agent cannot hand off to itself"))
        elif handoff.agent not in known:
            problems.append(agent.problem(("handoffs", i, "agent"),
                                          f"unknown handoff target '{handoff.agent}'"))
    handoffs = {h.agent for h in spec.handoffs}
    for i, rule in enumerate(spec.script or []):
        if rule.handoff is not None and rule.handoff not in handoffs:
            message = f"handoff '{rule.handoff}' is not in this agent's handoffs"
            problems.append(agent.problem(("script", i, "handoff"), message))
    return problems


# --- MCP servers -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Servers:
    valid: dict[str, McpServerSpec]
    declared: frozenset[str] | None
    positions: Positions
    problems: list[Problem]

    @classmethod
    def none(cls) -> _Servers:
        return cls({}, frozenset(), Positions(), [])


def _load_servers(path: Path, env: Mapping[str, str]) -> _Servers:
    try:
        _, doc = _read(path, env)
    except DocumentError as exc:
        return _Servers({}, None, Positions(), [exc.problem])
    raw_entries: object = doc.data.get("mcp_servers") or {}  # an empty `mcp_servers:` is fine
    if not isinstance(raw_entries, dict):
        _, found = _validate(McpServersFile, doc.data, path, doc)
        return _Servers({}, None, doc.positions, [p for _, p in (*doc.problems, *found)])
    entries = cast(dict[str, object], raw_entries)  # keys are always text (see document.py)
    bad_names = [n for n in entries if not _SERVER_NAME.match(n)]
    # Names are checked here rather than by McpServersFile so the problem points at the name.
    problems = [_at_key(path, doc, ("mcp_servers", n), f"server name '{n}' must match "
                        "[a-zA-Z0-9_-]+") for n in bad_names]
    good = {n: e for n, e in entries.items() if n not in bad_names}
    _, found = _validate(McpServersFile, {**doc.data, "mcp_servers": good}, path, doc)
    problems += [p for _, p in (*doc.problems, *found)]
    bad = [loc for loc, _ in (*doc.problems, *found)]
    return _Servers(_valid_entries(good, bad), frozenset(entries), doc.positions, problems)


def _at_key(path: Path, doc: Document, loc: Loc, message: str) -> Problem:
    line, column = doc.positions.locate_key(loc)
    return Problem(str(path), line, column, doc.redact(message))


def _valid_entries(entries: Mapping[str, object], bad: list[Loc]) -> dict[str, McpServerSpec]:
    """The entries without a problem of their own: one bad server must not hide the others."""
    valid: dict[str, McpServerSpec] = {}
    for name, entry in entries.items():
        if any(loc[:2] == ("mcp_servers", name) for loc in bad):
            continue
        try:
            valid[name] = McpServerSpec.model_validate(entry)
        except ValidationError:
            continue
    return valid
