"""A/B of the relay's CPU cost: this tree's orchestrator against another commit's, alternating.

    python bench/ab.py [--base REF] [--n 50] [--rounds 4] [--window 8] [--relay]

On a shared machine single runs of bench/run.py move by 10-20 %; a change worth a few percent
of the CPU per relayed event shows only as the median of alternating runs under the same load.
`--base` (default HEAD) is exported with `git archive` to a temporary directory and served
from there (its `orchestrator` package and its bench/serve.py); this tree is served as is.
Each round runs base, this tree (and with `--relay` the minimal relay) at N sessions, each in
a fresh process, against one upstream. Prints one line per run and the medians; one JSON line
at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from run import BENCH, REPO, Children, run_json


def export(ref: str, into: Path) -> Path:
    """The tree of `ref` under `into` (bench/, orchestrator/, agents and migrations)."""
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def one(children: Children, tree: Path, kind: str, upstream: str, n: int,
        window: float) -> dict[str, Any]:
    env = {"PYTHONPATH": str(tree)}
    if kind == "relay":
        proc, port = children.start(str(BENCH / "relay.py"), upstream, env=env)
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=bench-audio"
    else:
        var = tempfile.mkdtemp(prefix="bench-ab-")
        proc, port = children.start(str(tree / "bench" / "serve.py"), var,
                                    env={**env, "BENCH_SANDBOX_URL": upstream})
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=bench-audio-relay"
    try:
        return run_json([str(BENCH / "load.py"), url, str(n), "--warmup", "2",
                         "--window", str(window), "--pid", str(proc.pid)],
                        timeout_s=120 + n * 0.5)
    finally:
        children.stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="HEAD")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--relay", action="store_true", help="run the minimal relay too")
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"base": [], "this": [], "relay": []}
    with tempfile.TemporaryDirectory(prefix="bench-ab-base-") as tmp:
        trees = {"base": export(args.base, Path(tmp)), "this": REPO}
        children = Children()
        try:
            _, up_port = children.start(str(BENCH / "upstream.py"),
                                        env={"PYTHONPATH": str(REPO)})
            upstream = f"ws://127.0.0.1:{up_port}/v1"
            kinds = ["base", "this", *(["relay"] if args.relay else [])]
            for i in range(args.rounds):
                for kind in kinds if i % 2 == 0 else kinds[::-1]:
                    tree = trees.get(kind, REPO)
                    result = one(children, tree, kind, upstream, args.n, args.window)
                    cpu = result["relay_cpu_us_per_event"]
                    runs[kind].append(cpu)
                    print(f"round {i + 1} {kind:<5} cpu {cpu:6.1f} us/event, "
                          f"events {result['events']}, failures {result['failures']}",
                          flush=True)
        finally:
            children.close()
    medians = {k: round(statistics.median(v), 1) for k, v in runs.items() if v}
    print("medians (us/event):", medians, "this/base:",
          round(medians["this"] / medians["base"], 3), flush=True)
    json.dump({"base": args.base, "n": args.n, "runs": runs, "medians": medians}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
