"""Run a client driver as a subprocess of its venv's interpreter, from inside the test's loop.

The server runs in the test's event loop, so the driver is awaited with asyncio's subprocess
API (a blocking `subprocess.run` would freeze the server it talks to).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DRIVER_TIMEOUT_S = 20.0
"""The driver's own bound for its whole turn; it exits by itself soon after."""
_GRACE_S = 25.0  # interpreter start-up, imports and the driver's watchdog margin (15 s)

# Variables that would aim a client elsewhere or leak our environment into the client venv.
_DROPPED_ENV = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "LIVEKIT_URL", "LIVEKIT_API_KEY")


@dataclass(frozen=True, slots=True)
class DriverResult:
    """The driver's one-line report plus its raw output, for failure messages."""

    report: dict[str, Any]
    returncode: int
    stderr: str

    def describe(self) -> str:
        """A readable dump for assertion messages."""
        tail = "\n".join(self.stderr.splitlines()[-40:])
        return (f"exit {self.returncode}\nreport: {json.dumps(self.report, indent=1)}\n"
                f"stderr (tail):\n{tail}")


def driver_env() -> dict[str, str]:
    """Our environment without anything that would steer the client; tracing export off."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["OPENAI_AGENTS_DISABLE_TRACING"] = "1"  # no trace upload to api.openai.com
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def run_driver(python: Path, driver: str, *args: str,
                     turn_s: float = DRIVER_TIMEOUT_S) -> DriverResult:
    """Run `HERE/driver` with `args` under `python`, its turn bounded by `turn_s` (passed as
    `--timeout`); the driver is killed if it outlives that bound by more than a grace period."""
    proc = await asyncio.create_subprocess_exec(
        str(python), str(HERE / driver), *args, "--timeout", str(turn_s),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=HERE, env=driver_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), turn_s + _GRACE_S)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    report: dict[str, Any] = json.loads(lines[-1]) if lines else {"missing_report": stdout[-4000:]}
    assert proc.returncode is not None
    return DriverResult(report, proc.returncode, stderr)
