"""cProfile on signal, for bench/serve.py and bench/relay.py: with BENCH_CPROFILE=FILE set,
SIGUSR1 starts profiling and SIGUSR2 stops it and writes the stats to FILE.

Call counts per relayed event do not depend on the machine's load (times do), so the calls
of the orchestrator and of the minimal relay over the same window compare the work each does.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import signal


def install() -> None:
    """Arm the signals if BENCH_CPROFILE is set (call inside the running loop)."""
    out = os.environ.get("BENCH_CPROFILE")
    if not out:
        return
    profiler = cProfile.Profile()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        profiler.disable()
        profiler.dump_stats(out)

    loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
    loop.add_signal_handler(signal.SIGUSR2, stop)
