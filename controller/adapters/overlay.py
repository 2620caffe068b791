"""Git owns the base, flagroll owns the override.

In this mode the flag definitions stay in files that Git owns (``--base``; flagroll reads them and
never writes them), and flagroll writes only the flags it manages to its own override file
(``--flags``), which flagd lists last among its sources (for a key defined twice, flagd serves the
later source's definition). For readers that take a single file, ``--merged FILE`` is also written:
every base flag, overlaid with flagroll's (flagroll's wins on a shared key), the bases'
``$evaluators`` and their flag-set ``metadata``. The merged file is rewritten whenever the override
changes, whenever a base changes (a Git sync) and whenever another writer changed the merged file,
checked every loop iteration; a base that is not valid flagd JSON leaves the merged file as it was and
is reported.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.adapters.flagstore import FileFlagStore, Snapshot, atomic_write
from controller.core.errors import FlagFileError, FlagrollError, UsageError
from controller.core.flagd import empty_document, is_managed, parse_document, render_document


def merge(bases: Sequence[Mapping[str, Any]], override: Mapping[str, Any]) -> dict[str, Any]:
    """What flagd would serve from ``bases`` followed by ``override``: later sources win per key, for
    the flags, the shared ``$evaluators`` and the flag-set ``metadata`` alike."""
    merged = empty_document()
    shared: dict[str, dict[str, Any]] = {"$evaluators": {}, "metadata": {}}
    for document in [*bases, override]:
        merged["flags"].update(document.get("flags", {}))
        for name, kept in shared.items():
            if isinstance(document.get(name), dict):
                kept.update(document[name])
    merged.update({name: kept for name, kept in shared.items() if kept})
    return merged


class OverlayStore:
    """A :class:`FileFlagStore` on the override file, with read-only bases and an optional merged file.

    The protocol's ``read`` returns the override document (where flagroll's state lives); the bases
    only matter to the merged file and to the check that flagroll never takes over a base flag by
    accident (a managed flag shadowing a base flag of the same key is the point of the mode; an
    unmanaged override flag is left alone as always).
    """

    def __init__(
        self, override: Path, bases: Sequence[Path], merged: Path | None, *, recalled: bool = False
    ) -> None:
        paths = [p.resolve() for p in [override, *bases, *([merged] if merged else [])]]
        if len(set(paths)) != len(paths):
            raise UsageError(
                "--flags, --base and --merged must be different files: flagroll never writes a base"
            )
        self.override = FileFlagStore(override)
        self.bases = list(bases)
        self.merged = merged
        self._merged_from: tuple[str | None, ...] | None = None  # the inputs' and the output's versions
        # ``recalled``: the bases and merged file come from FLAGFILE.overlay.json, not from the command
        # line. Then a write rewrites the merged file only if it served this override before the write:
        # otherwise another run may write it now, and this override's flags would displace its own.
        self.recalled = recalled
        self.merged_problem: str | None = None

    @property
    def location(self) -> str:
        return self.override.location

    def locked(self, timeout_seconds: float) -> contextlib.AbstractContextManager[None]:
        return self.override.locked(timeout_seconds)

    def read(self) -> Snapshot:
        return self.override.read()

    def underlying(self) -> dict[str, Any]:
        """The bases' flags (later bases win), which the override's managed flags shadow."""
        return dict(merge(list(self._read_bases()), empty_document())["flags"])

    def write(self, document: Mapping[str, Any], expected: Snapshot, changed: Collection[str]) -> None:
        if self.recalled and self.merged is not None and self.merged_problem is None:
            self.merged_problem = not_serving(self.merged, self.override.path, expected.document)
        self.override.write(document, expected, changed)
        # The override is written: that is the decision. A merged file that cannot follow (a broken
        # base) is reported by the loop's next refresh; it must not undo the record of the write.
        with contextlib.suppress(FlagrollError):
            self.refresh(force=True)  # FlagFileError for every failure: see refresh

    def _versions(self) -> tuple[str | None, ...]:
        return tuple(FileFlagStore(p)._version() for p in [self.override.path, *self.bases])

    def _read_bases(self) -> Iterator[dict[str, Any]]:
        for path in self.bases:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise FlagFileError(f"--base {path}: no such file") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise FlagFileError(f"--base {path}: cannot read: {exc}") from None
            yield parse_document(text, str(path))

    def refresh(self, *, force: bool = False) -> bool:
        """Rewrite the merged file if the override, a base or the merged file itself changed since it
        was last written (another writer's merged file is put back).
        Returns whether it wrote. Raises FlagFileError (the old merged file intact) for a bad base."""
        if self.merged_problem is not None:
            raise FlagFileError(self.merged_problem)
        if self.merged is None:
            return False
        try:
            return self._refresh(force)
        except (OSError, ValueError) as exc:  # an unreadable file; a number JSON cannot hold (1e999)
            raise FlagFileError(f"cannot write the merged file {self.merged}: {exc}") from None

    def _refresh(self, force: bool) -> bool:
        assert self.merged is not None
        versions = self._versions()
        if not force and (*versions, FileFlagStore(self.merged)._version()) == self._merged_from:
            return False
        bases = list(self._read_bases())
        override = self.override.read().document
        for key, flag in override.get("flags", {}).items():
            if not is_managed(flag) and any(key in base.get("flags", {}) for base in bases):
                raise FlagFileError(
                    f"{self.override.path}: flag {key!r} is defined in a base and in the override without "
                    "flagroll state; remove it from one of them"
                )
        atomic_write(self.merged, render_document(merge(bases, override)))
        self._merged_from = (*versions, FileFlagStore(self.merged)._version())
        return True


def not_serving(merged: Path, override: Path, document: Mapping[str, Any]) -> str | None:
    """Why ``merged`` is not the merged file of ``override`` as ``document`` holds it (a flag of the
    override that it serves otherwise, or not at all), or None when it is, or is missing or unreadable
    (nothing to keep then: writing it is the repair)."""
    try:
        served = json.loads(merged.read_text(encoding="utf-8")).get("flags")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(served, dict):
        return None
    for key, flag in document.get("flags", {}).items():
        if served.get(key) != flag:
            return (
                f"{merged} does not serve flag {key!r} as {override} held it (another run may write it "
                f"now); left as it is: give --base and --merged to write it from {override}"
            )
    return None


# What ``flagroll run`` was told, kept beside the override: ``stop``, ``pause``, ``resume`` and ``adopt``
# run by hand with only ``--flags`` refresh the merged file at once, as the loop would.
REMEMBERED_SUFFIX = ".overlay.json"


def remembered_path(override: Path) -> Path:
    return override.with_name(override.name + REMEMBERED_SUFFIX)


def remember(override: Path, bases: Sequence[Path], merged: Path | None) -> None:
    """Keep the bases and the merged file of the run beside the override (rewritten only when they
    change), or forget them when the run writes no merged file."""
    path = remembered_path(override)
    if merged is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    text = json.dumps({"base": [str(b.resolve()) for b in bases], "merged": str(merged.resolve())}) + "\n"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="utf-8") == text:
            return
    atomic_write(path, text)


def recall(override: Path) -> tuple[list[Path], Path] | None:
    """The bases and merged file the last ``flagroll run`` on ``override`` wrote, if it wrote one.
    FlagFileError naming the file when it cannot be read."""
    path = remembered_path(override)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise FlagFileError(f"{path}: cannot read what the last run merged: {exc}") from None
    bases, merged = (saved.get("base"), saved.get("merged")) if isinstance(saved, dict) else (None, None)
    if not (isinstance(merged, str) and isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise FlagFileError(
            f"{path}: not what flagroll run writes ('base': a list of files, 'merged': a file)"
        )
    return [Path(b) for b in bases], Path(merged)
