"""Fault 1: MCP servers that are killed mid-call, hang (SIGSTOP), never start, or flood their
stdout. The affected call gets an error result within its timeout, the other server answers
meanwhile, the pool restarts the server with backoff, and the next call works."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from orchestrator.agents.spec import McpServerSpec
from tests.faults import wait_until
from tests.test_mcp_pool import alive, running, server_pid, toolbox

WAIT = 30.0
PING = {"ping_interval_s": 0.3, "ping_timeout_s": 0.5}


async def test_a_server_killed_mid_call_fails_that_call_and_is_restarted() -> None:
    async with running({"box": toolbox(), "other": toolbox()}, **PING) as pool:
        old = await server_pid(pool, "box")
        call = asyncio.create_task(pool.call("box", "slow", {"seconds": 20}, timeout_s=10))
        await wait_until(lambda: pool.status()[0].connected and not call.done())
        started = time.monotonic()
        os.kill(old, signal.SIGKILL)
        result = await asyncio.wait_for(call, WAIT)
        failed = time.monotonic() - started
        assert result.is_error and result.error_kind == "unavailable", result
        assert (await pool.call("other", "echo", {"text": "fine"})).output == "fine"
        new = await server_pid(pool, "box")  # waits for the restart in progress
        recovered = time.monotonic() - started
        assert new != old and not alive(old)
        assert pool.status()[0].restarts == 1
        print(f"killed MCP server: call failed after {failed:.2f} s, "
              f"serving again after {recovered:.2f} s")


async def test_a_hung_server_is_found_by_the_liveness_check_and_restarted() -> None:
    async with running({"hung": toolbox(), "other": toolbox()}, **PING) as pool:
        old = await server_pid(pool, "hung")
        os.kill(old, signal.SIGSTOP)
        try:
            started = time.monotonic()
            call = await pool.call("hung", "echo", {"text": "x"}, timeout_s=1.0)
            assert call.is_error and call.error_kind in ("timeout", "unavailable"), call
            assert (await pool.call("other", "echo", {"text": "fine"})).output == "fine"
            await wait_until(lambda: pool.status()[0].restarts >= 1)
            new = await server_pid(pool, "hung")
            recovered = time.monotonic() - started
        finally:
            if alive(old):
                os.kill(old, signal.SIGCONT)
        assert new != old
        assert "liveness check" in (pool.status()[0].last_error or "")
        assert (await pool.call("hung", "echo", {"text": "back"})).output == "back"
        print(f"hung MCP server: serving again after {recovered:.2f} s")


async def test_a_server_that_never_starts_is_retried_with_backoff_and_fails_fast() -> None:
    never = McpServerSpec(command=["python", "-c", "import sys; sys.exit(3)"])
    async with running({"never": never, "other": toolbox()}, **PING) as pool:
        result = await pool.call("never", "anything", {}, timeout_s=5.0)
        assert result.is_error and result.error_kind == "unavailable"
        await wait_until(lambda: pool.status()[0].restarts >= 3)  # 0.2 s, 0.4 s, 0.8 s
        [never_status, other] = pool.status()
        assert not never_status.connected and never_status.last_error
        assert other.connected and (await pool.call("other", "add", {"a": 1, "b": 2})).output == "3"


async def test_a_stdout_flood_leaves_the_server_usable_and_the_others_untouched() -> None:
    async with running({"box": toolbox(), "other": toolbox()}, **PING) as pool:
        flood = asyncio.create_task(pool.call("box", "flood", {"lines": 20_000}, timeout_s=10))
        assert (await pool.call("other", "echo", {"text": "fine"})).output == "fine"
        result = await asyncio.wait_for(flood, WAIT)
        assert result.output == "flooded 20000"  # the junk lines are skipped, the answer read
        assert (await pool.call("box", "echo", {"text": "after"})).output == "after"
        assert [s.restarts for s in pool.status()] == [0, 0]
