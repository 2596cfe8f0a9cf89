"""Malformed and adversarial agent YAML: the loader loads a file or reports
`path:line:column: message` problems, never a traceback or a hang.

Hypothesis mutates every file in `agents/` (byte flips, truncations, line deletions and
duplications, indentation changes); explicit cases under tests/fixtures/fuzz/yaml/ cover
alias bombs, node floods, `${VAR}` expansion past its cap, tabs, non-UTF-8 and duplicate keys.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.agents.document import MAX_EXPANDED_CHARS, MAX_NODES
from orchestrator.agents.loader import load_agents
from orchestrator.errors import Problem

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "agents").glob("*.yaml"))
FIXTURES = REPO / "tests" / "fixtures" / "fuzz" / "yaml"
POSITION = re.compile(r"^(?P<path>.+?):(?P<line>[1-9]\d*):(?P<column>[1-9]\d*): \S")
ENV = {"BIG": "x" * 4096, "SMALL": "abc"}


def assert_positioned(problems: list[Problem], folder: Path) -> None:
    """Every problem reads `path:line:column: message` with a path inside `folder`."""
    for problem in problems:
        text = str(problem)
        match = POSITION.match(text)
        assert match is not None, text
        assert Path(match["path"]).parent == folder, text
        assert "Traceback" not in text and "\n" not in problem.message, text


# --- mutations of the example agents ------------------------------------------------------


def flip_byte(data: bytes, at: int, value: int) -> bytes:
    """`data` with the byte at `at` replaced."""
    at %= max(len(data), 1)
    return data[:at] + bytes([value]) + data[at + 1:]


def truncate(data: bytes, at: int, _: int) -> bytes:
    """`data` cut at `at`."""
    return data[: at % max(len(data), 1)]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def delete_line(data: bytes, at: int, _: int) -> bytes:
    """`data` without one line."""
    lines = _lines(data)
    del lines[at % len(lines)]
    return b"".join(lines)


def duplicate_line(data: bytes, at: int, _: int) -> bytes:
    """`data` with one line written twice."""
    lines = _lines(data)
    index = at % len(lines)
    lines.insert(index, lines[index])
    return b"".join(lines)


def indent_line(data: bytes, at: int, value: int) -> bytes:
    """`data` with one line's indentation changed (spaces added or removed, or a tab)."""
    lines = _lines(data)
    index = at % len(lines)
    line = lines[index]
    change = value % 5
    if change == 0:
        lines[index] = b"\t" + line
    elif change <= 2:
        lines[index] = b" " * change + line
    else:
        lines[index] = line[min(change - 2, len(line) - len(line.lstrip(b" "))):]
    return b"".join(lines)


Mutation = Callable[[bytes, int, int], bytes]
MUTATIONS: list[Mutation] = [flip_byte, truncate, delete_line, duplicate_line, indent_line]
mutation = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 10**6), st.integers(0, 255))


@settings(max_examples=120, deadline=timedelta(seconds=5), derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLES), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_examples_load_or_report_positions(
        example: Path, steps: list[tuple[Mutation, int, int]]) -> None:
    data = example.read_bytes()
    for step, at, value in steps:
        data = step(data, at, value)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for other in EXAMPLES:
            shutil.copy(other, folder / other.name)
        (folder / example.name).write_bytes(data)
        agent_set, problems = load_agents(folder, env=ENV)
        assert_positioned(problems, folder)
        if not problems:
            assert example.stem in agent_set.agents or example.name == "mcp_servers.yaml"


def test_examples_are_all_mutated() -> None:
    assert {p.name for p in EXAMPLES} >= {"concierge.yaml", "mcp_servers.yaml"}


# --- explicit adversarial files -----------------------------------------------------------

CASES = {
    "billion-laughs.yaml": "4:19: YAML aliases are not allowed (*a)",
    "tabs.yaml": "4:1: YAML syntax error: ",
    "not-utf8.yaml": "3:18: file is not valid UTF-8 (byte 0xff)",
    "duplicate-keys.yaml": "5:1: duplicate key 'instructions' (first at line 4)",
    "expansion.yaml": f"4:15: expanding environment variables makes this file's values "
                      f"longer than {MAX_EXPANDED_CHARS} characters",
}


@pytest.mark.parametrize(("name", "expected"), sorted(CASES.items()))
def test_adversarial_file_gets_one_positioned_problem(
        tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    shutil.copy(FIXTURES / name, path)
    agents, problems = load_agents(path, env=ENV)
    assert not agents.agents
    assert [str(p) for p in problems][:1] and str(problems[0]).startswith(f"{path}:{expected}"), (
        [str(p) for p in problems])
    assert_positioned(problems, tmp_path)


def test_node_flood_is_cut_off_at_the_node_limit(tmp_path: Path) -> None:
    path = tmp_path / "flood.yaml"
    path.write_text("name: flood\nmodel: scripted\nscript:\n"
                    + "".join(f"  - say: n{i}\n" for i in range(MAX_NODES)))
    _, problems = load_agents(path, env={})
    [problem] = problems
    assert problem.message == f"file has more than {MAX_NODES} YAML nodes"
    assert problem.line > 3 and problem.column >= 1


def test_flow_flood_of_scalars_is_cut_off_too(tmp_path: Path) -> None:
    path = tmp_path / "flood.yaml"
    path.write_text("name: flood\nmodel: scripted\nvoice: [" + "0," * (MAX_NODES + 10) + "0]\n")
    _, problems = load_agents(path, env={})
    assert [p.message for p in problems] == [f"file has more than {MAX_NODES} YAML nodes"]
    assert problems[0].line == 3
