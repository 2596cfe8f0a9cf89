"""The benchmark's arithmetic (bench/report.py): added latency, capacity, targets, Markdown.

The harness itself runs in CI as `make bench-quick`; these pin down the figures it derives,
which a wrong sign or an off-by-one level would silently skew.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import report  # noqa: E402  # pyright: ignore[reportMissingImports]


def load_result(path: str, n: int, latencies: list[float], cpu_s: float | None = 0.5,
                ) -> dict[str, Any]:
    return {
        "path": path, "n": n, "window_s": 2.0, "latencies_ms": latencies,
        "audio_deltas": len(latencies), "events": 1000,
        "relay_cpu_s": None if path == "direct" else cpu_s,
        "relay_cpu_us_per_event": None if path == "direct" else (cpu_s or 0) * 1000,
        "rss_per_session_kb": None if path == "direct" else 80.0, "rss_after_kb": None,
        "rss_per_idle_session_kb": None if path == "direct" else 60.0,
        "send_slip_p99_ms": 0.0, "loadgen_cpu_s": 0.2, "failures": [],
    }


def level(n: int, added_p99: float) -> list[dict[str, Any]]:
    """Direct, relay and orchestrator rows at one level; the relays add `added_p99` at p99."""
    base = [1.0] * 99 + [2.0]
    direct = load_result("direct", n, base)
    rows = [report.summarize(direct, None)]
    for path in ("relay", "orchestrator"):
        slower = [x + 0.1 for x in base[:-1]] + [2.0 + added_p99]
        rows.append(report.summarize(load_result(path, n, slower), direct))
    return rows


def test_added_latency_is_the_path_quantile_minus_the_direct_one() -> None:
    [direct, relay, _] = level(50, added_p99=5.0)
    assert direct["added_ms"] == {"p50": 0.0, "p99": 0.0, "p99.9": 0.0}
    assert relay["added_ms"]["p50"] == 0.1
    assert relay["added_ms"]["p99"] == 5.0


def test_capacity_interpolates_where_p99_passes_the_limit() -> None:
    rows = level(50, 10.0) + level(100, 30.0)
    assert report.capacity(rows, "relay") == {"n": 75, "bounded": True}
    assert report.capacity(level(50, 1.0), "relay") == {"n": 50, "bounded": False}


def test_targets_and_markdown_show_every_figure() -> None:
    results: dict[str, Any] = {
        "quick": True, "time": "2026-01-01T00:00:00+00:00", "elapsed_s": 1.0,
        "command": "python bench/run.py --quick",
        "machine": {"cpu": "cpu", "cores": 2, "python": "3.11", "kernel": "k",
                    "load_before": (1.0, 1.0, 1.0), "load_after": (1.0, 1.0, 1.0)},
        "latency": level(1, 0.0) + level(20, 1.0),
        "tools": report.tools_summary({"calls": 3, "overhead_ms": [0.4, 0.5, 2.0],
                                       "round_trip_ms": [2.0, 2.1, 4.0],
                                       "mcp_call_ms": [1.6, 1.6, 2.0]}),
        "recorder": {"rows_per_s": 25_000, "throughput": [
            {"rows": 10, "seconds": 0.1, "rows_per_s": 25_000, "plan_share": 0.03}],
            "lag": {"rate_rows_per_s": 5000, "seconds": 1, "max_queue_depth": 10,
                    "lag_ms_p50": 60, "lag_ms_p99": 100, "lag_ms_max": 110}},
        "stats": {"measured": False, "note": "not measured on this branch"},
    }
    results["summary"] = report.targets(results)
    met = {t["target"]: t["met"] for t in results["summary"]}
    assert met["added latency at 20 sessions: p50 <= 0.5 ms"] is True
    assert met["tool dispatch overhead p50 <= 1 ms"] is True
    assert met["recorder >= 20,000 rows/s (SQLite)"] is True
    assert met["stats endpoints < 1 s at 1M tool calls"] is None
    text = report.markdown(results)
    assert "| 20 | orchestrator |" in text and "not measured on this branch" in text


def test_capacity_ignores_a_noisy_level_followed_by_good_ones() -> None:
    rows = level(25, 30.0) + level(50, 2.0) + level(75, 20.0) + level(100, 40.0)
    assert report.capacity(rows, "relay") == {"n": 75, "bounded": True}


def test_stats_target_is_the_slowest_endpoint_not_the_seeding_time() -> None:
    stats: dict[str, Any] = {
        "measured": True, "tool_calls": 1_000_000, "backend": "sqlite+aiosqlite",
        "seed_s": 43.7, "requests": 7,
        "endpoints": {
            "stats_tools_all": {"cold_ms": 490.6, "median_ms": 460.2, "worst_ms": 473.3},
            "stats_agents_all": {"cold_ms": 906.1, "median_ms": 902.8, "worst_ms": 927.1},
            "conversations_q": {"cold_ms": 1204.9, "median_ms": 203.6, "worst_ms": 209.0},
        },
    }
    assert report._stats_worst(stats) == (1.205, "conversations_q")  # pyright: ignore[reportPrivateUsage]
    del stats["endpoints"]["conversations_q"]
    assert report._stats_worst(stats) == (0.927, "stats_agents_all")  # pyright: ignore[reportPrivateUsage]
    assert report._stats_worst({"measured": True, "seed_s": 43.7}) is None  # pyright: ignore[reportPrivateUsage]
