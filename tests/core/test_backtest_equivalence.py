"""The replay's shortcuts change nothing: plans made once (only the counts' windows change) and the
report's checks reused by the decision give what the plain loop gives (``plan`` and ``queries_for``
every time, every check judged twice)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pytest

from controller.core.backtest import Replay, profile_window_seconds, replay, step_ms
from controller.core.backtestcounts import Counts, counted_key
from controller.core.backtestlog import Recorded
from controller.core.backtestranges import Failure, RangeAnswer, Series, readings_at, to_ms
from controller.core.checkrecord import Check
from controller.core.checks import guardrail_checks
from controller.core.decision import decide, initial_state, queries_for
from controller.core.policy import Policy
from controller.core.queries import Arm, Part, plan
from controller.core.state import ACTIVE, Action, RolloutState
from tests.core.test_backtest import POLICY, START, _answers
from tests.core.test_backtest_counts import POLICY as STATISTICAL
from tests.core.test_backtest_counts import answers_for, healthy, load
from tests.core.test_backtest_log import history


def plain_loop(
    policy: Policy,
    times: Sequence[datetime],
    answers: Mapping[str, RangeAnswer],
    recorded: Recorded | None = None,
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The replay without shortcuts: its decisions and every check of the report."""
    stamps = [to_ms(t) for t in times]
    counts = Counts(policy, stamps, step_ms(policy), answers)
    stored: RolloutState | None = None
    decisions: list[tuple[object, ...]] = []
    checks: list[tuple[object, ...]] = []
    ended = False
    for index, at in enumerate(times):
        if recorded is not None:
            stored = recorded.state_at(policy, at)
        window = profile_window_seconds(stored, at, times[0])
        profile = plan(policy, with_checkpoint=False, window_seconds=window)
        plain = [q for q in profile if not counted_key(q.key)]
        readings = {**readings_at(plain, answers, stamps[index]), **counts.readings(profile, index)}
        checks.extend(_shown(c) for c in guardrail_checks(policy, profile, readings))
        if ended:
            continue
        state = stored if stored is not None else initial_state(policy, at)
        queries = queries_for(policy, state, at)
        plain = [q for q in queries if not counted_key(q.key)]
        readings = {**readings_at(plain, answers, stamps[index]), **counts.readings(queries, index)}
        decision = decide(policy, stored, queries, readings, at)
        decisions.append((at, decision.action, decision.to_percent, decision.reason))
        if recorded is not None:
            ended = decision.action is Action.ROLLBACK
            continue
        stored = decision.after
        ended = stored.status not in ACTIVE
    return decisions, checks


def _shown(check: Check) -> tuple[object, ...]:
    return (
        check.name,
        check.arm,
        check.verdict,
        check.value,
        check.bound,
        check.samples,
        check.detail,
    )


def replayed(result: Replay) -> list[tuple[object, ...]]:
    return [_shown(c) for e in result.evaluations for c in e.checks]


def incident_answers(policy: Policy, times: list[datetime], statistical: bool) -> dict[str, RangeAnswer]:
    incident = START + timedelta(minutes=62)
    if statistical:
        growth = healthy()
        growth[(Part.EVENTS, Arm.TREATMENT)] = lambda t: 300 if t > incident else 10
        return answers_for(policy, times, growth)
    errors = RangeAnswer((Series({}, {to_ms(t): 0.3 if t >= incident else 0.01 for t in times}),))
    return _answers(policy, times, errors)


@pytest.mark.parametrize("statistical", [False, True], ids=["plain", "statistical"])
@pytest.mark.parametrize("mode", ["simulated", "recorded"])
def test_the_replay_decides_and_judges_as_the_plain_loop(statistical: bool, mode: str) -> None:
    policy = load(STATISTICAL if statistical else POLICY)
    times = [START + timedelta(minutes=5 * i) for i in range(40)]
    answers = incident_answers(policy, times, statistical)
    recorded = Recorded.of("cache", history(START + timedelta(minutes=150))) if mode == "recorded" else None
    result = replay(policy, times, answers, {}, recorded)
    decisions, checks = plain_loop(policy, times, answers, recorded)
    assert replayed(result) == checks
    moves = [d for d in decisions if d[1] is not Action.HOLD]
    if recorded is None:
        assert [(m.at, m.action, m.to_percent, m.reason) for m in result.moves] == moves
        assert result.holds == sum(1 for d in decisions if d[1] is Action.HOLD)
    else:
        first = next((m for m in moves if m[1] is Action.ROLLBACK), None)
        would = result.would_rollback
        assert would is not None
        assert (would.at, would.action, would.to_percent, would.reason) == first
    assert any(d[1] is Action.ROLLBACK for d in decisions)  # the incident is caught in every case


def test_a_rollout_that_starts_late_is_judged_on_its_own_window_not_the_reports() -> None:
    """Before the simulated rollout starts, the report counts since --from, the decision over one
    interval: the report's checks must not stand in for the decision's."""
    policy = load(STATISTICAL)
    times = [START + timedelta(minutes=5 * i) for i in range(12)]
    growth = healthy()
    growth[(Part.EVENTS, Arm.TREATMENT)] = lambda _t: 300  # bad from the start
    answers = answers_for(policy, times, growth)
    traffic = {q.promql for q in plan(policy, with_checkpoint=False) if q.key.name == "traffic"}
    for promql in traffic:  # the traffic query fails for the first 20 minutes: no start
        answers[promql] = RangeAnswer(
            answers[promql].series, (Failure(to_ms(times[0]), to_ms(times[4]), "HTTP 503"),)
        )
    result = replay(policy, times, answers, {})
    decisions, checks = plain_loop(policy, times, answers)
    assert replayed(result) == checks
    assert [(m.at, m.action, m.reason) for m in result.moves] == [
        (d[0], d[1], d[3]) for d in decisions if d[1] is not Action.HOLD
    ]
    assert result.moves[0].at == times[5]  # it starts once the traffic query answers
