"""The decision log: append-only JSON Lines, one record per evaluation.

Each record is fsynced as it is appended. A crash can leave a torn last line; readers skip it with a
warning, and the next append starts on a fresh line so that no complete record is ever damaged.
Records are built and rendered by :mod:`controller.core.records`.
"""

from __future__ import annotations

import collections
import gzip
import itertools
import json
import os
import time
import zlib
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from controller.adapters.logrotation import LogFile, finish_rotation, opened, rotate, writer_lock
from controller.core.errors import WriteError
from controller.core.records import Record, record_problem

Warn = Callable[[str], None]

_TAIL_CHUNK = 64 * 1024
APPEND_CHUNK_RECORDS = 200  # records serialised at a time: a cycle of thousands never builds one huge string


DEFAULT_KEEP = 5  # `flagroll run`'s default number of rotated generations kept


class PartialAppendError(WriteError):
    """An append failed after its first ``written`` records were in the log (an append that rotates
    part-way writes the records before the rotation first): only the rest are still to be written."""

    def __init__(self, message: str, written: int) -> None:
        super().__init__(message)
        self.written = written


class DecisionLog:
    def __init__(self, path: Path, *, max_bytes: int = 0, keep: int = DEFAULT_KEEP) -> None:
        """``max_bytes`` 0: never rotate (a human command appends its record and leaves the rotation
        to the controller's next append); otherwise an append that would take the live file past it
        rotates it first, keeping ``keep`` gzipped generations."""
        if max_bytes < 0 or keep < 1:
            raise ValueError("a decision log's max_bytes is at least 0 and its keep at least 1")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep

    def append(self, records: Sequence[Record]) -> None:
        """Append ``records`` and fsync them, rotating the live file first whenever the next record
        would take it past ``max_bytes`` (a record larger than that still goes in, alone in a new
        live file). Raise :class:`WriteError` leaving the log as it was: an append that fails part-way
        (a full disk, a failed fsync) is cut off again, so the caller, told it failed, never finds
        some of its records written and the last one torn; if a rotation came before the failure, the
        records before it stay and :class:`PartialAppendError` says how many."""
        if not records:
            return
        with writer_lock(self.path):
            written = 0
            try:
                finish_rotation(self.path)
                for rotate_first, lines, count in self._segments(records):
                    if rotate_first:
                        rotate(self.path, self.keep)
                    self._write(lines)
                    written += count
            except OSError as exc:
                raise PartialAppendError(
                    f"cannot rotate {self.path}: {exc.strerror or exc}", written
                ) from exc
            except WriteError as exc:
                if written:
                    raise PartialAppendError(str(exc), written) from exc
                raise

    def _segments(self, records: Sequence[Record]) -> Iterator[tuple[bool, list[bytes], int]]:
        """``records`` as lines, in runs that fit the live file: (rotate first?, lines, records)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        lines: list[bytes] = []
        rotate_first = False
        for first in range(0, len(records), APPEND_CHUNK_RECORDS):  # thousands a cycle at scale
            for record in records[first : first + APPEND_CHUNK_RECORDS]:
                line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
                if self.max_bytes and size > 0 and size + len(line) > self.max_bytes:
                    if lines:
                        yield rotate_first, lines, len(lines)
                    lines, rotate_first, size = [], True, 0
                lines.append(line)
                size += len(line)
        if lines:
            yield rotate_first, lines, len(lines)

    def _write(self, lines: list[bytes]) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise WriteError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                if start > 0 and os.pread(fd, 1, start - 1) != b"\n":  # a torn line from a crash
                    _write_all(fd, b"\n")
                for first in range(0, len(lines), APPEND_CHUNK_RECORDS):
                    _write_all(fd, b"".join(lines[first : first + APPEND_CHUNK_RECORDS]))
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


def _records(file: LogFile, warn: Warn | None) -> Iterator[Record]:
    """The complete, fit records of one file of the log, with warnings naming it and the line."""
    number = 0
    try:
        for number, line in enumerate(file.lines(), start=1):
            if not line.strip():
                continue
            record = parse_line(line)
            if record is None:
                if warn is not None:
                    torn = "" if line.endswith(b"\n") else " (torn last line: a write was interrupted)"
                    warn(f"{file.path}:{number}: skipped an unreadable record{torn}")
                continue
            if _fit(record, f"{file.path}:{number}", warn):
                yield record
    except (OSError, EOFError, zlib.error) as exc:  # a damaged or cut-off compressed generation
        if warn is not None:
            warn(f"{file.path}:{number + 1}: cannot read on, skipped the rest of this generation: {exc}")


def exists(path: Path) -> bool:
    """Whether there is a decision log at ``path``: its live file or a rotated generation."""
    with opened(path) as files:
        return files.live is not None or bool(files.generations)


def read_records(path: Path, warn: Warn | None = None) -> Iterator[Record]:
    """Every complete record in order: the rotated generations, oldest first, then the live file.
    Unreadable lines, and records that parse but hold wrong types, are skipped with a warning naming
    the file and line."""
    with opened(path) as files:
        for file in [*files.generations, *([files.live] if files.live is not None else [])]:
            yield from _records(file, warn)


Where = Callable[[Record], bool] | None


def _take(line: bytes, found: dict[str, Record], where: Where) -> None:
    """Note the record of ``line`` as its flag's newest, unless a newer one is noted already."""
    record = parse_line(line) if line.strip() else None
    if record is None or record_problem(record) is not None:
        return
    flag = record.get("flag")
    if isinstance(flag, str) and flag not in found and (where is None or where(record)):
        found[flag] = record


def _done(found: dict[str, Record], wanted: set[str] | None) -> bool:
    return wanted is not None and wanted <= set(found)


def _newest_backwards(
    handle: BinaryIO, found: dict[str, Record], wanted: set[str] | None, where: Where
) -> None:
    """Read a plain file backwards, noting the newest record of each flag, until ``wanted`` are found."""
    end = handle.seek(0, os.SEEK_END)
    carry = b""
    while end > 0 and not _done(found, wanted):
        start = max(0, end - _TAIL_CHUNK)
        handle.seek(start)
        chunk = handle.read(end - start) + carry
        lines = chunk.split(b"\n")
        carry = lines.pop(0) if start > 0 else b""
        for line in reversed(lines):
            _take(line, found, where)
        end = start


def _needles(flags: Iterable[str]) -> list[bytes]:
    """Each flag's key as JSON writes it, with non-ASCII characters as they are and as escapes."""
    return sorted({json.dumps(f, ensure_ascii=ascii).encode() for f in flags for ascii in (False, True)})


def _newest_forwards(file: LogFile, found: dict[str, Record], wanted: set[str] | None, where: Where) -> None:
    """Read a compressed generation from its start (it cannot be read backwards), noting the newest
    record of each wanted flag not noted already; a damaged one is read as far as it can be. A line
    that does not hold a missing flag's key as JSON (as it was written) is not parsed."""
    newest: dict[str, Record] = {}
    missing = None if wanted is None else wanted - set(found)
    needles = None if missing is None else _needles(missing)
    try:
        for line in file.lines():
            if needles is not None and not any(needle in line for needle in needles):
                continue
            record = parse_line(line) if line.strip() else None
            if record is None or record_problem(record) is not None:
                continue
            flag = record.get("flag")
            if not isinstance(flag, str) or (missing is not None and flag not in missing):
                continue
            if flag not in found and (where is None or where(record)):
                newest[flag] = record
    except (OSError, EOFError, zlib.error):
        pass
    found.update(newest)


def last_by_flag(
    path: Path, flags: Iterable[str] | None = None, where: Callable[[Record], bool] | None = None
) -> dict[str, Record]:
    """The newest record of each flag (of those ``where`` accepts), reading backwards from the end of
    the live file, then the generations newest first, so a long log costs little: a generation is read
    only if a wanted flag has no record in the newer files. A record that holds a wrong type is passed
    over, as if it were not there."""
    wanted = set(flags) if flags is not None else None
    found: dict[str, Record] = {}
    with opened(path) as files:
        if files.live is not None:
            _newest_backwards(files.live.handle, found, wanted, where)
        for file in reversed(files.generations):
            if _done(found, wanted):
                break
            if file.compressed:
                _newest_forwards(file, found, wanted, where)
            else:
                _newest_backwards(file.handle, found, wanted, where)
    return found


FINGERPRINT_BYTES = 4096


@dataclass(frozen=True)
class _Fingerprint:
    """What tells a finished file of the log from the others whatever it is named now, compressed or
    not: its first bytes (a record's time and flag) and its size (modulo 2**32, as gzip keeps it)."""

    prefix: bytes
    size_mod: int

    @classmethod
    def of(cls, file: LogFile) -> _Fingerprint:
        if not file.compressed:
            size = os.fstat(file.handle.fileno()).st_size
            file.handle.seek(0)
            return cls(file.handle.read(FINGERPRINT_BYTES), size % 2**32)
        try:
            file.handle.seek(-4, os.SEEK_END)
            size_mod = int.from_bytes(file.handle.read(4), "little")
            file.handle.seek(0)
            with gzip.GzipFile(fileobj=file.handle, mode="rb") as packed:
                prefix = packed.read(FINGERPRINT_BYTES)
        except (OSError, EOFError, zlib.error):
            return cls(b"", -1)  # damaged: matches nothing
        return cls(prefix, size_mod)


@dataclass
class _Tail:
    """The file being followed, read as it grows: a partial last line waits to complete. Each line's
    end and checksum are kept, so that a file cut back (a failed append undone) and perhaps written
    again is read on from its last line still there, not again from its start nor from a stale
    offset."""

    file: LogFile
    position: int = 0
    pending: bytes = b""
    number: int = 0  # lines read so far
    ends: array[int] = field(default_factory=lambda: array("q"))  # where each line read ends
    sums: array[int] = field(default_factory=lambda: array("L"))  # each line's crc32

    def lines(self) -> list[tuple[int, bytes]]:
        handle = self.file.handle
        size = os.fstat(handle.fileno()).st_size
        if not self._intact(size):
            self._back_to(self._last_intact(size))
        handle.seek(self.position)
        data = handle.read()
        if not data:
            return []
        start = self.position - len(self.pending)
        self.position = handle.tell()
        *complete, self.pending = (self.pending + data).split(b"\n")
        numbered = []
        for line in complete:
            start += len(line) + 1
            self.ends.append(start)
            self.sums.append(zlib.crc32(line + b"\n"))
            self.number += 1
            numbered.append((self.number, line))
        return numbered

    def _line_there(self, index: int, size: int) -> bool:
        start = self.ends[index - 1] if index else 0
        end = self.ends[index]
        return (
            end <= size
            and zlib.crc32(os.pread(self.file.handle.fileno(), end - start, start)) == (self.sums[index])
        )

    def _intact(self, size: int) -> bool:
        if size < self.position:
            return False
        if self.ends and not self._line_there(len(self.ends) - 1, size):
            return False
        start = self.position - len(self.pending)
        return os.pread(self.file.handle.fileno(), len(self.pending), start) == self.pending

    def _last_intact(self, size: int) -> int:
        """How many of the lines read are still there, as they were."""
        for index in range(len(self.ends) - 1, -1, -1):
            if self._line_there(index, size):
                return index + 1
        return 0

    def _back_to(self, lines: int) -> None:
        del self.ends[lines:]
        del self.sums[lines:]
        self.number = lines
        self.position = self.ends[-1] if lines else 0
        self.pending = b""

    def moved_on(self, path: Path) -> bool:
        """Whether ``path`` is no longer this file (rotated away, or not there)."""
        try:
            now = path.stat()
        except FileNotFoundError:
            return True
        mine = os.fstat(self.file.handle.fileno())
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)


def _lines_records(file: LogFile, lines: Iterable[tuple[int, bytes]], warn: Warn | None) -> Iterator[Record]:
    for number, line in lines:
        if not line.strip():
            continue
        record = parse_line(line)
        if record is None:
            if warn is not None:
                warn(f"{file.path}:{number}: skipped an unreadable record")
            continue
        if _fit(record, f"{file.path}:{number}", warn):
            yield record


def _newer_than(
    generations: list[LogFile], anchor: _Fingerprint | None, seen: set[_Fingerprint]
) -> list[LogFile]:
    """The generations written after the one ``anchor`` identifies; if it is not among them
    (retention deleted it, or it was a live file deleted rather than rotated), those not ``seen``
    (read already)."""
    if anchor is None:
        return generations
    prints = [_Fingerprint.of(file) for file in generations]
    for index in range(len(generations) - 1, -1, -1):
        if prints[index] == anchor:
            return generations[index + 1 :]
    return [file for file, found in zip(generations, prints, strict=True) if found not in seen]


def follow(
    path: Path,
    *,
    poll_seconds: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
    warn: Warn | None = None,
    where: Callable[[Record], bool] | None = None,
    last: int | None = None,
) -> Generator[Record, None, None]:
    """Yield records as they are appended (existing ones first, across the generations). A partial
    line waits to complete. When the live file is rotated away, the rest of it is read from the file
    still open, then every generation rotated after it (found by its fingerprint, whatever its number
    now), then the new live file: no record is skipped or shown twice, however many rotations came
    between two polls. A live file cut back (a failed append undone) is read on from its last line
    still there (a record of the undone batch shows again when it is retried); a live file deleted
    rather than rotated does not make the generations read again. ``where``: only the records it
    accepts; ``last``: of those already in the log, only the newest ``last`` (None: all of them)."""
    tail: _Tail | None = None
    anchor: _Fingerprint | None = None  # the last file read to its end, when no live file is followed
    try:
        with opened(path) as first:
            live: Iterable[Record] = ()
            if first.live is not None:
                tail, first.live = _Tail(first.live), None  # kept open beyond the snapshot
                live = _lines_records(tail.file, tail.lines(), warn)
            older = (record for file in first.generations for record in _records(file, warn))
            yield from _newest(itertools.chain(older, live), where, last)
            seen = {_Fingerprint.of(file) for file in first.generations}  # read: never again
            if first.generations:
                anchor = _Fingerprint.of(first.generations[-1])
        followed = _followed(path, tail, anchor, seen, poll_seconds, stop, warn)
        try:
            yield from _chosen(followed, where)
        finally:
            followed.close()  # it closes the files it opened
    finally:
        if tail is not None:
            tail.file.handle.close()


def _chosen(records: Iterable[Record], where: Callable[[Record], bool] | None) -> Iterator[Record]:
    return iter(records) if where is None else (record for record in records if where(record))


def _newest(
    records: Iterable[Record], where: Callable[[Record], bool] | None, last: int | None
) -> Iterator[Record]:
    chosen = _chosen(records, where)
    return chosen if last is None else iter(collections.deque(chosen, maxlen=max(last, 0)))


def _followed(
    path: Path,
    tail: _Tail | None,
    anchor: _Fingerprint | None,
    seen: set[_Fingerprint],
    poll_seconds: float,
    stop: Callable[[], bool],
    warn: Warn | None,
) -> Generator[Record, None, None]:
    """What is appended after the first snapshot (see :func:`follow`, which closes ``tail``)."""
    try:
        while not stop():
            if tail is not None:
                lines = tail.lines()
                if lines:
                    yield from _lines_records(tail.file, lines, warn)
                    continue
                if not tail.moved_on(path):
                    time.sleep(poll_seconds)
                    continue
                yield from _lines_records(tail.file, tail.lines(), warn)  # what came before the rotation
                if tail.pending.strip() and warn is not None:
                    warn(f"{tail.file.path}:{tail.number + 1}: skipped an unreadable record (torn last line)")
                anchor = _Fingerprint.of(tail.file)
                seen.add(anchor)
                tail.file.handle.close()
                tail = None
            elif not path.exists():
                time.sleep(poll_seconds)
                continue
            with opened(path) as files:
                newer = _newer_than(files.generations, anchor, seen)
                for file in newer:
                    yield from _records(file, warn)
                    seen.add(_Fingerprint.of(file))
                if newer:
                    anchor = _Fingerprint.of(newer[-1])
                if files.live is not None:
                    tail, files.live = _Tail(files.live), None
    finally:
        if tail is not None:
            tail.file.handle.close()
