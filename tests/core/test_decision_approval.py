"""Approval gates: after a step with ``approval: required`` has held and every check passes, the next
move waits for ``flagroll approve``; guardrails stay armed, and an approval is for its step only (a
rollback or a restart needs a new one)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import approval
from controller.core.commands import approve, pause, resume, stop
from controller.core.decision import Decision, rebase
from controller.core.errors import NotAwaitingApprovalError, UsageError
from controller.core.policy import Policy
from controller.core.queries import Arm, Reading
from controller.core.state import NOT_STARTED, Action, RolloutState, Status
from tests.core.test_decision import CHECKPOINT, POLICY, T0, at_step, run
from tests.core.test_decision_schedule import MONDAY, OFFICE
from tests.support.policytext import load, the_policy

FAILING: dict[tuple[str, Arm], Reading | float] = {("error-rate", Arm.TREATMENT): 0.5}
NO_DATA: dict[tuple[str, Arm], Reading | float] = {("traffic", Arm.TREATMENT): Reading.of(3.0)}
GATED = "{percent: 5, hold: 10m, approval: required}"


def load_one(text: str) -> Policy:
    return the_policy(load(text))


def gated(extra: str = "", last: bool = False) -> Policy:
    """The test policy with ``approval: required`` on its second step (or on its last)."""
    text = POLICY.replace("{extra}", extra)
    if last:
        text = text.replace("{percent: 10, hold: 30m}", "{percent: 10, hold: 30m, approval: required}")
    else:
        text = text.replace("{percent: 5, hold: 10m}", GATED)
    return load_one(text)


def over(p: Policy) -> RolloutState:
    """At the gated second step, its 10m hold over at ``T0``."""
    return at_step(p, 1, started=T0 - timedelta(minutes=11))


def test_after_the_hold_it_awaits_approval_instead_of_advancing() -> None:
    p = gated()
    decision = run(p, over(p), T0)
    assert decision.action is Action.HOLD
    assert decision.after.step == 1
    assert decision.after.awaiting_approval_since == T0
    assert decision.after.shown_status == "awaiting_approval"
    assert decision.after.status is Status.PROGRESSING  # stored as progressing: guardrails armed
    assert decision.writes  # the wait is written once, when it begins
    assert decision.waiting is not None
    assert decision.waiting.reason == "approval"
    assert decision.reason.startswith(
        "awaiting approval of step 2/3 at 5 %: approve with `flagroll approve cache --reason …` "
        "(waiting 0s); due: all 5 checks pass and the 10m hold at 5 % is over: step 3/3 at 10 %"
    )
    later = run(p, decision.after, T0 + timedelta(hours=3))
    assert later.action is Action.HOLD
    assert later.after.awaiting_approval_since == T0  # still since the wait began
    assert not later.writes  # nothing new to write: the wait is not told again
    assert "(waiting 3h)" in later.reason


def test_a_step_without_approval_advances_as_before_and_the_hold_is_not_cut_short() -> None:
    p = gated()
    first = at_step(p, 0, started=T0 - timedelta(minutes=6))
    assert run(p, first, T0).action is Action.ADVANCE
    early = run(p, at_step(p, 1, started=T0 - timedelta(minutes=5)), T0)
    assert early.action is Action.HOLD
    assert early.waiting is None
    assert early.after.awaiting_approval_since is None


def test_a_failing_guardrail_rolls_back_while_awaiting_approval() -> None:
    p = gated()
    waiting = run(p, over(p), T0).after
    decision = run(p, waiting, T0 + timedelta(minutes=1), FAILING)
    assert decision.action is Action.ROLLBACK
    assert decision.after.percent == 0
    assert decision.after.awaiting_approval_since is None
    assert decision.after.approved_step is None


def test_no_data_while_awaiting_holds_for_its_own_reason_and_keeps_the_wait() -> None:
    p = gated()
    waiting = run(p, over(p), T0).after
    decision = run(p, waiting, T0 + timedelta(minutes=1), NO_DATA)
    assert decision.action is Action.HOLD
    assert decision.after.awaiting_approval
    assert decision.reason.startswith("no_data")
    # The gauge and status read the record's waiting: a cycle without data does not make a rollout
    # that awaits a human look as if it waited for nothing (nor tell the wait again).
    assert isinstance(decision.waiting, approval.ApprovalWaiting)
    assert not decision.waiting.began


def test_an_approval_lets_the_next_cycle_advance() -> None:
    p = gated()
    waiting = run(p, over(p), T0).after
    approved = approve(waiting, "numbers look fine", T0 + timedelta(minutes=2))
    assert approved.action is Action.APPROVE
    assert approved.after.approved_step == 1
    assert approved.after.awaiting_approval_since is None
    assert approved.after.percent == 5  # an approval moves nothing by itself
    assert "approved by a human: numbers look fine" in approved.reason
    decision = run(p, approved.after, T0 + timedelta(minutes=3))
    assert decision.action is Action.ADVANCE
    assert decision.after.step == 2
    assert decision.after.approved_step is None
    assert decision.after.awaiting_approval_since is None


def test_an_approved_move_still_needs_passing_checks() -> None:
    p = gated()
    approved = approve(run(p, over(p), T0).after, "ok", T0).after
    assert run(p, approved, T0 + timedelta(minutes=1), NO_DATA).action is Action.HOLD
    assert run(p, approved, T0 + timedelta(minutes=1), FAILING).action is Action.ROLLBACK


def test_approve_refuses_a_rollout_that_does_not_await_approval() -> None:
    p = gated()
    with pytest.raises(NotAwaitingApprovalError, match="that is progressing; only one awaiting approval"):
        approve(at_step(p, 1), "early", T0)
    paused = at_step(p, 1, status=Status.PAUSED)
    with pytest.raises(NotAwaitingApprovalError, match="that is paused"):
        approve(paused, "x", T0)
    approved = approve(run(p, over(p), T0).after, "ok", T0).after
    with pytest.raises(NotAwaitingApprovalError, match="approved already"):
        approve(approved, "again", T0)
    with pytest.raises(UsageError, match="needs --reason"):
        approve(run(p, over(p), T0).after, "  ", T0)


def test_an_approval_does_not_survive_a_rollback_and_resume() -> None:
    p = gated()
    approved = approve(run(p, over(p), T0).after, "ok", T0).after
    rolled = run(p, approved, T0 + timedelta(seconds=30), FAILING).after
    restarted = resume(rolled, "fixed", T0 + timedelta(minutes=1)).after
    assert restarted.approved_step is None
    state = restarted
    now = T0 + timedelta(minutes=1)
    for _ in range(4):  # start, step 2 after 5m, then its 10m hold
        now += timedelta(minutes=11)
        state = run(p, state, now).after
    assert state.step == 1
    assert state.awaiting_approval
    assert run(p, state, now + timedelta(hours=1)).action is Action.HOLD


def test_a_stop_clears_an_approval_and_a_pause_keeps_it() -> None:
    p = gated()
    approved = approve(run(p, over(p), T0).after, "ok", T0).after
    assert stop(approved, "incident", T0).after.approved_step is None
    paused = pause(approved, "lunch", T0).after
    resumed = resume(paused, "back", T0 + timedelta(minutes=1)).after
    assert resumed.approved_step == 1
    assert run(p, resumed, T0 + timedelta(minutes=12)).action is Action.ADVANCE


def test_a_pause_while_awaiting_restarts_the_wait_after_the_hold() -> None:
    p = gated()
    waiting = run(p, over(p), T0).after
    resumed = resume(pause(waiting, "", T0).after, "", T0 + timedelta(minutes=1)).after
    assert not resumed.awaiting_approval
    assert run(p, resumed, T0 + timedelta(minutes=5)).waiting is None  # its hold runs again
    assert run(p, resumed, T0 + timedelta(minutes=12)).after.awaiting_approval


def test_with_the_schedule_closed_an_approved_move_still_waits_for_the_window() -> None:
    p = gated(OFFICE)
    waiting = run(p, over(p), T0)  # Saturday: approval is asked for whatever the schedule
    assert waiting.waiting is not None
    assert waiting.waiting.reason == "approval"
    approved = approve(waiting.after, "ok for Monday", T0 + timedelta(minutes=5)).after
    saturday = run(p, approved, T0 + timedelta(minutes=6))
    assert saturday.action is Action.HOLD
    assert saturday.waiting is not None
    assert saturday.waiting.reason == "window"
    monday = run(p, approved, MONDAY)
    assert monday.action is Action.ADVANCE


@pytest.mark.parametrize("on_pass", ["complete", "promote"])
def test_approval_on_the_last_step_gates_the_checkpoint_move(on_pass: str) -> None:
    extra = CHECKPOINT.replace("{on_pass}", on_pass).replace("{on_fail}", "rollback")
    p = gated(extra, last=True)
    state = at_step(p, 2, started=T0 - timedelta(hours=1))
    decision = run(p, state, T0)
    assert decision.action is Action.HOLD
    assert decision.after.awaiting_approval
    then = "promoted to 100 %" if on_pass == "promote" else "rollout complete"
    assert decision.reason.endswith(then)
    approved = approve(decision.after, "ship it", T0).after
    moved = run(p, approved, T0 + timedelta(seconds=30))
    assert moved.action is (Action.PROMOTE if on_pass == "promote" else Action.COMPLETE)
    assert moved.after.approved_step is None


def test_a_failed_checkpoint_rolls_back_without_waiting_for_approval() -> None:
    extra = CHECKPOINT.replace("{on_pass}", "complete").replace("{on_fail}", "rollback")
    p = gated(extra, last=True)
    state = at_step(p, 2, started=T0 - timedelta(hours=1))
    worse = {("p95", Arm.TREATMENT): 0.199}  # passes the guardrail, fails minDecrease 0.25
    assert run(p, state, T0, worse).action is Action.ROLLBACK


def test_approval_on_the_last_step_without_a_checkpoint_gates_the_completion() -> None:
    p = gated(last=True)
    decision = run(p, at_step(p, 2, started=T0 - timedelta(hours=1)), T0)
    assert decision.after.awaiting_approval
    assert run(p, approve(decision.after, "ok", T0).after, T0).action is Action.COMPLETE


def test_approval_is_not_part_of_the_revision_and_an_edit_removing_it_releases_the_wait() -> None:
    plain, p = load_one(POLICY.replace("{extra}", "")), gated()
    assert plain.revision == p.revision
    assert plain.legacy_revision == p.legacy_revision
    explicit = load_one(POLICY.replace("{extra}", "").replace("hold: 10m}", "hold: 10m, approval: none}"))
    assert explicit.revision == p.revision
    waiting = run(p, over(p), T0).after
    assert rebase(plain, waiting, T0).state == waiting  # the same revision: nothing restarts
    released = run(plain, waiting, T0 + timedelta(minutes=1))
    assert released.action is Action.ADVANCE


def test_a_new_revision_needs_a_new_approval() -> None:
    p = gated()
    approved = approve(run(p, over(p), T0).after, "ok", T0).after
    revised = load_one(
        POLICY.replace("{extra}", "").replace("{percent: 5, hold: 10m}", GATED.replace("10m", "11m"))
    )
    assert revised.revision != p.revision
    decision = run(revised, approved, T0 + timedelta(minutes=1))
    assert decision.action is Action.HOLD
    assert decision.after.awaiting_approval


# A sequence of cycles, approvals, pauses, stops and resumes ---------------------------------------------

# Mostly healthy cycles and approvals, so that sequences reach the gate and pass it often.
EVENT = st.sampled_from(
    ["healthy"] * 5 + ["approve"] * 2 + ["failing", "no_data", "stop", "pause", "resume", "resume"]
)
GATE = 0  # the first step (1 %, held 5m) needs an approval; the next step is index 1


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(EVENT, st.integers(min_value=1, max_value=12)), min_size=1, max_size=60))
def test_the_step_after_a_gate_is_never_reached_without_an_approval_since_the_last_rollback(
    steps: list[tuple[str, int]],
) -> None:
    """Invariants over any sequence: the step after the gated one is reached only with an approval of
    the gated step recorded since the last rollback, stop or restart (a pause keeps it); a failing
    guardrail on an exposed rollout rolls back at once, awaiting approval or not; only a rollout
    awaiting approval at the gate can be approved."""
    p = load_one(
        POLICY.replace("{extra}", "").replace(
            "{percent: 1, hold: 5m}", "{percent: 1, hold: 5m, approval: required}"
        )
    )
    state: RolloutState | None = None
    now = T0
    approved = False  # an approval of the gate recorded since the last rollback, stop or restart
    for event, gap in steps:
        now += timedelta(minutes=gap)
        if event in {"approve", "stop", "pause", "resume"}:
            if state is None:
                continue
            act = {"approve": approve, "stop": stop, "pause": pause, "resume": resume}[event]
            try:
                human: Decision = act(state, "x", now)
            except (UsageError, NotAwaitingApprovalError):
                assert event != "approve" or not state.awaiting_approval
                continue
            if event == "approve":
                assert state.awaiting_approval
                assert state.step == GATE
                approved = True
            elif human.after.step == NOT_STARTED:  # a stop, or a restart; a pause keeps an approval
                approved = False
            state = human.after
            continue
        changes: dict[tuple[str, Arm], Reading | float] = {}
        changes.update({"failing": FAILING, "no_data": NO_DATA}.get(event, {}))
        decision = run(p, state, now, changes)
        if event == "failing" and state is not None and state.percent > 0:
            assert decision.action is Action.ROLLBACK  # never delayed, awaiting approval or not
        if decision.action is Action.ROLLBACK:
            approved = False
        if decision.after.step == GATE + 1 and (state is None or state.step != GATE + 1):
            assert approved, "the step after the gate was reached without an approval"
            approved = False
        if decision.after.awaiting_approval:
            assert decision.after.step == GATE
            assert decision.waiting is None or decision.waiting.reason == "approval"
        state = decision.after


def test_approval_waiting_reads_back_from_a_record() -> None:
    p = gated()
    decision = run(p, over(p), T0)
    assert decision.waiting is not None
    record = decision.waiting.as_record(T0 + timedelta(hours=1))
    assert record["reason"] == "approval"
    assert record["since"] == "2026-11-21T12:00:00Z"
    read = approval.waiting_read(record)
    assert read is not None
    assert read.describe(T0 + timedelta(hours=2)) == (
        "awaiting approval of step 2/3 at 5 %: approve with `flagroll approve cache --reason …` (waiting 2h)"
    )
    assert approval.waiting_read({"reason": "approval", "step": "x"}) is None
    assert approval.waiting_read({"reason": "window", "opens_at": None}) is not None
