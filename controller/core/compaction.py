"""Compaction of the decision log: a run of identical holds is one full record and heartbeats.

Pure. Each evaluation of a rollout makes a full record (:func:`controller.core.records.to_record`);
what the decision log (and stdout) is given is decided here, from the flag's :class:`Run` (a small
memory the writer keeps per process):

- a record is written **in full** when it is not a plain controller hold (any other action, a human's
  record, a recovered, rejected, unguarded or dry-run record), when the decision changes the flag's
  state, when it is the first record of this process for the flag, or when its :func:`hold_key`
  differs from the last full record's;
- otherwise nothing is written, except a **heartbeat** (:func:`heartbeat`) once ``heartbeat_seconds``
  have passed since the flag's last written record: a small record saying the hold goes on, with
  the current reason, waiting and the checks' verdicts and values (not their query text), and
  ``heartbeat: {since, cycles}``.

``heartbeat_seconds`` 0: every record is written in full.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Record = dict[str, Any]
HoldKey = tuple[Any, ...]

HEARTBEAT = "heartbeat"  # the field that marks a heartbeat record
# A number, with a duration's unit if it has one: "2h59m" and "2h" are both "#" (format_duration's
# parts come and go as a hold counts down).
_NUMBERS = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|[smhd])?(?![a-z]))+")
_KEY_FIELDS = ("policy", "status", "to_step", "steps", "to_percent", "revision", "owner", "guarded")
_KEY_FIELDS_MORE = ("checkpoint", "stale", "aim", "mechanism", "review")
_CHECK_KEY = ("name", "kind", "rule", "arm", "verdict", "shadow", "settling", "firing")
_HEARTBEAT_FIELDS = (
    "time",
    "flag",
    "policy",
    "revision",
    "action",
    "status",
    "from_percent",
    "to_percent",
    "from_step",
    "to_step",
    "steps",
    "reason",
    "waiting",
    "guarded",
    "actor",
)
_CHECK_FIELDS = ("name", "kind", "rule", "arm", "value", "bound", "samples", "verdict")
_CHECK_NUMBERS = frozenset({"value", "bound", "samples"})  # rounded to SIGNIFICANT_DIGITS, left out if null
SIGNIFICANT_DIGITS = 4
_CHECK_FLAGS = ("shadow", "settling")


@dataclass(frozen=True, slots=True)
class Run:
    """A flag's compaction memory: the hold key of its last full record (None: that record was no
    plain hold), that record's time, the evaluations since it and when the flag's last record (full
    or heartbeat) was written."""

    key: HoldKey | None
    since: str
    cycles: int
    written_at: datetime


def normalised(text: str) -> str:
    """``text`` with its numbers and durations as ``#``: "4m of the 5m hold left" is the reason
    "2h59m of the 3h hold left" was."""
    return _NUMBERS.sub("#", text)


def is_plain_hold(record: Mapping[str, Any]) -> bool:
    """A hold the controller decided for a guarded rollout, for real: the only record compacted."""
    waiting = record.get("waiting")
    return (
        record.get("action") == "hold"
        and record.get("actor") == "controller"
        and record.get("guarded") is True
        and not record.get("dry_run")
        and not record.get("reminder")
        and HEARTBEAT not in record
        and not (isinstance(waiting, Mapping) and waiting.get("began"))
    )


def hold_key(record: Mapping[str, Any]) -> HoldKey:
    """What makes a hold a different hold: its state, its waiting's reason, its notes, each check's
    identity and verdict, and its reason with numbers normalised."""
    waiting = record.get("waiting")
    waits = waiting if isinstance(waiting, Mapping) else {}
    checks = tuple(
        tuple(_frozen(check.get(name)) for name in _CHECK_KEY) if isinstance(check, Mapping) else repr(check)
        for check in record.get("checks") or ()
    )
    return (
        tuple(_frozen(record.get(name)) for name in (*_KEY_FIELDS, *_KEY_FIELDS_MORE)),
        (waits.get("reason"), waits.get("freeze"), waits.get("step"), _frozen(waits.get("alerts"))),
        _frozen(record.get("notes")),
        checks,
        normalised(str(record.get("reason") or "")),
    )


def _frozen(value: Any) -> Any:
    """A hashable form of a record's value."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def compacted(
    record: Record, run: Run | None, now: datetime, *, changes_state: bool, heartbeat_seconds: float
) -> tuple[Record | None, Run]:
    """What to write for ``record``, the flag's evaluation at ``now``: the record itself (in full), a
    heartbeat, or None (nothing); and the flag's run after it. ``run`` None: the process has written
    nothing for this flag yet. ``changes_state``: the decision writes the flag's state."""
    plain = is_plain_hold(record) and not changes_state
    key = hold_key(record) if plain else None
    if heartbeat_seconds <= 0 or key is None or run is None or run.key != key:
        return record, Run(key, str(record.get("time")), 0, now)
    cycles = run.cycles + 1
    if (now - run.written_at).total_seconds() < heartbeat_seconds:
        return None, Run(key, run.since, cycles, run.written_at)
    return heartbeat(record, run.since, cycles), Run(key, run.since, cycles, now)


def heartbeat(record: Mapping[str, Any], since: str, cycles: int) -> Record:
    """The small record saying a hold goes on: ``since`` the full record that began it, ``cycles``
    evaluations after that one (this one included)."""
    beat: Record = {name: record.get(name) for name in _HEARTBEAT_FIELDS}
    beat["checks"] = [
        _compact_check(c)
        for c in record.get("checks") or ()
        if isinstance(c, Mapping) and c.get("kind") != "traffic"  # its count is each guardrail's samples
    ]
    beat[HEARTBEAT] = {"since": since, "cycles": cycles}
    return beat


def _compact_check(check: Mapping[str, Any]) -> Record:
    """A check as a heartbeat carries it: what names it, its verdict, and its numbers (and the
    control arm's value) to SIGNIFICANT_DIGITS; no query text, no limit (the policy's, unchanged
    since the full record), no evidence."""
    compact: Record = {}
    for name in _CHECK_FIELDS:
        value = check.get(name)
        if name in _CHECK_NUMBERS:
            if value is None:
                continue
            value = _rounded(value)
        compact[name] = value
    compact.update({name: True for name in _CHECK_FLAGS if check.get(name)})
    control = check.get("control")
    if isinstance(control, Mapping) and control.get("value") is not None:
        compact["control"] = {"value": _rounded(control.get("value"))}
    if check.get("firing") is not None:
        compact["firing"] = check.get("firing")
    return compact


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


def is_heartbeat(record: Mapping[str, Any]) -> bool:
    return isinstance(record.get(HEARTBEAT), Mapping)


def latest(records: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """A flag's last decision from its records (oldest first): the last record, or when that is a
    heartbeat, the last full record with the heartbeat's time, reason, waiting and checks' values and
    verdicts laid over it (its query text kept); and the heartbeat (None when the last is full). The
    full record is the one the heartbeat names (``since``), else the last one; a heartbeat with no
    full record among ``records`` (rotated away) stands alone."""
    if not records:
        return None, None
    last = records[-1]
    if not is_heartbeat(last):
        return last, None
    full = heartbeat_base(records)
    if full is None:
        return last, last
    merged = dict(full) | {name: last.get(name) for name in _HEARTBEAT_FIELDS if name in last}
    fresh = {_check_id(c): c for c in last.get("checks") or () if isinstance(c, Mapping)}
    merged["checks"] = [
        _laid_over(check, fresh.get(_check_id(check))) if isinstance(check, Mapping) else check
        for check in full.get("checks") or ()
    ]
    return merged, last


def heartbeat_base(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The full record a last heartbeat among ``records`` (oldest first) is laid over by
    :func:`latest`: the one it names (``since``), else the last full one; None if there is none."""
    since = records[-1][HEARTBEAT].get("since")
    fulls = [r for r in reversed(records) if not is_heartbeat(r)]
    return next((r for r in fulls if r.get("time") == since), fulls[0] if fulls else None)


def _check_id(check: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(_frozen(check.get(name)) for name in ("name", "kind", "rule", "arm"))


def _laid_over(check: Mapping[str, Any], fresh: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if fresh is None:
        return check
    merged = dict(check) | {name: fresh.get(name) for name in ("value", "bound", "samples", "verdict")}
    control, fresh_control = check.get("control"), fresh.get("control")
    if isinstance(control, Mapping) and isinstance(fresh_control, Mapping):
        merged["control"] = dict(control) | dict(fresh_control)
    return merged


def held_since(record: Mapping[str, Any]) -> str:
    """A heartbeat told in a line: ``held since T (N cycles since): reason``."""
    beat = record.get(HEARTBEAT)
    beat = beat if isinstance(beat, Mapping) else {}
    cycles = beat.get("cycles")
    unit = "cycle" if cycles == 1 else "cycles"
    return f"held since {beat.get('since', '?')} ({cycles} {unit} since): {record.get('reason') or ''}"


def heartbeat_problem(record: Mapping[str, Any]) -> str | None:
    """What makes a record's ``heartbeat`` field unfit to show (see records.record_problem): a
    heartbeat is a hold's, with the time of the record that began the hold and a count."""
    value = record.get(HEARTBEAT)
    if value is None:
        return None
    if record.get("action") != "hold":
        return f"'action' is {repr(record.get('action'))[:40]}, not 'hold' (the record is a heartbeat)"
    if not isinstance(value, Mapping):
        return f"'heartbeat' is {repr(value)[:40]}, not an object"
    since, cycles = value.get("since"), value.get("cycles")
    if not isinstance(since, str) or not _is_time(since):
        return f"'heartbeat.since' is {repr(since)[:40]}, not an ISO time with a timezone"
    if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 1:
        return f"'heartbeat.cycles' is {repr(cycles)[:40]}, not a whole number above 0"
    return None


def _is_time(text: str) -> bool:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False
