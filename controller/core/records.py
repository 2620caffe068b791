"""Decision records: what one decision says, as the dict the log stores, and its rendering for on-call.

Pure: a record is built from a :class:`~controller.core.decision.Decision` and its context, and
rendered back into the few lines on-call reads (aim, mechanism, why, signals, checkpoint). Writing
and reading records is :mod:`controller.adapters.decisionlog`'s job.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.core.checkrecord import describe
from controller.core.compaction import heartbeat_problem, held_since, is_heartbeat
from controller.core.decision import Decision
from controller.core.policy import Policy, pct

Record = dict[str, Any]

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
    guarded: bool = True  # False: the flag is exposed and no policy judges it (an unguarded record)
    reminder: bool = False  # an unguarded record repeating the last one (notifications skip it)


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
        "waiting": decision.waiting.as_record(now) if decision.waiting is not None else None,
        "aim": spec.aim if spec is not None else None,
        "mechanism": spec.mechanism if spec is not None else None,
        "owner": after.owner or None,
        "review": after.review.isoformat() if after.review is not None else None,
        "stale": after.is_stale(now.date()),
        "actor": context.actor,
        "dry_run": context.dry_run,
        "guarded": context.guarded,
    } | ({"reminder": True} if context.reminder else {})


# Reading back ----------------------------------------------------------------------------------

_TEXT_FIELDS = ("policy", "flag", "revision", "action", "status", "reason", "checkpoint", "aim")
_MORE_TEXT = ("mechanism", "owner", "review", "actor")
_NUMBER_FIELDS = ("from_percent", "to_percent")
_WHOLE_FIELDS = ("from_step", "to_step", "steps")
_FLAG_FIELDS = ("stale", "dry_run", "guarded", "reminder")
_CHECK_TEXT = ("name", "kind", "rule", "arm", "query", "verdict", "detail", "metric")
_CHECK_NUMBERS = ("limit", "value", "bound", "samples")
_EVIDENCE_TEXT = frozenset({"method", "metric", "query", "events_query", "samples_query", "note"})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _wrong(field: str, value: Any, wanted: str) -> str:
    shown = repr(value)
    return f"'{field}' is {shown[:40]}{'…' * (len(shown) > 40)}, not {wanted}"


def record_problem(record: Mapping[str, Any]) -> str | None:
    """What makes a record read back from the log unfit to show, naming the field first (a record
    that parses as JSON but holds a wrong type: ``'to_percent' is 'abc', not a number``); None when
    it is fit. A field that is absent or null is fit: older records lack some."""
    for name in (*_TEXT_FIELDS, *_MORE_TEXT):
        if record.get(name) is not None and not isinstance(record[name], str):
            return _wrong(name, record[name], "text")
    for name in _NUMBER_FIELDS:
        if record.get(name) is not None and not _is_number(record[name]):
            return _wrong(name, record[name], "a number")
    for name in _WHOLE_FIELDS:
        value = record.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return _wrong(name, value, "a whole number")
    for name in _FLAG_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], bool):
            return _wrong(name, record[name], "true or false")
    time = record.get("time")
    if time is not None and not _is_time(time):
        return _wrong("time", time, "an ISO time with a timezone")
    notes = record.get("notes")
    if notes is not None and not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
        return _wrong("notes", notes, "a list of text")
    waiting = record.get("waiting")
    if waiting is not None and not isinstance(waiting, Mapping):
        return _wrong("waiting", waiting, "a mapping")
    problem = _serving_problem(record.get("serving")) or heartbeat_problem(record)
    if problem is not None:
        return problem
    checks = record.get("checks")
    if checks is None:
        return None
    if not isinstance(checks, list):
        return _wrong("checks", checks, "a list of checks")
    for index, check in enumerate(checks):
        problem = _check_problem(check, f"checks[{index}]")
        if problem is not None:
            return problem
    return None


_SERVING_TEXT = ("check", "outcome", "url", "written_at", "found", "error")
_SERVING_NUMBERS = ("seconds", "waited_seconds", "deadline_seconds", "percent", "control_percent")
_SERVING_WHOLE = ("keys", "rounds", "errors")


def _serving_problem(serving: Any) -> str | None:
    """The evidence of a verification record (``action: verify``): see :mod:`controller.core.serving`."""
    if serving is None:
        return None
    if not isinstance(serving, dict):
        return _wrong("serving", serving, "an object")
    for name in _SERVING_TEXT:
        if serving.get(name) is not None and not isinstance(serving[name], str):
            return _wrong(f"serving.{name}", serving[name], "text")
    for name in _SERVING_NUMBERS:
        if serving.get(name) is not None and not _is_number(serving[name]):
            return _wrong(f"serving.{name}", serving[name], "a number")
    for name in _SERVING_WHOLE:
        if serving.get(name) is not None and not _is_whole(serving[name]):
            return _wrong(f"serving.{name}", serving[name], "a whole number")
    served = serving.get("served")
    if served is not None:
        if not isinstance(served, dict):
            return _wrong("serving.served", served, "an object")
        for variant, count in served.items():
            if not _is_whole(count):
                return _wrong(f"serving.served.{variant}", count, "a whole number")
    plausible = serving.get("plausible")
    if plausible is not None and not (
        isinstance(plausible, dict)
        and all(isinstance(v, list) and len(v) == 2 and all(map(_is_whole, v)) for v in plausible.values())
    ):
        return _wrong("serving.plausible", plausible, "an object of [low, high] ranges")
    return None


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def _check_problem(check: Any, where: str) -> str | None:
    if not isinstance(check, dict):
        return _wrong(where, check, "a check object")
    for name in _CHECK_TEXT:
        if check.get(name) is not None and not isinstance(check[name], str):
            return _wrong(f"{where}.{name}", check[name], "text")
    for name in _CHECK_NUMBERS:
        if check.get(name) is not None and not _is_number(check[name]):
            return _wrong(f"{where}.{name}", check[name], "a number")
    if check.get("shadow") is not None and not isinstance(check["shadow"], bool):
        return _wrong(f"{where}.shadow", check["shadow"], "true or false")
    if check.get("settling") is not None and not isinstance(check["settling"], bool):
        return _wrong(f"{where}.settling", check["settling"], "true or false")
    for name in ("control", "sequential", "sample_ratio"):
        problem = _evidence_problem(check.get(name), f"{where}.{name}")
        if problem is not None:
            return problem
    return None


def _evidence_problem(evidence: Any, where: str, depth: int = 0) -> str | None:
    """An evidence object (the control arm, a sequential or sample-ratio record): text where text is
    kept, an arm's counts and the measured dispersion as objects, every other value a number (or
    null)."""
    if evidence is None:
        return None
    if not isinstance(evidence, dict):
        return _wrong(where, evidence, "an object")
    for name, value in evidence.items():
        field = f"{where}.{name}"
        if value is None:
            continue
        if name in _EVIDENCE_TEXT:
            if not isinstance(value, str):
                return _wrong(field, value, "text")
        elif name == "mismatch":
            if not isinstance(value, bool):
                return _wrong(field, value, "true or false")
        elif name in {"treatment", "control", "dispersion"} and isinstance(value, dict) and depth == 0:
            problem = _evidence_problem(value, field, depth + 1)
            if problem is not None:
                return problem
        elif not _is_number(value):
            return _wrong(field, value, "a number")
    return None


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
    """Aim, mechanism, then the signals and the checkpoint: what on-call needs, in that order. A
    heartbeat (a hold going on, see :mod:`controller.core.compaction`) is one line."""
    if is_heartbeat(record):
        return f"{record.get('time', '?')}  {record.get('flag', '?')}  HOLD  {held_since(record)}"
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
                arm_counts = counts.get(arm)
                if isinstance(arm_counts, dict):  # a number there is fit to show but names no query
                    queries |= {arm_counts.get("events_query"), arm_counts.get("samples_query")}
        for evidence in (counts, check.get("sample_ratio")):
            measured = evidence.get("dispersion") if isinstance(evidence, dict) else None
            if check.get("verdict") != "pass" and isinstance(measured, dict):
                queries.add(measured.get("query"))
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
