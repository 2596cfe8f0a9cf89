"""`orchestrator validate`: the library call with real MCP servers, and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.agents.validate import validate_paths, validate_report

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path("tests") / "fixtures" / "agents"  # relative: the CLI prints paths as given
LIVE = REPO / FIXTURES / "live"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ORCH_TEST_", "ORCHESTRATOR_"))}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", *args], cwd=REPO, env=base | (env or {}),
        capture_output=True, text=True, timeout=90, check=False,
    )


async def test_live_servers_find_missing_tools_duplicates_and_dead_servers() -> None:
    problems = await validate_paths([LIVE], check_mcp=True, connect_timeout_s=10)
    found = [str(p) for p in problems]
    dead = f"{LIVE / 'mcp_servers.yaml'}:5:3: could not start MCP server 'dead': "
    assert [line for line in found if line.startswith(dead)] == found[1:2]
    assert found[:1] + found[2:] == [
        f"{LIVE / 'dup-tools.yaml'}:4:10: duplicate tool name 'convert_time' (MCP server 'time';"
        " also MCP server 'time' at line 6); set `prefix:` on one attachment",
        f"{LIVE / 'missing-tool.yaml'}:5:31: MCP server 'time' has no tool 'get_weather' "
        "(it has: convert_time, get_current_time)",
        f"{LIVE / 'timeless.yaml'}:8:11: tool 'clock_get_time' is not one of this agent's tools",
    ]


async def test_without_mcp_only_static_problems_remain() -> None:
    assert await validate_paths([LIVE], check_mcp=False) == []


async def test_repo_agents_validate_cleanly_with_their_mcp_servers() -> None:
    report = await validate_report([REPO / "agents"], check_mcp=True)
    assert report.problems == []
    assert (report.agents, report.servers) == (2, 1)


def test_cli_reports_every_problem_of_a_broken_folder() -> None:
    secrets = {"ORCH_TEST_SECRET_MODEL": "hushhush/x", "ORCH_TEST_SECRET_KEY": "sk-1234"}
    result = run_cli("--no-mcp", str(FIXTURES / "broken"), str(FIXTURES / "servers"), env=secrets)
    broken, servers = FIXTURES / "broken", FIXTURES / "servers"
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{broken}/Bad_Name.yaml:1:7: field 'name': String should match pattern '^[a-z0-9-]+$'",
        f"{broken}/alias-bomb.yaml:4:8: YAML aliases are not allowed (*a)",
        f"{broken}/bad-regex.yaml:4:11: field 'script[0].when': invalid regular expression "
        "'(unclosed': missing ), unterminated subpattern at position 0",
        f"{broken}/bad-script.yaml:7:13: duplicate tool name 'get_current_time' (MCP server "
        "'time'; also MCP server 'time' at line 5); set `prefix:` on one attachment",
        f"{broken}/bad-script.yaml:12:11: tool 'get_weather' is not one of this agent's tools",
        f"{broken}/bad-script.yaml:14:14: handoff 'billing' is not in this agent's handoffs",
        f"{broken}/duplicate-key.yaml:4:1: duplicate key 'voice' (first at line 3)",
        f"{broken}/empty.yaml:1:1: file is empty",
        f"{broken}/name-mismatch.yaml:1:7: name 'other-name' must match the file name "
        "'name-mismatch'",
        f"{broken}/non-utf8.yaml:3:17: file is not valid UTF-8 (byte 0xe9)",
        f"{broken}/secret-model.yaml:2:8: field 'model': invalid value (from an environment "
        "variable, not shown)",
        f"{broken}/secret-model.yaml:4:8: field 'voice': Input should be a valid string",
        f"{broken}/syntax.yaml:3:13: YAML syntax error: mapping values are not allowed here",
        f"{broken}/top-list.yaml:1:1: the top level must be a mapping, not a list",
        f"{broken}/unknown-field.yaml:3:1: unknown field 'colour'",
        f"{broken}/unknown-field.yaml:6:5: unknown field 'script[0].tone'",
        f"{broken}/unknown-handoff.yaml:4:12: unknown handoff target 'nobody'",
        f"{broken}/unknown-handoff.yaml:5:12: an agent cannot hand off to itself",
        f"{broken}/unknown-server.yaml:5:10: unknown MCP server 'weather' (not in "
        "mcp_servers.yaml)",
        f"{broken}/unset-var.yaml:4:10: environment variable ORCH_TEST_UNSET_KEY is not set",
        f"{broken}/wrong-type.yaml:3:15: field 'instructions': Input should be a valid string",
        f"{broken}/wrong-type.yaml:6:16: field 'tools[0].timeout_s': Input should be greater "
        "than 0",
        f"{servers}/mcp_servers.yaml:6:5: field 'mcp_servers.both': give exactly one of "
        "`command` (stdio) or `url` (streamable HTTP)",
        f"{servers}/mcp_servers.yaml:8:3: server name 'bad name' must match [a-zA-Z0-9_-]+",
        f"{servers}/mcp_servers.yaml:11:5: unknown field 'mcp_servers.typo.comand'",
        f"{servers}/mcp_servers.yaml:14:30: environment variable ORCH_TEST_CRM_TOKEN is not set",
        f"{servers}/mcp_servers.yaml:16:5: field 'mcp_servers.ftp': `url` must start with "
        "http:// or https://",
        f"{servers}/user.yaml:7:10: unknown MCP server 'ghost' (not in mcp_servers.yaml)",
    ]
    assert "hushhush" not in result.stdout and "sk-1234" not in result.stdout


def test_cli_default_folder_is_the_repo_agents_with_mcp() -> None:
    result = run_cli()
    assert (result.returncode, result.stdout) == (0, "ok: 2 agents, 1 MCP server\n"), result.stderr


def test_cli_reads_the_folder_from_the_environment() -> None:
    result = run_cli("--no-mcp", env={"ORCHESTRATOR_AGENTS_DIR": str(FIXTURES / "good")})
    assert (result.returncode, result.stdout) == (0, "ok: 2 agents, 1 MCP server\n"), result.stderr


def test_cli_live_folder_fails_on_tool_checks() -> None:
    result = run_cli(str(FIXTURES / "live"), str(FIXTURES / "good" / "billing.yml"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{FIXTURES}/live/dup-tools.yaml:4:10",
        f"{FIXTURES}/live/mcp_servers.yaml:5:3",
        f"{FIXTURES}/live/missing-tool.yaml:5:31",
        f"{FIXTURES}/live/timeless.yaml:8:11",
    ]
    assert "Traceback" not in result.stderr


def test_cli_missing_path() -> None:
    result = run_cli("--no-mcp", "no-such-folder")
    expected = "no-such-folder:1:1: no such file or directory\n"
    assert (result.returncode, result.stdout) == (1, expected)
