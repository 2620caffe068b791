"""Decision tables: policy + stored state + readings + a fixed ``now`` → the next move."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import pytest

from controller.adapters.policyfile import load_text
from controller.core.commands import pause, resume, stop
from controller.core.decision import (
    Decision,
    decide,
    exposure_window_seconds,
    initial_state,
    queries_for,
    rebase,
)
from controller.core.errors import UsageError
from controller.core.policy import Policy
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading, Source, shown
from controller.core.state import NOT_STARTED, Action, Outcome, RolloutState, Status

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {name: cache}
spec:
  owner: sre-lead
  aim: Cut p95 from 450ms to 250ms.
  mechanism: A cache removes repeated I/O.
  flag: {key: cache}
  interval: 30s
  steps:
    - {percent: 1, hold: 5m}
    - {percent: 5, hold: 10m}
    - {percent: 10, hold: 30m}
  traffic:
    query: sum(increase(requests_total{v="{{variant}}"}[5m]))
    minSamples: 200
  guardrails:
    - name: error-rate
      query: sum(rate(errors_total{v="{{variant}}"}[5m])) / sum(rate(requests_total{v="{{variant}}"}[5m]))
      max: 0.01
    - name: p95
      query: histogram_quantile(0.95, sum by (le) (rate(latency_bucket{v="{{variant}}"}[5m])))
      max: 0.250
      maxIncrease: 0.10
{extra}
"""

CHECKPOINT = """\
  checkpoint:
    expect:
      - name: p95
        minDecrease: 0.25
    onPass: {on_pass}
    onFail: {on_fail}
"""


def policy(extra: str = "") -> Policy:
    """The policy above, with ``extra`` lines (indented under spec) added at its end."""
    loaded = load_text(POLICY.replace("{extra}", extra), "cache.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.policies[0].policy


def with_checkpoint(on_pass: str = "complete", on_fail: str = "rollback") -> Policy:
    return policy(CHECKPOINT.replace("{on_pass}", on_pass).replace("{on_fail}", on_fail))


HEALTHY = {
    ("traffic", Arm.TREATMENT): 1000.0,
    ("traffic", Arm.CONTROL): 1000.0,
    ("error-rate", Arm.TREATMENT): 0.001,
    ("error-rate", Arm.CONTROL): 0.001,
    ("p95", Arm.TREATMENT): 0.150,
    ("p95", Arm.CONTROL): 0.200,
}


def readings(
    queries: list[PlannedQuery], changes: Mapping[tuple[str, Arm], Reading | float] | None = None
) -> dict[QueryKey, Reading]:
    values: dict[tuple[str, Arm], Reading | float] = {**HEALTHY, **(changes or {})}
    result = {}
    for query in queries:
        value = values.get((query.key.name, query.key.arm), 0.0)
        result[query.key] = value if isinstance(value, Reading) else Reading.of(value)
    return result


def at_step(
    p: Policy, step: int, *, started: datetime = T0, status: Status = Status.PROGRESSING
) -> RolloutState:
    return initial_state(p, T0).moved(
        step=step, percent=p.step_percent(step), step_started_at=started, status=status
    )


def run(
    p: Policy,
    stored: RolloutState | None,
    now: datetime,
    changes: Mapping[tuple[str, Arm], Reading | float] | None = None,
) -> Decision:
    state = rebase(p, stored, now).state
    queries = queries_for(p, state, now)
    return decide(p, stored, queries, readings(queries, changes), now)


# Starting ---------------------------------------------------------------------------------------


def test_a_new_rollout_starts_at_the_first_step_even_without_treatment_data() -> None:
    p = policy()
    no_treatment = {
        ("traffic", Arm.TREATMENT): Reading.no_data("empty result"),
        ("error-rate", Arm.TREATMENT): Reading.no_data("empty result"),
        ("p95", Arm.TREATMENT): Reading.no_data("NaN"),
    }
    decision = run(p, None, T0, no_treatment)
    assert decision.action is Action.ADVANCE
    assert decision.after.percent == 1
    assert decision.after.step == 0
    assert decision.after.step_started_at == T0
    assert decision.writes


def test_a_rollout_does_not_start_while_prometheus_cannot_answer() -> None:
    decision = run(policy(), None, T0, {("error-rate", Arm.TREATMENT): Reading.error("connection refused")})
    assert decision.action is Action.HOLD
    assert decision.after.percent == 0
    assert "not starting" in decision.reason
    assert "connection refused" in decision.reason


# Holding and advancing --------------------------------------------------------------------------


def test_a_step_holds_until_its_hold_has_elapsed() -> None:
    p = policy()
    decision = run(p, at_step(p, 0), T0 + timedelta(minutes=3))
    assert decision.action is Action.HOLD
    assert decision.after == at_step(p, 0)
    assert "2m of the 5m hold left" in decision.reason
    assert not decision.writes


def test_a_step_advances_when_the_hold_is_over_and_every_check_passes() -> None:
    p = policy()
    now = T0 + timedelta(minutes=5)
    decision = run(p, at_step(p, 0), now)
    assert decision.action is Action.ADVANCE
    assert (decision.from_percent, decision.to_percent) == (1, 5)
    assert decision.after.step == 1
    assert decision.after.step_started_at == now
    assert all(c.verdict is Outcome.PASS for c in decision.checks)
    assert {c.name for c in decision.checks} == {"traffic", "error-rate", "p95"}


def test_running_the_same_cycle_again_never_advances_twice() -> None:
    p = policy()
    now = T0 + timedelta(minutes=5)
    first = run(p, at_step(p, 0), now)
    again = run(p, first.after, now)
    assert first.action is Action.ADVANCE
    assert again.action is Action.HOLD
    assert again.after == first.after


# Failing ----------------------------------------------------------------------------------------


def test_a_failing_guardrail_rolls_back_and_the_record_names_value_bound_and_samples() -> None:
    p = policy()
    decision = run(p, at_step(p, 1), T0 + timedelta(minutes=1), {("error-rate", Arm.TREATMENT): 0.05})
    assert decision.action is Action.ROLLBACK
    assert decision.after.percent == 0
    assert decision.after.status is Status.ROLLED_BACK
    failed = [c for c in decision.checks if c.verdict is Outcome.FAIL]
    assert len(failed) == 1
    check = failed[0]
    assert (check.name, check.rule, check.value, check.bound, check.samples) == (
        "error-rate",
        "max",
        0.05,
        0.01,
        1000.0,
    )
    assert 'errors_total{v="on"}' in shown(check.query)
    assert "error-rate treatment 0.05 > 0.01" in decision.reason


def test_a_relative_bound_compares_treatment_with_control() -> None:
    p = policy()
    slower = {("p95", Arm.TREATMENT): 0.240, ("p95", Arm.CONTROL): 0.200}  # 20 % above control
    decision = run(p, at_step(p, 1), T0 + timedelta(minutes=1), slower)
    assert decision.action is Action.ROLLBACK
    check = next(c for c in decision.checks if c.rule == "maxIncrease")
    assert check.bound == pytest.approx(0.22)
    assert check.control is not None
    assert check.control.value == 0.2
    assert 'latency_bucket{v="control"}' in shown(check.control.query)


def test_a_failure_outranks_an_error_elsewhere() -> None:
    p = policy()
    mixed: dict[tuple[str, Arm], Reading | float] = {
        ("error-rate", Arm.TREATMENT): 0.5,
        ("p95", Arm.TREATMENT): Reading.error("timed out"),
    }
    assert run(p, at_step(p, 1), T0, mixed).action is Action.ROLLBACK


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        ({("error-rate", Arm.TREATMENT): Reading.error("HTTP 503")}, Outcome.ERROR),
        ({("p95", Arm.CONTROL): Reading.error("cannot connect")}, Outcome.ERROR),
        ({("traffic", Arm.TREATMENT): Reading.error("timed out")}, Outcome.ERROR),
        ({("error-rate", Arm.TREATMENT): Reading.no_data("NaN")}, Outcome.NO_DATA),
        ({("p95", Arm.CONTROL): Reading.no_data("empty result")}, Outcome.NO_DATA),
        ({("traffic", Arm.TREATMENT): 150.0}, Outcome.NO_DATA),
        ({("traffic", Arm.CONTROL): Reading.no_data("empty result")}, Outcome.NO_DATA),
    ],
)
def test_errors_and_missing_data_hold_and_never_advance(
    change: Mapping[tuple[str, Arm], Reading | float], outcome: Outcome
) -> None:
    p = policy()
    decision = run(p, at_step(p, 0), T0 + timedelta(hours=1), change)
    assert decision.action is Action.HOLD
    assert decision.after == at_step(p, 0)
    assert outcome.value in decision.reason
    assert any(c.verdict is outcome for c in decision.checks)
    assert not any(c.verdict is Outcome.FAIL for c in decision.checks)


def test_too_few_samples_says_how_many_are_missing() -> None:
    p = policy()
    decision = run(p, at_step(p, 0), T0 + timedelta(hours=1), {("traffic", Arm.TREATMENT): 150.0})
    assert "treatment has 150 of 200 samples (50 missing)" in decision.reason


def test_too_few_samples_are_recorded_as_not_enough_yet_never_as_a_passing_value() -> None:
    p = policy()
    thin = {("traffic", Arm.TREATMENT): 150.0, ("error-rate", Arm.TREATMENT): 1.0}
    decision = run(p, at_step(p, 0), T0 + timedelta(hours=1), thin)
    assert decision.action is Action.HOLD
    traffic = next(c for c in decision.checks if c.name == "traffic" and c.arm is Arm.TREATMENT)
    assert traffic.verdict is Outcome.NO_DATA
    assert traffic.describe() == (
        "traffic treatment 150 < 200 (minSamples): not enough samples yet: "
        "treatment has 150 of 200 samples (50 missing)"
    )
    # A value over too few samples is not judged: neither "1 ≤ 0.01" (a pass) nor "1 > 0.01" (a failure).
    error_rate = next(c for c in decision.checks if c.name == "error-rate")
    assert error_rate.describe() == (
        "error-rate treatment 1 vs 0.01 (max; n=150/1000): not enough samples yet: "
        "treatment has 150 of 200 samples (50 missing)"
    )
    relative = next(c for c in decision.checks if c.rule == "maxIncrease")
    assert relative.describe().startswith("p95 treatment 0.15 vs 0.22 (maxIncrease 0.1 over control 0.2;")
    assert decision.reason.startswith("no_data: error-rate treatment 1 vs 0.01 (max; n=150/1000): not enough")


def test_a_breach_with_too_few_samples_is_no_data_not_a_failure() -> None:
    p = policy()
    thin = {("traffic", Arm.TREATMENT): 3.0, ("error-rate", Arm.TREATMENT): 1.0}
    decision = run(p, at_step(p, 0), T0 + timedelta(hours=1), thin)
    assert decision.action is Action.HOLD
    check = next(c for c in decision.checks if c.name == "error-rate")
    assert check.verdict is Outcome.NO_DATA


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("onError", {("error-rate", Arm.TREATMENT): Reading.error("HTTP 500")}),
        ("onNoData", {("error-rate", Arm.TREATMENT): Reading.no_data("NaN")}),
    ],
)
def test_the_policy_may_ask_for_rollback_on_errors_or_missing_data(
    field: str, change: Mapping[tuple[str, Arm], Reading | float]
) -> None:
    p = policy(f"  {field}: rollback\n")
    decision = run(p, at_step(p, 1), T0, change)
    assert decision.action is Action.ROLLBACK
    assert f"{field}: rollback" in decision.reason


# The end of the ramp ----------------------------------------------------------------------------


def test_without_a_checkpoint_the_rollout_completes_at_the_last_step() -> None:
    p = policy()
    decision = run(p, at_step(p, 2), T0 + timedelta(minutes=30))
    assert decision.action is Action.COMPLETE
    assert decision.after.status is Status.COMPLETED
    assert decision.after.percent == 10


def test_a_passing_checkpoint_completes_or_promotes() -> None:
    complete = with_checkpoint("complete")
    better = {("p95", Arm.TREATMENT): 0.140, ("p95", Arm.CONTROL): 0.200}  # 30 % faster
    decision = run(complete, at_step(complete, 2), T0 + timedelta(minutes=30), better)
    assert decision.action is Action.COMPLETE
    assert decision.checkpoint is Outcome.PASS
    promote = with_checkpoint("promote")
    decision = run(promote, at_step(promote, 2), T0 + timedelta(minutes=30), better)
    assert decision.action is Action.PROMOTE
    assert decision.after.percent == 100
    assert decision.after.status is Status.PROMOTED


def test_a_failing_checkpoint_rolls_back_or_holds() -> None:
    only_a_bit_faster = {("p95", Arm.TREATMENT): 0.180, ("p95", Arm.CONTROL): 0.200}
    rollback = with_checkpoint(on_fail="rollback")
    decision = run(rollback, at_step(rollback, 2), T0 + timedelta(minutes=30), only_a_bit_faster)
    assert decision.action is Action.ROLLBACK
    assert decision.checkpoint is Outcome.FAIL
    assert "checkpoint failed" in decision.reason
    expectation = next(c for c in decision.checks if c.kind is Source.CHECKPOINT)
    assert expectation.bound == pytest.approx(0.150)
    hold = with_checkpoint(on_fail="hold")
    decision = run(hold, at_step(hold, 2), T0 + timedelta(minutes=30), only_a_bit_faster)
    assert decision.action is Action.HOLD
    assert decision.after.percent == 10


def test_a_checkpoint_without_data_holds() -> None:
    p = with_checkpoint()
    missing = {("p95", Arm.CONTROL): Reading.no_data("NaN")}
    decision = run(p, at_step(p, 2), T0 + timedelta(minutes=30), missing)
    assert decision.action is Action.HOLD
    assert decision.after.status is Status.PROGRESSING


def test_a_completed_rollout_keeps_its_guardrails_armed() -> None:
    p = policy()
    completed = at_step(p, 2, status=Status.COMPLETED)
    assert run(p, completed, T0 + timedelta(days=3)).action is Action.HOLD
    broken = run(p, completed, T0 + timedelta(days=3), {("error-rate", Arm.TREATMENT): 0.2})
    assert broken.action is Action.ROLLBACK


# Staying rolled back, revisions -----------------------------------------------------------------


def rolled_back(p: Policy) -> RolloutState:
    return run(p, at_step(p, 1), T0, {("error-rate", Arm.TREATMENT): 0.5}).after


def test_a_rolled_back_rollout_stays_at_zero_while_the_policy_is_unchanged() -> None:
    p = policy()
    state = rolled_back(p)
    decision = run(p, state, T0 + timedelta(days=1))
    assert decision.after == state
    assert not decision.writes
    assert queries_for(p, state, T0) == []


def test_a_new_revision_restarts_a_rolled_back_rollout_from_the_first_step() -> None:
    p = policy()
    state = rolled_back(p)
    edited = policy("  onError: rollback\n")
    assert edited.revision != p.revision
    decision = run(edited, state, T0 + timedelta(hours=1))
    assert decision.action is Action.ADVANCE
    assert decision.after.percent == 1
    assert decision.after.revision == edited.revision
    assert any("restarts" in note for note in decision.notes)


def test_a_stop_outlasts_a_new_revision() -> None:
    p = policy()
    stopped = stop(at_step(p, 1), "pager went off", T0).after
    edited = policy("  onError: rollback\n")
    decision = run(edited, stopped, T0 + timedelta(hours=1))
    assert decision.after.status is Status.STOPPED
    assert decision.after.percent == 0
    assert not decision.writes


def administered(extra: str = "  review: 2027-01-15\n") -> Policy:
    """The policy with a new owner, aim and mechanism (and ``extra``, a review date by default):
    administrative fields only."""
    text = (
        POLICY.replace("{extra}", extra)
        .replace("owner: sre-lead", "owner: platform-team")
        .replace("aim: Cut p95 from 450ms to 250ms.", "aim: Cut p95 from 450ms to 200ms.")
        .replace("mechanism: A cache removes repeated I/O.", "mechanism: Fewer round trips.")
    )
    loaded = load_text(text, "cache.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.policies[0].policy


def test_an_administrative_edit_updates_a_rolled_back_rollout_without_restarting_it() -> None:
    p = policy()
    state = rolled_back(p)
    edited = administered()
    decision = run(edited, state, T0 + timedelta(hours=1))
    assert decision.action is Action.HOLD
    assert (decision.after.status, decision.after.percent) == (Status.ROLLED_BACK, 0)
    assert decision.after.revision == p.revision == edited.revision
    assert (decision.after.owner, decision.after.review) == ("platform-team", date(2027, 1, 15))
    assert decision.writes  # the new owner and review date are stored in the flag
    assert any("not a new revision" in note and "platform-team" in note for note in decision.notes)
    again = run(edited, decision.after, T0 + timedelta(hours=2))
    assert again.after == decision.after
    assert not again.writes


def test_an_administrative_edit_of_a_running_rollout_keeps_its_step_and_hold() -> None:
    p = policy()
    state = at_step(p, 1, started=T0)
    decision = run(administered(), state, T0 + timedelta(minutes=4))
    assert decision.action is Action.HOLD
    assert "6m of the 10m hold left" in decision.reason
    assert (decision.after.step, decision.after.step_started_at) == (1, T0)
    assert decision.after.owner == "platform-team"
    assert not any("policy revision" in note for note in decision.notes)


def test_an_administrative_edit_of_a_stopped_rollout_updates_its_owner_and_it_stays_stopped() -> None:
    p = policy()
    stopped = stop(at_step(p, 1), "pager went off", T0).after
    decision = run(administered(), stopped, T0 + timedelta(hours=1))
    assert (decision.after.status, decision.after.percent) == (Status.STOPPED, 0)
    assert decision.after.owner == "platform-team"


def test_a_state_written_with_an_old_style_revision_is_the_same_revision() -> None:
    """Flag files written before administrative fields left the revision carry the hash of the whole
    policy: that is the same revision, restamped, and a rolled-back rollout is not restarted."""
    p = policy()
    old_style = rolled_back(p).moved(revision=p.legacy_revision)
    decision = run(p, old_style, T0 + timedelta(hours=1))
    assert (decision.action, decision.after.status, decision.after.percent) == (
        Action.HOLD,
        Status.ROLLED_BACK,
        0,
    )
    assert decision.after.revision == p.revision
    assert any(p.legacy_revision in note and "same revision" in note for note in decision.notes)
    running = at_step(p, 1).moved(revision=p.legacy_revision)
    continued = run(p, running, T0 + timedelta(minutes=4))
    assert (continued.after.step, continued.after.step_started_at, continued.after.revision) == (
        1,
        T0,
        p.revision,
    )
    assert "6m of the 10m hold left" in continued.reason


def test_a_new_revision_continues_from_the_matching_step() -> None:
    p = policy()
    edited = (
        load_text(
            POLICY.replace("{extra}", "").replace("{percent: 5, hold: 10m}", "{percent: 5, hold: 20m}"),
            "cache.yaml",
        )
        .policies[0]
        .policy
    )
    decision = run(edited, at_step(p, 1), T0 + timedelta(minutes=15))
    assert decision.after.step == 1
    assert decision.after.percent == 5
    assert decision.action is Action.HOLD  # the longer hold now applies to the current step
    assert "5m of the 20m hold left" in decision.reason


def test_a_new_revision_with_a_lower_limit_lowers_exposure() -> None:
    p = policy()
    lower = (
        load_text(POLICY.replace("{extra}", "").replace("    - {percent: 10, hold: 30m}\n", ""), "cache.yaml")
        .policies[0]
        .policy
    )
    decision = run(lower, at_step(p, 2), T0 + timedelta(minutes=1))
    assert decision.action is Action.ADJUST
    assert (decision.from_percent, decision.to_percent) == (10, 5)
    assert decision.after.step == 1


def test_turning_the_control_arm_on_restarts_the_count_of_both_arms() -> None:
    """The control arm is served from the edit on: counting the treatment from its first step and
    the control from the edit would compare different periods (and trip the sample-ratio check)."""
    text = POLICY.replace("      maxIncrease: 0.10\n", "")
    without = load_text(text.replace("{extra}", "  control: false\n"), "cache.yaml").policies[0].policy
    with_control = load_text(text.replace("{extra}", ""), "cache.yaml").policies[0].policy
    completed = at_step(without, 2).moved(status=Status.COMPLETED, exposed_since=T0)
    now = T0 + timedelta(days=3)
    decision = run(with_control, completed, now)
    assert (decision.after.status, decision.after.control, decision.after.percent) == (
        Status.COMPLETED,
        True,
        10,
    )
    assert decision.after.exposed_since == now
    assert exposure_window_seconds(decision.after, now + timedelta(minutes=1)) == 60
    assert any("control arm starts now" in note for note in decision.notes)
    off_again = run(without, decision.after, now + timedelta(hours=1))
    assert off_again.after.exposed_since == now  # removing the control arm does not restart it


# Humans -----------------------------------------------------------------------------------------


def test_stop_goes_to_zero_at_once_and_needs_a_reason() -> None:
    p = policy()
    decision = stop(at_step(p, 2), "p99 alarms on checkout", T0)
    assert decision.action is Action.STOP
    assert (decision.after.percent, decision.after.status) == (0, Status.STOPPED)
    assert decision.after.reason == "p99 alarms on checkout"
    with pytest.raises(UsageError, match="reason"):
        stop(at_step(p, 2), "  ", T0)


def test_pause_freezes_progress_but_not_the_safety_net() -> None:
    p = policy()
    paused = pause(at_step(p, 0), "waiting for the sale to end", T0).after
    decision = run(p, paused, T0 + timedelta(hours=2))
    assert decision.action is Action.HOLD
    assert "paused" in decision.reason
    assert run(p, paused, T0, {("error-rate", Arm.TREATMENT): 0.5}).action is Action.ROLLBACK
    with pytest.raises(UsageError):
        pause(paused, "", T0)


def test_resume_continues_a_paused_rollout_with_a_fresh_hold() -> None:
    p = policy()
    paused = pause(at_step(p, 0), "", T0).after
    later = T0 + timedelta(hours=2)
    resumed = resume(paused, "", later).after
    assert (resumed.status, resumed.step, resumed.step_started_at) == (Status.PROGRESSING, 0, later)
    assert run(p, resumed, later + timedelta(minutes=1)).action is Action.HOLD


def test_resume_restarts_a_stopped_or_rolled_back_ramp_from_the_first_step() -> None:
    p = policy()
    for state in (stop(at_step(p, 2), "x", T0).after, rolled_back(p)):
        resumed = resume(state, "fixed", T0).after
        assert (resumed.status, resumed.step, resumed.percent) == (Status.PROGRESSING, NOT_STARTED, 0)
        assert run(p, resumed, T0).action is Action.ADVANCE
    with pytest.raises(UsageError):
        resume(at_step(p, 0), "", T0)


# Found in review -------------------------------------------------------------------------------


def test_exposure_left_below_the_first_step_by_an_edit_never_advances_on_missing_data() -> None:
    p = policy()
    higher = (
        load_text(
            POLICY.replace("{extra}", "").replace("{percent: 1, hold: 5m}", "{percent: 2, hold: 5m}"),
            "cache.yaml",
        )
        .policies[0]
        .policy
    )
    exposed = at_step(p, 0)  # 1 %, below the new first step (2 %)
    blind = {
        ("error-rate", Arm.TREATMENT): Reading.no_data("NaN"),
        ("p95", Arm.TREATMENT): Reading.no_data("empty result"),
    }
    assert run(higher, exposed, T0 + timedelta(hours=1), blind).action is Action.HOLD
    early = run(higher, exposed, T0 + timedelta(minutes=2))
    assert early.action is Action.HOLD
    assert "3m of the 5m hold left at 1 %" in early.reason
    later = run(higher, exposed, T0 + timedelta(minutes=5))
    assert (later.action, later.to_percent) == (Action.ADVANCE, 2)
    assert run(higher, exposed, T0, {("error-rate", Arm.TREATMENT): 0.5}).action is Action.ROLLBACK


def test_checkpoint_queries_are_asked_throughout_the_last_step() -> None:
    p = policy(
        "  checkpoint:\n    expect:\n      - name: conversion\n"
        '        query: sum(orders{v="{{variant}}"}) / sum(visits{v="{{variant}}"})\n'
        "        minDelta: 0.01\n"
    )
    state = at_step(p, 2)
    planned = queries_for(p, state, T0 + timedelta(minutes=29, seconds=59))  # hold not yet over
    assert any(q.key.source is Source.CHECKPOINT for q in planned)
    values = readings(planned, {("conversion", Arm.TREATMENT): 0.05, ("conversion", Arm.CONTROL): 0.03})
    decision = decide(p, state, planned, values, T0 + timedelta(minutes=30, seconds=5))
    assert decision.action is Action.COMPLETE
    assert decision.checkpoint is Outcome.PASS
    assert all(c.query for c in decision.checks)


def test_a_cosmetic_edit_keeps_a_completed_rollout_complete() -> None:
    p = with_checkpoint()
    completed = at_step(p, 2, status=Status.COMPLETED)
    edited = policy(
        CHECKPOINT.replace("{on_pass}", "complete").replace("{on_fail}", "rollback")
        + "  review: 2027-02-01\n"
    )
    slower = {("p95", Arm.TREATMENT): 0.195, ("p95", Arm.CONTROL): 0.200}  # would fail the checkpoint
    decision = run(edited, completed, T0 + timedelta(days=2), slower)
    assert decision.action is Action.HOLD
    assert decision.after.status is Status.COMPLETED
    assert decision.after.revision == edited.revision


def test_a_ratio_to_a_zero_control_is_no_data_not_a_failure() -> None:
    p = policy()
    zero_control = {("p95", Arm.TREATMENT): 0.010, ("p95", Arm.CONTROL): 0.0}
    decision = run(p, at_step(p, 1), T0 + timedelta(minutes=1), zero_control)
    assert decision.action is Action.HOLD
    check = next(c for c in decision.checks if c.rule == "maxIncrease")
    assert check.verdict is Outcome.NO_DATA
    assert "maxDelta" in check.detail


def test_a_step_without_its_clock_never_advances() -> None:
    p = policy()
    no_clock = at_step(p, 0).moved(step_started_at=None)
    decision = run(p, no_clock, T0 + timedelta(days=1))
    assert decision.action is Action.HOLD


@pytest.mark.parametrize(
    "edit",
    [
        ("  owner: sre-lead\n", "  owner: payments-oncall\n"),
        ("  flag: {key: cache}\n", "  review: 2027-03-01\n  flag: {key: cache}\n"),
    ],
)
def test_an_old_style_revision_is_still_recognised_after_an_owner_or_review_edit(
    edit: tuple[str, str],
) -> None:
    """The flag file was written before administrative fields left the revision (its revision is the
    hash of the whole policy, owner and review included) and the policy's owner or review date was
    edited before the first cycle of this version: the flag records the old owner and review, so it
    is the same revision, and the rolled-back rollout is not restarted."""
    p = policy()
    edited = load_text(POLICY.replace("{extra}", "").replace(*edit), "cache.yaml").policies[0].policy
    assert edited.revision == p.revision
    assert edited.legacy_revision != p.legacy_revision
    old_style = rolled_back(p).moved(revision=p.legacy_revision)
    decision = run(edited, old_style, T0 + timedelta(hours=1))
    assert (decision.after.status, decision.after.percent) == (Status.ROLLED_BACK, 0)
    assert decision.after.revision == edited.revision
    assert (decision.after.owner, decision.after.review) == (edited.spec.owner, edited.spec.review)
    completed = at_step(p, 2, status=Status.COMPLETED).moved(revision=p.legacy_revision)
    kept = run(edited, completed, T0 + timedelta(hours=1)).after
    assert (kept.status, kept.exposed_since, kept.revision) == (Status.COMPLETED, None, edited.revision)
