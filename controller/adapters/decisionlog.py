"""The decision log: append-only JSON Lines, one record per evaluation.

Each record is fsynced as it is appended. A crash can leave a torn last line; readers skip it with a
warning, and the next append starts on a fresh line so that no complete record is ever damaged.
Records are built and rendered by :mod:`controller.core.records`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from controller.core.errors import WriteError
from controller.core.records import Record, record_problem

Warn = Callable[[str], None]

_TAIL_CHUNK = 64 * 1024
APPEND_CHUNK_RECORDS = 200  # records serialised at a time: a cycle of thousands never builds one huge string


class DecisionLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: Sequence[Record]) -> None:
        """Append ``records`` and fsync them, or raise :class:`WriteError` leaving the log as it was:
        an append that fails part-way (a full disk, a failed fsync) is cut off again, so the caller,
        told it failed, never finds some of its records written and the last one torn."""
        if not records:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise WriteError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                if start > 0 and os.pread(fd, 1, start - 1) != b"\n":  # a torn line from a crash
                    _write_all(fd, b"\n")
                for first in range(0, len(records), APPEND_CHUNK_RECORDS):  # thousands a cycle at scale
                    chunk = records[first : first + APPEND_CHUNK_RECORDS]
                    lines = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in chunk)
                    _write_all(fd, lines.encode("utf-8"))
                os.fsync(fd)
            except OSError as exc:
                _cut_back(fd, start)
                raise WriteError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may be short, near a disk's end)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _cut_back(fd: int, size: int) -> None:
    """Best effort: truncate the log to ``size`` after a failed append (a failure here leaves a torn
    line, which readers skip and the next append starts after)."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass


def parse_line(line: bytes) -> Record | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _fit(record: Record, where: str, warn: Warn | None) -> bool:
    """Whether a parsed record is fit to show; one that holds a wrong type is skipped with a warning
    naming ``where`` (file and line) and the field."""
    problem = record_problem(record)
    if problem is None:
        return True
    if warn is not None:
        warn(f"{where}: skipped a record: {problem}")
    return False


def read_records(path: Path, warn: Warn | None = None) -> Iterator[Record]:
    """Every complete record in order; unreadable lines, and records that parse but hold wrong types,
    are skipped with a warning naming the file and line."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = parse_line(line)
            if record is None:
                if warn is not None:
                    torn = "" if line.endswith(b"\n") else " (torn last line: a write was interrupted)"
                    warn(f"{path}:{number}: skipped an unreadable record{torn}")
                continue
            if _fit(record, f"{path}:{number}", warn):
                yield record


def last_by_flag(
    path: Path, flags: Iterable[str] | None = None, where: Callable[[Record], bool] | None = None
) -> dict[str, Record]:
    """The newest record of each flag (of those ``where`` accepts), reading backwards so a long log
    costs little. A record that holds a wrong type is passed over, as if it were not there."""
    wanted = set(flags) if flags is not None else None
    found: dict[str, Record] = {}
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return found
    with handle:
        end = handle.seek(0, os.SEEK_END)
        carry = b""
        while end > 0 and (wanted is None or not wanted <= set(found)):
            start = max(0, end - _TAIL_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start) + carry
            lines = chunk.split(b"\n")
            carry = lines.pop(0) if start > 0 else b""
            for line in reversed(lines):
                record = parse_line(line) if line.strip() else None
                if record is None or record_problem(record) is not None:
                    continue
                flag = record.get("flag")
                if isinstance(flag, str) and flag not in found and (where is None or where(record)):
                    found[flag] = record
            end = start
    return found


def follow(
    path: Path,
    *,
    poll_seconds: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
    warn: Warn | None = None,
) -> Iterator[Record]:
    """Yield records as they are appended (existing ones first); a partial line waits to complete."""
    position = 0
    pending = b""
    number = 0  # lines read so far
    while not stop():
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < position:  # truncated or replaced: start again
                    position, pending, number = 0, b"", 0
                handle.seek(position)
                data = handle.read()
                position = handle.tell()
        except FileNotFoundError:
            data = b""
        if data:
            pending += data
            *complete, pending = pending.split(b"\n")
            for line in complete:
                number += 1
                if not line.strip():
                    continue
                record = parse_line(line)
                if record is None:
                    if warn is not None:
                        warn(f"{path}:{number}: skipped an unreadable record")
                    continue
                if _fit(record, f"{path}:{number}", warn):
                    yield record
            continue
        time.sleep(poll_seconds)
