"""Soak: N concurrent sessions with tool calls for a while, against `orchestrator serve` and
the scripted model (`orchestrator sandbox`), each in its own process, then the record checked
count for count (every message item and tool call the clients saw is in the database, once).

    .venv/bin/python bench/soak.py [--sessions 200] [--seconds 60] [--database-url URL]
                                   [--admit N]   # max_sessions: the rest get 503

Prints turns, turn latency percentiles, the server's peak RSS, the SIGTERM-to-exit time and
the check. The same check runs in the suite as a short burst (`tests/test_load.py`, or the
full soak with ORCHESTRATOR_SOAK=1).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.store.db import create_engine  # noqa: E402
from tests.faults import ServeProcess, recorded_messages  # noqa: E402
from tests.load import run_load  # noqa: E402

AGENTS = REPO / "tests" / "fixtures" / "faults"


def rss_mb(pid: int) -> float:
    """Resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main(sessions: int, seconds: float, database_url: str | None,
               admit: int | None) -> int:
    """Run the soak; 0 if the record matches what the clients saw."""
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    shutil.copytree(AGENTS, folder / "agents")
    env = {"ORCH_TEST_REPO": str(REPO)}
    sandbox = ServeProcess(folder, "sandbox", "--agents", "agents", env=env)
    await sandbox.ready()
    url = database_url or f"sqlite+aiosqlite:///{folder / 'var' / 'orchestrator.db'}"
    server = ServeProcess(folder, "serve", env={
        **env, "SANDBOX_URL": f"ws://127.0.0.1:{sandbox.port}/v1",
        "ORCHESTRATOR_DATABASE_URL": url, "ORCHESTRATOR_MAX_SESSIONS": str(admit or sessions + 10)})
    await server.ready()
    token = (folder / "var" / "admin_token").read_text().strip()
    peak = [0.0]

    async def watch() -> None:
        while True:
            peak[0] = max(peak[0], rss_mb(server.proc.pid))
            await asyncio.sleep(1)

    watcher = asyncio.create_task(watch())
    result = await run_load(f"ws://127.0.0.1:{server.port}/v1/realtime?model=relay", token,
                            sessions=sessions, duration_s=seconds)
    watcher.cancel()
    stopping = time.monotonic()
    code = await server.stop(signal.SIGTERM)
    stopped = time.monotonic() - stopping
    await sandbox.stop(signal.SIGTERM)
    engine = create_engine(url)
    try:
        messages, calls = await recorded_messages(engine)
    finally:
        await engine.dispose()
    q = statistics.quantiles(result.latencies_ms, n=100)
    ok = sorted(messages) == sorted(result.seen.messages) and calls == result.seen.tool_calls
    print(f"{sessions} sessions for {seconds:g} s: {result.turns} turns "
          f"({result.turns / seconds:.0f}/s), turn p50 {q[49]:.0f} ms, p95 {q[94]:.0f} ms, "
          f"p99 {q[98]:.0f} ms; server peak RSS {peak[0]:.0f} MB; SIGTERM to exit "
          f"{stopped:.2f} s (code {code}); {result.refused} sessions refused (503)")
    print(f"record: {len(messages)} message items for {len(result.seen.messages)} seen, "
          f"{calls} tool calls for {result.seen.tool_calls} seen: {'OK' if ok else 'MISMATCH'}")
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--admit", type=int, default=None,
                        help="max_sessions of the server (default: sessions + 10)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.sessions, args.seconds, args.database_url, args.admit)))
