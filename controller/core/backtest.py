"""``flagroll backtest``: replay a policy's decision loop over past readings. Pure.

The window's evaluation times are the policy's interval apart from ``--from``; each distinct query is
evaluated by Prometheus at every one of them (``/api/v1/query_range``, in chunks within its point
limit), and the answers, held as :class:`RangeAnswer`, give each evaluation time its readings. The
simulated rollout starts at ``--from`` and its own decisions move it, through the same
:func:`~controller.core.decision.queries_for` and :func:`~controller.core.decision.decide` that the
controller uses. Nothing here reads a clock, a file or the network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controller.core.checkrecord import Check
from controller.core.checks import guardrail_checks
from controller.core.decision import decide, initial_state, queries_for
from controller.core.durations import parse_duration
from controller.core.errors import UsageError
from controller.core.metrictemplate import MetricTemplate
from controller.core.policy import Policy
from controller.core.queries import PlannedQuery, QueryKey, Reading, Split, plan
from controller.core.state import ACTIVE, Action, RolloutState

# Prometheus refuses a range query of more than 11,000 points per series; a chunk holds at most this.
MAX_POINTS_PER_CHUNK = 11_000


def parse_time(text: str, now: datetime) -> datetime:
    """``--from``/``--to``: RFC 3339 (with its offset, or ``Z``), or a duration before ``now``
    (``7d``, ``36h``, ``90m``). Always a timezone-aware UTC datetime."""
    stripped = text.strip()
    try:
        return now.astimezone(UTC) - timedelta(seconds=parse_duration(stripped))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(stripped.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            f"{text!r} is neither an RFC 3339 time (2026-11-27T09:00:00Z) nor a duration before now (7d, 36h)"
        ) from None
    if parsed.tzinfo is None:
        raise UsageError(f"{text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return parsed.astimezone(UTC)


def evaluation_times(start: datetime, end: datetime, interval_seconds: float) -> list[datetime]:
    """The controller's evaluation times over [start, end]: ``start``, then one interval apart."""
    if end <= start:
        raise UsageError(f"--from {start.isoformat()} is not before --to {end.isoformat()}")
    step_ms = max(1, round(interval_seconds * 1000))
    count = math.floor((end - start).total_seconds() * 1000 / step_ms) + 1
    return [start + timedelta(milliseconds=i * step_ms) for i in range(count)]


def chunks(
    times: Sequence[datetime], max_points: int = MAX_POINTS_PER_CHUNK
) -> list[tuple[datetime, datetime]]:
    """The first and last evaluation time of each range query: at most ``max_points`` points each."""
    return [(times[i], times[min(i + max_points, len(times)) - 1]) for i in range(0, len(times), max_points)]


def unsupported(policy: Policy) -> list[str]:
    """Why this increment cannot replay ``policy``: statistical guardrails and the sample-ratio check
    count since exposure began, so their query text depends on the simulated exposure start."""
    problems = [
        f"backtest does not replay statistical guardrails yet: {policy.name} {g.name} ({g.kind})"
        for g in policy.spec.guardrails
        if g.sequential
    ]
    statistics = policy.spec.statistics
    if statistics is not None and statistics.exposure is not None and policy.spec.control:
        problems.append(
            "backtest does not replay statistical guardrails yet: "
            f"{policy.name} sample-ratio (statistics.exposure)"
        )
    return problems


def fetched_queries(policy: Policy, templates: Mapping[str, MetricTemplate]) -> list[PlannedQuery]:
    """Every query the replay may need (the checkpoint's included): for a policy without statistical
    guardrails the text does not depend on the rollout's state, so each is fetched once for the window."""
    return plan(policy, with_checkpoint=True, templates=templates)


def to_ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a range answer: its labels and its points (milliseconds since the epoch → value)."""

    labels: Mapping[str, str]
    points: Mapping[int, float]


@dataclass(frozen=True, slots=True)
class Failure:
    """A chunk of the window whose answer could not be used: every time in it reads as an error."""

    start_ms: int
    end_ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class RangeAnswer:
    """One query's answers over the window, gathered from its chunks."""

    series: tuple[Series, ...] = ()
    failures: tuple[Failure, ...] = ()

    @property
    def points(self) -> int:
        return sum(len(s.points) for s in self.series)


def judge_value(value: float) -> Reading:
    """A number as the controller judges it: NaN and ±Inf are no data, never a value."""
    if math.isnan(value):
        return Reading.no_data("NaN (e.g. 0/0: nothing in the window)")
    if math.isinf(value):
        return Reading.no_data(f"{'+' if value > 0 else '-'}Inf (division by zero?)")
    return Reading.of(value)


def reading_at(answer: RangeAnswer, at_ms: int, split: Split | None = None) -> Reading:
    """The reading an instant query at ``at_ms`` would have given (for a template, this arm's series)."""
    for failure in answer.failures:
        if failure.start_ms <= at_ms <= failure.end_ms:
            return Reading.error(failure.detail)
    candidates = answer.series
    if split is not None:
        candidates = tuple(
            s
            for s in candidates
            if s.labels.get(split.flag_label) == split.flag
            and s.labels.get(split.variant_label) == split.variant
        )
    present = [s for s in candidates if at_ms in s.points]
    if not present:
        where = f" {split.selector()} of template {split.template!r}" if split is not None else ""
        return Reading.no_data(f"no series{where} has a point at this time")
    if len(present) > 1:
        labels = ", ".join(
            "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}" for s in present[:5]
        )
        return Reading.error(
            f"{len(present)} series where one is expected: {labels}; aggregate them (sum, max…)"
        )
    return judge_value(present[0].points[at_ms])


def readings_at(
    queries: Sequence[PlannedQuery], answers: Mapping[str, RangeAnswer], at_ms: int
) -> dict[QueryKey, Reading]:
    """Every planned query's reading at one evaluation time."""
    readings: dict[QueryKey, Reading] = {}
    for q in queries:
        answer = answers.get(q.promql)
        if q.split is not None and not q.promql:
            readings[q.key] = Reading.error(f"template {q.split.template!r} is not defined")
        elif answer is None:
            readings[q.key] = Reading.error(
                "the query is empty" if not q.promql else "the query was not fetched"
            )
        else:
            readings[q.key] = reading_at(answer, at_ms, q.split)
    return readings


@dataclass(frozen=True, slots=True)
class Move:
    """One simulated decision that is not a plain hold."""

    at: datetime
    action: Action
    from_percent: float
    to_percent: float
    reason: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The guardrail checks at one evaluation time, judged whatever the simulated exposure."""

    at: datetime
    checks: tuple[Check, ...]


@dataclass(slots=True)
class Replay:
    """What one policy would have done over the window."""

    policy: str
    flag: str
    interval_seconds: float
    start: datetime
    end: datetime
    moves: list[Move] = field(default_factory=list)
    holds: int = 0
    final: RolloutState | None = None
    ended_at: datetime | None = (
        None  # when the simulated rollout stopped being judged (rolled back, promoted)
    )
    evaluations: list[Evaluation] = field(default_factory=list)

    @property
    def first_rollback(self) -> Move | None:
        return next((m for m in self.moves if m.action is Action.ROLLBACK), None)


def replay(
    policy: Policy,
    times: Sequence[datetime],
    answers: Mapping[str, RangeAnswer],
    templates: Mapping[str, MetricTemplate],
) -> Replay:
    """Replay ``policy`` at ``times``: its simulated rollout starts at the first time, and its own
    decisions move it. The guardrail checks are also judged at every time (after a rollback too), so
    that the report says how each check behaved over the whole window."""
    result = Replay(policy.name, policy.flag_key, policy.spec.interval_seconds, times[0], times[-1])
    guard_queries = plan(policy, with_checkpoint=False, templates=templates)
    stored: RolloutState | None = None
    for at in times:
        at_ms = to_ms(at)
        result.evaluations.append(
            Evaluation(
                at, tuple(guardrail_checks(policy, guard_queries, readings_at(guard_queries, answers, at_ms)))
            )
        )
        if result.ended_at is not None:
            continue
        state = stored if stored is not None else initial_state(policy, at)
        queries = queries_for(policy, state, at, templates)
        decision = decide(policy, stored, queries, readings_at(queries, answers, at_ms), at)
        stored = decision.after
        if decision.action is Action.HOLD:
            result.holds += 1
        else:
            result.moves.append(
                Move(at, decision.action, decision.from_percent, decision.to_percent, decision.reason)
            )
        if stored.status not in ACTIVE:
            result.ended_at = at
    result.final = stored
    return result
