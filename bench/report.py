"""Figures, targets, the Markdown tables and the plot of a bench/run.py run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

QUANTILES = {"p50": 0.50, "p99": 0.99, "p99.9": 0.999}
MARK_START, MARK_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of unsorted values (None for none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def quantiles(values: list[float]) -> dict[str, float | None]:
    return {name: _round(quantile(values, q)) for name, q in QUANTILES.items()}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarize(result: dict[str, Any], direct: dict[str, Any] | None) -> dict[str, Any]:
    """One path at one level: latency quantiles, added latency over direct, costs."""
    latency = quantiles(result["latencies_ms"])
    base = quantiles(direct["latencies_ms"]) if direct is not None else None
    added = {k: (_round(v - base[k]) if base and v is not None and base[k] is not None
                 else (0.0 if result["path"] == "direct" else None))
             for k, v in latency.items()}
    return {
        "path": result["path"], "n": result["n"], "latency_ms": latency, "added_ms": added,
        "audio_deltas": result["audio_deltas"], "events": result["events"],
        "expected_deltas": result["n"] * 10 * result["window_s"],
        "cpu_us_per_event": _round(result["relay_cpu_us_per_event"], 1),
        "relay_cpu_share": _round(result["relay_cpu_s"] / result["window_s"], 2)
        if result["relay_cpu_s"] is not None else None,
        "rss_per_session_kb": _round(result["rss_per_session_kb"], 1),
        "rss_per_idle_session_kb": _round(result.get("rss_per_idle_session_kb"), 1),
        "rss_after_kb": result["rss_after_kb"], "send_slip_p99_ms": result["send_slip_p99_ms"],
        "loadgen_cpu_share": _round(result["loadgen_cpu_s"] / result["window_s"], 2),
        "failures": result["failures"],
    }


def progress_line(row: dict[str, Any]) -> str:
    lat, add = row["latency_ms"], row["added_ms"]
    return (f"N={row['n']:<4} {row['path']:<12} latency p50 {lat['p50']} p99 {lat['p99']} ms, "
            f"added p50 {add['p50']} p99 {add['p99']} ms, cpu/event {row['cpu_us_per_event']} us, "
            f"deltas {row['audio_deltas']}/{row['expected_deltas']:.0f}"
            + (f" FAILURES {row['failures']}" if row["failures"] else ""))


def tools_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return {"calls": raw["calls"], "overhead_ms": quantiles(raw["overhead_ms"]),
            "round_trip_ms": quantiles(raw["round_trip_ms"]),
            "mcp_call_ms": quantiles(raw["mcp_call_ms"])}


def capacity(rows: list[dict[str, Any]], path: str, limit_ms: float = 20.0) -> dict[str, Any]:
    """The N from which p99 added latency stays past the limit (interpolated from the level
    before); a single noisy level followed by good ones does not count."""
    points = sorted((r["n"], r["added_ms"]["p99"]) for r in rows
                    if r["path"] == path and r["added_ms"]["p99"] is not None)
    streak = len(points)
    while streak > 0 and points[streak - 1][1] > limit_ms:
        streak -= 1
    if streak == len(points):
        return {"n": points[-1][0] if points else None, "bounded": False}  # at least this
    n0, v0 = points[streak - 1] if streak > 0 else (0, 0.0)
    n, p99 = points[streak]
    v0 = min(v0, limit_ms)
    return {"n": round(n0 + (n - n0) * (limit_ms - v0) / (p99 - v0)), "bounded": True}


def _row(rows: list[dict[str, Any]], path: str, n: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["path"] == path and r["n"] == n), None)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue #5 with the measured value and whether it holds."""
    rows = results["latency"]
    levels = sorted({r["n"] for r in rows})
    at = 50 if 50 in levels else max(n for n in levels if n > 1)  # quick mode: N=20
    orch, relay = _row(rows, "orchestrator", at), _row(rows, "relay", at)
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, met: bool | None, note: str = "") -> None:
        out.append({"target": name, "measured": value, "met": met, "note": note})

    if orch:
        p50, p99 = orch["added_ms"]["p50"], orch["added_ms"]["p99"]
        add(f"added latency at {at} sessions: p50 <= 0.5 ms", p50, p50 is not None and p50 <= .5,
            f"minimal relay: {relay['added_ms']['p50'] if relay else '-'}")
        add(f"added latency at {at} sessions: p99 <= 3 ms", p99, p99 is not None and p99 <= 3,
            f"minimal relay: {relay['added_ms']['p99'] if relay else '-'}")
    cap_o, cap_r = capacity(rows, "orchestrator"), capacity(rows, "relay")
    if cap_o["n"] and cap_r["n"]:
        ratio = cap_o["n"] / cap_r["n"]
        bounded = cap_o["bounded"] and cap_r["bounded"]
        add("capacity >= 90 % of the minimal relay's", round(ratio, 2),
            ratio >= 0.9 if bounded or not cap_o["bounded"] else False,
            f"orchestrator {'' if cap_o['bounded'] else '>= '}{cap_o['n']}, relay "
            f"{'' if cap_r['bounded'] else '>= '}{cap_r['n']} sessions")
    if orch and relay and orch["cpu_us_per_event"] and relay["cpu_us_per_event"]:
        ratio = orch["cpu_us_per_event"] / relay["cpu_us_per_event"]
        add("CPU per relayed event <= 1.3x the minimal relay's", round(ratio, 2), ratio <= 1.3,
            f"{orch['cpu_us_per_event']} vs {relay['cpu_us_per_event']} us at {at} sessions")
    biggest = max((r for r in rows if r["path"] == "orchestrator"), key=lambda r: r["n"],
                  default=None)
    if biggest and biggest["rss_per_session_kb"] is not None:
        kb = biggest["rss_per_session_kb"]
        add("RSS per live session <= 100 KB", kb, kb <= 100,
            f"streaming, at {biggest['n']} sessions; connected but silent: "
            f"{biggest['rss_per_idle_session_kb']} KB")
    tools = results["tools"]["overhead_ms"]["p50"]
    add("tool dispatch overhead p50 <= 1 ms", tools, tools is not None and tools <= 1.0,
        f"p99 {results['tools']['overhead_ms']['p99']} ms")
    rps = results["recorder"]["rows_per_s"]
    add("recorder >= 20,000 rows/s (SQLite)", rps, rps >= 20_000,
        f"lag at {results['recorder']['lag']['rate_rows_per_s']} rows/s: p99 "
        f"{results['recorder']['lag']['lag_ms_p99']} ms")
    stats = results["stats"]
    worst = _stats_worst(stats) if stats.get("measured") else None
    if worst is not None:
        seconds, name = worst
        add("stats endpoints < 1 s at 1M tool calls", seconds, seconds < 1.0,
            f"slowest: {name}, worst of {stats.get('requests', '?')} requests; "
            f"{stats.get('backend', '')}")
    else:
        add("stats endpoints < 1 s at 1M tool calls", None, None,
            stats.get("note", "no endpoint times in bench/stats.py's output"))
    return out


def _stats_worst(stats: dict[str, Any]) -> tuple[float, str] | None:
    """The slowest answer of any endpoint (its cold first request included), in seconds,
    with the endpoint's name; seeding time and the other run figures are not request times."""
    endpoints: dict[str, Any] = stats.get("endpoints") or {}
    times = [(max(float(v) for k, v in timing.items() if k.endswith("_ms")) / 1000, name)
             for name, timing in endpoints.items()
             if isinstance(timing, dict) and any(k.endswith("_ms") for k in timing)]
    if not times:
        return None
    seconds, name = max(times)
    return round(seconds, 3), name


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Run of {results['time']} ({'quick' if results['quick'] else 'full'}), "
        f"{results['elapsed_s']} s: `{results['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Linux {m['kernel']}; "
        f"load average {', '.join(f'{x:.2f}' for x in m['load_before'])} before, "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_after', ()))} after (shared machine); "
        f"niceness {m.get('nice', 0)}. Sessions' output ticks "
        f"{'in phase (--aligned)' if results.get('aligned') else 'spread over 100 ms'}.",
        "",
        "### Targets", "",
        "| target | measured | met | note |", "|---|---|---|---|",
    ]
    for error in results.get("errors", []):
        lines.insert(4, f"Failed: {error}  ")
    for t in results["summary"]:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['measured'])} | {met} | {t['note']} |")
    lines += ["", "### Latency of output audio deltas (ms) and the cost of each path", "",
              "| N | path | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | "
              "CPU µs/event | relay CPU (cores) | RSS KB/session (silent) | deltas got/expected |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["latency"]:
        lat, add = r["latency_ms"], r["added_ms"]
        lines.append(
            f"| {r['n']} | {r['path']} | {_fmt(lat['p50'])} | {_fmt(lat['p99'])} | "
            f"{_fmt(lat['p99.9'])} | {_fmt(add['p50'])} | {_fmt(add['p99'])} | "
            f"{_fmt(add['p99.9'])} | {_fmt(r['cpu_us_per_event'])} | "
            f"{_fmt(r['relay_cpu_share'])} | {_fmt(r['rss_per_session_kb'])} "
            f"({_fmt(r['rss_per_idle_session_kb'])}) | "
            f"{r['audio_deltas']}/{r['expected_deltas']:.0f} |")
    t = results["tools"]
    lines += ["", f"### Tool dispatch ({t['calls']} sequential calls, ms)", "",
              "| measure | p50 | p99 | p99.9 |", "|---|---|---|---|"]
    for key, label in (("overhead_ms", "overhead (round trip - MCP call)"),
                       ("round_trip_ms", "arguments.done sent → output received (upstream)"),
                       ("mcp_call_ms", "MCP call itself (pool.call)")):
        q = t[key]
        lines.append(f"| {label} | {_fmt(q['p50'])} | {_fmt(q['p99'])} | {_fmt(q['p99.9'])} |")
    rec = results["recorder"]
    lines += ["", "### Recorder (SQLite, batch 1000)", "",
              "| run | rows | seconds | rows/s | share in plan_batch |", "|---|---|---|---|---|"]
    for i, run in enumerate(rec["throughput"], 1):
        lines.append(f"| {i} | {run['rows']} | {run['seconds']} | {run['rows_per_s']} | "
                     f"{run['plan_share']} |")
    lag = rec["lag"]
    lines += ["", f"Queue lag at a steady {lag['rate_rows_per_s']} rows/s for {lag['seconds']} s: "
              f"p50 {lag['lag_ms_p50']} ms, p99 {lag['lag_ms_p99']} ms, max {lag['lag_ms_max']} "
              f"ms (record → commit), deepest queue {lag['max_queue_depth']} rows.", ""]
    stats = results["stats"]
    lines.append("### Stats endpoints\n")
    if stats.get("measured"):
        shown = {k: v for k, v in stats.items() if k != "measured"}
        lines.append("```json\n" + json.dumps(shown, indent=1)[:3000] + "\n```")
    else:
        lines.append(stats.get("note", "not measured"))
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out: Path) -> bool:
    """Added latency (p50 and p99) against N for the three paths; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (raw, added) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    styles = {"direct": ":", "relay": "--", "orchestrator": "-"}
    colors = {"direct": "C0", "relay": "C1", "orchestrator": "C2"}
    for path, style in styles.items():
        points = sorted((r["n"], r["latency_ms"]["p99"]) for r in results["latency"]
                        if r["path"] == path and r["latency_ms"]["p99"] is not None)
        if points:
            raw.plot(*zip(*points, strict=True), style, marker="o", color=colors[path],
                     label=f"{path} p99")
    raw.set_title("one-way latency of output audio deltas, p99")
    raw.set_yscale("log")
    for path in ("relay", "orchestrator"):
        for key, marker in (("p50", "s"), ("p99", "o")):
            points = sorted((r["n"], r["added_ms"][key]) for r in results["latency"]
                            if r["path"] == path and r["added_ms"][key] is not None)
            if points:
                added.plot(*zip(*points, strict=True), styles[path], marker=marker,
                           color=colors[path], label=f"{path} {key}")
    added.axhline(20, color="grey", linewidth=0.8)
    added.set_yscale("symlog", linthresh=1)
    added.set_title("added latency over direct (0 = direct)")
    for ax in (raw, added):
        ax.set_xlabel("concurrent real-time sessions")
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
    fig.suptitle("Added latency = path - direct (bench/run.py, " + results["time"] + ")")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


def write_docs(results: dict[str, Any], docs: Path) -> None:
    """Replace the results section of docs/benchmarks.md; redraw the plot."""
    page = docs / "benchmarks.md"
    text = page.read_text()
    section = f"{MARK_START}\n{markdown(results)}{MARK_END}"
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), re.S)
    page.write_text(pattern.sub(lambda _: section, text) if pattern.search(text)
                    else text + "\n" + section + "\n")
    plot(results, docs / "benchmarks-latency.png")
