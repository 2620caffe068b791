"""Decision records: what one decision says, as the dict the log stores, and its rendering for on-call.

Pure: a record is built from a :class:`~controller.core.decision.Decision` and its context, and
rendered back into the few lines on-call reads (aim, mechanism, why, signals, checkpoint). Writing
and reading records is :mod:`controller.adapters.decisionlog`'s job.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.core.checkrecord import describe
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
        "aim": spec.aim if spec is not None else None,
        "mechanism": spec.mechanism if spec is not None else None,
        "owner": after.owner or None,
        "review": after.review.isoformat() if after.review is not None else None,
        "stale": after.is_stale(now.date()),
        "actor": context.actor,
        "dry_run": context.dry_run,
        "guarded": context.guarded,
    } | ({"reminder": True} if context.reminder else {})


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
