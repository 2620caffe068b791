"""The decision log's files, as names: its size limit as people write it (``64Mi``, ``100MB``, bytes),
and its rotated generations (``decisions.jsonl.1.gz`` is the newest, then ``.2.gz``, ...), in the
order readers read them. Pure: the files themselves are :mod:`controller.adapters.decisionlog`'s job.

A crash in the middle of a rotation can leave the newest generation uncompressed (``.1``), beside
its finished ``.1.gz`` or not, and a gap in the numbering; a higher number is always older.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_SIZE = re.compile(r"([0-9]+)\s*(|B|KB|MB|GB|K|M|G|Ki|Mi|Gi|KiB|MiB|GiB)", re.IGNORECASE)
_UNIT_BYTES = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
MAX_SIZE_BYTES = 1024**5  # a petabyte: anything larger is a typo


def parse_size(text: str) -> int:
    """The number of bytes in ``text``: a whole number of bytes, or one with a unit: ``KB``, ``MB``,
    ``GB`` (powers of 1000), ``Ki``, ``Mi``, ``Gi`` (or ``KiB``..., ``K``..., powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}; write bytes or a number and a unit: 64Mi, 100MB, 1Gi")
    size_bytes = int(match.group(1)) * _UNIT_BYTES[match.group(2).lower()]
    if size_bytes > MAX_SIZE_BYTES:
        raise ValueError(f"size {text!r} is larger than a petabyte")
    return size_bytes


def format_size(size_bytes: int) -> str:
    """``size_bytes`` the way people read it: ``64 MiB``, ``1.5 GiB``, ``512 B``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size_bytes >= factor:
            return f"{size_bytes / factor:.4g} {unit}"
    return f"{size_bytes} B"


@dataclass(frozen=True)
class Generation:
    """A rotated generation's file: its ``number`` (1 is the newest) and whether it is gzipped."""

    name: str
    number: int
    compressed: bool


def generation_name(live_name: str, number: int, *, compressed: bool = True) -> str:
    return f"{live_name}.{number}.gz" if compressed else f"{live_name}.{number}"


def compress_temp_name(live_name: str) -> str:
    """Where the newest generation is compressed before it is renamed into place (never read)."""
    return f"{live_name}.1.gz.tmp"


def parse_generation(live_name: str, name: str) -> Generation | None:
    """The generation ``name`` is, of the log named ``live_name``; None for any other file."""
    prefix = live_name + "."
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    compressed = rest.endswith(".gz")
    digits = rest[: -len(".gz")] if compressed else rest
    if not digits.isdigit() or digits.startswith("0") or not digits.isascii():
        return None
    return Generation(name, int(digits), compressed)


def generations(live_name: str, names: Iterable[str]) -> list[Generation]:
    """The generations among ``names``, oldest first: the order their records were written. Where a
    crash left both ``.N`` and ``.N.gz``, they hold the same records: the plain file is read (it was
    complete before the compressed copy was begun) and the other passed over."""
    found: dict[int, Generation] = {}
    for name in names:
        generation = parse_generation(live_name, name)
        if generation is None:
            continue
        other = found.get(generation.number)
        if other is None or other.compressed:
            found[generation.number] = generation
    return [found[number] for number in sorted(found, reverse=True)]


def shifts(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """The renames (from, to) that free number 1 for a new generation, oldest first so that no rename
    overwrites: the run of consecutive numbers from 1 moves up by one; a gap (left by a crash
    part-way through the renames) ends the run, and is filled."""
    present = set(numbers)
    run = 0
    while run + 1 in present:
        run += 1
    return [(number, number + 1) for number in range(run, 0, -1)]


def beyond_keep(numbers: Iterable[int], keep: int) -> list[int]:
    """The generations to delete before a rotation so that, with the new one, ``keep`` remain: the
    oldest (highest numbers) first."""
    ordered = sorted(set(numbers), reverse=True)
    excess = len(ordered) + 1 - keep
    return ordered[: max(0, excess)]
