"""Load generator: N concurrent realtime sessions, real-time audio both ways.

    python bench/load.py URL N [--warmup S] [--window S] [--pid PID] [--aligned]   # JSON line

Each session connects, waits for `session.created`, asks for a response (the upstream's long
paced audio reply) and streams 20 ms input audio chunks at real-time pace. Session i starts
(asks for its response, starts its input) i/N of an output tick (100 ms) after the first, as
independent callers would: with `--aligned` all start at once, every 100 ms tick of all N
sessions' output lands as one burst, and each path's latency then measures how long it takes
to relay N frames back to back rather than one frame. Every output audio
delta carries its upstream send time in its `event_id` (bench/upstream.py); receive time minus
it is that event's latency. Only events received inside the window count. With `--pid`, the
CPU time that process spent inside the window and its RSS (before the sessions connect, once
they are all connected but before audio flows, and at the window's end) are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CHUNK_MS = 20
OUTPUT_TICK_S = 0.1  # the upstream sends a 100 ms audio delta every 100 ms per session
SILENCE = base64.b64encode(bytes(24000 * 2 * CHUNK_MS // 1000)).decode()  # pcm16, 24 kHz
APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": SILENCE})
STAMP = '{"type":"response.output_audio.delta","event_id":"bt'
TICK = os.sysconf("SC_CLK_TCK")
HEADERS = {"Authorization": "Bearer bench-token"}
CONNECTS_AT_ONCE = 16


@dataclass
class Tally:
    """What every session adds to, inside the window only."""

    window: tuple[int, int] = (0, 0)  # monotonic ns
    latencies_ns: list[int] = field(default_factory=list)
    received: int = 0
    sent: int = 0
    send_slip_ns: list[int] = field(default_factory=list)  # how late our own sends left
    failures: list[str] = field(default_factory=list)

    def inside(self, now: int) -> bool:
        return self.window[0] <= now < self.window[1]


def cpu_s(pid: int) -> float:
    """utime + stime of a process (children excluded), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def open_session(url: str, gate: asyncio.Semaphore) -> ClientConnection:
    async with gate:
        ws = await connect(url, additional_headers=HEADERS, compression=None, max_size=None,
                           open_timeout=30)
        async with asyncio.timeout(30):
            while json.loads(await ws.recv())["type"] != "session.created":
                pass
        return ws


async def stream_input(ws: ClientConnection, tally: Tally, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0
    while not stop.is_set():
        due = start + sent * CHUNK_MS / 1000
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic_ns()
        try:
            await ws.send(APPEND)
        except ConnectionClosed:
            return
        sent += 1
        if tally.inside(now):
            tally.sent += 1
            tally.send_slip_ns.append(int(max(0.0, -delay) * 1e9))


async def begin(ws: ClientConnection, tally: Tally, stop: asyncio.Event, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await ws.send(json.dumps({"type": "response.create"}))
    await stream_input(ws, tally, stop)


async def receive(ws: ClientConnection, tally: Tally) -> None:
    try:
        async for frame in ws:
            now = time.monotonic_ns()
            if not tally.inside(now):
                continue
            tally.received += 1
            if isinstance(frame, str) and frame.startswith(STAMP):
                end = frame.index('"', len(STAMP))
                tally.latencies_ns.append(now - int(frame[len(STAMP):end]))
    except ConnectionClosed as exc:
        if tally.window[1] > time.monotonic_ns():
            tally.failures.append(f"closed early: {exc}")


async def drive(url: str, n: int, warmup_s: float, window_s: float, pid: int | None,
                aligned: bool = False) -> dict:
    tally = Tally()
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    if pid:  # a first session loads whatever loads lazily, then the baseline
        await (await open_session(url, gate)).close()
        await asyncio.sleep(0.3)
    rss_before = rss_kb(pid) if pid else None
    sockets = await asyncio.gather(*(open_session(url, gate) for _ in range(n)))
    await asyncio.sleep(0.3)
    rss_connected = rss_kb(pid) if pid else None  # live sessions, no audio flowing yet
    stop = asyncio.Event()
    tasks = []
    for i, ws in enumerate(sockets):
        delay_s = 0.0 if aligned else i * OUTPUT_TICK_S / n
        tasks.append(asyncio.create_task(begin(ws, tally, stop, delay_s)))
        tasks.append(asyncio.create_task(receive(ws, tally)))
    start = time.monotonic_ns() + int(warmup_s * 1e9)
    tally.window = (start, start + int(window_s * 1e9))
    await asyncio.sleep(warmup_s)
    cpu0, own0 = (cpu_s(pid) if pid else 0.0), time.process_time()
    await asyncio.sleep(window_s)
    cpu1, own1 = (cpu_s(pid) if pid else 0.0), time.process_time()
    rss_after = rss_kb(pid) if pid else None
    stop.set()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.wait(tasks, timeout=10)
    events = tally.sent + tally.received
    return {
        "n": n, "window_s": window_s, "latencies_ms": [x / 1e6 for x in tally.latencies_ns],
        "events": events, "audio_deltas": len(tally.latencies_ns), "appends": tally.sent,
        "relay_cpu_s": (cpu1 - cpu0) if pid else None,
        "relay_cpu_us_per_event": (cpu1 - cpu0) / events * 1e6 if pid and events else None,
        "loadgen_cpu_s": own1 - own0,
        "rss_before_kb": rss_before, "rss_after_kb": rss_after,
        "rss_per_session_kb": (rss_after - rss_before) / n if pid and rss_after else None,
        "rss_per_idle_session_kb": (rss_connected - rss_before) / n
        if pid and rss_connected and rss_before else None,
        "send_slip_p99_ms": (sorted(tally.send_slip_ns)[int(len(tally.send_slip_ns) * .99)] / 1e6
                             if tally.send_slip_ns else None),
        "failures": tally.failures[:5], "aligned": aligned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("n", type=int)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--pid", type=int, default=0)
    parser.add_argument("--aligned", action="store_true",
                        help="start every session at once (output ticks in phase)")
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(drive(args.url, args.n, args.warmup, args.window, args.pid or None,
                              args.aligned))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
