"""Decisions under ``spec.schedule``: a due move that changes exposure waits outside the change windows
and inside a freeze, and is taken at the first evaluation inside a window; guardrails stay armed.

``T0`` (2026-11-21 12:00 UTC) is a Saturday; the office window is Mon–Thu 09:00–16:00 in Berlin, so the
next opening is Mon 2026-11-23 08:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.changewindows import is_open
from controller.core.commands import resume
from controller.core.decision import Decision, decide, queries_for, rebase
from controller.core.queries import Arm, Reading
from controller.core.state import NOT_STARTED, Action, RolloutState, Status
from tests.core.test_decision import CHECKPOINT, T0, at_step, policy, readings, run

OFFICE = """\
  schedule:
    timezone: Europe/Berlin
    windows:
      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}
"""
HOLIDAYS = """\
  schedule:
    timezone: Europe/Berlin
    windows:
      - {days: [mon, tue, wed, thu, fri], from: "09:00", to: "16:00"}
    freeze:
      - {from: 2026-12-24, to: 2027-01-02, reason: "holiday freeze"}
"""
MONDAY = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 in Berlin
FAILING = {("error-rate", Arm.TREATMENT): 0.5}


def test_a_due_advance_waits_outside_a_window() -> None:
    p = policy(OFFICE)
    state = at_step(p, 0, started=T0 - timedelta(hours=1))  # the 5m hold is long over
    decision = run(p, state, T0)
    assert decision.action is Action.HOLD
    assert decision.after == state
    assert not decision.writes
    assert decision.waiting is not None
    assert decision.waiting.reason == "window"
    assert decision.reason.startswith(
        "outside the change windows: wait for the window Mon 09:00 Europe/Berlin (08:00 UTC), in 1d20h; "
        "due: all 5 checks pass and the 5m hold at 1 % is over: step 2/3 at 5 %"
    )


def test_it_advances_at_the_first_evaluation_inside_the_window() -> None:
    p = policy(OFFICE)
    state = at_step(p, 0, started=T0 - timedelta(hours=1))
    assert run(p, state, MONDAY - timedelta(seconds=1)).action is Action.HOLD
    decision = run(p, state, MONDAY)
    assert decision.action is Action.ADVANCE
    assert decision.waiting is None
    assert decision.after.step == 1
    assert decision.after.step_started_at == MONDAY


def test_a_failing_guardrail_rolls_back_outside_a_window() -> None:
    p = policy(HOLIDAYS)
    state = at_step(p, 1, started=T0)
    decision = run(p, state, datetime(2026, 12, 25, 3, 0, tzinfo=UTC), FAILING)
    assert decision.action is Action.ROLLBACK
    assert decision.after.percent == 0
    assert decision.waiting is None


def test_the_start_waits_for_a_window_and_starts_inside_it() -> None:
    p = policy(OFFICE)
    decision = run(p, None, T0)
    assert decision.action is Action.HOLD
    assert decision.after.step == NOT_STARTED
    assert decision.waiting is not None
    assert "; due: rollout starts: step 1/3 at 1 %" in decision.reason
    started = run(p, decision.after, MONDAY + timedelta(seconds=30))
    assert started.action is Action.ADVANCE
    assert started.after.percent == 1


def test_a_window_open_when_the_rollout_starts_lets_it_start_at_once() -> None:
    p = policy(OFFICE)
    decision = run(p, None, MONDAY + timedelta(hours=2))
    assert decision.action is Action.ADVANCE
    assert decision.after.percent == 1


def test_a_freeze_says_its_reason_and_when_the_next_window_opens() -> None:
    p = policy(HOLIDAYS)
    state = at_step(p, 0, started=datetime(2026, 12, 23, 14, 0, tzinfo=UTC))
    moment = datetime(2026, 12, 24, 10, 0, tzinfo=UTC)
    decision = run(p, state, moment)
    assert decision.action is Action.HOLD
    assert decision.waiting is not None
    assert decision.waiting.reason == "freeze"
    assert decision.reason.startswith(
        "frozen 2026-12-24 to 2027-01-02 (holiday freeze): wait for the window "
        "Mon 2027-01-04 09:00 Europe/Berlin (08:00 UTC), in 10d22h; due: "
    )
    assert run(p, state, datetime(2027, 1, 4, 8, 0, tzinfo=UTC)).action is Action.ADVANCE


def test_a_hold_that_is_not_over_is_not_a_wait() -> None:
    p = policy(OFFICE)
    state = at_step(p, 0, started=T0)
    decision = run(p, state, T0 + timedelta(minutes=1))
    assert decision.action is Action.HOLD
    assert decision.waiting is None
    assert "4m of the 5m hold left" in decision.reason


def test_no_data_and_pause_hold_for_their_own_reasons_outside_a_window() -> None:
    p = policy(OFFICE)
    state = at_step(p, 0, started=T0 - timedelta(hours=1))
    no_data = run(p, state, T0, {("traffic", Arm.TREATMENT): Reading.of(3.0)})
    assert no_data.action is Action.HOLD
    assert no_data.waiting is None
    assert no_data.reason.startswith("no_data")
    paused = run(p, state.moved(status=Status.PAUSED), T0)
    assert paused.waiting is None
    assert paused.reason.startswith("paused")


def test_promote_waits_but_complete_changes_no_exposure_and_goes_ahead() -> None:
    last = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the last step's 30m hold is long over
    promote = policy(CHECKPOINT.replace("{on_pass}", "promote").replace("{on_fail}", "rollback") + OFFICE)
    waiting = run(promote, at_step(promote, 2, started=last), T0)
    assert waiting.action is Action.HOLD
    assert waiting.waiting is not None
    assert "due: the last step's 30m hold is over; checkpoint passed" in waiting.reason
    assert run(promote, at_step(promote, 2, started=last), MONDAY).action is Action.PROMOTE
    complete = policy(CHECKPOINT.replace("{on_pass}", "complete").replace("{on_fail}", "rollback") + OFFICE)
    assert run(complete, at_step(complete, 2, started=last), T0).action is Action.COMPLETE
    plain = policy(OFFICE)
    assert run(plain, at_step(plain, 2, started=last), T0).action is Action.COMPLETE


def test_a_failing_checkpoint_still_rolls_back_outside_a_window() -> None:
    last = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    p = policy(CHECKPOINT.replace("{on_pass}", "promote").replace("{on_fail}", "rollback") + OFFICE)
    decision = run(p, at_step(p, 2, started=last), T0, {("p95", Arm.TREATMENT): 0.199})
    assert decision.action is Action.ROLLBACK


def test_editing_the_schedule_is_not_a_new_revision() -> None:
    plain, office, holidays = policy(), policy(OFFICE), policy(HOLIDAYS)
    assert plain.revision == office.revision == holidays.revision
    state = at_step(office, 1, started=T0)
    assert rebase(holidays, state, T0 + timedelta(minutes=1)).notes == ()


# --- a simulated week --------------------------------------------------------------------------------

WEEK_SCHEDULE = """\
  schedule:
    timezone: Europe/Berlin
    windows:
      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}
      - {days: [fri], from: "22:00", to: "02:00"}
    freeze:
      - {from: 2026-11-25, to: 2026-11-25, reason: "release day"}
"""
WEEK_START = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)  # a Sunday
EVALUATION = timedelta(minutes=10)
EVALUATIONS = 7 * 24 * 6 + 12


def _week(
    start: int, failures: set[int], gaps: set[int], resumes: set[int]
) -> list[tuple[int, datetime, RolloutState, Decision]]:
    """Evaluate the rollout every 10 minutes for a week from ``start`` evaluations after
    ``WEEK_START``: the guardrail fails at ``failures``, traffic is missing at ``gaps``, and a
    rolled-back rollout is resumed at ``resumes``. Returns each (index, now, state judged, decision)."""
    p = policy(WEEK_SCHEDULE)
    stored: RolloutState | None = None
    seen = []
    for i in range(EVALUATIONS):
        now = WEEK_START + EVALUATION * (start + i)
        if stored is not None and stored.status is Status.ROLLED_BACK and i in resumes:
            stored = resume(stored, "try again", now).after
        state = rebase(p, stored, now).state
        queries = queries_for(p, state, now)
        gap = {("traffic", Arm.TREATMENT): Reading.of(1.0)}
        changes = FAILING if i in failures else gap if i in gaps else {}
        decision = decide(p, stored, queries, readings(queries, changes), now)
        seen.append((i, now, state, decision))
        stored = decision.after
    return seen


def test_a_healthy_rollout_waits_over_an_evening_and_a_freeze_and_completes() -> None:
    tuesday = 2 * 144 + 89  # Tue 2026-11-24 14:50 UTC, 15:50 in Berlin: ten minutes of window left
    seen = _week(tuesday, set(), set(), set())
    moves = [(now, d.action) for _, now, _, d in seen if d.action is not Action.HOLD]
    assert [action for _, action in moves] == [Action.ADVANCE] * 3 + [Action.COMPLETE]
    assert moves[0][0] == datetime(2026, 11, 24, 14, 50, tzinfo=UTC)
    assert moves[1][0] == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)  # Thursday 09:00 in Berlin
    reasons = [d.waiting.reason for _, _, _, d in seen if d.waiting is not None]
    assert reasons[0] == "window"
    assert "freeze" in reasons
    assert reasons[-1] == "window"


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(0, 7 * 24 * 6),
    failures=st.sets(st.integers(0, EVALUATIONS - 1), max_size=6),
    gaps=st.sets(st.integers(0, EVALUATIONS - 1), max_size=20),
    resumes=st.sets(st.integers(0, EVALUATIONS - 1), max_size=8),
)
def test_over_a_week_moves_land_only_inside_windows_and_failures_always_roll_back(
    start: int, failures: set[int], gaps: set[int], resumes: set[int]
) -> None:
    schedule = policy(WEEK_SCHEDULE).spec.schedule
    assert schedule is not None
    due_and_waiting = False
    for i, now, state, decision in _week(start, failures, gaps, resumes):
        exposed = state.percent > 0 and state.status in {Status.PROGRESSING, Status.COMPLETED}
        if i in failures and exposed:
            assert decision.action is Action.ROLLBACK, (now, decision.reason)
        if decision.action in {Action.ADVANCE, Action.PROMOTE}:
            assert is_open(schedule, now), (now, decision.reason)
        if decision.waiting is not None:
            assert not is_open(schedule, now), now
            assert decision.action is Action.HOLD
            assert decision.waiting.opens_at is not None
            assert decision.waiting.opens_at > now
        if due_and_waiting and is_open(schedule, now) and i not in failures and i not in gaps:
            # the first evaluation inside a window takes the move that was waiting
            assert decision.action in {Action.ADVANCE, Action.COMPLETE}, (now, decision.reason)
        due_and_waiting = decision.waiting is not None
