"""Where flag documents live. The file store writes atomically and takes a lock beside the file.

A write goes to a temporary file in the same directory, is fsynced, given the old file's owner,
group and mode and an mtime newer than the old file's (flagd's file watcher ignores an older or equal
mtime), renamed over the old file with
``os.replace``, and the directory is fsynced. A reader therefore sees the old file or the new one,
never a mix, and a crash leaves at most a stray temporary file. Before writing, the new document is
loaded into the flagd evaluator: flagroll never writes a file flagd cannot load.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from openfeature.contrib.tools.flagd.core import FlagdCore

from controller.adapters.filelock import exclusive
from controller.core.errors import FlagFileError, LockTimeoutError, WriteError
from controller.core.flagd import parse_document, render_document

MAX_FLAG_FILE_BYTES = 64 * 1024 * 1024
LOCK_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Snapshot:
    document: dict[str, Any]
    version: str | None  # None: the file did not exist


class FlagStore(Protocol):
    """The seam between the reconciler and wherever flags are kept."""

    @property
    def location(self) -> str: ...

    def locked(self, timeout_seconds: float) -> contextlib.AbstractContextManager[None]: ...

    def read(self) -> Snapshot: ...

    def write(self, document: Mapping[str, Any], expected: Snapshot, changed: Collection[str]) -> None: ...


@runtime_checkable
class Layered(Protocol):
    """A store whose flags are served over flags from other sources (Git-owned bases): a policy for a
    flag that exists there meets it as an existing flag (adoption), never as a new one."""

    def underlying(self) -> dict[str, Any]:
        """The flags of the other sources, by key; FlagFileError when one cannot be read."""
        ...


# What a policy meets besides the store's own flags: the flags of the sources below it, or why they
# cannot be read (then no flag missing from the store can be taken for a new one).
Underlay = Mapping[str, Any] | str


def underlay(store: object) -> Underlay:
    """The flags under ``store`` (none for a plain store), or the problem reading them."""
    if not isinstance(store, Layered):
        return {}
    try:
        return store.underlying()
    except FlagFileError as exc:
        return str(exc)


def check_loadable(document: Mapping[str, Any], keys: Collection[str], source: str) -> None:
    """Raise if the flagd evaluator would refuse the flags ``keys`` of this document.

    Only the flags flagroll wrote are checked (with the shared ``$evaluators``): a broken flag that
    somebody else owns must never block a rollback or a stop. Each flag stands on its own, so they
    are loaded CHECK_BATCH_FLAGS at a time: the evaluator's copy of thousands stays small.
    """
    flags = document.get("flags", {})
    present = [k for k in keys if k in flags]
    for start in range(0, max(len(present), 1), CHECK_BATCH_FLAGS):
        batch = present[start : start + CHECK_BATCH_FLAGS]
        if _refusal(document, batch) is None:
            continue
        refused = {key: problem for key in batch if (problem := _refusal(document, [key])) is not None}
        if not refused:  # only together (a clash through the shared $evaluators)
            refused = {f"{len(batch)} flags together": str(_refusal(document, batch))}
        named = sorted(refused)
        more = f" and {len(named) - 5} more" if len(named) > 5 else ""
        raise FlagFileError(f"{source}: flagd would refuse {', '.join(named[:5])}{more}: {refused[named[0]]}")


def _refusal(document: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """Why flagd refuses these flags of ``document`` (with its ``$evaluators``), if it does."""
    flags = document.get("flags", {})
    subset: dict[str, Any] = {"flags": {k: flags[k] for k in keys}}
    if "$evaluators" in document:
        subset["$evaluators"] = document["$evaluators"]
    try:
        FlagdCore().set_flags(json.dumps(subset, ensure_ascii=False, allow_nan=False))
    except Exception as exc:
        return str(exc)
    return None


CHECK_BATCH_FLAGS = 500


class FileFlagStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    @property
    def location(self) -> str:
        return str(self.path)

    def _version(self) -> str | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def read(self) -> Snapshot:
        version = self._version()
        if version is None:
            return Snapshot(parse_document("", str(self.path)), None)
        try:
            with self.path.open("rb") as handle:
                # Sized by the file, not by the limit: read(limit) would set aside the whole limit.
                size = min(os.fstat(handle.fileno()).st_size, MAX_FLAG_FILE_BYTES)
                raw = handle.read(size + 1)
                if len(raw) > size:  # grown since, or a size the file system does not tell
                    raw += handle.read(MAX_FLAG_FILE_BYTES + 1 - len(raw))
        except OSError as exc:
            raise FlagFileError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if len(raw) > MAX_FLAG_FILE_BYTES:
            raise FlagFileError(f"{self.path} is larger than {MAX_FLAG_FILE_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FlagFileError(f"{self.path} is not UTF-8: {exc}") from None
        del raw  # thousands of flags make megabytes: the bytes go before the parse begins
        return Snapshot(parse_document(text, str(self.path)), version)

    def locked(self, timeout_seconds: float = 30.0) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive lock on ``<flag file>.lock`` for the block."""
        return exclusive(
            self.lock_path, timeout_seconds, poll_seconds=LOCK_POLL_SECONDS, timeout_error=LockTimeoutError
        )

    def write(self, document: Mapping[str, Any], expected: Snapshot, changed: Collection[str]) -> None:
        """Replace the file with ``document`` if it still is what ``expected`` read; ``changed`` are
        the flags flagroll changed, which the flagd evaluator must accept."""
        try:
            text = render_document(document)
        except ValueError as exc:  # a number JSON cannot hold (1e999 read as infinity)
            raise FlagFileError(f"{self.path}: cannot write the document back: {exc}") from exc
        check_loadable(document, changed, str(self.path))
        if self._version() != expected.version:
            raise WriteError(
                f"{self.path} changed since it was read (edited by someone else?); not overwriting it, "
                "the next cycle reads it again"
            )
        self._sweep_leftovers()
        atomic_write(self.path, text)

    def _sweep_leftovers(self) -> None:
        """Remove temporary files left by a writer that was killed mid-write. Called with the lock
        held, so no live writer of this file can own one."""
        for leftover in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new content."""
    directory = path.parent
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise WriteError(
            f"cannot write {path}: cannot create a file in {directory}: {exc.strerror or exc}; "
            "the old file is intact"
        ) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if old is not None:
            _keep_owner(tmp, old)  # before the mode: a change of owner clears the set-id bits
        os.chmod(tmp, (old.st_mode & 0o7777) if old is not None else 0o644)
        mtime_ns = time.time_ns()
        if old is not None:
            mtime_ns = max(mtime_ns, old.st_mtime_ns + 1_000_000)
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}; the old file is intact") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(directory)


def _keep_owner(tmp: Path, old: os.stat_result) -> None:
    """Give the new file the old one's owner and group. A writer that may not give a file away (not
    root) keeps at least the group when it belongs to it; otherwise the new file is its own."""
    mine = tmp.stat()
    if (mine.st_uid, mine.st_gid) == (old.st_uid, old.st_gid):
        return
    try:
        os.chown(tmp, old.st_uid, old.st_gid)
    except PermissionError:
        with contextlib.suppress(PermissionError):
            os.chown(tmp, -1, old.st_gid)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
