"""What ``flagroll backtest`` reports about a replay: per check, the outcome counts, the value's
quantiles against its bound, the longest stretches without data or with errors, the first failure;
as plain data (``--json``) and as text, with the same content. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.core.backtest import Replay
from controller.core.checkrecord import SYMBOL, Check, fmt
from controller.core.durations import format_duration
from controller.core.policy import pct
from controller.core.state import Outcome


@dataclass(frozen=True, slots=True)
class Stretch:
    """Consecutive evaluation times with one outcome: from the first to the last of them."""

    start: datetime
    end: datetime
    evaluations: int

    def as_dict(self) -> dict[str, Any]:
        return {"start": _time(self.start), "end": _time(self.end), "evaluations": self.evaluations}

    def describe(self) -> str:
        span = format_duration((self.end - self.start).total_seconds())
        return f"{self.evaluations} in a row, {_time(self.start)} → {_time(self.end)} ({span})"


@dataclass(frozen=True, slots=True)
class CheckSummary:
    name: str
    kind: str
    rule: str
    arm: str
    limit: float
    counts: dict[str, int]
    values: dict[str, float] | None  # p50, p90, max of the values that were judged
    bounds: dict[str, float] | None  # min and max of the bound (a relative rule's moves with control)
    longest_no_data: Stretch | None
    longest_error: Stretch | None
    first_fail: datetime | None
    first_fail_detail: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.arm} {self.rule}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "rule": self.rule,
            "arm": self.arm,
            "limit": self.limit,
            "counts": self.counts,
            "values": self.values,
            "bounds": self.bounds,
            "longest_no_data": None if self.longest_no_data is None else self.longest_no_data.as_dict(),
            "longest_error": None if self.longest_error is None else self.longest_error.as_dict(),
            "first_fail": None if self.first_fail is None else _time(self.first_fail),
            "first_fail_detail": self.first_fail_detail or None,
        }


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


def _longest(times: Sequence[datetime], outcomes: Sequence[Outcome], wanted: Outcome) -> Stretch | None:
    best: Stretch | None = None
    start = -1
    for i, outcome in enumerate([*outcomes, None]):
        if outcome is wanted and start < 0:
            start = i
        elif outcome is not wanted and start >= 0:
            length = i - start
            if best is None or length > best.evaluations:
                best = Stretch(times[start], times[i - 1], length)
            start = -1
    return best


def summarise(replay: Replay) -> list[CheckSummary]:
    """One summary per check (name, rule, arm), in the order the checks are first met."""
    series: dict[tuple[str, str, str], list[tuple[datetime, Check]]] = {}
    for evaluation in replay.evaluations:
        for check in evaluation.checks:
            series.setdefault((check.name, check.rule, check.arm.value), []).append((evaluation.at, check))
    summaries = []
    for (name, rule, arm), seen in series.items():
        times = [at for at, _ in seen]
        outcomes = [c.verdict for _, c in seen]
        judged = [c.value for c in (c for _, c in seen) if c.verdict in {Outcome.PASS, Outcome.FAIL}]
        values = [v for v in judged if v is not None]
        bounds = [
            c.bound for _, c in seen if c.bound is not None and c.verdict in {Outcome.PASS, Outcome.FAIL}
        ]
        failed = next(((at, c) for at, c in seen if c.verdict is Outcome.FAIL), None)
        first = seen[0][1]
        summaries.append(
            CheckSummary(
                name=name,
                kind=first.kind.value,
                rule=rule,
                arm=arm,
                limit=first.limit,
                counts={o.value: outcomes.count(o) for o in Outcome},
                values={"p50": quantile(values, 0.5), "p90": quantile(values, 0.9), "max": max(values)}
                if values
                else None,
                bounds={"min": min(bounds), "max": max(bounds)} if bounds else None,
                longest_no_data=_longest(times, outcomes, Outcome.NO_DATA),
                longest_error=_longest(times, outcomes, Outcome.ERROR),
                first_fail=failed[0] if failed else None,
                first_fail_detail=failed[1].describe() if failed else "",
            )
        )
    return summaries


def _time(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def as_dict(replay: Replay, points: int) -> dict[str, Any]:
    """The replay of one policy as plain data (``--json``). ``points`` is how many points
    Prometheus returned for its queries (0: no data at all in the window)."""
    rollback = replay.first_rollback
    final = replay.final
    return {
        "policy": replay.policy,
        "flag": replay.flag,
        "interval_seconds": replay.interval_seconds,
        "from": _time(replay.start),
        "to": _time(replay.end),
        "evaluations": len(replay.evaluations),
        "points": points,
        "no_data_at_all": points == 0,
        "decisions": [
            {
                "time": _time(m.at),
                "action": m.action.value,
                "from_percent": m.from_percent,
                "to_percent": m.to_percent,
                "reason": m.reason,
            }
            for m in replay.moves
        ],
        "holds": replay.holds,
        "exposure": "simulated" if replay.recorded is None else "decision_log",
        "first_rollback": None if rollback is None else _time(rollback.at),
        "first_rollback_reason": None if rollback is None else rollback.reason,
        "final": None
        if final is None
        else {"status": final.status.value, "percent": final.percent, "step": final.step},
        "checks": [s.as_dict() for s in summarise(replay)],
        "notes": list(replay.notes),
    } | _recorded_dict(replay)


def _recorded_dict(replay: Replay) -> dict[str, Any]:
    """With a decision log: the recorded moves in the window, the first rollback or stop among them,
    and the verdict."""
    if replay.recorded is None:
        return {}
    down = replay.recorded_down
    return {
        "recorded_decisions": [
            {
                "time": _time(m.at),
                "action": m.action.value,
                "from_percent": m.from_percent,
                "to_percent": m.to_percent,
                "status": m.status.value,
                "reason": m.reason,
                "actor": m.actor,
            }
            for m in replay.recorded
        ],
        "recorded_rollback": None
        if down is None
        else {"time": _time(down.at), "action": down.action.value, "actor": down.actor},
        "verdict": replay.verdict,
    }


def _bound_text(summary: CheckSummary) -> str:
    symbol = SYMBOL.get(summary.rule, "vs")
    if summary.rule in {"max", "min", "minSamples"}:
        return f"{symbol} {fmt(summary.limit)} ({summary.rule})"
    span = ""
    if summary.bounds is not None:
        low, high = summary.bounds["min"], summary.bounds["max"]
        span = f", bound {fmt(low)}" + (f"…{fmt(high)}" if high != low else "")
    return f"{symbol} ({summary.rule} {fmt(summary.limit)} over control{span})"


def _decisions_text(replay: Replay) -> list[str]:
    if replay.recorded is not None:
        lines = ["  recorded decisions (the exposure judged, from the decision log):"]
        for r in replay.recorded:
            who = f" by {r.actor}" if r.actor else ""
            lines.append(
                f"    {_time(r.at)}  {r.action.value:<8} "
                f"{pct(r.from_percent)}% → {pct(r.to_percent)}%{who}  {r.reason}"
            )
        if not replay.recorded:
            lines.append(f"    none in the window: {pct(replay.exposure[0][1])} % throughout")
        return lines
    lines = ["  simulated decisions (the rollout starting at --from):"]
    for m in replay.moves:
        lines.append(
            f"    {_time(m.at)}  {m.action.value:<8} "
            f"{pct(m.from_percent)}% → {pct(m.to_percent)}%  {m.reason}"
        )
    if not replay.moves:
        lines.append("    none but holds")
    lines.append(f"    and {replay.holds} holds")
    return lines


def render_text(replay: Replay, points: int) -> list[str]:
    """The replay of one policy for people: the same content as :func:`as_dict`."""
    interval = format_duration(replay.interval_seconds)
    lines = [
        f"policy {replay.policy} (flag {replay.flag}): "
        f"{len(replay.evaluations)} evaluations every {interval}, "
        f"{_time(replay.start)} → {_time(replay.end)}",
    ]
    if points == 0:
        lines.append(
            "  Prometheus holds no data for any of this policy's queries in the window: it is beyond "
            "Prometheus's retention, or the metrics did not exist then. Nothing was judged."
        )
    lines.extend(f"  note: {note}" for note in replay.notes)
    lines.extend(_decisions_text(replay))
    rollback = replay.first_rollback
    lines.append(f"  first would-be rollback: {_time(rollback.at) if rollback else 'none'}")
    if rollback is not None and replay.recorded is not None:
        lines.append(f"    {rollback.reason}")
    if replay.verdict is not None:
        lines.append(f"  {replay.verdict}")
    if replay.final is not None:
        lines.append(f"  at the end: {replay.final.status.value} at {pct(replay.final.percent)} %")
    lines.append("  checks at every evaluation time (pass / fail / no_data / error):")
    for s in summarise(replay):
        c = s.counts
        lines.append(
            f"    {s.label} {_bound_text(s)}: {c['pass']} / {c['fail']} / {c['no_data']} / {c['error']}"
        )
        if s.values is not None:
            v = s.values
            lines.append(f"      value p50 {fmt(v['p50'])}, p90 {fmt(v['p90'])}, max {fmt(v['max'])}")
        for what, stretch in (("no_data", s.longest_no_data), ("error", s.longest_error)):
            if stretch is not None:
                lines.append(f"      longest {what}: {stretch.describe()}")
        if s.first_fail is not None:
            lines.append(f"      first failure: {_time(s.first_fail)}: {s.first_fail_detail}")
    return lines
