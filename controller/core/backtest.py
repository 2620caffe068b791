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

from controller.core.backtestcounts import Counts, count_queries, counted_key
from controller.core.backtestlog import Recorded, RecordedMove, judged, taken_down
from controller.core.backtestranges import RangeAnswer, readings_at, to_ms
from controller.core.checkrecord import Check
from controller.core.checks import guardrail_checks
from controller.core.decision import (
    COMPLETED_WINDOW_SECONDS,
    decide,
    exposure_window_seconds,
    initial_state,
    queries_for,
)
from controller.core.durations import parse_duration
from controller.core.errors import UsageError
from controller.core.freezes import StandingFreeze
from controller.core.metrictemplate import MetricTemplate
from controller.core.policy import Policy, pct
from controller.core.queries import PlannedQuery, plan
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


def step_ms(policy: Policy) -> int:
    """The policy's interval in milliseconds: the range queries' step."""
    return max(1, round(policy.spec.interval_seconds * 1000))


def fetched_queries(policy: Policy, templates: Mapping[str, MetricTemplate]) -> list[PlannedQuery]:
    """The queries whose text does not depend on the rollout's state (the checkpoint's included):
    each is fetched once for the window. The statistical checks' counts since exposure began are
    not among them: :func:`fetched_promqls` adds their per-interval queries."""
    return [q for q in plan(policy, with_checkpoint=True, templates=templates) if not counted_key(q.key)]


def fetched_promqls(policy: Policy, templates: Mapping[str, MetricTemplate]) -> set[str]:
    """Every distinct PromQL a replay of ``policy`` needs over the window."""
    wanted = {q.promql for q in fetched_queries(policy, templates) if q.promql}
    return wanted | set(count_queries(policy, step_ms(policy)).values())


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
    """What one policy would have done over the window. With a decision log (``recorded`` set), the
    exposure is the recorded one: ``moves`` stays empty, and ``would_rollback`` is when this policy
    would have rolled back that exposure."""

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
    recorded: tuple[RecordedMove, ...] | None = None  # the decision log's moves in the window
    recorded_down: RecordedMove | None = None  # its takedown the would-be rollback is set against
    would_rollback: Move | None = None
    exposure: list[tuple[datetime, float]] = field(default_factory=list)  # percent, from each time on
    notes: list[str] = field(default_factory=list)  # what the reader should know about the replay

    @property
    def first_rollback(self) -> Move | None:
        if self.recorded is not None:
            return self.would_rollback
        return next((m for m in self.moves if m.action is Action.ROLLBACK), None)

    @property
    def verdict(self) -> str | None:
        """With a decision log: the would-be rollback set against what happened."""
        if self.recorded is None:
            return None
        would = self.would_rollback.at if self.would_rollback is not None else None
        if would is None and all(percent <= 0 for _, percent in self.exposure):
            return (
                "nobody was exposed in the window, as the decision log recorded it: "
                "nothing for this policy to judge"
            )
        return judged(would, self.recorded)


def profile_window_seconds(state: RolloutState | None, at: datetime, start: datetime) -> int | None:
    """The window the report's statistical checks count over at ``at``: the simulated rollout's own
    while it is exposed (so the profile is what its decisions saw); otherwise (before it starts,
    after a rollback) as if the treatment had been exposed since ``--from``, over at most the
    trailing day that a completed rollout's guardrails count over."""
    if state is not None and state.status in ACTIVE and state.counting_since is not None:
        return exposure_window_seconds(state, at)
    seconds = math.ceil((at - start).total_seconds())
    return min(seconds, COMPLETED_WINDOW_SECONDS) or None


def replay(
    policy: Policy,
    times: Sequence[datetime],
    answers: Mapping[str, RangeAnswer],
    templates: Mapping[str, MetricTemplate],
    recorded: Recorded | None = None,
    window_end: datetime | None = None,
    freezes: Sequence[StandingFreeze] = (),
) -> Replay:
    """Replay ``policy`` at ``times``: its simulated rollout starts at the first time, and its own
    decisions move it; with ``recorded`` (a decision log), the recorded exposure is judged instead
    (:mod:`controller.core.backtestlog`). The guardrail checks are also judged at every time (after
    a rollback too), so that the report says how each check behaved over the whole window.
    ``window_end`` (``--to``) may be up to an interval after the last time: the recorded moves are
    those up to it. ``freezes``: the Freeze documents of the policy directory, applied at each time as
    their dates say (Git's history of them is not known: those in the directory now are replayed).
    Statistical checks count since the exposure began (:mod:`controller.core.backtestcounts`)."""
    result = Replay(policy.name, policy.flag_key, policy.spec.interval_seconds, times[0], times[-1])
    if recorded is not None:
        # the window is [--from, --to]: a takedown after the last evaluation time is in it too
        result.recorded = tuple(recorded.within(times[0], max(times[-1], window_end or times[-1])))
        result.exposure = [(times[0], recorded.percent_at(times[0]))]
        result.exposure += [(m.at, m.to_percent) for m in result.recorded]
        result.notes.extend(_counted_before(policy, recorded, times[0]))
    else:
        result.exposure = [(times[0], 0.0)]
    stamps = [to_ms(at) for at in times]
    counts = Counts(policy, stamps, step_ms(policy), answers)
    planner = Planner(policy, templates)
    stored: RolloutState | None = None
    for index, at in enumerate(times):
        if recorded is not None:
            stored = recorded.state_at(policy, at)
        window = profile_window_seconds(stored, at, times[0])
        profile = planner.plan(with_checkpoint=False, window_seconds=window)
        readings = {**readings_at(_plain(profile), answers, stamps[index]), **counts.readings(profile, index)}
        judged = tuple(guardrail_checks(policy, profile, readings))
        result.evaluations.append(Evaluation(at, judged))
        if result.ended_at is not None:
            continue
        state = stored if stored is not None else initial_state(policy, at)
        queries = queries_for(policy, state, at, templates, planner.plan)
        readings = {**readings_at(_plain(queries), answers, stamps[index]), **counts.readings(queries, index)}
        # the guardrails' readings are those just judged for the report when the counts' windows are
        # the same: not judged twice
        windows = {q.window_seconds for q in queries if counted_key(q.key)}
        reuse = judged if queries and windows <= {window} else None
        decision = decide(policy, stored, queries, readings, at, reuse, freezes)
        move = Move(at, decision.action, decision.from_percent, decision.to_percent, decision.reason)
        if recorded is not None:
            if decision.action is Action.ROLLBACK and result.would_rollback is None:
                result.would_rollback = move
                result.ended_at = at
            continue
        stored = decision.after
        if stored.percent != result.exposure[-1][1]:
            result.exposure.append((at, stored.percent))
        if decision.action is Action.HOLD:
            result.holds += 1
        else:
            result.moves.append(move)
        if stored.status not in ACTIVE:
            result.ended_at = at
    result.final = stored
    if result.recorded is not None:
        would = result.would_rollback.at if result.would_rollback is not None else None
        result.recorded_down = taken_down(result.recorded, would)
    return result


class Planner:
    """:func:`~controller.core.queries.plan` for a replay, from plans made once. The text of a count
    since exposure began depends on its window, but the replay reads counts by key
    (:class:`~controller.core.backtestcounts.Counts`), so only their window changes from one
    evaluation to the next; everything else is the same query every time."""

    def __init__(self, policy: Policy, templates: Mapping[str, MetricTemplate]) -> None:
        self.policy = policy
        self.templates = templates
        self.made: dict[tuple[bool, bool], list[PlannedQuery]] = {}

    def plan(self, *, with_checkpoint: bool, window_seconds: int | None) -> list[PlannedQuery]:
        exposed = bool(window_seconds)
        key = (with_checkpoint, exposed)
        if key not in self.made:
            self.made[key] = plan(
                self.policy,
                with_checkpoint=with_checkpoint,
                window_seconds=1 if exposed else None,
                templates=self.templates,
            )
        base = self.made[key]
        if not exposed:
            return base
        return [
            q if q.window_seconds is None else PlannedQuery(q.key, q.promql, window_seconds, q.split)
            for q in base
        ]


def _counted_before(policy: Policy, recorded: Recorded, start: datetime) -> list[str]:
    """Statistical checks count since exposure began, but the readings begin at ``--from``, and the
    log may begin after the exposure did (a rotated log)."""
    if not count_queries(policy, step_ms(policy)) or not recorded.moves:
        return []
    first = recorded.moves[0]
    episode_ends = next((m.at for m in recorded.moves if m.to_percent <= 0), None)
    if first.from_percent > 0 and (episode_ends is None or episode_ends > start):
        at = first.at.isoformat().replace("+00:00", "Z")
        return [
            f"the decision log's first record of flag {recorded.flag} ({first.action.value} at {at}) "
            f"finds it already {pct(first.from_percent)} % exposed: its exposure began before the log, "
            f"so the statistical checks count from {at} at the earliest, a shorter count than the "
            "controller's"
        ]
    since = recorded.state_at(policy, start).counting_since
    if since is None or since >= start:
        return []
    at = since.isoformat().replace("+00:00", "Z")
    return [
        f"the recorded exposure began at {at}, before --from: the statistical checks count from "
        f"--from (give --from {at} to count from the exposure's start)"
    ]


def _plain(queries: Sequence[PlannedQuery]) -> list[PlannedQuery]:
    return [q for q in queries if not counted_key(q.key)]
