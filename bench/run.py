"""The benchmark harness: `make bench` (about 6 minutes) or `make bench-quick` (under a minute).

    python bench/run.py [--quick] [--levels 1,50,100] [--no-docs]

Three paths carry the same load, level by level, interleaved (so each level's ratios share the
machine's load of the moment): `direct` (client to upstream), `relay` (bench/relay.py) and
`orchestrator` (bench/serve.py, the `openai` provider). The upstream (bench/upstream.py), each
relay and each load generator (bench/load.py) run in their own processes; a relay process is
fresh for every level. Then tool dispatch (bench/tools.py), the recorder (bench/recorder.py)
and, where this branch has it, the stats endpoints (bench/stats.py). Results go to
`bench/results/<UTC time>.json`; a full run also rewrites the results section of
`docs/benchmarks.md` and `docs/benchmarks-latency.png`. Every child is killed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
PY = sys.executable
PATHS = ("direct", "relay", "orchestrator")
LIMIT_MS = 20.0  # capacity: the N at which p99 added latency passes this
START_TIMEOUT_S = 90.0
sys.path.insert(0, str(BENCH))
import report  # noqa: E402


class Children:
    """Child processes, all killed when the run ends (normally or not)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, env: dict[str, str] | None = None,
              ) -> tuple[subprocess.Popen[str], int]:
        """Start a server child; returns it and the port it printed."""
        proc = subprocess.Popen([PY, *args], cwd=REPO, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""  # the port, or EOF if the child died
        if not line.startswith("PORT "):
            self.stop(proc)
            raise RuntimeError(f"{args[0]} did not start (exit {proc.poll()})")
        return proc, int(line.split()[1])

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


def run_json(args: list[str], timeout_s: float) -> dict[str, Any]:
    """Run a bench script that prints one JSON line."""
    out = subprocess.run([PY, *args], cwd=REPO, capture_output=True, text=True,
                         timeout=timeout_s, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_level(children: Children, upstream_port: int, path: str, n: int,
              warmup: float, window: float, aligned: bool = False) -> dict[str, Any]:
    """One path at one level: a fresh relay process, one load generator run."""
    base = f"ws://127.0.0.1:{upstream_port}/v1"
    proc = None
    if path == "direct":
        url, pid = f"{base}/realtime?model=bench-audio", 0
    elif path == "relay":
        proc, port = children.start("bench/relay.py", base)
        url, pid = f"ws://127.0.0.1:{port}/v1/realtime?model=bench-audio", proc.pid
    else:
        var = tempfile.mkdtemp(prefix="bench-orch-")
        proc, port = children.start("bench/serve.py", var, env={"BENCH_SANDBOX_URL": base})
        url, pid = f"ws://127.0.0.1:{port}/v1/realtime?model=bench-audio-relay", proc.pid
    try:
        result = run_json(["bench/load.py", url, str(n), "--warmup", str(warmup),
                           "--window", str(window), "--pid", str(pid),
                           *(["--aligned"] if aligned else [])],
                          timeout_s=120 + n * 0.5)
    finally:
        if proc is not None:
            children.stop(proc)
    result["path"] = path
    return result


def latency_sweep(levels: list[int], warmup: float, window: float,
                  errors: list[str], aligned: bool = False) -> list[dict[str, Any]]:
    """Every path at every level, until both relays have passed the capacity limit at two
    levels in a row (one noisy level on a shared machine does not end a path's sweep)."""
    children = Children()
    rows: list[dict[str, Any]] = []
    try:
        _, upstream_port = children.start("bench/upstream.py",
                                          env={"PYTHONPATH": str(REPO)})
        passed: set[str] = set()
        over: dict[str, int] = {}
        for n in levels:
            direct: dict[str, Any] | None = None
            for path in PATHS:
                if path in passed:
                    continue
                try:
                    result = one_level(children, upstream_port, path, n, warmup, window,
                                       aligned)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    # A path that cannot hold a level is saturated there; the run goes on.
                    errors.append(f"N={n} {path}: {exc}"[:500])
                    print(f"N={n:<4} {path:<12} FAILED: {exc}"[:300], flush=True)
                    if path == "direct":
                        return rows
                    passed.add(path)
                    continue
                summary = report.summarize(result, direct)
                print(report.progress_line(summary), flush=True)
                rows.append(summary)
                if path == "direct":
                    direct = result
                elif summary["added_ms"]["p99"] is not None:
                    over[path] = over.get(path, 0) + 1 \
                        if summary["added_ms"]["p99"] > LIMIT_MS else 0
                    if over[path] >= 2:
                        passed.add(path)
            if {"relay", "orchestrator"} <= passed:
                break
    finally:
        children.close()
    return rows


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "load_before": os.getloadavg(), "nice": os.nice(0)}


def stats_figures(quick: bool) -> dict[str, Any]:
    """bench/stats.py (another branch's), if this branch has it."""
    script = BENCH / "stats.py"
    if not script.exists():
        return {"measured": False, "note": "not measured on this branch (bench/stats.py absent)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stats.json"
        args = [PY, str(script), "--json", str(out), *(["--quick"] if quick else [])]
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=420,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        if done.returncode != 0 or not out.exists():
            return {"measured": False, "note": f"bench/stats.py failed: {done.stderr[-500:]}"}
        return {"measured": True, **json.loads(out.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--levels", help="comma-separated session counts")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/ untouched")
    parser.add_argument("--aligned", action="store_true",
                        help="sessions' output ticks in phase (bench/load.py --aligned)")
    args = parser.parse_args()
    quick = args.quick
    levels = [int(x) for x in args.levels.split(",")] if args.levels else (
        [20] if quick else [1, 25, 50, 75, 100, 150, 200, 250, 300])
    warmup, window = (0.5, 2.0) if quick else (2.0, 8.0)
    started = time.monotonic()
    results: dict[str, Any] = {"quick": quick, "command": " ".join(["python", *sys.argv]),
                               "time": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": machine()}
    results["errors"] = []
    results["aligned"] = args.aligned
    results["latency"] = latency_sweep(levels, warmup, window, results["errors"], args.aligned)
    print("tool dispatch ...", flush=True)
    results["tools"] = report.tools_summary(run_json(
        ["bench/tools.py", "--calls", "40" if quick else "300"], timeout_s=180))
    print("recorder ...", flush=True)
    results["recorder"] = run_json(["bench/recorder.py", *(["--quick"] if quick else [])],
                                   timeout_s=300)
    print("stats endpoints ...", flush=True)
    results["stats"] = stats_figures(quick)
    results["machine"]["load_after"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["summary"] = report.targets(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{results['time'].replace(':', '')}{'-quick' if quick else ''}.json"
    out.write_text(json.dumps(results, indent=1))
    print(report.markdown(results))
    print(f"results: {out.relative_to(REPO)} ({results['elapsed_s']} s)")
    if not quick and not args.no_docs:
        report.write_docs(results, REPO / "docs")
    if quick and results["errors"]:
        sys.exit(1)  # the smoke test: every path must hold its one level


if __name__ == "__main__":
    main()
