"""The recorder's spill file: records that could not wait in memory during a database outage.

A JSON Lines file, one record a line (`{"kind": "ItemRecorded", ...}`), read front to back.
The recorder appends the OLDEST rows of its queue here, so every row in the journal is older
than every row still in memory, and it drains the journal before the queue: the write order
(conversation before its items) is kept. A line is consumed once its batch has committed; the
file is emptied when everything in it is consumed. Replaying lines that were already written
is harmless (the recorder's writes are idempotent), so a crash between a commit and the
truncation duplicates nothing. A journal left over from a previous process is replayed first.

All methods do blocking file I/O: the recorder calls them through `asyncio.to_thread`, from
its writer task only (never from the relay path).
"""

from __future__ import annotations

import json
import logging
import os
import typing
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.store.records import RECORD_TYPES, Record, fields_of

logger = logging.getLogger(__name__)

_KINDS: dict[str, type[Record]] = {cls.__name__: cls for cls in RECORD_TYPES}
# Per kind, the fields stored as ISO 8601 text.
_DATETIMES: dict[str, frozenset[str]] = {
    name: frozenset(f.name for f in fields(cls)
                    if typing.get_type_hints(cls)[f.name] is datetime)
    for name, cls in _KINDS.items()
}


def encode(row: Record) -> str:
    """One record as one JSON line (without the newline)."""
    kind = type(row).__name__
    data = fields_of(row)
    for name in _DATETIMES[kind]:
        data[name] = data[name].isoformat()
    return json.dumps({"kind": kind, **data}, separators=(",", ":"), ensure_ascii=False)


def decode(line: str) -> Record:
    """The record a line holds; ValueError if it is not one."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("journal line is not an object")
    values = typing.cast(dict[str, Any], data)
    kind = values.pop("kind", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown record kind {kind!r}")
    for name in _DATETIMES[cls.__name__]:
        values[name] = datetime.fromisoformat(values[name])
    return cls(**values)


class Journal:
    """An append-only file of records with a read position (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0  # bytes consumed from the front
        self.pending = 0  # lines appended and not consumed (approximate after a restart)
        self.appended = 0  # lines appended by this process
        self.skipped = 0  # unreadable lines passed over by `peek`

    def load(self) -> int:
        """Count the lines a previous process left; returns that count."""
        try:
            with self.path.open("rb") as file:
                self.pending = sum(1 for line in file if line.strip())
        except FileNotFoundError:
            self.pending = 0
        self._offset = 0
        return self.pending

    def append(self, rows: list[Record]) -> None:
        """Add rows at the end, durably (fsync) before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(encode(row) + "\n" for row in rows).encode()
        with self.path.open("ab") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        self.pending += len(rows)
        self.appended += len(rows)

    def peek(self, limit: int) -> tuple[list[Record], int]:
        """Up to `limit` rows from the read position, and the position after them."""
        rows: list[Record] = []
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return rows, self._offset
        with file:
            file.seek(self._offset)
            offset = self._offset
            while len(rows) < limit:
                line = file.readline()
                if not line:
                    break
                offset += len(line)
                if line.strip():
                    try:
                        rows.append(decode(line.decode()))
                    except (ValueError, TypeError, KeyError):  # cut short by a crash
                        self.skipped += 1
                        logger.error("journal %s: skipping an unreadable line at byte %d",
                                     self.path, offset - len(line))
        return rows, offset

    def consume(self, offset: int, count: int) -> None:
        """Mark the rows before `offset` written; empty the file once all are."""
        self._offset = offset
        self.pending = max(self.pending - count, 0)
        if self._offset >= self._size():
            self.path.unlink(missing_ok=True)
            self._offset = 0
            self.pending = 0

    def rest(self) -> list[Record]:
        """Every row not consumed yet."""
        rows, _ = self.peek(self.pending + 1_000_000_000)
        return rows

    def rewrite(self, rows: list[Record]) -> None:
        """Replace the file with exactly `rows` (atomically: a temporary file, then a rename)."""
        if not rows:
            self.path.unlink(missing_ok=True)
            self._offset, self.pending = 0, 0
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("wb") as file:
            file.write("".join(encode(row) + "\n" for row in rows).encode())
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(self.path)
        self._offset, self.pending = 0, len(rows)

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0
