"""The decision log's files on disk: the lock beside the log, its rotation into gzipped generations,
and a consistent set of open files for readers. Names and their order are
:mod:`controller.core.logfiles`'s.

Every append and every rotation holds ``<log>.lock`` exclusively (``fcntl.flock``). Readers take no
lock: every moment of a rotation leaves files they understand, so they open the files of one moment
(:func:`opened`) and read them at leisure (an open file survives a rename or a deletion).

A rotation is a list of steps, each of which leaves files that every reader and the next rotation
understand if the process dies after it:

1. delete the oldest generations beyond the retention count;
2. rename ``.N.gz`` to ``.N+1.gz``, oldest first (a crash leaves a gap in the numbering, which
   readers pass over and the next rotation fills);
3. rename the live file to ``.1`` (readers read a plain ``.1``; the next append starts a new live
   file);
4. compress ``.1`` into ``.1.gz.tmp`` and fsync it (a crash leaves a temporary file nobody reads);
5. rename ``.1.gz.tmp`` to ``.1.gz`` (readers read the plain ``.1`` while both exist);
6. delete ``.1``.

Steps 4 to 6 are also how an interrupted rotation is finished, first thing under the lock of the
next append (:func:`finish_steps`).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from controller.adapters.filelock import exclusive
from controller.core import logfiles

LOCK_POLL_SECONDS = 0.01
WRITER_LOCK_TIMEOUT_SECONDS = 60.0  # a rotation of a large log takes a second or two
SNAPSHOT_POLL_SECONDS = 0.005
SNAPSHOT_TIMEOUT_SECONDS = (
    60.0  # a rotation takes seconds: files changing longer than this are read as they are
)
COMPRESS_CHUNK_BYTES = 1024 * 1024
COMPRESS_LEVEL = 6


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def writer_lock(
    path: Path, timeout_seconds: float = WRITER_LOCK_TIMEOUT_SECONDS
) -> contextlib.AbstractContextManager[None]:
    """Hold ``<log>.lock`` exclusively: no other append or rotation meanwhile."""
    return exclusive(
        lock_path(path), timeout_seconds, poll_seconds=LOCK_POLL_SECONDS, holder="another writer of the log"
    )


# rotation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a rotation: ``run`` it, or stop before it (as a crash would)."""

    what: str
    run: Callable[[], None]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(source: Path, target: Path) -> None:
    os.rename(source, target)
    _fsync_dir(source.parent)


def _unlink(target: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    _fsync_dir(target.parent)


def _compress(source: Path, target: Path) -> None:
    with source.open("rb") as plain, target.open("wb") as raw:
        with gzip.GzipFile("", "wb", COMPRESS_LEVEL, raw, mtime=0) as packed:
            shutil.copyfileobj(plain, packed, COMPRESS_CHUNK_BYTES)
        raw.flush()
        os.fsync(raw.fileno())


def _names(path: Path) -> list[str]:
    try:
        return os.listdir(path.parent)
    except FileNotFoundError:
        return []


def _sibling(path: Path, number: int, *, compressed: bool = True) -> Path:
    return path.with_name(logfiles.generation_name(path.name, number, compressed=compressed))


def finish_steps(path: Path) -> list[Step]:
    """The steps that finish a rotation a crash interrupted after the live file became ``.1``
    (none if there is no plain ``.1``); a temporary file of a crashed compression is removed."""
    plain = _sibling(path, 1, compressed=False)
    packed = _sibling(path, 1)
    temp = path.with_name(logfiles.compress_temp_name(path.name))
    if not plain.exists():
        return [Step(f"remove {temp.name}", lambda: _unlink(temp))] if temp.exists() else []
    if packed.exists():  # compressed and renamed: only the plain copy is left to delete
        return [Step(f"delete {plain.name}", lambda: _unlink(plain))]
    return _compress_steps(path)


def _compress_steps(path: Path) -> list[Step]:
    plain = _sibling(path, 1, compressed=False)
    packed = _sibling(path, 1)
    temp = path.with_name(logfiles.compress_temp_name(path.name))
    return [
        Step(f"compress {plain.name} into {temp.name}", lambda: _compress(plain, temp)),
        Step(f"rename {temp.name} to {packed.name}", lambda: _rename(temp, packed)),
        Step(f"delete {plain.name}", lambda: _unlink(plain)),
    ]


def rotation_steps(path: Path, keep: int) -> list[Step]:
    """The steps of a rotation of the live file at ``path`` keeping ``keep`` generations, planned
    from the files there now (call with the writer's lock held, after :func:`finish_steps`)."""
    if keep < 1:
        raise ValueError("a rotation keeps at least one generation")
    numbers = [g.number for g in logfiles.generations(path.name, _names(path)) if g.compressed]
    doomed = logfiles.beyond_keep(numbers, keep)
    remaining = [n for n in numbers if n not in doomed]
    steps = [Step(f"delete {_sibling(path, n).name}", _bind(_unlink, _sibling(path, n))) for n in doomed]
    for source, target in logfiles.shifts(remaining):
        old, new = _sibling(path, source), _sibling(path, target)
        steps.append(Step(f"rename {old.name} to {new.name}", _bind2(_rename, old, new)))
    plain = _sibling(path, 1, compressed=False)
    steps.append(Step(f"rename {path.name} to {plain.name}", lambda: _rename(path, plain)))
    return [*steps, *_compress_steps(path)]


def _bind(function: Callable[[Path], None], argument: Path) -> Callable[[], None]:
    return lambda: function(argument)


def _bind2(function: Callable[[Path, Path], None], first: Path, second: Path) -> Callable[[], None]:
    return lambda: function(first, second)


def _run(steps: list[Step]) -> None:
    for step in steps:
        step.run()


def finish_rotation(path: Path) -> None:
    """Finish a rotation a crash interrupted (with the writer's lock held)."""
    _run(finish_steps(path))


def rotate(path: Path, keep: int) -> None:
    """Rotate the live file into ``.1.gz`` keeping ``keep`` generations (with the writer's lock held)."""
    finish_rotation(path)
    _run(rotation_steps(path, keep))


# reading ----------------------------------------------------------------------------------------


@dataclass
class LogFile:
    """An open file of the log: ``path`` names it for warnings; ``compressed`` says how to read it."""

    path: Path
    handle: BinaryIO
    compressed: bool

    def lines(self) -> Iterator[bytes]:
        """Its lines, decompressed; a damaged compressed file raises OSError or EOFError part-way."""
        self.handle.seek(0)
        if not self.compressed:
            yield from self.handle
            return
        with gzip.GzipFile(fileobj=self.handle, mode="rb") as packed:
            yield from packed


@dataclass
class LogFiles:
    """The generations, oldest first, and the live file (None if there is none), all open."""

    generations: list[LogFile] = field(default_factory=list)
    live: LogFile | None = None

    def identity(self) -> Identity:
        opened = [*self.generations, *([self.live] if self.live is not None else [])]
        stats = [(file.path.name, os.fstat(file.handle.fileno())) for file in opened]
        return [(name, st.st_dev, st.st_ino) for name, st in stats]

    def close(self) -> None:
        for file in [*self.generations, *([self.live] if self.live is not None else [])]:
            file.handle.close()


Identity = list[tuple[str, int, int]]  # (name, device, inode) of each file of the log


def _identity(path: Path) -> Identity:
    """Which file each name of the log is now (the live file's growth is no change)."""
    found = []
    for name in [g.name for g in logfiles.generations(path.name, _names(path))] + [path.name]:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(path.with_name(name))
            found.append((name, st.st_dev, st.st_ino))
    return found


def _open_all(path: Path) -> LogFiles:
    files = LogFiles()
    for generation in logfiles.generations(path.name, _names(path)):
        where = path.with_name(generation.name)
        with contextlib.suppress(FileNotFoundError):  # renamed or deleted since the listing
            files.generations.append(LogFile(where, where.open("rb"), generation.compressed))
    try:
        with contextlib.suppress(FileNotFoundError):
            files.live = LogFile(path, path.open("rb"), compressed=False)
    except OSError:  # unreadable (a directory, no permission): the reader's error to report
        files.close()
        raise
    return files


@contextlib.contextmanager
def opened(path: Path) -> Iterator[LogFiles]:
    """The log's files as they were at one moment, all open, to be read with no lock held.

    Every moment of a rotation leaves files that readers understand (see the module's notes), so
    readers take no lock: they never wait for a writer, and need no write access to the directory.
    They list and open the files, then list again; if a rename came in between (the names do not
    name the same files before, during and after) they open them again."""
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT_SECONDS
    while True:
        before = _identity(path)
        files = _open_all(path)
        if before == files.identity() == _identity(path) or time.monotonic() > deadline:
            break
        files.close()
        time.sleep(SNAPSHOT_POLL_SECONDS)
    try:
        yield files
    finally:
        files.close()
