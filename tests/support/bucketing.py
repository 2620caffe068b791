"""How flagd evaluators bucket users for ``fractional``, re-derived in a few lines, and the figures the
docs print about them (docs/evaluators.md).

Both evaluators the tests run map a 32-bit murmur3 hash (seed 0) to a bucket the same way,
``bucket = hash * total_weight >> 32``, and serve the first variant whose running sum of weights
exceeds it. They hash different bytes:

- the Python in-process evaluator (openfeature-flagd-core 2.0.0): canonical CBOR of
  ``[flagKey, targetingKey]`` (a definite-length array of two UTF-8 text strings);
- the JavaScript evaluator (@openfeature/flagd-core 4.0.1): the string ``flagKey + targetingKey``,
  read as UTF-16 code units, each put in a byte lane as its hashing library does (so ``é`` hashes as
  the single byte 0xE9, not as its UTF-8 bytes).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

FLAG = "new-checkout"
KEYS = [f"user-{i}" for i in range(20_000)]
"""The targeting keys the docs' figures are measured on."""

MASK = 0xFFFFFFFF
C1, C2 = 0xCC9E2D51, 0x1B873593


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & MASK


def _mix(h: int, k: int) -> int:
    """One 32-bit block into the running hash."""
    k = (_rotl((k * C1) & MASK, 15) * C2) & MASK
    h = _rotl(h ^ k, 13)
    return (h * 5 + 0xE6546B64) & MASK


def _finish(h: int, k: int | None, length: int) -> int:
    """The tail block (``None``: no tail), the length, and the final avalanche."""
    if k is not None:
        h ^= (_rotl((k * C1) & MASK, 15) * C2) & MASK
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    return h ^ (h >> 16)


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit of ``data``, unsigned."""
    h = seed & MASK
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        h = _mix(h, int.from_bytes(data[i : i + 4], "little"))
    tail = data[whole:]
    return _finish(h, int.from_bytes(tail, "little") if tail else None, len(data))


def utf16_murmur3_32(text: str) -> int:
    """MurmurHash3 (seed 0) over the UTF-16 code units of ``text``, as the JavaScript evaluator's hashing
    library reads them: unit ``i`` of a block is XOR-ed in at bit ``8 * i`` with all 16 of its bits (the
    fourth unit's high byte wraps to bit 0), and a tail block that is negative as a signed 32-bit
    integer is left out. For code units up to U+00FF this is murmur3 over those bytes."""
    units = list(text.encode("utf-16-le", "surrogatepass"))
    codes = [units[i] | units[i + 1] << 8 for i in range(0, len(units), 2)]
    h = 0
    whole = len(codes) - len(codes) % 4
    for i in range(0, whole, 4):
        a, b, c, d = codes[i : i + 4]
        k = (a ^ b << 8 ^ c << 16 ^ (d & 0xFF) << 24 ^ (d & 0xFF00) >> 8) & MASK
        h = _mix(h, k)
    k = 0
    for shift, code in enumerate(codes[whole:]):
        k ^= code << (8 * shift)
    k &= MASK
    return _finish(h, k if 0 < k < 1 << 31 else None, len(codes))


def _cbor_text(text: str) -> bytes:
    """A CBOR text string (major type 3) in its shortest, canonical form."""
    data = text.encode("utf-8")
    n = len(data)
    if n < 24:
        head = bytes([0x60 + n])
    else:
        size = next(s for s in (1, 2, 4, 8) if n < 1 << (8 * s))
        head = bytes([0x78 + {1: 0, 2: 1, 4: 2, 8: 3}[size]]) + n.to_bytes(size, "big")
    return head + data


def python_bytes(flag_key: str, targeting_key: str) -> bytes:
    """What the Python evaluator hashes: canonical CBOR of ``[flagKey, targetingKey]``."""
    return b"\x82" + _cbor_text(flag_key) + _cbor_text(targeting_key)


def python_hash(flag_key: str, targeting_key: str) -> int:
    return murmur3_32(python_bytes(flag_key, targeting_key))


def javascript_hash(flag_key: str, targeting_key: str) -> int:
    return utf16_murmur3_32(flag_key + targeting_key)


Hash = Callable[[str, str], int]
Buckets = Sequence[tuple[str, int]]


def pick(hash_value: int, buckets: Buckets) -> str:
    """The variant ``fractional`` serves for a hash: the first whose running weight exceeds the bucket."""
    total = sum(w for _, w in buckets)
    bucket = (hash_value * total) >> 32
    end = 0
    for variant, w in buckets:
        end += w
        if bucket < end:
            return variant
    raise AssertionError(f"bucket {bucket} beyond the total weight {total}")


def fractional_buckets(document: Mapping[str, Any], flag_key: str) -> list[tuple[str, int]]:
    """The buckets of a flag whose targeting is flagroll's plain ``fractional`` layout (no segment)."""
    rule = document["flags"][flag_key]["targeting"]
    assert set(rule) == {"fractional"}, f"flag {flag_key!r}: not a plain fractional rule: {rule}"
    return [(str(variant), int(w)) for variant, w in rule["fractional"]]


def fine_document(flag_key: str, buckets: int = 1000) -> dict[str, Any]:
    """A flag of ``buckets`` variants of weight 1: any two different hashes almost surely land in
    different variants, which flagroll's few arms cannot show (a check of the models, not a layout)."""
    variants = {f"v{i}": i % 2 == 0 for i in range(buckets)}
    return {
        "flags": {
            flag_key: {
                "state": "ENABLED",
                "variants": variants,
                "defaultVariant": "v0",
                "targeting": {"fractional": [[name, 1] for name in variants]},
            }
        }
    }


def modelled(document: Mapping[str, Any], flag_key: str, keys: Iterable[str], hash_: Hash) -> list[str]:
    """The variants the model of an evaluator serves ``keys``."""
    buckets = fractional_buckets(document, flag_key)
    return [pick(hash_(flag_key, key), buckets) for key in keys]


def python_variants(document: Mapping[str, Any], flag_key: str, keys: Iterable[str]) -> list[str]:
    """The variants the pinned Python in-process evaluator serves ``keys``."""
    core = FlagdCore()
    core.set_flags(json.dumps(document))
    served = []
    for key in keys:
        details = core.resolve_boolean_value(flag_key, False, EvaluationContext(targeting_key=key))
        assert details.variant is not None, f"{key}: {details.reason} {details.error_message}"
        served.append(details.variant)
    return served


def share_percent(variants: Sequence[str], variant: str) -> float:
    return 100 * Counter(variants)[variant] / len(variants)


def crossings(steps: Iterable[Sequence[str]]) -> int:
    """How many times a user is served another arm than the one they were first exposed in, over a
    sequence of steps (``off`` is no arm)."""
    first: dict[int, str] = {}
    moved = 0
    for variants in steps:
        for i, variant in enumerate(variants):
            if variant != "off" and first.setdefault(i, variant) != variant:
                moved += 1
    return moved


@dataclass(frozen=True)
class Agreement:
    """Two evaluators' answers for the same keys at one step, as the docs' table shows them."""

    percent: int
    python_on: float
    python_control: float
    javascript_on: float
    javascript_control: float
    differ: int  # keys served another variant
    unrelated: int  # what two unrelated hashes would give
    exposed_elsewhere_percent: int  # of the keys Python exposes, the share JavaScript serves otherwise


def agreement(percent: int, python: Sequence[str], javascript: Sequence[str]) -> Agreement:
    n = len(python)
    p = percent / 100
    exposed = [i for i, v in enumerate(python) if v != "off"]
    return Agreement(
        percent=percent,
        python_on=round(share_percent(python, "on"), 2),
        python_control=round(share_percent(python, "control"), 2),
        javascript_on=round(share_percent(javascript, "on"), 2),
        javascript_control=round(share_percent(javascript, "control"), 2),
        differ=sum(a != b for a, b in zip(python, javascript, strict=True)),
        unrelated=round(n * (1 - (2 * p * p + (1 - 2 * p) ** 2))),
        exposed_elsewhere_percent=round(
            100 * sum(python[i] != javascript[i] for i in exposed) / len(exposed)
        ),
    )


TABLE_HEADING = "| treatment | Python: treatment / control | JavaScript: treatment / control |"
_ROW = re.compile(
    r"^\| (\d+) % \| ([\d.]+) % / ([\d.]+) % \| ([\d.]+) % / ([\d.]+) % \| ([\d,]+) \| ([\d,]+) \| (\d+) % \|$"
)


def documented_agreement(page: Path) -> list[Agreement]:
    """The rows of the measured table in ``page`` (the one under :data:`TABLE_HEADING`)."""
    lines = page.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(TABLE_HEADING)), None)
    assert start is not None, f"{page}: no table starting {TABLE_HEADING!r}"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        match = _ROW.match(line)
        assert match is not None, f"{page}: a row of the measured table is not in its format: {line!r}"
        g = match.groups()
        rows.append(
            Agreement(
                percent=int(g[0]),
                python_on=float(g[1]),
                python_control=float(g[2]),
                javascript_on=float(g[3]),
                javascript_control=float(g[4]),
                differ=int(g[5].replace(",", "")),
                unrelated=int(g[6].replace(",", "")),
                exposed_elsewhere_percent=int(g[7]),
            )
        )
    return rows
