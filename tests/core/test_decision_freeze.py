"""Decisions under ``kind: Freeze`` documents: a due start, advance or promotion of a covered rollout
waits (a hold naming the freeze), while guardrails stay armed and a completion is not held; freezes
added and removed between cycles never let an advance through and never block a rollback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.decision import Decision, decide, queries_for, rebase
from controller.core.freezes import StandingFreeze, covering, invalid
from controller.core.policy import Policy
from controller.core.queries import Arm
from controller.core.records import Context, to_record
from controller.core.state import NOT_STARTED, Action, RolloutState, Status
from tests.core.test_decision import CHECKPOINT, at_step, readings
from tests.core.test_freezes import HOLIDAYS, freeze, labelled

CHRISTMAS = datetime(2026, 12, 24, 10, 0, tzinfo=UTC)
FAILING = {("error-rate", Arm.TREATMENT): 0.5}


def run(
    p: Policy,
    stored: RolloutState | None,
    now: datetime,
    freezes: Sequence[StandingFreeze],
    changes: dict[tuple[str, Arm], float] | None = None,
) -> Decision:
    state = rebase(p, stored, now).state
    queries = queries_for(p, state, now)
    return decide(p, stored, queries, readings(queries, changes), now, freezes=freezes)


def test_a_covered_due_advance_waits_and_names_the_freeze() -> None:
    p = labelled()
    state = at_step(p, 0, started=CHRISTMAS - timedelta(hours=1))
    decision = run(p, state, CHRISTMAS, [freeze(HOLIDAYS)])
    assert decision.action is Action.HOLD
    assert decision.after == state
    assert not decision.writes
    assert decision.waiting is not None
    assert decision.waiting.reason == "freeze"
    assert decision.reason.startswith(
        "frozen by Freeze holiday-freeze (holiday freeze), until 2027-01-02 00:00 UTC: wait for the end "
        "of the freeze Sat 2027-01-02 00:00 UTC, in 8d14h; due: all 5 checks pass and the 5m hold at 1 % "
        "is over: step 2/3 at 5 %"
    )
    record = to_record(decision, Context("cache", policy=p), CHRISTMAS)
    assert record["waiting"]["reason"] == "freeze"
    assert record["waiting"]["documents"][0]["name"] == "holiday-freeze"
    assert record["waiting"]["until_removed"] is False


def test_it_advances_at_the_first_evaluation_after_the_freeze() -> None:
    p = labelled()
    state = at_step(p, 0, started=CHRISTMAS - timedelta(hours=1))
    end = datetime(2027, 1, 2, tzinfo=UTC)
    assert run(p, state, end - timedelta(seconds=1), [freeze(HOLIDAYS)]).action is Action.HOLD
    assert run(p, state, end, [freeze(HOLIDAYS)]).action is Action.ADVANCE


def test_an_uncovered_rollout_advances() -> None:
    p = labelled("{team: search}")
    state = at_step(p, 0, started=CHRISTMAS - timedelta(hours=1))
    assert run(p, state, CHRISTMAS, [freeze(HOLIDAYS)]).action is Action.ADVANCE


def test_the_start_waits() -> None:
    decision = run(labelled(), None, CHRISTMAS, [freeze(HOLIDAYS)])
    assert decision.action is Action.HOLD
    assert decision.after.step == NOT_STARTED
    assert decision.waiting is not None
    assert "; due: rollout starts: step 1/3 at 1 %" in decision.reason


def test_a_failing_guardrail_rolls_back_while_frozen() -> None:
    p = labelled()
    decision = run(p, at_step(p, 1, started=CHRISTMAS), CHRISTMAS, [freeze(HOLIDAYS)], FAILING)
    assert decision.action is Action.ROLLBACK
    assert decision.after.percent == 0
    assert decision.waiting is None


def test_a_promotion_waits_and_a_completion_does_not() -> None:
    for on_pass, expected in (("promote", Action.HOLD), ("complete", Action.COMPLETE)):
        p = labelled(extra=CHECKPOINT.replace("{on_pass}", on_pass).replace("{on_fail}", "rollback"))
        state = at_step(p, 2, started=CHRISTMAS - timedelta(days=1))
        decision = run(p, state, CHRISTMAS, [freeze(HOLIDAYS)], {("p95", Arm.TREATMENT): 0.1})
        assert decision.action is expected, decision.reason
        assert (decision.waiting is not None) is (expected is Action.HOLD)


def test_an_invalid_freeze_holds_every_rollout_but_not_a_rollback() -> None:
    broken = invalid("freezes.yaml:1", "line 5: spec.form: unknown field 'form'", "holiday-freeze")
    p = labelled("{team: search}")
    state = at_step(p, 0, started=CHRISTMAS - timedelta(hours=1))
    held = run(p, state, CHRISTMAS, [broken])
    assert held.action is Action.HOLD
    assert "does not validate (line 5: spec.form: unknown field 'form')" in held.reason
    assert "wait until Freeze holiday-freeze is removed or fixed" in held.reason
    assert run(p, state, CHRISTMAS, [broken], FAILING).action is Action.ROLLBACK


# Freezes added and removed between cycles ------------------------------------------------------------

START = datetime(2026, 12, 20, tzinfo=UTC)
FREEZES = (
    freeze(HOLIDAYS),
    freeze({"from": "2026-12-20T00:00:00Z", "reason": "incident"}, "incident"),
    freeze({**HOLIDAYS, "selector": {"matchLabels": {"team": "search"}}}, "search-only"),
    invalid("broken.yaml:1", "spec.from: missing required field 'from'"),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=6 * 60),  # minutes to the next cycle
            st.sets(st.sampled_from(range(len(FREEZES)))),  # the freezes in the directory that cycle
            st.booleans(),  # a guardrail fails
        ),
        min_size=1,
        max_size=40,
    )
)
def test_freezes_never_let_an_advance_through_and_never_block_a_rollback(
    cycles: list[tuple[int, set[int], bool]],
) -> None:
    p = labelled(extra=CHECKPOINT.replace("{on_pass}", "promote").replace("{on_fail}", "rollback"))
    now = START
    stored: RolloutState | None = None
    for minutes, present, fails in cycles:
        now += timedelta(minutes=minutes)
        freezes = [FREEZES[i] for i in sorted(present)]
        changes = {**FAILING, ("p95", Arm.TREATMENT): 0.1} if fails else {("p95", Arm.TREATMENT): 0.1}
        decision = run(p, stored, now, freezes, changes)
        before = decision.from_percent
        if covering(p, freezes, now):
            assert decision.to_percent <= before, decision.reason
            assert decision.action not in {Action.ADVANCE, Action.PROMOTE}
        if (
            fails
            and before > 0
            and decision.before is not None
            and decision.before.status is Status.PROGRESSING
        ):
            assert decision.action is Action.ROLLBACK, decision.reason
        stored = decision.after


def test_a_backtest_replays_the_freezes_at_their_dates() -> None:
    from controller.core.backtest import evaluation_times, replay
    from tests.core.test_backtest import POLICY as REPLAYED
    from tests.core.test_backtest import START, _answers, constant, load

    policy = load(REPLAYED)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    answers = _answers(policy, times, constant(times, 0.01))
    plain = replay(policy, times, answers, {})
    window = {"from": START.isoformat(), "to": (START + timedelta(minutes=30)).isoformat()}
    frozen = replay(policy, times, answers, {}, freezes=[freeze({**window, "reason": "drill"}, "drill")])
    assert plain.moves[0].at == START
    assert frozen.moves[0].at == START + timedelta(minutes=30)
    assert (plain.moves[1].at, frozen.moves[1].at) == (
        START + timedelta(minutes=10),
        START + timedelta(minutes=40),
    )
