"""The decision log: append-only JSON Lines, one record per evaluation, rendered for on-call.

Each record is fsynced as it is appended. A crash can leave a torn last line; readers skip it with a
warning, and the next append starts on a fresh line so that no complete record is ever damaged.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.checks import describe
from controller.decision import Decision
from controller.errors import WriteError
from controller.policy import Policy, pct

Record = dict[str, Any]
Warn = Callable[[str], None]

_TAIL_CHUNK = 64 * 1024
APPEND_CHUNK_RECORDS = 200  # records serialised at a time: a cycle of thousands never builds one huge string

POLICY_REJECTED_PREFIX = "policy rejected"  # the reason of the record saying a policy was rejected


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Context:
    """Who and what a record is about, beyond the decision itself."""

    flag: str
    actor: str = "controller"
    policy: Policy | None = None
    dry_run: bool = False


def to_record(decision: Decision, context: Context, now: datetime) -> Record:
    after, before = decision.after, decision.before
    spec = context.policy.spec if context.policy is not None else None
    return {
        "time": _iso(now),
        "policy": after.policy,
        "flag": context.flag,
        "revision": after.revision,
        "action": decision.action.value,
        "from_percent": decision.from_percent,
        "to_percent": decision.to_percent,
        "from_step": before.step if before is not None else None,
        "to_step": after.step,
        "steps": after.steps,
        "status": after.status.value,
        "reason": decision.reason,
        "notes": list(decision.notes),
        "checkpoint": decision.checkpoint.value if decision.checkpoint is not None else None,
        "checks": [c.as_record() for c in decision.checks],
        "aim": spec.aim if spec is not None else None,
        "mechanism": spec.mechanism if spec is not None else None,
        "owner": after.owner or None,
        "review": after.review.isoformat() if after.review is not None else None,
        "stale": after.is_stale(now.date()),
        "actor": context.actor,
        "dry_run": context.dry_run,
    }


class DecisionLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        try:
            with self.path.open("a+b") as handle:
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":  # a torn line from a crash: start afresh
                        handle.write(b"\n")
                for start in range(0, len(records), APPEND_CHUNK_RECORDS):  # thousands a cycle at scale
                    chunk = records[start : start + APPEND_CHUNK_RECORDS]
                    lines = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in chunk)
                    handle.write(lines.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise WriteError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc


def parse_line(line: bytes) -> Record | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def read_records(path: Path, warn: Warn | None = None) -> Iterator[Record]:
    """Every complete record in order; unreadable lines are skipped with a warning."""
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
            yield record


def last_by_flag(path: Path, flags: Iterable[str] | None = None) -> dict[str, Record]:
    """The newest record of each flag, reading backwards so a long log costs little."""
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
                if record is None:
                    continue
                flag = record.get("flag")
                if isinstance(flag, str) and flag not in found:
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
    while not stop():
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < position:  # truncated or replaced: start again
                    position, pending = 0, b""
                handle.seek(position)
                data = handle.read()
                position = handle.tell()
        except FileNotFoundError:
            data = b""
        if data:
            pending += data
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if not line.strip():
                    continue
                record = parse_line(line)
                if record is None:
                    if warn is not None:
                        warn(f"{path}: skipped an unreadable record")
                    continue
                yield record
            continue
        time.sleep(poll_seconds)


# Rendering -------------------------------------------------------------------------------------

_WIDTH = 100


def _wrap(label: str, text: str) -> list[str]:
    prefix = f"  {label:<11}"
    return textwrap.wrap(text, width=_WIDTH, initial_indent=prefix, subsequent_indent=" " * len(prefix)) or [
        prefix.rstrip()
    ]


def _check_line(check: Mapping[str, Any]) -> str:
    return f"{str(check.get('verdict', '?')).upper():<7} {describe(check)}"


def render(record: Mapping[str, Any], *, aim: str | None = None, mechanism: str | None = None) -> str:
    """Aim, mechanism, then the signals and the checkpoint: what on-call needs, in that order."""
    action = str(record.get("action", "?")).upper()
    moved = f"{pct(record.get('from_percent') or 0)}% → {pct(record.get('to_percent') or 0)}%"
    head = (
        f"{record.get('time', '?')}  {record.get('flag', '?')}  {action}  {moved}  [{record.get('status')}]"
    )
    extra = []
    if record.get("revision"):
        extra.append(f"rev {record['revision']}")
    if record.get("actor") and record["actor"] != "controller":
        extra.append(f"by {record['actor']}")
    if record.get("dry_run"):
        extra.append("DRY RUN")
    if record.get("stale"):
        extra.append(f"STALE: past its review date {record.get('review')}")
    if extra:
        head += "  (" + ", ".join(extra) + ")"
    lines = [head]
    lines += _wrap("Aim", record.get("aim") or aim or "—")
    lines += _wrap("Mechanism", record.get("mechanism") or mechanism or "—")
    lines += _wrap("Why", str(record.get("reason", "")))
    for note in record.get("notes") or []:
        lines += _wrap("Note", str(note))
    checks = [c for c in record.get("checks") or [] if isinstance(c, dict)]
    signals = [c for c in checks if c.get("kind") != "checkpoint"]
    expected = [c for c in checks if c.get("kind") == "checkpoint"]
    if signals:
        lines.append("  Signals")
        lines += [f"    {_check_line(c)}" for c in signals]
    checkpoint = record.get("checkpoint")
    if checkpoint or expected:
        lines.append(f"  Checkpoint {str(checkpoint or 'not judged').upper()}")
        lines += [f"    {_check_line(c)}" for c in expected]
    queries = {c.get("query") for c in checks if c.get("verdict") != "pass" and c.get("query")}
    queries |= {
        (c.get("control") or {}).get("query")
        for c in checks
        if c.get("verdict") != "pass" and c.get("rule") not in {"max", "min", "minSamples"}
    }
    for check in checks:
        counts = check.get("sequential")
        if check.get("verdict") != "pass" and isinstance(counts, dict):
            for arm in ("treatment", "control"):
                arm_counts = counts.get(arm) or {}
                queries |= {arm_counts.get("events_query"), arm_counts.get("samples_query")}
    queries.discard(None)
    queries.discard("")
    for query in sorted(q for q in queries if isinstance(q, str)):
        lines.append(f"    query: {query}")
    return "\n".join(lines)


def render_all(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Render records, carrying each flag's aim and mechanism to records that lack them (human ones)."""
    known: dict[str, tuple[str | None, str | None]] = {}
    for record in records:
        flag = str(record.get("flag"))
        if record.get("aim"):
            known[flag] = (record.get("aim"), record.get("mechanism"))
        aim, mechanism = known.get(flag, (None, None))
        yield render(record, aim=aim, mechanism=mechanism)
