"""Real faults for the fault tests: a database that goes away, counts of live tasks and child
processes, and a bounded wait on a condition."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.tables import Conversation, Handoff, Item, Response, ToolCall
from tests.server import REPO
from tests.test_mcp_pool import child_pids
from tests.test_store import TcpProxy

__all__ = ["REPO", "DatabaseOutage", "Seen", "ServeProcess", "child_pids", "outage_ready",
           "recorded_messages", "row_counts", "sandbox_process", "wait_until"]

WAIT = 30.0


async def wait_until(condition: Callable[[], bool], within: float = WAIT) -> None:
    """Return once `condition()` holds; TimeoutError past `within` (checks every 20 ms), for
    states no event announces (a child process gone, a counter in another task)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - there is no event to wait on
            await asyncio.sleep(0.02)


class DatabaseOutage:
    """Takes a database away for real and brings it back.

    PostgreSQL: the engine reaches the server through a TCP relay that is cut (listener and
    every relayed connection closed) and restarted. SQLite: another connection holds an
    EXCLUSIVE lock, so every write fails with `database is locked` after the busy timeout.
    """

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self._proxy: TcpProxy | None = None
        self._lock: sqlite3.Connection | None = None
        self._sqlite_path: str | None = None
        if url.get_backend_name() == "sqlite":
            self._sqlite_path = url.database
            self.url = database_url
        else:
            self._proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
            self.url = url.set(port=self._proxy.port).render_as_string(hide_password=False)

    async def start(self) -> None:
        """The database reachable through `url`."""
        if self._proxy is not None:
            await self._proxy.start()

    async def cut(self) -> None:
        """The database becomes unavailable."""
        if self._proxy is not None:
            await self._proxy.close()
            return
        assert self._sqlite_path is not None
        lock = sqlite3.connect(self._sqlite_path, isolation_level=None, check_same_thread=False)
        lock.execute("BEGIN EXCLUSIVE")
        self._lock = lock

    async def restore(self) -> None:
        """The database is back."""
        if self._proxy is not None:
            # The cut connections may hold the port a moment longer (bounded retry).
            for _ in range(250):
                try:
                    await self._proxy.start()
                    return
                except OSError:
                    await asyncio.sleep(0.02)
            await self._proxy.start()
            return
        if self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    async def close(self) -> None:
        """Release the lock, close the relay."""
        if self._proxy is not None:
            await self._proxy.close()
        elif self._lock is not None:
            await self.restore()


@asynccontextmanager
async def outage_ready(database_url: str) -> AsyncGenerator[DatabaseOutage]:
    """A started `DatabaseOutage` for the test, restored and closed afterwards."""
    outage = DatabaseOutage(database_url)
    await outage.start()
    try:
        yield outage
    finally:
        await outage.close()


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    """Rows per recorded table."""
    async with engine.connect() as connection:
        return {
            model.__tablename__: (await connection.scalar(
                select(func.count()).select_from(model))) or 0
            for model in (Conversation, Item, ToolCall, Response, Handoff)
        }


class ServeProcess:
    """`orchestrator serve` (or `sandbox`) as a child process in a folder, its output kept."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        base = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args, "--port", str(self.port)],
            cwd=folder, env={**base, "PYTHONPATH": str(REPO), **(env or {})}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.output: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:  # drains the pipe so the child never blocks on it
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if "running on" in line.lower() or "sandbox on" in line.lower():
                self._ready.set()
        self._ready.set()

    async def ready(self) -> None:
        """Wait until the child serves."""
        await asyncio.wait_for(asyncio.to_thread(self._ready.wait, WAIT), WAIT)
        assert self.proc.poll() is None, "".join(self.output)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the child and wait for its exit code (killed past the bound)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.to_thread(self.proc.wait, 60)
        finally:
            self.proc.kill()
            await asyncio.to_thread(self._reader.join, WAIT)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@dataclass(slots=True)
class Seen:
    """What one client saw of its conversation: message item ids and server tool calls."""

    messages: set[str] = field(default_factory=set[str])
    tool_calls: int = 0

    def add(self, events: list[dict[str, Any]]) -> None:
        """Note the finished items among `events`."""
        for event in events:
            if event["type"] != "conversation.item.done":
                continue
            item = event["item"]
            if item["type"] == "message":
                self.messages.add(item["id"])
            elif item["type"] == "mcp_call":
                self.tool_calls += 1


async def recorded_messages(engine: AsyncEngine) -> tuple[list[str], int]:
    """Every recorded message item id (duplicates kept) and the number of tool calls."""
    async with engine.connect() as connection:
        ids = (await connection.scalars(
            select(Item.item_id).where(Item.type == "message"))).all()
        calls = await connection.scalar(select(func.count()).select_from(ToolCall)) or 0
    return [i for i in ids if i is not None], calls


FAULT_AGENTS = REPO / "tests" / "fixtures" / "faults"


@asynccontextmanager
async def sandbox_process(folder: Path) -> AsyncGenerator[ServeProcess]:
    """`orchestrator sandbox` in its own process serving the fault agents' scripts; resumed
    (if frozen) and killed afterwards."""
    shutil.copytree(FAULT_AGENTS, folder / "agents")
    process = ServeProcess(folder, "sandbox", "--agents", "agents",
                           env={"ORCH_TEST_REPO": str(REPO)})
    try:
        await process.ready()
        yield process
    finally:
        if process.proc.poll() is None:
            os.kill(process.proc.pid, signal.SIGCONT)
        await process.stop(signal.SIGKILL)
