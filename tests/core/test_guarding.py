"""What happens to a flag no policy judges (controller.core.guarding): pure functions of state and now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.core.decision import rebase
from controller.core.guarding import Grace, adopted, handover, unjudged
from controller.core.ownership import Candidate, Unmanaged, Why, exposure_change
from controller.core.state import NOT_STARTED, Action, RolloutState, Status
from tests.support.policytext import BASE, load

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GRACE = Grace(cycles=3, seconds=120)


def state(
    percent: float = 5.0, *, rollback_on_delete: bool = False, status: Status = Status.PROGRESSING
) -> RolloutState:
    return RolloutState(
        policy="cache",
        revision="abc123def456",
        status=status,
        step=0 if percent else NOT_STARTED,
        steps=2,
        percent=percent,
        control=True,
        step_started_at=T0,
        updated_at=T0,
        rollback_on_delete=rollback_on_delete,
    )


def test_a_blocked_exposed_flag_is_marked_unguarded_and_recorded_without_touching_what_it_serves() -> None:
    move = unjudged(state(), Why.BLOCKED, "its policy 'cache' is in a file that failed: x", T0, GRACE)
    assert move is not None
    assert move.record
    assert move.marks_only  # only flagroll's marks in the metadata: never its targeting
    after = move.decision.after
    assert after.unguarded
    assert (after.unguarded_since, after.unguarded_noticed_at) == (T0, T0)
    assert (after.percent, after.step, after.status) == (5.0, 0, Status.PROGRESSING)
    assert move.decision.reason.startswith("UNGUARDED: 5 % exposed and guardrails NOT evaluated")
    assert not move.reminder


def test_an_unguarded_notice_is_repeated_on_change_and_every_ten_minutes_not_every_cycle() -> None:
    first = unjudged(state(), Why.BLOCKED, "reason A", T0, GRACE)
    assert first is not None
    marked = first.decision.after
    assert unjudged(marked, Why.BLOCKED, "reason A", T0 + timedelta(minutes=9), GRACE) is None
    changed = unjudged(marked, Why.BLOCKED, "reason B", T0 + timedelta(minutes=1), GRACE)
    assert changed is not None
    assert changed.record
    assert not changed.reminder
    assert changed.decision.after.unguarded_since == T0  # the same spell
    reminder = unjudged(marked, Why.BLOCKED, "reason A", T0 + timedelta(minutes=10), GRACE)
    assert reminder is not None
    assert reminder.record
    assert reminder.reminder


def test_a_flag_nobody_is_exposed_to_loses_its_unguarded_mark_quietly() -> None:
    assert unjudged(state(0.0), Why.BLOCKED, "x", T0, GRACE) is None
    marked = state(0.0).moved(unguarded_reason="UNGUARDED: …", unguarded_since=T0, unguarded_noticed_at=T0)
    move = unjudged(marked, Why.BLOCKED, "x", T0, GRACE)  # stopped by a human meanwhile
    assert move is not None
    assert not move.record
    assert not move.decision.after.unguarded


def test_a_hand_edited_flag_is_reported_and_never_counted() -> None:
    current = state(rollback_on_delete=True)
    move = unjudged(current, Why.ABSENT, "gone", T0, GRACE, edited="targeting serves 50 %")
    assert move is not None
    assert move.marks_only
    assert move.decision.after.absent_since is None
    assert "exposed as edited by hand" in move.decision.reason
    assert "targeting serves 50 %" in move.decision.reason


def test_an_absent_flag_counts_its_grace_then_rolls_back_with_on_delete() -> None:
    current = state(rollback_on_delete=True)
    moments = [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]
    for moment in moments:
        move = unjudged(current, Why.ABSENT, "gone", moment, GRACE)
        assert move is not None
        assert move.decision.action is Action.HOLD
        current = move.decision.after
    assert (current.absent_since, current.absent_cycles, current.percent) == (T0, 3, 5.0)
    # Three cycles, not yet two minutes: still waiting, and nothing new to write or record.
    assert unjudged(current, Why.ABSENT, "gone", T0 + timedelta(seconds=119), GRACE) is None
    move = unjudged(current, Why.ABSENT, "gone", T0 + timedelta(seconds=120), GRACE)
    assert move is not None
    assert move.decision.action is Action.ROLLBACK
    assert move.decision.after.percent == 0
    assert move.decision.after.absent_since is None


def test_two_minutes_of_one_cycle_is_not_enough() -> None:
    current = state(rollback_on_delete=True)
    move = unjudged(current, Why.ABSENT, "gone", T0, GRACE)
    assert move is not None
    later = unjudged(move.decision.after, Why.ABSENT, "gone", T0 + timedelta(hours=1), GRACE)
    assert later is not None
    assert later.decision.action is Action.HOLD


def test_an_absent_flag_without_on_delete_stays_and_stops_counting_once_the_grace_is_over() -> None:
    current = state()
    for seconds in (0, 60, 120, 180):
        move = unjudged(current, Why.ABSENT, "gone", T0 + timedelta(seconds=seconds), GRACE)
        if move is not None:
            assert move.decision.action is Action.HOLD
            current = move.decision.after
    assert current.percent == 5.0
    assert current.absent_cycles == 3


def test_a_successor_takes_the_flag_over_after_the_grace_period() -> None:
    current = state(rollback_on_delete=True)
    actions = []
    for seconds in (0, 60, 120):
        move = unjudged(
            current, Why.ABSENT, "gone", T0 + timedelta(seconds=seconds), GRACE, successor="cache-v2"
        )
        assert move is not None
        actions.append(move.decision.action)
        current = move.decision.after
    assert actions == [Action.HOLD, Action.HOLD, Action.ADOPT]  # handed over, not rolled back
    assert current.policy == "cache-v2"
    assert current.percent == 5.0
    assert current.absent_since is None


def test_an_unexposed_flag_waiting_for_a_successor_counts_silently() -> None:
    move = unjudged(state(0.0), Why.ABSENT, "gone", T0, GRACE, successor="next")
    assert move is not None
    assert not move.record
    assert move.decision.writes


def test_a_blocked_flag_starts_the_count_again() -> None:
    """The grace period counts absences in a row: an owner back in a broken file resets it."""
    current = state(rollback_on_delete=True).moved(absent_since=T0, absent_cycles=2)
    move = unjudged(current, Why.BLOCKED, "broken", T0 + timedelta(hours=1), GRACE)
    assert move is not None
    assert move.decision.action is Action.HOLD
    assert (move.decision.after.absent_since, move.decision.after.absent_cycles) == (None, 0)


def test_a_human_handover_names_who() -> None:
    decision = handover(state(), "cache-v2", T0, "", by="human:alice")
    assert decision.action is Action.ADOPT
    assert decision.after.policy == "cache-v2"
    assert "by human:alice" in decision.reason


def test_adoption_says_whose_exposure_changes() -> None:
    policy = load(BASE).policies[0].policy
    off = Unmanaged("cache", True, False, "variant 'off' (false) to everyone")
    on = Unmanaged("cache", True, True, "variant 'on' (true) to everyone")
    disabled = Unmanaged("cache", True, None, "nothing: it is DISABLED", disabled=True)
    taker = Candidate("cache", "cache", "cache.yaml:1", off=False, replace=True)
    quiet = adopted(policy, off.description, exposure_change(taker, off), T0)
    assert quiet.action is Action.ADOPT
    assert quiet.before is None
    assert quiet.after.percent == 0
    assert "nobody's exposure changes" in quiet.reason
    loud = adopted(policy, on.description, exposure_change(taker, on), T0)
    assert "variant 'on' (true) to everyone" in loud.reason
    assert "EXPOSURE CHANGES" in loud.reason
    assert "switched to it" in loud.reason
    woken = adopted(policy, disabled.description, exposure_change(taker, disabled), T0)
    assert "clients whose default differs change" in woken.reason  # not "nobody's exposure changes"


def test_a_policy_judging_a_flag_again_clears_its_absence() -> None:
    policy = load(BASE).policies[0].policy
    stored = state().moved(policy=policy.name, revision=policy.revision, absent_since=T0, absent_cycles=2)
    rebased = rebase(policy, stored, T0 + timedelta(minutes=1))
    assert rebased.state.absent_since is None
    assert rebased.state.absent_cycles == 0
    assert any("judged again" in note for note in rebased.notes)
