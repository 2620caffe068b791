"""The pure replay of ``flagroll backtest``: times, chunks, readings from range answers, the
simulated rollout and its report."""

from __future__ import annotations

import itertools
import math
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from controller.adapters.policyfile import load_text
from controller.core.backtest import (
    chunks,
    evaluation_times,
    fetched_queries,
    parse_time,
    replay,
)
from controller.core.backtestranges import Failure, RangeAnswer, Series, reading_at, to_ms
from controller.core.backtestreport import as_dict, quantile, render_text, summarise
from controller.core.errors import UsageError
from controller.core.policy import Policy
from controller.core.queries import Arm, ReadingKind, Split
from controller.core.state import Action, Status

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
START = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)

POLICY = textwrap.dedent(
    """\
    apiVersion: flagroll/v1
    kind: RolloutPolicy
    metadata:
      name: cache
    spec:
      owner: sre
      aim: Cut p95 from 450ms to 250ms.
      mechanism: A cache removes repeated I/O.
      flag:
        key: cache
      interval: 5m
      steps:
        - {percent: 5, hold: 10m}
        - {percent: 20, hold: 10m}
      traffic:
        query: sum(requests{v="{{variant}}"})
        minSamples: 100
      guardrails:
        - name: errors
          query: sum(errors{v="{{variant}}"})
          max: 0.05
    """
)


def load(text: str) -> Policy:
    loaded = load_text(text, "policy.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.policies[0].policy


def constant(times: list[datetime], value: float) -> RangeAnswer:
    return RangeAnswer((Series({}, {to_ms(t): value for t in times}),))


def test_times_are_rfc3339_or_a_duration_before_now() -> None:
    assert parse_time("2026-11-27T09:00:00Z", NOW) == datetime(2026, 11, 27, 9, tzinfo=UTC)
    assert parse_time("2026-11-27T10:00:00+01:00", NOW) == datetime(2026, 11, 27, 9, tzinfo=UTC)
    assert parse_time("7d", NOW) == NOW - timedelta(days=7)
    assert parse_time("36h", NOW) == NOW - timedelta(hours=36)
    assert parse_time("7d", NOW).tzinfo is UTC
    with pytest.raises(UsageError, match="no time zone"):
        parse_time("2026-11-27T09:00:00", NOW)
    with pytest.raises(UsageError, match="neither an RFC 3339 time"):
        parse_time("last tuesday", NOW)


def test_evaluation_times_are_one_interval_apart_and_the_window_must_not_be_empty() -> None:
    times = evaluation_times(START, START + timedelta(hours=1), 300)
    assert len(times) == 13
    assert times[0] == START
    assert times[-1] == START + timedelta(hours=1)
    assert all(b - a == timedelta(minutes=5) for a, b in itertools.pairwise(times))
    with pytest.raises(UsageError, match="not before"):
        evaluation_times(START, START, 300)


def test_chunks_stay_within_the_point_limit_and_cover_every_time_once() -> None:
    times = evaluation_times(START, START + timedelta(days=8), 30)  # 23,041 points
    windows = chunks(times)
    assert len(windows) == 3
    covered = [t for first, last in windows for t in times if first <= t <= last]
    assert covered == times
    assert all((last - first) / timedelta(seconds=30) + 1 <= 11_000 for first, last in windows)


def test_a_missing_point_is_no_data_a_failed_chunk_an_error_and_nan_no_data() -> None:
    t0, t1, t2 = to_ms(START), to_ms(START + timedelta(minutes=5)), to_ms(START + timedelta(minutes=10))
    answer = RangeAnswer(
        (Series({}, {t0: 0.5, t1: math.nan}),),
        (Failure(t2, t2, "HTTP 422 execution: query timed out"),),
    )
    assert reading_at(answer, t0).value == 0.5
    assert reading_at(answer, t1).kind is ReadingKind.NO_DATA
    assert reading_at(answer, t1 + 1).kind is ReadingKind.NO_DATA
    failed = reading_at(answer, t2)
    assert failed.kind is ReadingKind.ERROR
    assert "timed out" in failed.detail


def test_several_series_at_one_time_are_an_error_and_a_template_takes_its_arm() -> None:
    t0 = to_ms(START)
    answer = RangeAnswer(
        (
            Series({"flag": "cache", "variant": "on"}, {t0: 1.0}),
            Series({"flag": "cache", "variant": "control"}, {t0: 2.0}),
        )
    )
    assert reading_at(answer, t0).kind is ReadingKind.ERROR
    split = Split("http", "flag", "variant", "cache", "control")
    assert reading_at(answer, t0, split).value == 2.0
    other = Split("http", "flag", "variant", "other", "on")
    assert reading_at(answer, t0, other).kind is ReadingKind.NO_DATA


def _answers(policy: Policy, times: list[datetime], errors: RangeAnswer) -> dict[str, RangeAnswer]:
    """Traffic enough in both arms; the treatment's error ratio is ``errors``, the control's 1 %."""
    answers = {}
    for q in fetched_queries(policy, {}):
        if q.key.name == "traffic":
            answers[q.promql] = constant(times, 1000.0)
        else:
            answers[q.promql] = errors if q.key.arm is Arm.TREATMENT else constant(times, 0.01)
    return answers


def test_a_healthy_window_ramps_through_the_steps_and_completes() -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    result = replay(policy, times, _answers(policy, times, constant(times, 0.01)), {})
    assert [(m.action, m.to_percent) for m in result.moves] == [
        (Action.ADVANCE, 5.0),
        (Action.ADVANCE, 20.0),
        (Action.COMPLETE, 20.0),
    ]
    assert result.moves[1].at == START + timedelta(minutes=10)  # the 10m hold at 5 %
    assert result.first_rollback is None
    assert result.final is not None
    assert result.final.status is Status.COMPLETED


def test_an_incident_rolls_back_at_the_first_failing_evaluation_and_the_checks_say_so() -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    incident = START + timedelta(minutes=62)
    errors = RangeAnswer((Series({}, {to_ms(t): 0.3 if t >= incident else 0.01 for t in times}),))
    result = replay(policy, times, _answers(policy, times, errors), {})
    rollback = result.first_rollback
    assert rollback is not None
    assert rollback.at == START + timedelta(minutes=65)
    assert rollback.from_percent == 20.0
    assert rollback.to_percent == 0.0
    assert "errors" in rollback.reason
    assert result.final is not None
    assert result.final.status is Status.ROLLED_BACK
    # checks go on being judged after the rollback: the whole window's profile
    (guard,) = [s for s in summarise(result) if s.name == "errors"]
    assert guard.counts == {"pass": 13, "fail": 12, "no_data": 0, "error": 0}
    assert guard.first_fail == START + timedelta(minutes=65)
    assert guard.values == {"p50": 0.01, "p90": 0.3, "max": 0.3}
    report = as_dict(result, points=50)
    assert report["first_rollback"] == "2026-12-01T01:05:00Z"
    assert [d["action"] for d in report["decisions"]] == ["advance", "advance", "complete", "rollback"]
    text = "\n".join(render_text(result, points=50))
    assert "first would-be rollback: 2026-12-01T01:05:00Z" in text
    assert "errors treatment max ≤ 0.05 (max): 13 / 12 / 0 / 0" in text


def test_a_failed_chunk_never_passes_and_is_the_longest_error_stretch() -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=1), policy.spec.interval_seconds)
    broken = RangeAnswer(
        (Series({}, {to_ms(t): 0.01 for t in times}),),
        (Failure(to_ms(times[2]), to_ms(times[5]), "HTTP 400 bad_data: parse error"),),
    )
    result = replay(policy, times, _answers(policy, times, broken), {})
    (guard,) = [s for s in summarise(result) if s.name == "errors"]
    assert guard.counts["error"] == 4
    assert guard.counts["pass"] == len(times) - 4
    assert guard.longest_error is not None
    assert (guard.longest_error.start, guard.longest_error.end) == (times[2], times[5])
    holds_on_error = [m for m in result.moves if times[2] <= m.at <= times[5]]
    assert holds_on_error == []  # an error never advances


def test_nothing_at_all_is_no_data_everywhere_and_the_rollout_starts_but_holds() -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=1), policy.spec.interval_seconds)
    result = replay(policy, times, _answers(policy, times, RangeAnswer()), {})
    (guard,) = [s for s in summarise(result) if s.name == "errors"]
    assert guard.counts["no_data"] == len(times)
    assert guard.longest_no_data is not None
    assert guard.longest_no_data.evaluations == len(times)
    assert [m.action for m in result.moves] == [Action.ADVANCE]
    assert "no data for any of this policy's queries" in "\n".join(render_text(result, points=0))


def test_quantiles_are_nearest_rank() -> None:
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([float(i) for i in range(1, 11)], 0.9) == 9.0
    assert quantile([5.0], 0.9) == 5.0


def test_arms_are_judged_separately_in_the_summary() -> None:
    policy = load(POLICY)  # a control arm by default
    times = evaluation_times(START, START + timedelta(minutes=30), policy.spec.interval_seconds)
    queries = fetched_queries(policy, {})
    answers = {q.promql: constant(times, 1000.0 if q.key.name == "traffic" else 0.01) for q in queries}
    result = replay(policy, times, answers, {})
    arms = {(s.name, s.arm) for s in summarise(result)}
    assert ("traffic", Arm.CONTROL.value) in arms
    assert ("traffic", Arm.TREATMENT.value) in arms
