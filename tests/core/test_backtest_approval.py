"""``flagroll backtest`` and approval gates: the replay has no human to approve, so a rollout that
reaches a step with ``approval: required`` holds there, awaiting approval, for the rest of the window;
its guardrails are still judged and a failure still rolls it back."""

from __future__ import annotations

from datetime import timedelta

from controller.core.backtest import evaluation_times, replay
from controller.core.backtestranges import RangeAnswer, Series, to_ms
from controller.core.backtestreport import as_dict, render_text
from controller.core.state import Action
from tests.core.test_backtest import POLICY, START, _answers, constant, load

GATED = POLICY.replace("- {percent: 5, hold: 10m}", "- {percent: 5, hold: 10m, approval: required}")


def test_the_replay_holds_at_the_gate_without_a_human() -> None:
    policy = load(GATED)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    result = replay(policy, times, _answers(policy, times, constant(times, 0.01)), {})
    assert [(m.action, m.to_percent) for m in result.moves] == [(Action.ADVANCE, 5.0)]
    assert result.final is not None
    assert result.final.awaiting_approval
    assert result.first_rollback is None
    assert render_text(result, 10)
    assert as_dict(result, 10)


def test_a_failure_while_awaiting_approval_still_rolls_back_in_the_replay() -> None:
    policy = load(GATED)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    late = START + timedelta(hours=1)
    errors = RangeAnswer((Series({}, {to_ms(t): (0.5 if t >= late else 0.01) for t in times}),))
    result = replay(policy, times, _answers(policy, times, errors), {})
    assert [m.action for m in result.moves] == [Action.ADVANCE, Action.ROLLBACK]
    assert result.moves[-1].at == late
