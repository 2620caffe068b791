"""An index of the decision log for the web UI, brought up to date by each request at the cost of
what is new since the last one.

Each file of the log is a segment, known by its identity (device and inode), not its name: a
request reads the live file on from the offset it had reached (complete lines only: a torn last
line is read again next time, and shown meanwhile only if it already parses, as a full read would),
and a compressed generation once. A rotation renames the live file to ``.1`` (the same file: read
on to its end) and compresses it into ``.1.gz``, a new file holding the same bytes, which is known
by its first bytes and size (as :func:`controller.adapters.decisionlog.follow` knows it) and takes
the segment over unread. A file gone from the log (a generation deleted, the live file replaced)
takes its records with it; a file shorter than the offset reached, or whose first bytes are not
those read (truncated and written again, or a new file given a deleted one's inode), is read again.

Per segment and flag it keeps what the pages read: the last decision (not a verification), the
exposure's change points, and every record twice, compressed in blocks (zlib, with the flag's first
record as the dictionary): whole, as its line (for the log page and the rollout page's last
decision), and slim (:func:`controller.core.uirollout.slim`, marshalled: for the rollout page's
charts and moves); and per record its flag, action and time, for the log page's filter.

Its :attr:`LogIndex.lock` is held by a request from its update to its last read of the index (the
server has a thread a request, and a later update adds to the same segments).
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import marshal
import math
import os
import sys
import threading
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from controller.adapters.decisionlog import FINGERPRINT_BYTES, parse_line
from controller.adapters.logrotation import LogFile, opened
from controller.core.records import Record, record_problem
from controller.core.serving import is_verification
from controller.core.uilog import LogFilter
from controller.core.uioverview import ExposurePoint
from controller.core.uipage import parse_time
from controller.core.uirollout import slim

BLOCK_RECORDS = 256  # lines compressed together: a block is read whole to give one of them
BLOCK_BYTES = 16 * 1024  # or fewer, so that what waits uncompressed stays small
COMPRESS_LEVEL = 6
READ_CHUNK_BYTES = 1024 * 1024
TAIL_BYTES = 512  # the last bytes read, compared before reading on: a record's end, time and all
_SEGMENT = "\x00segment"  # what a slim record read from the index carries to find its whole form
_NUMBER = "\x00number"


class Blocks:
    """Lines in order, compressed a block at a time: :data:`BLOCK_RECORDS` lines or
    :data:`BLOCK_BYTES`, whichever comes first (the newest block not yet, until :meth:`seal`)."""

    def __init__(self, zdict: bytes = b"") -> None:
        self.zdict = zdict  # a line like these (a flag's first): compresses them several times smaller
        self.sealed: list[bytes] = []
        self.starts: list[int] = []  # the number of each sealed block's first line
        self.count = 0  # lines in the sealed blocks
        self.open: list[bytes] = []
        self.open_bytes = 0

    def __len__(self) -> int:
        return self.count + len(self.open)

    def add(self, line: bytes) -> None:
        self.open.append(line)
        self.open_bytes += len(line)
        if len(self.open) == BLOCK_RECORDS or self.open_bytes >= BLOCK_BYTES:
            self.seal()

    def seal(self) -> None:
        """Compress the lines not compressed yet (a file read to its end gets no more)."""
        if self.open:
            packer = zlib.compressobj(COMPRESS_LEVEL, zdict=self.zdict) if self.zdict else zlib.compressobj(1)
            self.sealed.append(packer.compress(self._joined(self.open)) + packer.flush())
            self.starts.append(self.count)
            self.count += len(self.open)
            self.open, self.open_bytes = [], 0

    def line(self, number: int) -> bytes:
        if number >= self.count:
            return self.open[number - self.count]
        block = bisect.bisect_right(self.starts, number) - 1
        return self._unpacked(block)[number - self.starts[block]]

    def _unpacked(self, block: int) -> list[bytes]:
        unpacker = zlib.decompressobj(zdict=self.zdict) if self.zdict else zlib.decompressobj()
        return self._split(unpacker.decompress(self.sealed[block]) + unpacker.flush())

    def _joined(self, entries: list[bytes]) -> bytes:
        return b"\n".join(entries)

    def _split(self, data: bytes) -> list[bytes]:
        return data.split(b"\n")

    def __iter__(self) -> Iterator[bytes]:
        return self.lines_from(0)

    def lines_from(self, number: int) -> Iterator[bytes]:
        """The lines from the ``number``-th on."""
        first = max(0, bisect.bisect_right(self.starts, number) - 1)
        for block in range(first, len(self.sealed)):
            lines = self._unpacked(block)
            yield from lines[max(0, number - self.starts[block]) :]
        yield from self.open[max(0, number - self.count) :]

    def size_bytes(self) -> int:
        return sum(map(len, self.sealed)) + self.open_bytes


class SlimBlocks(Blocks):
    """Slim records, each marshalled (several times faster to load than JSON), framed by lengths."""

    def _joined(self, entries: list[bytes]) -> bytes:
        return b"".join(len(entry).to_bytes(4, "little") + entry for entry in entries)

    def _split(self, data: bytes) -> list[bytes]:
        entries, at = [], 0
        while at < len(data):
            size = int.from_bytes(data[at : at + 4], "little")
            entries.append(data[at + 4 : at + 4 + size])
            at += 4 + size
        return entries

    def records_from(self, number: int) -> Iterator[dict[str, Any]]:
        for entry in self.lines_from(number):
            record: dict[str, Any] = marshal.loads(entry)
            yield record


@dataclass
class FlagPart:
    """One flag's records in one segment (``None``'s: the records with no flag key)."""

    full: Blocks = field(default_factory=Blocks)  # every record, whole, as its line
    slim: SlimBlocks = field(default_factory=SlimBlocks)  # the decisions, slim, with their numbers
    last: bytes | None = None  # the last decision's line (parsed when asked: fewer objects kept)
    exposure: list[ExposurePoint] = field(default_factory=list)  # where the exposure changed


@dataclass(eq=False)  # known by identity (a key of the caches)
class Segment:
    """One file of the log as far as it has been read."""

    identity: tuple[int, int]
    dictionaries: dict[str | None, tuple[bytes, bytes]] = field(default_factory=dict)  # the index's
    offset: int = 0  # bytes read (of the decompressed stream)
    prefix: bytes = b""  # its first bytes, to know it again compressed
    tail: bytes = b""  # the last bytes read, to know the file was not cut back and written again
    stamp: tuple[int, int] = (-1, -1)  # size and modification time when last seen
    parts: dict[str | None, FlagPart] = field(default_factory=dict)
    flags: list[str | None] = field(default_factory=list)  # each record's flag, in order
    actions: list[object] = field(default_factory=list)
    times: array[float] = field(default_factory=lambda: array("d"))  # NaN: no time
    numbers: array[int] = field(default_factory=lambda: array("l"))  # in its flag's ``full``

    def add(self, line: bytes) -> None:
        record = parse_line(line) if line.strip() else None
        if record is None or record_problem(record) is not None:
            return
        flag, action = record.get("flag"), record.get("action")
        key = sys.intern(flag) if isinstance(flag, str) else None  # one string a flag, not a record
        action = sys.intern(action) if isinstance(action, str) else action
        part = self.parts.get(key)
        if part is None:
            full_dict, slim_dict = self.dictionaries.setdefault(key, (line, _slim_line(record, 0)))
            part = self.parts[key] = FlagPart(Blocks(full_dict), SlimBlocks(slim_dict))
        number = len(part.full)
        part.full.add(line.rstrip(b"\n"))
        at = parse_time(record.get("time"))
        self.flags.append(key)
        self.actions.append(action)
        self.times.append(at.timestamp() if at is not None else math.nan)
        self.numbers.append(number)
        if key is None or is_verification(record):
            return
        part.last = line
        part.slim.add(_slim_line(record, number))
        percent = record.get("to_percent")
        changed = not part.exposure or part.exposure[-1][1] != percent
        if at is not None and isinstance(percent, int | float) and changed:
            part.exposure.append((at, float(percent)))

    def seal(self) -> None:
        for part in self.parts.values():
            part.full.seal()
            part.slim.seal()

    def whole(self, flag: str | None, number: int) -> Record:
        record = parse_line(self.parts[flag].full.line(number))
        assert record is not None  # it parsed when it was indexed
        return record


@dataclass
class Cache:
    """What requests parsed, kept for the next: each flag's last decision, and the slim records of
    the flags whose rollout page was asked last, per segment with how many were parsed."""

    last: dict[str, tuple[bytes, Record]] = field(default_factory=dict)
    slim: dict[str, list[tuple[Segment, list[dict[str, Any]]]]] = field(default_factory=dict)


SLIM_CACHED_FLAGS = 2


def _slim_line(record: Record, number: int) -> bytes:
    return marshal.dumps(slim(record) | {_NUMBER: number})


@dataclass(frozen=True)
class View:
    """The index at one request: the segments in the log's order (the torn last line's record, if it
    parses, in a segment of its own, read again next time)."""

    segments: tuple[Segment, ...]
    cache: Cache = field(default_factory=Cache)

    def last_by_flag(self, flags: Iterable[str]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        for flag in flags:
            for segment in reversed(self.segments):
                part = segment.parts.get(flag)
                if part is not None and part.last is not None:
                    found[flag] = self._parsed_last(flag, part.last)
                    break
        return found

    def _parsed_last(self, flag: str, line: bytes) -> Record:
        cached = self.cache.last.get(flag)
        if cached is not None and cached[0] is line:
            return cached[1]
        record = parse_line(line)
        assert record is not None  # it parsed when it was indexed
        self.cache.last[flag] = (line, record)
        return record

    def exposures(self, flags: Iterable[str]) -> dict[str, list[ExposurePoint]]:
        found: dict[str, list[ExposurePoint]] = {}
        for flag in flags:
            for segment in self.segments:
                part = segment.parts.get(flag)
                for at, percent in part.exposure if part is not None else ():
                    seen = found.setdefault(flag, [])
                    if not seen or seen[-1][1] != percent:
                        seen.append((at, percent))
        return found

    def slim_records(self, flag: str) -> list[dict[str, Any]]:
        """The flag's decisions, slim, in the log's order; :meth:`whole` gives each one's record.
        Those parsed for an earlier request are taken again (only the new ones are parsed)."""
        before = dict(self.cache.slim.get(flag, []))
        kept: list[tuple[Segment, list[dict[str, Any]]]] = []
        found: list[dict[str, Any]] = []
        for segment in self.segments:
            part = segment.parts.get(flag)
            if part is None or not len(part.slim):
                continue
            parsed = list(before.get(segment, []))
            if len(parsed) < len(part.slim):
                for record in part.slim.records_from(len(parsed)):
                    record[_SEGMENT] = (segment, flag)
                    parsed.append(record)
            kept.append((segment, parsed))
            found.extend(parsed)
        self.cache.slim.pop(flag, None)
        self.cache.slim[flag] = kept
        for older in list(self.cache.slim)[:-SLIM_CACHED_FLAGS]:
            self.cache.slim.pop(older, None)
        return found

    def whole(self, slim_record: Mapping[str, Any]) -> Record:
        segment: Segment = slim_record[_SEGMENT][0]
        flag: str = slim_record[_SEGMENT][1]
        number: int = slim_record[_NUMBER]
        return segment.whole(flag, number)

    def matching(self, chosen: LogFilter) -> Matched:
        """The records ``chosen`` lets through, read whole only when shown."""
        if chosen.action is None and chosen.since is None and chosen.until is None:
            runs: list[tuple[Segment, str | None, int]] = []  # every record, or a flag's: in runs
            for segment in self.segments:
                if chosen.flag is None:
                    runs.append((segment, None, len(segment.flags)))
                elif chosen.flag in segment.parts:
                    runs.append((segment, chosen.flag, len(segment.parts[chosen.flag].full)))
            return Matched(runs, [])
        since = chosen.since.timestamp() if chosen.since is not None else -math.inf
        until = chosen.until.timestamp() if chosen.until is not None else math.inf
        timed = chosen.since is not None or chosen.until is not None
        found: list[tuple[Segment, int]] = []
        for segment in self.segments:
            flags, actions, times = segment.flags, segment.actions, segment.times
            for index in range(len(flags)):
                if chosen.flag is not None and flags[index] != chosen.flag:
                    continue
                if chosen.action is not None and actions[index] != chosen.action:
                    continue
                if timed and not since <= times[index] < until:  # NaN (no time) never is
                    continue
                found.append((segment, index))
        return Matched([], found)


class Matched(Sequence[Record]):
    """The records a filter let through, read from the index when a page shows them: runs (every
    record of a segment, or of a flag in it: segment, flag or None, count), or single records
    (segment, position)."""

    def __init__(self, runs: list[tuple[Segment, str | None, int]], found: list[tuple[Segment, int]]) -> None:
        self._runs = runs
        self._ends = list(itertools.accumulate(count for _, _, count in runs))
        self._found = found

    def __len__(self) -> int:
        return len(self._found) + (self._ends[-1] if self._ends else 0)

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Record]: ...
    def __getitem__(self, index: int | slice) -> Record | Sequence[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self._runs:
            run = bisect.bisect_right(self._ends, index)
            segment, flag, count = self._runs[run]
            within = index - (self._ends[run] - count)
            if flag is not None:
                return segment.whole(flag, within)
            return segment.whole(segment.flags[within], segment.numbers[within])
        segment, position = self._found[index]
        return segment.whole(segment.flags[position], segment.numbers[position])


def _still(file: LogFile, segment: Segment) -> bool:
    """Whether the plain file still begins and, up to the offset read, ends as it did: a file cut
    back (a failed append undone, a log trimmed in place) and grown again past the offset is not."""
    fd = file.handle.fileno()
    if os.pread(fd, len(segment.prefix), 0) != segment.prefix:
        return False
    return os.pread(fd, len(segment.tail), segment.offset - len(segment.tail)) == segment.tail


def _fingerprint(file: LogFile) -> tuple[bytes, int]:
    """A compressed generation's first bytes and size modulo 2**32 (as gzip keeps it)."""
    try:
        file.handle.seek(-4, os.SEEK_END)
        size_mod = int.from_bytes(file.handle.read(4), "little")
        file.handle.seek(0)
        with gzip.GzipFile(fileobj=file.handle, mode="rb") as packed:
            return packed.read(FINGERPRINT_BYTES), size_mod
    except (OSError, EOFError, zlib.error):
        return b"", -1


class LogIndex:
    """The index of the decision log at ``path``; :meth:`view` updates it and gives it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._segments: dict[tuple[int, int], Segment] = {}
        self.lock = threading.RLock()  # held while a view is read: see the module's notes
        self._cache = Cache()
        self._dictionaries: dict[str | None, tuple[bytes, bytes]] = {}  # each flag's, for compression

    def view(self) -> View:
        """The log now, read on from where the last call left it; read it with :attr:`lock` held."""
        with self.lock, opened(self.path) as files:
            known, self._segments = self._segments, {}
            ordered: list[Segment] = []
            for file in files.generations:
                ordered.append(self._generation(file, known))
            if files.live is not None:
                segment, torn = self._live(files.live, known)
                ordered.append(segment)
                if torn is not None:
                    ordered.append(torn)
            return View(tuple(ordered), self._cache)

    def _known(self, file: LogFile, known: dict[tuple[int, int], Segment]) -> Segment:
        """The segment of ``file`` read before, if it is the same file still (an inode of a deleted
        file can be given to a new one: its first bytes and size tell them apart)."""
        stat = os.fstat(file.handle.fileno())
        identity = (stat.st_dev, stat.st_ino)
        segment = known.pop(identity, None)
        stamp = (stat.st_size, stat.st_mtime_ns)
        if segment is not None and file.compressed:  # unchanged, or known by what it holds
            same = stamp == segment.stamp or _fingerprint(file) == (segment.prefix, segment.offset % 2**32)
        elif segment is not None:
            same = stat.st_size >= segment.offset and _still(file, segment)
        if segment is None or not same:  # new, or truncated (and perhaps written again) in place
            segment = Segment(identity, self._dictionaries)
        if file.compressed and not segment.offset:
            prefix, size_mod = _fingerprint(file)
            for other, before in list(known.items()):  # the plain file it was compressed from
                if size_mod >= 0 and before.prefix == prefix and before.offset % 2**32 == size_mod:
                    segment = known.pop(other)
                    break
        segment.identity = identity
        segment.stamp = stamp
        self._segments[identity] = segment
        return segment

    def _generation(self, file: LogFile, known: dict[tuple[int, int], Segment]) -> Segment:
        segment = self._known(file, known)
        if not file.compressed or not segment.offset:
            _read(segment, _lines_from(file, segment.offset), final=True)
            segment.seal()
        return segment

    def _live(self, file: LogFile, known: dict[tuple[int, int], Segment]) -> tuple[Segment, Segment | None]:
        segment = self._known(file, known)
        torn = _read(segment, _lines_from(file, segment.offset), final=False)
        if torn.strip():
            alone = Segment((-1, -1))
            alone.add(torn)
            return segment, alone if alone.flags else None
        return segment, None


def _lines_from(file: LogFile, offset: int) -> Iterator[bytes]:
    """The file's lines from byte ``offset`` (decompressed, for a generation); a damaged compressed
    generation is read as far as it can be."""
    if not file.compressed:
        file.handle.seek(offset)
        yield from file.handle
        return
    try:
        yield from file.lines()
    except (OSError, EOFError, zlib.error):
        return


def _read(segment: Segment, lines: Iterable[bytes], *, final: bool) -> bytes:
    """Index ``lines`` on from the segment's offset; the last one, unless ``final``, only if it is
    complete: it is given back, read again next time."""
    for line in lines:
        if not final and not line.endswith(b"\n"):
            return line
        if len(segment.prefix) < FINGERPRINT_BYTES:
            segment.prefix = (segment.prefix + line)[:FINGERPRINT_BYTES]
        segment.tail = (segment.tail + line)[-TAIL_BYTES:]
        segment.offset += len(line)
        segment.add(line)
    return b""


def index_size_bytes(view: View) -> int:
    """The compressed lines' bytes (the rest of the index is small beside them)."""
    return sum(
        part.full.size_bytes() + part.slim.size_bytes()
        for segment in view.segments
        for part in segment.parts.values()
    )
