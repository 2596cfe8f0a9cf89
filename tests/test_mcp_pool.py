"""The MCP pool against real server processes: mcp-server-time and our toolbox server over
stdio, the toolbox over streamable HTTP, plus servers that fail, crash, hang or flood."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio

from orchestrator.agents.spec import McpServerSpec
from orchestrator.tools.mcp_pool import McpPool
from tests.mcp_servers.toolbox_http import toolbox_over_http

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parent.parent
WAIT = 20.0  # generous bound for anything that should happen (2 shared cores)


def toolbox(**extra: object) -> McpServerSpec:
    """Our test server over stdio."""
    return McpServerSpec.model_validate(
        {"command": ["python", "-m", "tests.mcp_servers.toolbox"], "cwd": str(REPO), **extra})


TIME = McpServerSpec(command=["python", "-m", "mcp_server_time", "--local-timezone", "UTC"])


def child_pids(running: str = "") -> set[int]:
    """Child processes of this test process (from /proc) whose command line has `running`."""
    children: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and running in cmdline:
            children.add(int(entry))
    return children


def alive(pid: int) -> bool:
    """Whether a process exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@asynccontextmanager
async def running(
    servers: dict[str, McpServerSpec], **options: float,
) -> AsyncGenerator[McpPool]:
    """A started pool, closed afterwards."""
    pool = McpPool(servers, **options)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.aclose()


async def server_pid(pool: McpPool, server: str) -> int:
    """The pid the toolbox server reports."""
    result = await pool.call(server, "pid", {})
    assert not result.is_error, result
    return int(result.output)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http_url() -> AsyncIterator[str]:
    """The toolbox over streamable HTTP in its own process, on a free 127.0.0.1 port."""
    async with toolbox_over_http(WAIT) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(http_url: str) -> AsyncIterator[McpPool]:
    """One pool for the tests that leave servers running: time, the toolbox (stdio, HTTP, and
    as a pre-2026 server), a missing command."""
    before = child_pids("mcp")
    servers = {
        "time": TIME,
        "box": toolbox(env={"TOOLBOX_GREETING": "hello"}),
        "web": McpServerSpec.model_validate({"url": http_url, "headers": {"X-Test": "secret"}}),
        "old": toolbox(env={"TOOLBOX_LEGACY": "1"}),  # a pre-2026 server: initialize handshake
        "missing": McpServerSpec(command=["no-such-mcp-server-command"]),
    }
    async with running(servers) as started:
        yield started
    assert child_pids("mcp") <= before


async def test_start_connects_every_server_and_reports_the_missing_one(pool: McpPool) -> None:
    status = {s.name: s for s in pool.status()}
    assert status["time"].connected and status["time"].transport == "stdio"
    assert status["box"].connected and status["web"].connected and status["old"].connected
    assert status["web"].transport == "http"
    assert status["box"].restarts == 0
    assert not status["missing"].connected
    assert "no-such-mcp-server-command" in (status["missing"].last_error or "")
    assert {t.name for t in pool.tools("time")} == {"get_current_time", "convert_time"}
    assert status["time"].tool_count == 2
    assert {"echo", "add", "slow", "crash"} <= {t.name for t in pool.tools("box")}
    assert pool.tools("missing") == [] and pool.tools("nope") == []
    assert pool.has_server("box") and not pool.has_server("nope")


async def test_mcp_server_time_over_stdio(pool: McpPool) -> None:
    result = await pool.call("time", "get_current_time", {"timezone": "Asia/Tokyo"})
    assert not result.is_error, result
    assert json.loads(result.output)["timezone"] == "Asia/Tokyo"


@pytest.mark.parametrize("server", ["box", "web"])
async def test_toolbox_answers_over_stdio_and_http(pool: McpPool, server: str) -> None:
    assert (await pool.call(server, "add", {"a": 2, "b": 3})).output == "5"
    assert (await pool.call(server, "echo", {"text": "héllo"})).output == "héllo"


@pytest.mark.parametrize("server", ["box", "web"])
async def test_results_are_converted_to_text(pool: McpPool, server: str) -> None:
    picture = await pool.call(server, "picture", {})
    assert picture.output == "a pixel\n[image: image/png, 68 bytes]"
    weather = await pool.call(server, "weather", {"city": "Oslo"})
    assert json.loads(weather.output) == {"city": "Oslo", "temperature_c": 21}


@pytest.mark.parametrize("server", ["box", "web"])
async def test_a_failing_tool_gives_an_error_result(pool: McpPool, server: str) -> None:
    result = await pool.call(server, "fail", {"message": "boom"})
    assert result.is_error and result.error_kind == "tool"
    assert "boom" in (result.error or "")
    assert "boom" in json.loads(result.output)["error"]


async def test_a_protocol_error_gives_an_error_result(pool: McpPool) -> None:
    result = await pool.call("box", "refuse", {"message": "not like this"})
    assert result.is_error and result.error_kind == "protocol"
    assert "not like this" in (result.error or "")


async def test_unknown_tool_and_unknown_server(pool: McpPool) -> None:
    unknown_tool = await pool.call("box", "no_such_tool", {})
    assert unknown_tool.is_error and unknown_tool.error_kind == "invalid"
    unknown_server = await pool.call("nope", "echo", {"text": "x"})
    assert unknown_server.is_error and unknown_server.error_kind == "unavailable"


@pytest.mark.parametrize("server", ["box", "web"])
async def test_a_timeout_gives_an_error_result_in_time(pool: McpPool, server: str) -> None:
    started = time.perf_counter()
    result = await pool.call(server, "slow", {"seconds": 30}, timeout_s=0.5)
    elapsed = time.perf_counter() - started
    assert result.is_error and result.error_kind == "timeout"
    assert result.error == "tool 'slow' timed out after 0.5 s"
    assert 0.45 < elapsed < 1.5
    # The connection survives a timed-out call (over HTTP too: pitfall 3).
    assert (await pool.call(server, "echo", {"text": "still here"})).output == "still here"


@pytest.mark.parametrize("server", ["box", "web"])
async def test_concurrent_calls_share_one_connection(pool: McpPool, server: str) -> None:
    restarts = {s.name: s.restarts for s in pool.status()}[server]
    started = time.perf_counter()
    slow = await asyncio.gather(
        *(pool.call(server, "slow", {"seconds": 0.5}) for _ in range(30)))
    assert all(r.output == "slept 0.5" for r in slow)
    assert time.perf_counter() - started < 4.0  # one after another would take 15 s
    pids = await asyncio.gather(*(pool.call(server, "pid", {}) for _ in range(20)))
    assert len({r.output for r in pids}) == 1
    assert {s.name: s.restarts for s in pool.status()}[server] == restarts


async def test_a_missing_command_fails_fast(pool: McpPool) -> None:
    started = time.perf_counter()
    result = await pool.call("missing", "anything", {})
    assert time.perf_counter() - started < 1.0
    assert result.is_error and result.error_kind == "unavailable"
    assert (result.error or "").startswith("MCP server 'missing' is unavailable: ")


async def test_env_is_passed_and_nothing_else_leaks(pool: McpPool) -> None:
    assert (await pool.call("box", "getenv", {"name": "TOOLBOX_GREETING"})).output == "hello"
    assert "PYTEST_CURRENT_TEST" in os.environ
    assert (await pool.call("box", "getenv", {"name": "PYTEST_CURRENT_TEST"})).output == ""


@pytest.mark.parametrize("server", ["box", "web", "old"])
async def test_a_list_change_refreshes_the_cache(pool: McpPool, server: str) -> None:
    name = f"extra_{uuid.uuid4().hex[:8]}"
    changed = asyncio.Event()

    def on_change(changed_server: str) -> None:
        if changed_server == server and any(t.name == name for t in pool.tools(server)):
            changed.set()

    pool.on_tools_changed(on_change)
    assert (await pool.call(server, "grow", {"name": name})).output == f"added {name}"
    await asyncio.wait_for(changed.wait(), WAIT)
    assert (await pool.call(server, name, {})).output == name


async def test_a_stderr_flood_is_bounded(pool: McpPool) -> None:
    result = await pool.call("box", "shout", {"lines": 50_000}, timeout_s=WAIT)
    assert result.output == "shouted 50000"
    assert 0 < len(pool.stderr_tail("box")) <= 100
    assert (await pool.call("box", "echo", {"text": "ok"})).output == "ok"


async def test_a_crash_fails_that_call_and_the_next_call_reaches_a_new_process() -> None:
    async with running({"box": toolbox()}) as pool:
        old = await server_pid(pool, "box")
        crashed = await pool.call("box", "crash", {})
        assert crashed.is_error and crashed.error_kind == "unavailable"
        new = await server_pid(pool, "box")  # waits for the restart in progress
        assert new != old and not alive(old)
        [status] = pool.status()
        assert status.connected and status.restarts == 1
        assert status.last_error == "connection closed"


async def test_a_hung_server_times_out_while_another_answers() -> None:
    async with running({"hung": toolbox(), "ok": toolbox()}) as pool:
        pid = await server_pid(pool, "hung")
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            hung = asyncio.create_task(pool.call("hung", "echo", {"text": "x"}, timeout_s=2.0))
            ok = await pool.call("ok", "echo", {"text": "fine"})
            assert ok.output == "fine" and not hung.done()
            result = await hung
            assert result.error_kind == "timeout"
            assert time.perf_counter() - started < 3.5
        finally:
            os.kill(pid, signal.SIGCONT)
        assert (await pool.call("hung", "echo", {"text": "back"})).output == "back"


async def test_start_is_bounded_when_a_server_never_answers() -> None:
    # A process that reads its requests and never answers them.
    silent = McpServerSpec(command=["python", "-c", "import sys; sys.stdin.read()"])
    started = time.perf_counter()
    async with running({"silent": silent}, connect_timeout_s=1.0) as pool:
        assert time.perf_counter() - started < 3.0
        [status] = pool.status()
        assert not status.connected
        result = await pool.call("silent", "anything", {}, timeout_s=0.3)
        assert result.is_error and result.error_kind == "unavailable"


async def test_aclose_leaves_no_child_processes() -> None:
    before = child_pids("mcp")
    pool = McpPool({"time": TIME, "box": toolbox()})
    await pool.start()
    spawned = child_pids("mcp") - before
    assert len(spawned) == 2
    started = time.perf_counter()
    await pool.aclose()
    assert time.perf_counter() - started < 5.0
    assert not any(alive(pid) for pid in spawned)
    assert child_pids("mcp") - before == set()
    result = await pool.call("box", "echo", {"text": "x"})
    assert result.is_error and result.error_kind == "unavailable"


async def test_add_and_remove_a_server_at_run_time() -> None:
    async with running({}) as pool:
        changes: list[str] = []
        pool.on_tools_changed(changes.append)
        await pool.add_server("box", toolbox())
        assert changes == ["box"] and pool.tools("box")
        with pytest.raises(ValueError, match="already attached"):
            await pool.add_server("box", toolbox())
        pid = await server_pid(pool, "box")
        in_flight = asyncio.create_task(pool.call("box", "slow", {"seconds": 0.3}))
        await asyncio.sleep(0)  # one step: the call is now in flight (no waiting on time)
        await pool.remove_server("box")
        assert (await in_flight).output == "slept 0.3"
        assert not pool.has_server("box") and pool.tools("box") == []
        assert changes == ["box", "box"] and not alive(pid)
        gone = await pool.call("box", "echo", {"text": "x"})
        assert gone.is_error and gone.error_kind == "unavailable"
