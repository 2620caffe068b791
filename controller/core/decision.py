"""Decide what a rollout does next: a pure function of policy, state, readings and ``now``.

The rules, in the order they apply to an active rollout (``progressing``, ``paused`` or ``completed``):

1. A guardrail that **fails** (its bound breached with enough samples) rolls back to 0 %. This holds
   for ``completed`` rollouts too: their guardrails stay armed while the policy exists.
2. An **error** (a query could not be answered) follows ``onError``; **no data** (empty, NaN, Inf,
   too few samples) follows ``onNoData``. Both hold by default, and neither ever advances.
3. A paused or completed rollout holds. A rollout that has not started yet starts (first step) unless a query
   errors: flagroll does not expose anyone while it cannot see.
4. With every check passing, a step advances once its hold has elapsed since its percentage was
   written. At the end of the last step's hold the checkpoint is judged: ``onPass`` completes or
   promotes; ``onFail`` rolls back or holds.
5. A due move that raises exposure (the start, an advance, a promotion) waits while ``spec.schedule``
   is closed (outside every change window, or inside a freeze): a hold that says why and when it
   opens (:mod:`controller.core.changewindows`), and while a ``kind: Freeze`` document covers the
   rollout (:mod:`controller.core.freezes`). Rollbacks never wait; a completion changes no exposure
   and does not wait either.
6. After a step with ``approval: required``, the move of rule 4 (an advance, or after the last step
   the completion or promotion) waits for a human's approval of that step, before rule 5 applies: a
   hold that marks the state as awaiting approval (:mod:`controller.core.approval`).
7. A firing alert of ``spec.alerts`` (:mod:`controller.core.alerts`) with ``onFiring: rollback`` is a
   failing check (rule 1); with ``onFiring: hold`` a progressing or paused rollout holds while it fires
   (after rules 1 to 3's rollbacks and holds for errors), and a rollout not started does not start.

A new policy revision first rebases the state (see :func:`rebase`); human commands (stop, pause,
resume, approve) are in :mod:`controller.core.commands`. Nothing here reads a clock or a file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from controller.core import alerts, approval
from controller.core.changewindows import Waiting
from controller.core.checkrecord import Check, acting, sample_ratio_mismatch, worst
from controller.core.checks import checkpoint_checks, guardrail_checks
from controller.core.durations import format_duration
from controller.core.freezes import StandingFreeze, gate
from controller.core.metrictemplate import MetricTemplate
from controller.core.policy import Policy, pct
from controller.core.queries import PlannedQuery, Source, plan
from controller.core.readings import Readings
from controller.core.state import ACTIVE, NOT_STARTED, Action, Outcome, RolloutState, Status


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    before: RolloutState | None  # None: the flag did not exist yet
    after: RolloutState
    reason: str
    checks: tuple[Check, ...] = ()
    checkpoint: Outcome | None = None
    notes: tuple[str, ...] = field(default=())  # e.g. "policy revision changed"
    waiting: Waiting | None = None  # a due move held by the schedule: why, and until when

    @property
    def writes(self) -> bool:
        """Whether the flag file must change (a hold that changes nothing writes nothing)."""
        return self.before is None or _material(self.before) != _material(self.after)

    @property
    def from_percent(self) -> float:
        return self.before.percent if self.before is not None else 0.0

    @property
    def to_percent(self) -> float:
        return self.after.percent


def _material(state: RolloutState) -> tuple[object, ...]:
    return (
        state.revision,
        state.status,
        state.step,
        state.steps,
        state.percent,
        state.control,
        state.step_started_at,
        state.owner,
        state.review,
        state.reason,
        state.exposed_since,
        state.rollback_on_delete,
        state.unguarded_reason,
        state.unguarded_since,
        state.unguarded_noticed_at,
        state.absent_since,
        state.absent_cycles,
        state.awaiting_approval_since,
        state.approved_step,
    )


def initial_state(policy: Policy, now: datetime) -> RolloutState:
    return RolloutState(
        policy=policy.name,
        revision=policy.revision,
        status=Status.PROGRESSING,
        step=NOT_STARTED,
        steps=len(policy.spec.steps),
        percent=0.0,
        control=policy.spec.control,
        step_started_at=None,
        updated_at=now,
        owner=policy.spec.owner,
        review=policy.spec.review,
        rollback_on_delete=policy.spec.on_delete == "rollback",
    )


@dataclass(frozen=True, slots=True)
class Rebased:
    state: RolloutState
    notes: tuple[str, ...] = ()
    adjusted: bool = False  # exposure lowered to fit the new revision


def rebase(policy: Policy, state: RolloutState | None, now: datetime) -> Rebased:
    """Bring a stored state in line with the current policy revision.

    - no state yet: a new rollout, not started;
    - the same revision (an edit of administrative fields only, or a revision stored the old way):
      the owner and review date are brought up to date, nothing else moves;
    - rolled back: a new revision restarts the ramp from the first step;
    - stopped or promoted: unchanged but for the owner and review date (a stop lasts until a human
      resumes; promoted is final);
    - progressing, paused or completed: the rollout continues from the step matching its current
      percentage; if that is above the new policy's last step, exposure is lowered to it.
    """
    if state is None:
        return Rebased(initial_state(policy, now), ("new rollout",))
    judged_again: tuple[str, ...] = ()
    since = state.unguarded_since or state.absent_since
    if state.unguarded or state.absent_since is not None:
        judged_again = (
            f"judged again by policy {policy.name!r}"
            + (f" (no policy judged it since {since.isoformat()})" if since is not None else ""),
        )
        state = state.guarded_again().moved(updated_at=now)
    same = policy.is_revision(state.revision, owner=state.owner, review=state.review)
    if same or state.status in {Status.STOPPED, Status.PROMOTED}:
        administered = _administered(policy, state, now)
        return replace(administered, notes=(*judged_again, *administered.notes))
    rebased = _revised(policy, state, now)
    return replace(rebased, notes=(*judged_again, *rebased.notes))


def _administered(policy: Policy, state: RolloutState, now: datetime) -> Rebased:
    """A stored state under the same revision (or a stopped or promoted one): the administrative
    fields it keeps (owner, review date) follow the policy, and a revision stored the old way (a hash
    of the whole policy) is restamped. Nothing that is exposed or judged changes."""
    spec = policy.spec
    changed = []
    if state.owner != spec.owner:
        changed.append(f"owner {state.owner or 'unset'!r} → {spec.owner!r}")
    if state.review != spec.review:
        before = state.review.isoformat() if state.review is not None else "none"
        changed.append(f"review {before} → {spec.review.isoformat() if spec.review else 'none'}")
    notes = []
    if changed:
        notes.append(f"administrative edit ({'; '.join(changed)}): not a new revision")
    restamp = state.revision != policy.revision and policy.is_revision(
        state.revision, owner=state.owner, review=state.review
    )
    if restamp:
        notes.append(
            f"revision {state.revision} (computed before administrative fields left the revision) "
            f"is now written {policy.revision}: the same revision"
        )
    if not notes:
        return Rebased(state)
    synced = state.moved(
        owner=spec.owner,
        review=spec.review,
        revision=policy.revision if restamp else state.revision,
        updated_at=now,
    )
    return Rebased(synced, tuple(notes))


def _revised(policy: Policy, state: RolloutState, now: datetime) -> Rebased:
    """A stored state under a new revision of its policy (see :func:`rebase`)."""
    note = f"policy revision {state.revision} → {policy.revision}"
    synced = approval.cleared(state).moved(
        policy=policy.name,
        revision=policy.revision,
        steps=len(policy.spec.steps),
        control=policy.spec.control,
        owner=policy.spec.owner,
        review=policy.spec.review,
        rollback_on_delete=policy.spec.on_delete == "rollback",
        updated_at=now,
    )
    if policy.spec.control and not state.control and state.percent > 0:
        # The control arm is served from now: count both arms from now, or the treatment's longer
        # window looks like a broken split and comparisons mix periods.
        synced = synced.moved(exposed_since=now)
        note += "; the control arm starts now, and both arms are counted from now"
    if state.status is Status.ROLLED_BACK:
        restarted = synced.moved(
            status=Status.PROGRESSING,
            step=NOT_STARTED,
            percent=0.0,
            step_started_at=None,
            reason="",
            exposed_since=None,
        )
        return Rebased(restarted, (f"{note}: the rolled-back rollout restarts from the first step",))
    steps = [s.percent for s in policy.spec.steps]
    if state.status is Status.COMPLETED and state.percent == steps[-1]:
        kept = synced.moved(step=len(steps) - 1)
        return Rebased(kept, (f"{note}: the ramp still ends at {pct(steps[-1])} %; stays complete",))
    status = Status.PROGRESSING if state.status is Status.COMPLETED else state.status
    if state.status is Status.COMPLETED:
        synced, counted = _counted_from_trailing_day(synced, now)
        note += counted
    if state.percent > steps[-1]:
        lowered = synced.moved(status=status, step=len(steps) - 1, percent=steps[-1], step_started_at=now)
        return Rebased(
            lowered,
            (
                f"{note}: exposure lowered from {pct(state.percent)} % to the new last step "
                f"{pct(steps[-1])} %",
            ),
            adjusted=True,
        )
    index = max((i for i, p in enumerate(steps) if p <= state.percent), default=NOT_STARTED)
    continued = synced.moved(status=status, step=index)
    where = f"step {index + 1}/{len(steps)}" if index >= 0 else "before the first step"
    return Rebased(continued, (f"{note}: continuing at {pct(state.percent)} % ({where})",))


def _counted_from_trailing_day(state: RolloutState, now: datetime) -> tuple[RolloutState, str]:
    """A completed rollout that progresses again counts from the start of the trailing window it
    was judged over, not from a first step that may be weeks back (see :func:`exposure_window_seconds`);
    with a note when that moves its count."""
    since = state.counting_since
    start = now - timedelta(seconds=COMPLETED_WINDOW_SECONDS)
    if since is None or since >= start:
        return state, ""
    return state.moved(exposed_since=start), f"; both arms are counted from {start.isoformat()}"


class Planning(Protocol):
    """Makes one cycle's queries: :func:`~controller.core.queries.plan` for one policy."""

    def __call__(self, *, with_checkpoint: bool, window_seconds: int | None) -> list[PlannedQuery]: ...


def queries_for(
    policy: Policy,
    state: RolloutState,
    now: datetime,
    templates: Mapping[str, MetricTemplate] | None = None,
    planning: Planning | None = None,
) -> list[PlannedQuery]:
    """What to ask Prometheus this cycle; empty when the rollout is not active. ``planning`` makes
    the queries (default: :func:`~controller.core.queries.plan` with ``templates``).

    The checkpoint's own queries are asked throughout the last step, not only once its hold is over:
    the decision is taken after the queries return, and the hold may end in between.
    """
    if state.status not in ACTIVE:
        return []
    at_last_step = state.status is Status.PROGRESSING and state.step == len(policy.spec.steps) - 1
    window_seconds = exposure_window_seconds(state, now)
    if planning is not None:
        return planning(with_checkpoint=at_last_step, window_seconds=window_seconds)
    return plan(
        policy, with_checkpoint=at_last_step, window_seconds=window_seconds, templates=templates or {}
    )


# A completed rollout's guardrails stay armed for as long as its policy exists: they count over the
# trailing day, not since exposure began, so that the query's cost stays fixed (a range of weeks
# grows until Prometheus refuses it) and a regression that appears after completion is not diluted
# by the whole ramp's traffic. A day holds every hour of a daily traffic cycle. docs/statistics.md
# says what this does to the false-rollback budget.
COMPLETED_WINDOW_SECONDS = 24 * 60 * 60


def exposure_window_seconds(state: RolloutState, now: datetime) -> int | None:
    """How long the arms have been exposed, in whole seconds (at least 1): the ``increase()`` range
    of the counts that errorRatio and latency guardrails and the sample-ratio check compare, at most
    :data:`COMPLETED_WINDOW_SECONDS` for a completed rollout. None when nobody is exposed."""
    since = state.counting_since
    if since is None:
        return None
    seconds = max(1, math.ceil((now - since).total_seconds()))
    if state.status is Status.COMPLETED:
        return min(seconds, COMPLETED_WINDOW_SECONDS)
    return seconds


def _hold_seconds(policy: Policy, state: RolloutState) -> float:
    """The hold of the step being served. Exposure below the first step (left by a policy edit)
    holds as long as the first step before it moves on."""
    return policy.spec.steps[max(state.step, 0)].hold_seconds


def _hold_left(policy: Policy, state: RolloutState, now: datetime) -> float:
    hold = _hold_seconds(policy, state)
    if state.step_started_at is None:  # no clock, no advance: the whole hold is still ahead
        return hold
    return hold - (now - state.step_started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class _Context:
    """What every decision of one evaluation shares."""

    stored: RolloutState | None
    notes: tuple[str, ...]
    shadow: tuple[
        Check, ...
    ] = ()  # checks of dryRun guardrails: recorded with every decision, never acted on
    freezes: tuple[StandingFreeze, ...] = ()  # Freeze documents that may cover the rollout
    flag: str = ""

    def make(
        self,
        action: Action,
        after: RolloutState,
        reason: str,
        checks: Sequence[Check] = (),
        checkpoint: Outcome | None = None,
    ) -> Decision:
        """A decision; a hold of a rollout that awaits approval (for no data, say) still says so in
        its ``waiting``, unless the hold has a wait of its own (the callers then replace it)."""
        recorded = (*checks, *self.shadow) if checks else tuple(checks)
        waits = approval.of_state(self.flag, after) if action is Action.HOLD else None
        return Decision(action, self.stored, after, reason, recorded, checkpoint, self.notes, waits)

    def move_or_wait(
        self,
        policy: Policy,
        now: datetime,
        move: tuple[Action, RolloutState, RolloutState],
        why: str,
        checks: Sequence[Check],
        checkpoint: Outcome | None = None,
    ) -> Decision:
        """A due move (``action``, the state held, the state moved to) that raises exposure: taken
        while the policy's schedule is open and no Freeze covers it, else a hold that says why it
        waits and until when."""
        action, held, moved = move
        waits = gate(policy, self.freezes, now)
        if waits is None:
            return self.make(action, moved, why, checks, checkpoint)
        decision = self.make(Action.HOLD, held, f"{waits.describe(now)}; due: {why}", checks, checkpoint)
        return replace(decision, waiting=waits)

    def awaiting_approval(
        self,
        policy: Policy,
        state: RolloutState,
        now: datetime,
        why: str,
        checks: Sequence[Check],
        checkpoint: Outcome | None = None,
    ) -> Decision:
        """A due move after a step with ``approval: required`` that no human approved yet: a hold
        that marks the state as awaiting approval (written once, when the wait begins)."""
        since = state.awaiting_approval_since
        held = state if since is not None else state.moved(awaiting_approval_since=now, updated_at=now)
        waits = approval.awaiting(policy, state, since or now, began=since is None)
        decision = self.make(Action.HOLD, held, f"{waits.describe(now)}; due: {why}", checks, checkpoint)
        return replace(decision, waiting=waits)

    def alerted(
        self, state: RolloutState, held: Sequence[Check], why: str, checks: Sequence[Check]
    ) -> Decision:
        """A hold while alerts with ``onFiring: hold`` fire: the record's ``waiting`` names them. A
        paused rollout waits for a human first: the alerts are said, not waited for."""
        waits = alerts.waiting(held)
        if state.status is Status.PAUSED:
            return self.make(Action.HOLD, state, f"{_paused(state)}; {waits.why}", checks)
        decision = self.make(Action.HOLD, state, f"{why}{waits.why}; onFiring: hold", checks)
        return replace(decision, waiting=waits)


def decide(
    policy: Policy,
    stored: RolloutState | None,
    queries: Sequence[PlannedQuery],
    readings: Readings,
    now: datetime,
    judged: Sequence[Check] | None = None,
    freezes: Sequence[StandingFreeze] = (),
) -> Decision:
    """The next move for one rollout. ``queries`` are those :func:`queries_for` planned. ``judged``
    is the guardrail checks of these readings when the caller has judged them already (the
    backtest judges every evaluation for its report): the same as judging them here. ``freezes``:
    the Freeze documents that may cover it (those not in force at ``now`` hold nothing)."""
    rebased = rebase(policy, stored, now)
    state = approval.current(policy, rebased.state)
    ctx = _Context(stored, rebased.notes, freezes=tuple(freezes), flag=policy.flag_key)
    if state.status not in ACTIVE:
        return ctx.make(Action.HOLD, state, f"{state.status.value}: nothing to do")

    spec = policy.spec
    judged = guardrail_checks(policy, queries, readings) if judged is None else judged
    checks = acting(judged)
    ctx = replace(ctx, shadow=tuple(c for c in judged if c.shadow))
    held = alerts.holding(checks)  # firing alerts that hold: not failures
    judging = [c for c in checks if c not in held]
    outcome = worst(judging)
    exposed = state.percent > 0

    if outcome is Outcome.FAIL and exposed:
        why = f"{_failed(judging)}: {_summary(judging, Outcome.FAIL)}"
        return ctx.make(Action.ROLLBACK, _rolled_back(state, now, why), why, checks)
    mismatch = sample_ratio_mismatch(checks)
    if mismatch is not None and exposed:
        # Neither onError nor onNoData applies: flagroll cannot tell whether the change is at fault.
        why = (
            f"hold: {mismatch.describe()}; comparisons with control are not judged until the split "
            "is fixed (neither advancing nor rolling back)"
        )
        return ctx.make(Action.HOLD, state, why, checks)
    # A settling check (still gathering what it needs) holds, but is no outage: onNoData skips it.
    acted_on = worst([c for c in judging if not c.settling])
    for bad, policy_says, label in (
        (Outcome.ERROR, spec.on_error, "onError"),
        (Outcome.NO_DATA, spec.on_no_data, "onNoData"),
    ):
        if acted_on is bad and policy_says == "rollback" and exposed:
            why = f"{bad.value}: {_summary(judging, bad)}; {label}: rollback"
            return ctx.make(Action.ROLLBACK, _rolled_back(state, now, why), why, checks)
    if rebased.adjusted:
        return ctx.make(Action.ADJUST, state, "; ".join(rebased.notes), checks)

    if state.status is Status.COMPLETED:
        if outcome is not Outcome.PASS:
            why = f"complete; {outcome.value}: {_summary(judging, outcome)}; {_holding(outcome, acted_on)}"
            return ctx.make(Action.HOLD, state, why, checks)
        if held:  # nothing to hold back: said, not waited for
            why = f"complete at {pct(state.percent)} %; {alerts.waiting(held).why} (guardrails stay armed)"
            return ctx.make(Action.HOLD, state, why, checks)
        why = f"complete at {pct(state.percent)} %; all {len(checks)} checks pass (guardrails stay armed)"
        return ctx.make(Action.HOLD, state, why, checks)

    if state.step == NOT_STARTED and not exposed:
        return _start(policy, state, now, (checks, judging, held), ctx)

    if outcome is not Outcome.PASS:
        why = f"{outcome.value}: {_summary(judging, outcome)}; {_holding(outcome, acted_on)}"
        return ctx.make(Action.HOLD, state, why, checks)
    if held:
        return ctx.alerted(state, held, "", checks)
    if state.status is Status.PAUSED:
        return ctx.make(Action.HOLD, state, _paused(state), checks)

    left = _hold_left(policy, state, now)
    passed = f"all {len(checks)} checks pass"
    hold = _hold_seconds(policy, state)
    if left > 0:
        why = (
            f"{passed}; {format_duration(left)} of the {format_duration(hold)} hold left at "
            f"{pct(state.percent)} %"
        )
        return ctx.make(Action.HOLD, state, why, checks)
    if state.step < len(spec.steps) - 1:
        nxt = state.step + 1
        why = (
            f"{passed} and the {format_duration(hold)} hold at {pct(state.percent)} % is over: "
            f"step {nxt + 1}/{len(spec.steps)} at {pct(policy.step_percent(nxt))} %"
        )
        if approval.missing(policy, state):
            return ctx.awaiting_approval(policy, state, now, why, checks)
        advance = (Action.ADVANCE, state, _at_step(policy, state, nxt, now))
        return ctx.move_or_wait(policy, now, advance, approval.noted(policy, state, why), checks)
    return _judge_checkpoint(policy, state, queries, readings, now, checks, ctx)


def _start(
    policy: Policy,
    state: RolloutState,
    now: datetime,
    evidence: tuple[list[Check], list[Check], list[Check]],
    ctx: _Context,
) -> Decision:
    """A rollout that has not started: it starts unless a query errors, a check fails, an alert
    holds, a human paused it, or the schedule or a Freeze makes the start wait. ``evidence``: the
    checks recorded, those judged (firing alerts that hold left out) and the alerts that hold."""
    checks, judging, held = evidence
    outcome = worst(judging)
    if outcome is Outcome.ERROR:
        why = f"not starting while a query fails: {_summary(judging, Outcome.ERROR)}"
        return ctx.make(Action.HOLD, state, why, checks)
    if outcome is Outcome.FAIL:
        failing = "an alert fires" if _failed(judging) == "alert firing" else "a guardrail fails"
        why = f"not starting: {failing} before anyone is exposed: {_summary(judging, outcome)}"
        return ctx.make(Action.HOLD, state, why, checks)
    if held:
        return ctx.alerted(state, held, "not starting: ", checks)
    if state.status is Status.PAUSED:
        return ctx.make(Action.HOLD, state, _paused(state), checks)
    why = f"rollout starts: step 1/{len(policy.spec.steps)} at {pct(policy.step_percent(0))} %"
    start = (Action.ADVANCE, state, _at_step(policy, state, 0, now))
    return ctx.move_or_wait(policy, now, start, why, checks)


def _judge_checkpoint(
    policy: Policy,
    state: RolloutState,
    queries: Sequence[PlannedQuery],
    readings: Readings,
    now: datetime,
    checks: list[Check],
    ctx: _Context,
) -> Decision:
    spec = policy.spec
    ramp_done = f"the last step's {format_duration(spec.steps[-1].hold_seconds)} hold is over"
    if spec.checkpoint is None:
        why = (
            f"{ramp_done} with all {len(checks)} checks passing; no checkpoint: rollout complete "
            f"at {pct(state.percent)} %"
        )
        if approval.missing(policy, state):
            return ctx.awaiting_approval(policy, state, now, why, checks)
        return ctx.make(Action.COMPLETE, _completed(state, now), approval.noted(policy, state, why), checks)
    expected = checkpoint_checks(policy, queries, readings)
    verdict = worst(expected)
    evidence = checks + expected
    if verdict is Outcome.PASS:
        passed = f"{ramp_done}; checkpoint passed ({_summary(expected, Outcome.PASS)})"
        if approval.missing(policy, state):
            then = "promoted to 100 %" if spec.checkpoint.on_pass == "promote" else "rollout complete"
            return ctx.awaiting_approval(policy, state, now, f"{passed}: {then}", evidence, verdict)
        passed = approval.noted(policy, state, passed)
        if spec.checkpoint.on_pass == "promote":
            after = approval.cleared(state).moved(
                status=Status.PROMOTED, percent=100.0, step_started_at=now, updated_at=now, reason=""
            )
            promote = (Action.PROMOTE, state, after)
            return ctx.move_or_wait(policy, now, promote, f"{passed}: promoted to 100 %", evidence, verdict)
        why = f"{passed}: rollout complete at {pct(state.percent)} %"
        return ctx.make(Action.COMPLETE, _completed(state, now), why, evidence, verdict)
    if verdict is Outcome.FAIL:
        failed = f"checkpoint failed: {_summary(expected, Outcome.FAIL)}"
        if spec.checkpoint.on_fail == "rollback":
            why = f"{ramp_done}; {failed}; onFail: rollback"
            return ctx.make(Action.ROLLBACK, _rolled_back(state, now, failed), why, evidence, verdict)
        return ctx.make(Action.HOLD, state, f"{ramp_done}; {failed}; onFail: hold", evidence, verdict)
    policy_says = spec.on_error if verdict is Outcome.ERROR else spec.on_no_data
    label = "onError" if verdict is Outcome.ERROR else "onNoData"
    why = f"checkpoint {verdict.value}: {_summary(expected, verdict)}; {label}: {policy_says}"
    if policy_says == "rollback":
        return ctx.make(Action.ROLLBACK, _rolled_back(state, now, why), why, evidence, verdict)
    return ctx.make(Action.HOLD, state, why, evidence, verdict)


def _completed(state: RolloutState, now: datetime) -> RolloutState:
    return approval.cleared(state).moved(status=Status.COMPLETED, updated_at=now, reason="")


def _at_step(policy: Policy, state: RolloutState, index: int, now: datetime) -> RolloutState:
    exposed_since = state.exposed_since if state.percent > 0 else now
    return approval.cleared(state).moved(
        step=index,
        percent=policy.step_percent(index),
        step_started_at=now,
        updated_at=now,
        reason="",
        exposed_since=exposed_since,
    )


def _rolled_back(state: RolloutState, now: datetime, why: str) -> RolloutState:
    return approval.cleared(state).moved(
        status=Status.ROLLED_BACK,
        step=NOT_STARTED,
        percent=0.0,
        step_started_at=now,
        updated_at=now,
        reason=why,
        exposed_since=None,
    )


def _paused(state: RolloutState) -> str:
    why = f": {state.reason}" if state.reason else ""
    return f"paused{why}; guardrails still armed, not advancing"


def _holding(outcome: Outcome, acted_on: Outcome) -> str:
    """Why a check that is not passing holds: the policy's onError/onNoData, or a settling check."""
    if outcome is Outcome.NO_DATA and acted_on is not Outcome.NO_DATA:
        return "still measuring (onNoData does not apply): hold"
    return f"{'onError' if outcome is Outcome.ERROR else 'onNoData'}: hold"


def _failed(failing: Sequence[Check]) -> str:
    """What failed, as a rollback's reason begins: ``alert firing`` when only alerts did."""
    kinds = {c.kind for c in failing if c.verdict is Outcome.FAIL}
    return "alert firing" if kinds == {Source.ALERT} else "guardrail failed"


def _summary(checks: Sequence[Check], outcome: Outcome, limit: int = 3) -> str:
    chosen = [c for c in checks if c.verdict is outcome]
    if outcome is not Outcome.PASS:
        chosen = [c for c in chosen if c.kind is not Source.TRAFFIC] or chosen
    text = "; ".join(c.describe() for c in chosen[:limit])
    if len(chosen) > limit:
        text += f"; and {len(chosen) - limit} more"
    return text


def deleted(state: RolloutState, now: datetime) -> Decision | None:
    """The policy of this flag is gone. With ``onDelete: rollback`` an exposed rollout rolls back;
    otherwise (and when nothing is exposed) the flag stays as it is: None."""
    if not state.rollback_on_delete or state.percent <= 0 or state.status is Status.PROMOTED:
        return None
    why = "policy deleted; onDelete: rollback"
    return Decision(Action.ROLLBACK, state, _rolled_back(state, now, why), why)
