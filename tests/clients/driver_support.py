"""What every client driver shares: arguments, an ERROR-log catcher and the one-line report.

Drivers run under the client venvs' interpreters, so this module uses the standard library only
and is imported as a sibling module (a script's own folder is first on `sys.path`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

QUESTION = "What time is it in Tokyo?"


@dataclass(slots=True)
class Observation:
    """What a driver saw during its one turn; printed as one JSON line on stdout."""

    client: str
    reply: str | None = None
    errors: list[str] = field(default_factory=list[str])
    error_logs: list[str] = field(default_factory=list[str])
    warning_logs: list[str] = field(default_factory=list[str])
    event_types: list[str] = field(default_factory=list[str])
    exception: str | None = None
    timed_out: bool = False
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict[str, Any])

    def saw(self, event_type: str) -> None:
        """Note an event type (first occurrence order, no duplicates)."""
        if event_type not in self.event_types:
            self.event_types.append(event_type)


@dataclass(frozen=True, slots=True)
class DriverArgs:
    """Command-line arguments common to all drivers."""

    url: str
    key: str
    model: str
    timeout: float


class _Catcher(logging.Handler):
    """Keeps every WARNING-or-worse record of the client libraries."""

    def __init__(self, seen: Observation) -> None:
        super().__init__(logging.WARNING)
        self.seen = seen

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({record.exc_info[1]!r})"
        target = self.seen.error_logs if record.levelno >= logging.ERROR else self.seen.warning_logs
        target.append(text[:2000])


def parse_args(description: str) -> DriverArgs:
    """`URL KEY [--model NAME] [--timeout S]`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("url", help="the server URL in the form this client takes")
    parser.add_argument("key", help="API key (Bearer)")
    parser.add_argument("--model", default="demo",
                        help="model (agent) name, for clients that add it to the URL themselves")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds for the whole turn")
    ns = parser.parse_args()
    return DriverArgs(url=ns.url, key=ns.key, model=ns.model, timeout=ns.timeout)


def catch_logs(seen: Observation) -> _Catcher:
    """Route Python logging (WARNING and up) into `seen`."""
    handler = _Catcher(seen)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    return handler


def run(client: str, turn: Callable[[DriverArgs, Observation], Awaitable[None]],
        description: str) -> None:
    """Run `turn` under a hard timeout and print the observation as one JSON line."""
    args = parse_args(description)
    seen = Observation(client)
    catch_logs(seen)
    started = time.monotonic()
    # A client library's cleanup can hang after a timeout: a watchdog still reports and exits.
    watchdog = threading.Timer(args.timeout + 15, _give_up, (seen, started))
    watchdog.daemon = True
    watchdog.start()
    try:
        asyncio.run(asyncio.wait_for(turn(args, seen), args.timeout))
    except TimeoutError:
        seen.timed_out = True
    except BaseException as exc:  # report everything: the test decides what fails
        seen.exception = "".join(traceback.format_exception_only(exc)).strip()[:4000]
    watchdog.cancel()
    _report(seen, started)


def _report(seen: Observation, started: float) -> None:
    seen.seconds = round(time.monotonic() - started, 3)
    sys.stdout.write(json.dumps(asdict(seen), default=str) + "\n")
    sys.stdout.flush()


def _give_up(seen: Observation, started: float) -> None:
    seen.timed_out = True
    seen.exception = seen.exception or "the driver did not finish; killed by its watchdog"
    _report(seen, started)
    os._exit(3)
