"""Build and cache one virtual environment per stock realtime client.

The clients pin things our own environment cannot take (openai-agents needs websockets<17), so
each lives in `.venv-clients/<client>/` at the repo root (or under $ORCHESTRATOR_CLIENT_VENVS)
and is driven as a subprocess. A venv
is reused while the hash of its pinned requirements matches the `.complete` marker written as the
last step of a build; a build holds an exclusive file lock, so parallel runs wait for each other
and an aborted build (no marker) is wiped and redone. Every step is bounded in time.

Run `python -m tests.clients.venvs [CLIENT ...]` to build ahead of the tests and see timings.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("ORCHESTRATOR_CLIENT_VENVS") or REPO / ".venv-clients")
"""Where the venvs live; the variable lets CI keep them outside a fresh clone."""
BUILD_TIMEOUT_S = 900.0
"""Upper bound for one client's whole build (venv + pip install), lock wait excluded."""
LOCK_TIMEOUT_S = BUILD_TIMEOUT_S + 60.0
"""How long to wait for another process that is building the same venv."""

REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "agents_sdk": ("openai-agents==0.24.0",),
    "pipecat": ("pipecat-ai[openai]==1.14.0",),
    "livekit": ("livekit-agents==1.8.9", "livekit-plugins-openai==1.8.9"),
}
"""Exact pins per client; changing one rebuilds that client's venv on next use."""


class VenvBuildError(RuntimeError):
    """A client venv could not be built; the message carries pip's last output lines."""


@dataclass(frozen=True, slots=True)
class ClientVenv:
    """A ready client venv and how long getting it took."""

    client: str
    path: Path
    built: bool
    seconds: float

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.path / "bin" / "python"


def requirements_hash(client: str) -> str:
    """Hash of the client's pins and of the interpreter the venv is made from."""
    pins = "\n".join(sorted(REQUIREMENTS[client]))
    # The venv's python links to the base interpreter: a moved or upgraded base means a rebuild.
    key = f"{pins}\npython {sys.version_info.major}.{sys.version_info.minor} {sys.base_prefix}\n"
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_venv(client: str) -> ClientVenv:
    """Return the client's venv, building it first if it is missing, stale or half-built."""
    if client not in REQUIREMENTS:
        raise KeyError(f"unknown client {client!r}; known: {sorted(REQUIREMENTS)}")
    started = time.monotonic()
    path = ROOT / client
    digest = requirements_hash(client)
    if _is_complete(path, digest):
        return ClientVenv(client, path, built=False, seconds=time.monotonic() - started)
    ROOT.mkdir(exist_ok=True)
    with _locked(ROOT / f"{client}.lock"):
        # Another process may have finished the build while we waited for the lock.
        built = not _is_complete(path, digest)
        if built:
            _build(path, REQUIREMENTS[client], digest)
    return ClientVenv(client, path, built=built, seconds=time.monotonic() - started)


def _is_complete(path: Path, digest: str) -> bool:
    marker = path / ".complete"
    return (marker.is_file() and marker.read_text().strip() == digest
            and (path / "bin" / "python").exists())


@contextmanager
def _locked(lock_path: Path) -> Generator[None]:
    """Hold an exclusive flock, waiting for it at most LOCK_TIMEOUT_S.

    flock has no timeout of its own: the blocking call runs in a helper thread and we wait on
    that thread with one.
    """
    with lock_path.open("a") as handle:
        taker = threading.Thread(target=fcntl.flock, args=(handle, fcntl.LOCK_EX), daemon=True)
        taker.start()
        taker.join(LOCK_TIMEOUT_S)
        if taker.is_alive():
            raise VenvBuildError(f"timed out waiting for {lock_path}")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(path: Path, pins: tuple[str, ...], digest: str) -> None:
    """Create the venv from scratch and install the pins; the marker is written last."""
    shutil.rmtree(path, ignore_errors=True)
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], deadline)
    # Our own pip installs into the target (`--python`): no ensurepip run, one pip version.
    _run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install",
          "--no-input", "--disable-pip-version-check", "--progress-bar", "off", *pins], deadline)
    (path / "requirements.txt").write_text("\n".join(pins) + "\n")
    tmp = path / ".complete.tmp"
    tmp.write_text(digest + "\n")
    os.replace(tmp, path / ".complete")


def _run(argv: list[str], deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise VenvBuildError(f"no time left for {argv[:4]}")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=remaining,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise VenvBuildError(f"timed out after {remaining:.0f} s: {' '.join(argv)}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise VenvBuildError(f"exit {done.returncode}: {' '.join(argv)}\n{tail}")


def main(argv: list[str]) -> int:
    """Build the named clients' venvs (all by default) and print how long each took."""
    for client in argv or sorted(REQUIREMENTS):
        venv = ensure_venv(client)
        state = "built" if venv.built else "cached"
        print(f"{client}: {state} in {venv.seconds:.1f} s at {venv.path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
