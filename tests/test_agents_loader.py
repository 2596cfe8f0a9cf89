"""Agent YAML loading: positions of problems, `${VAR}`, cross-references, tool checks, registry."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from orchestrator.agents.loader import check_tools, load_agents, resolve_command
from orchestrator.agents.registry import Registry
from orchestrator.agents.spec import McpServerSpec
from orchestrator.errors import Problem
from orchestrator.tools.types import ToolInfo

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
GOOD = FIXTURES / "good"
BROKEN = FIXTURES / "broken"
SERVERS = FIXTURES / "servers"
LIVE = FIXTURES / "live"

SECRET_KEY = "sk-very-secret-123"
SECRET_MODEL = "hushhush-provider/x"
ENV = {"ORCH_TEST_SECRET_MODEL": SECRET_MODEL, "ORCH_TEST_SECRET_KEY": SECRET_KEY}
TIME_TOOLS = [
    ToolInfo("time", "get_current_time", "Current time"),
    ToolInfo("time", "convert_time", "Convert time"),
]


def lines(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def test_good_directory_loads_everything() -> None:
    agent_set, problems = load_agents(GOOD, env={})
    assert problems == []
    assert sorted(agent_set.agents) == ["billing", "front-desk"]
    assert list(agent_set.servers) == ["time"]
    assert agent_set.servers_path == GOOD / "mcp_servers.yaml"
    billing = agent_set.agents["billing"]
    raw = (GOOD / "billing.yml").read_bytes()
    assert billing.path == GOOD / "billing.yml"
    assert billing.sha256 == hashlib.sha256(raw).hexdigest()
    assert billing.definition == raw.decode()
    assert billing.spec.api_key is not None
    assert billing.spec.api_key.get_secret_value() == "sk-test-default"
    assert "The literal ${NOT_A_VAR} stays as written." in billing.spec.instructions


def test_environment_value_is_used_but_never_stored_in_the_definition() -> None:
    agent_set, problems = load_agents(GOOD, env={"ORCH_TEST_BILLING_KEY": "sk-from-env-42"})
    assert problems == []
    billing = agent_set.agents["billing"]
    assert billing.spec.api_key is not None
    assert billing.spec.api_key.get_secret_value() == "sk-from-env-42"
    assert "sk-from-env-42" not in billing.definition
    assert "${ORCH_TEST_BILLING_KEY:-sk-test-default}" in billing.definition
    assert "sk-from-env-42" not in repr(billing)


def test_locate_gives_positions_with_nearest_parent_fallback() -> None:
    agent_set, _ = load_agents(GOOD, env={})
    desk = agent_set.agents["front-desk"]
    assert desk.locate("tools", 0, "allow", 0) == (6, 13)
    assert desk.locate("script", 1, "handoff") == (17, 14)
    assert desk.locate("tools", 0, "no-such-field") == desk.locate("tools", 0) == (5, 5)
    assert desk.locate("script", 99) == desk.locate("script") == (12, 3)
    assert desk.locate() == (1, 1)
    assert agent_set.locate_server("time") == (3, 3)


BROKEN_CASES = {
    "syntax.yaml": ["3:13: YAML syntax error: mapping values are not allowed here"],
    "unknown-field.yaml": [
        "3:1: unknown field 'colour'",
        "6:5: unknown field 'script[0].tone'",
    ],
    "wrong-type.yaml": [
        "3:15: field 'instructions': Input should be a valid string",
        "6:16: field 'tools[0].timeout_s': Input should be greater than 0",
    ],
    "Bad_Name.yaml": ["1:7: field 'name': String should match pattern '^[a-z0-9-]+$'"],
    "unknown-server.yaml": ["5:10: unknown MCP server 'weather' (not in mcp_servers.yaml)"],
    "unknown-handoff.yaml": [
        "4:12: unknown handoff target 'nobody'",
        "5:12: an agent cannot hand off to itself",
    ],
    "bad-regex.yaml": [
        "4:11: field 'script[0].when': invalid regular expression '(unclosed': "
        "missing ), unterminated subpattern at position 0",
    ],
    "unset-var.yaml": ["4:10: environment variable ORCH_TEST_UNSET_KEY is not set"],
    "non-utf8.yaml": ["3:17: file is not valid UTF-8 (byte 0xe9)"],
    "alias-bomb.yaml": ["4:8: YAML aliases are not allowed (*a)"],
    "bad-script.yaml": [
        "7:13: duplicate tool name 'get_current_time' (MCP server 'time'; also MCP server "
        "'time' at line 5); set `prefix:` on one attachment",
        "12:11: tool 'get_weather' is not one of this agent's tools",
        "14:14: handoff 'billing' is not in this agent's handoffs",
    ],
    "name-mismatch.yaml": ["1:7: name 'other-name' must match the file name 'name-mismatch'"],
    "duplicate-key.yaml": ["4:1: duplicate key 'voice' (first at line 3)"],
    "empty.yaml": ["1:1: file is empty"],
    "top-list.yaml": ["1:1: the top level must be a mapping, not a list"],
    "secret-model.yaml": [
        "2:8: field 'model': invalid value (from an environment variable, not shown)",
        "4:8: field 'voice': Input should be a valid string",
    ],
}


@pytest.mark.parametrize("name", sorted(BROKEN_CASES))
def test_broken_file_reports_exact_positions(name: str) -> None:
    path = BROKEN / name
    agent_set, problems = load_agents([path], env=ENV)
    assert lines(problems) == [f"{path}:{line}" for line in BROKEN_CASES[name]]
    assert agent_set.agents == {}


def test_valid_agent_survives_broken_neighbours() -> None:
    agent_set, problems = load_agents(BROKEN, env=ENV)
    assert list(agent_set.agents) == ["fine"]
    expected = sorted(f"{BROKEN / n}:{line}" for n, found in BROKEN_CASES.items() for line in found)
    assert sorted(lines(problems)) == expected


def test_secrets_never_reach_problem_messages() -> None:
    _, problems = load_agents([BROKEN / "secret-model.yaml"], env=ENV)
    _, server_problems = load_agents(SERVERS, env={"ORCH_TEST_CRM_TOKEN": "tok-secret-crm"})
    text = "\n".join(lines(problems + server_problems))
    assert problems  # the file is broken, and the report says so without the values
    for secret in (SECRET_KEY, SECRET_MODEL, "hushhush", "tok-secret-crm"):
        assert secret not in text


def test_mcp_server_entries_are_checked_one_by_one() -> None:
    agent_set, problems = load_agents(SERVERS, env={})
    servers_file = SERVERS / "mcp_servers.yaml"
    assert lines(problems) == [
        f"{servers_file}:6:5: field 'mcp_servers.both': give exactly one of `command` (stdio) or "
        "`url` (streamable HTTP)",
        f"{servers_file}:8:3: server name 'bad name' must match [a-zA-Z0-9_-]+",
        f"{servers_file}:11:5: unknown field 'mcp_servers.typo.comand'",
        f"{servers_file}:14:30: environment variable ORCH_TEST_CRM_TOKEN is not set",
        f"{servers_file}:16:5: field 'mcp_servers.ftp': `url` must start with http:// or https://",
        f"{SERVERS / 'user.yaml'}:7:10: unknown MCP server 'ghost' (not in mcp_servers.yaml)",
    ]
    assert list(agent_set.servers) == ["time"]
    agent_set, _ = load_agents(SERVERS, env={"ORCH_TEST_CRM_TOKEN": "tok-secret-crm"})
    assert sorted(agent_set.servers) == ["crm", "time"]
    assert agent_set.servers["crm"].headers["Authorization"].get_secret_value() == (
        "Bearer tok-secret-crm")


def test_check_tools_with_tool_lists() -> None:
    agent_set, problems = load_agents(LIVE, env={})
    assert problems == []
    found = lines(check_tools(agent_set, {"time": TIME_TOOLS}))
    assert found == [
        f"{LIVE / 'dup-tools.yaml'}:4:10: duplicate tool name 'convert_time' (MCP server 'time';"
        " also MCP server 'time' at line 6); set `prefix:` on one attachment",
        f"{LIVE / 'missing-tool.yaml'}:5:31: MCP server 'time' has no tool 'get_weather' "
        "(it has: convert_time, get_current_time)",
        f"{LIVE / 'timeless.yaml'}:8:11: tool 'clock_get_time' is not one of this agent's tools",
    ]


def test_check_tools_skips_servers_without_a_tool_list() -> None:
    agent_set, _ = load_agents(LIVE, env={})
    assert check_tools(agent_set, {}) == []


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_check_tools_names_and_handoff_clashes(tmp_path: Path) -> None:
    write(tmp_path, "mcp_servers.yaml", "mcp_servers:\n  odd:\n    url: http://127.0.0.1:9/mcp\n")
    write(tmp_path, "b.yaml", "name: b\nmodel: openai/gpt-realtime\n")
    a = write(tmp_path, "a.yaml", "name: a\nmodel: openai/gpt-realtime\ntools:\n  - mcp: odd\n"
              "handoffs:\n  - agent: b\n")
    agent_set, problems = load_agents(tmp_path, env={})
    assert problems == []
    odd = [ToolInfo("odd", "transfer_to_b", ""), ToolInfo("odd", "has space", "")]
    assert lines(check_tools(agent_set, {"odd": odd})) == [
        f"{a}:4:10: duplicate tool name 'transfer_to_b' (MCP server 'odd'; also the handoff to "
        "'b' at line 6); set `prefix:` on one attachment",
        f"{a}:4:10: tool name 'has space' is not a valid function name (letters, digits, _ or -,"
        " at most 64)",
    ]


YAML_CASES = [
    ("name: t\nmodel: scripted\n---\nname: u\n",
     "3:1: YAML syntax error: expected a single document in the stream, "
     "but found another document"),
    ("name: t\nmodel: !!python/object:os.system scripted\n",
     "2:8: unsupported YAML tag !!python/object:os.system"),
    ("name: t\n<<: {model: scripted}\n", "2:1: YAML merge keys (<<) are not supported"),
    ("name: t\nmodel: scripted\nvoice: ${BAD-NAME}\n",
     "3:8: invalid environment variable reference '${BAD-NAME}'"),
    ("name: t\nmodel: scripted\nvoice: [a\n",
     "4:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']', but got "
     "'<stream end>'"),
    ("# only a comment\n", "1:1: file holds no YAML document"),
    ("name: t\nmodel: " + "[" * 70 + "]" * 70 + "\n", "2:71: YAML nested deeper than 64 levels"),
    ("name: t\nmodel: scripted\n? [a]\n: 1\n",
     "3:3: a mapping key must be a plain value, not a list"),
    ("name: t\nmodel: scripted\nvoice: '" + "x" * 1024 * 1024 + "'\n",
     "1:1: file is larger than 1048576 bytes"),
    ("name: t\nmodel: scripted\nvoice: \x07\n",
     "3:8: YAML syntax error: unacceptable character #x0007: special characters are not allowed"),
    ("name: t\n", "1:1: field 'model': Field required"),
    ("name: t\nmodel: openai\n",
     "2:8: field 'model': must be `provider/model` (e.g. openai/gpt-realtime) or `scripted`"),
    ("name: t\nmodel: openai/x\nscript:\n  - say: hi\n",
     "1:1: `script` is only used with `model: scripted`"),
    ("name: t\nmodel: scripted\nscript:\n  - when: x\n",
     "4:5: field 'script[0]': a rule needs at least one of `call`, `say` or `handoff`"),
    ("name: t\nmodel: openai/x\nreconnect:\n  attempts: 0\n",
     "4:13: field 'reconnect.attempts': Input should be greater than or equal to 1"),
    ("name: t\nmodel: openai/x\nreconnect: {backoff_s: 1, tries: 2}\n",
     "3:27: unknown field 'reconnect.tries'"),
]


@pytest.mark.parametrize(("text", "expected"), YAML_CASES)
def test_yaml_edge_cases(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "t.yaml", text)
    _, problems = load_agents(path, env={})
    assert lines(problems) == [f"{path}:{expected}"]


def test_interpolation_defaults_and_escapes(tmp_path: Path) -> None:
    write(tmp_path, "t.yaml", "name: t\nmodel: scripted\nvoice: ${V:-alloy}\n"
          "description: \"$${V} ${EMPTY:-was empty} [${EMPTY}] ${V2}\"\nscript: [{say: hi}]\n")
    agent_set, problems = load_agents(tmp_path, env={"EMPTY": "", "V2": "x"})
    assert problems == []
    spec = agent_set.agents["t"].spec
    assert spec.voice == "alloy"
    assert spec.description == "${V} was empty [] x"


def test_duplicate_agent_names_load_neither(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "name: a\nmodel: scripted\nscript: [{say: one}]\n")
    second = write(tmp_path, "a.yml", "name: a\nmodel: scripted\nscript: [{say: two}]\n")
    agent_set, problems = load_agents(tmp_path, env={})
    assert lines(problems) == [f"{second}:1:7: duplicate agent name 'a' (also in {first})"]
    assert agent_set.agents == {}


def test_missing_and_empty_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    _, problems = load_agents(missing, env={})
    assert lines(problems) == [f"{missing}:1:1: no such file or directory"]
    _, problems = load_agents(tmp_path, env={})
    assert lines(problems) == [f"{tmp_path}:1:1: no agent files (*.yaml) in this folder"]


def test_files_find_servers_beside_the_first_file() -> None:
    agent_set, problems = load_agents([GOOD / "front-desk.yaml"], env={})
    # billing is not loaded, but it is a file beside front-desk: a known handoff target.
    assert problems == []
    assert list(agent_set.agents) == ["front-desk"]
    assert agent_set.servers_path == GOOD / "mcp_servers.yaml"


def test_resolve_command() -> None:
    spec = McpServerSpec(command=["python3", "-m", "mcp_server_time"])
    assert resolve_command(spec) == [sys.executable, "-m", "mcp_server_time"]
    assert resolve_command(McpServerSpec(command=["uvx", "python"])) == ["uvx", "python"]
    with pytest.raises(ValueError, match="not a stdio"):
        resolve_command(McpServerSpec(url="http://127.0.0.1:9/mcp"))


AGENT = "name: a\nmodel: scripted\nscript:\n  - say: {say}\n"


def test_registry_reload_keeps_last_good_definition(tmp_path: Path) -> None:
    write(tmp_path, "mcp_servers.yaml", "mcp_servers:\n  s:\n    url: http://127.0.0.1:9/mcp\n")
    path = write(tmp_path, "a.yaml", AGENT.format(say="one"))
    registry = Registry(tmp_path, env={})
    assert registry.load() == []
    first = registry.get("a")
    assert first is not None
    assert registry.names() == ["a"]
    assert list(registry.servers) == ["s"]
    registry.set_version("a", first.sha256, 1)
    assert registry.version("a") == 1

    path.write_text("name: a\nmodel: scripted\nscript: [\n")
    write(tmp_path, "mcp_servers.yaml", "mcp_servers:\n  s:\n    url: ftp://x\n")
    problems = registry.reload()
    assert [(Path(p.path).name, p.line) for p in problems] == [("a.yaml", 4),
                                                               ("mcp_servers.yaml", 3)]
    assert registry.get("a") is first  # the broken edit does not replace the good definition
    assert list(registry.servers) == ["s"]
    assert registry.version("a") == 1

    path.write_text(AGENT.format(say="two"))
    assert registry.reload() != []  # the servers file is still broken
    second = registry.get("a")
    assert second is not None and second is not first
    assert second.spec.script is not None and second.spec.script[0].say == "two"
    assert registry.version("a") is None  # a new definition waits for its version
    registry.set_version("a", second.sha256, 2)
    assert registry.version("a") == 2
    assert first.spec.script is not None and first.spec.script[0].say == "one"

    path.unlink()
    registry.reload()
    assert registry.get("a") is None
    assert registry.names() == []
    assert registry.version("a") is None
