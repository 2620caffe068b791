"""Statistical guardrails and the sample-ratio check in a backtest: counts since the simulated
exposure began, from each interval's counter growth (controller/core/backtestcounts.py)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.adapters.policyfile import load_text
from controller.core.backtest import evaluation_times, fetched_promqls, replay, step_ms
from controller.core.backtestcounts import Counts, count_queries, interval_query
from controller.core.backtestranges import Failure, RangeAnswer, Series, to_ms
from controller.core.backtestreport import summarise
from controller.core.policy import Policy
from controller.core.queries import (
    BIN_PARTS,
    SAMPLE_RATIO,
    Arm,
    Part,
    PlannedQuery,
    QueryKey,
    Reading,
    ReadingKind,
    Source,
    bin_seconds,
    plan,
)
from controller.core.state import Action, Outcome, Status

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
      control: true
      interval: 5m
      steps:
        - {percent: 5, hold: 10m}
        - {percent: 20, hold: 10m}
      traffic:
        query: sum(requests{v="{{variant}}"})
        minSamples: 100
      guardrails:
        - name: errors
          errorRatio:
            errors: errors_total{v="{{variant}}"}
            requests: requests_total{v="{{variant}}"}
          maxDelta: 0.01
      statistics:
        exposure: exposures_total{v="{{variant}}"}
    """
)


def load(text: str = POLICY) -> Policy:
    loaded = load_text(text, "policy.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.policies[0].policy


Growth = Callable[[datetime], float]


def answers_for(
    policy: Policy,
    times: list[datetime],
    growth: dict[tuple[Part | str, Arm], Growth],
) -> dict[str, RangeAnswer]:
    """Range answers for every query a replay fetches: traffic plenty, and each count query's growth
    per interval from ``growth`` (keyed by part, or "exposure", and arm)."""
    answers: dict[str, RangeAnswer] = {}
    for (source, _, arm, part), promql in count_queries(policy, step_ms(policy)).items():
        which: Part | str = "exposure" if source is Source.EXPOSURE else part
        points = {to_ms(t): growth[(which, arm)](t) for t in times}
        answers[promql] = RangeAnswer((Series({}, points),))
    for promql in fetched_promqls(policy, {}) - set(answers):
        answers[promql] = RangeAnswer((Series({}, {to_ms(t): 1000.0 for t in times}),))
    return answers


def steady(value: float) -> Growth:
    return lambda _t: value


def healthy() -> dict[tuple[Part | str, Arm], Growth]:
    return {
        (Part.EVENTS, Arm.TREATMENT): steady(10),
        (Part.TOTAL, Arm.TREATMENT): steady(1000),
        (Part.EVENTS, Arm.CONTROL): steady(10),
        (Part.TOTAL, Arm.CONTROL): steady(1000),
        ("exposure", Arm.TREATMENT): steady(500),
        ("exposure", Arm.CONTROL): steady(500),
    }


def test_the_counts_are_fetched_once_per_interval_not_per_window() -> None:
    policy = load()
    queries = count_queries(policy, step_ms(policy))
    assert queries[(Source.GUARDRAIL, "errors", Arm.TREATMENT, Part.EVENTS)] == (
        'sum(clamp_min(errors_total{v="on"} - errors_total{v="on"} offset 300000ms, 0))'
    )
    assert queries[(Source.EXPOSURE, SAMPLE_RATIO, Arm.CONTROL, Part.WHOLE)] == interval_query(
        'exposures_total{v="control"}', 300_000
    )
    fetched = fetched_promqls(policy, {})
    assert set(queries.values()) <= fetched
    assert not any("increase(" in q for q in fetched)  # no text that depends on the exposure start
    assert len(fetched) == 2 + len(queries)  # traffic per arm, and the six counts


def test_a_healthy_window_ramps_and_the_counts_grow_since_exposure_began() -> None:
    policy = load()
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    result = replay(policy, times, answers_for(policy, times, healthy()), {})
    assert result.first_rollback is None
    assert [m.action for m in result.moves] == [Action.ADVANCE, Action.ADVANCE, Action.COMPLETE]
    assert result.final is not None
    assert result.final.status is Status.COMPLETED
    # exposure began at START; at the last evaluation (24 intervals later) each arm has counted 24
    last = {(c.name, c.arm): c for c in result.evaluations[-1].checks}
    errors = last[("errors", Arm.TREATMENT)]
    assert errors.verdict is Outcome.PASS
    assert errors.samples == 24 * 1000
    assert last[(SAMPLE_RATIO, Arm.TREATMENT)].verdict is Outcome.PASS


def test_an_incident_in_the_treatment_arm_is_rolled_back_by_the_statistical_guardrail() -> None:
    policy = load()
    times = evaluation_times(START, START + timedelta(hours=3), policy.spec.interval_seconds)
    incident = START + timedelta(minutes=62)
    growth = healthy()
    growth[(Part.EVENTS, Arm.TREATMENT)] = lambda t: 300 if t > incident else 10
    result = replay(policy, times, answers_for(policy, times, growth), {})
    rollback = result.first_rollback
    assert rollback is not None
    # the step change also widens the comparison (its per-interval counts are overdispersed), as it
    # would in the controller: the rollback comes when the evidence is enough, not at once
    assert incident < rollback.at <= incident + timedelta(hours=1)
    assert "errors" in rollback.reason
    assert "confidence sequence" in rollback.reason
    assert all(m.action is not Action.ROLLBACK for m in result.moves if m.at <= incident)
    (treatment,) = [s for s in summarise(result) if s.name == "errors"]
    assert treatment.first_fail == rollback.at


def test_an_unbalanced_exposure_fails_the_sample_ratio_check() -> None:
    policy = load()
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    growth = healthy()
    growth[("exposure", Arm.CONTROL)] = steady(650)
    result = replay(policy, times, answers_for(policy, times, growth), {})
    ratio = [c for e in result.evaluations for c in e.checks if c.name == SAMPLE_RATIO]
    assert [c.verdict for c in ratio[:3]] == [Outcome.NO_DATA] * 3  # the dispersion is settling
    assert {c.verdict for c in ratio[3:]} == {Outcome.ERROR}  # a mismatch: nothing can be compared
    assert "sample ratio mismatch" in ratio[-1].detail
    assert [m.to_percent for m in result.moves] == [5.0]  # it never advances past the first step


def test_a_failed_chunk_makes_every_count_reaching_into_it_an_error_and_no_point_is_no_data() -> None:
    policy = load()
    times = evaluation_times(START, START + timedelta(hours=1), policy.spec.interval_seconds)
    answers = answers_for(policy, times, healthy())
    total = count_queries(policy, step_ms(policy))[(Source.GUARDRAIL, "errors", Arm.TREATMENT, Part.TOTAL)]
    answers[total] = RangeAnswer(
        (Series({}, {to_ms(t): 1000.0 for t in times}),),
        (Failure(to_ms(times[3]), to_ms(times[4]), "HTTP 503: overloaded"),),
    )
    counts = Counts(policy, [to_ms(t) for t in times], step_ms(policy), answers)
    key = QueryKey(Source.GUARDRAIL, "errors", Arm.TREATMENT, Part.TOTAL, "cache")

    def since(index: int, intervals: int) -> Reading:
        return counts.readings([PlannedQuery(key, total, intervals * 300)], index)[key]

    assert since(2, 2).value == 2000.0
    assert since(5, 5).kind is ReadingKind.ERROR  # reaches back into the failed chunk
    assert "HTTP 503" in since(5, 5).detail
    assert since(8, 3).value == 3000.0  # a window after it
    answers[total] = RangeAnswer((Series({}, {to_ms(times[9]): 5.0}),))
    counts = Counts(policy, [to_ms(t) for t in times], step_ms(policy), answers)
    assert since(5, 3).kind is ReadingKind.NO_DATA
    assert since(10, 3).value == 5.0
    result = replay(policy, times, answers_for(policy, times, healthy()) | {total: answers[total]}, {})
    assert all(
        c.verdict is not Outcome.PASS
        for e in result.evaluations[:9]
        for c in e.checks
        if c.name == "errors" and c.arm is Arm.TREATMENT
    )


def _brute_force(
    bad: list[float], total: list[float], index: int, intervals: int, k: int
) -> tuple[float, float, float, float]:
    """The four sums over the bins of width k ending at index, index-k, …, covering ``intervals``."""
    sums = [0.0, 0.0, 0.0, 0.0]
    for g in range(math.ceil(intervals / k)):
        end = index - g * k
        members = range(max(0, end - k + 1), end + 1)
        if end < 0:
            break
        x = sum(bad[i] for i in members)
        n = sum(total[i] for i in members)
        if n > 0:
            for j, term in enumerate((1.0, x, n, x * x / n)):
                sums[j] += term
    return sums[0], sums[1], sums[2], sums[3]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 200)), min_size=1, max_size=120),
    st.data(),
)
def test_the_sums_over_the_bins_equal_a_direct_count_whatever_the_window(
    pairs: list[tuple[int, int]], data: st.DataObject
) -> None:
    policy = load(POLICY.replace("interval: 5m", "interval: 30s").replace("hold: 10m", "hold: 1m"))
    times = [START + timedelta(seconds=30 * i) for i in range(len(pairs))]
    bad = [float(min(b, n)) for b, n in pairs]
    total = [float(n) for _, n in pairs]
    queries = count_queries(policy, 30_000)
    growth = {
        (Source.GUARDRAIL, Part.EVENTS): bad,
        (Source.GUARDRAIL, Part.TOTAL): total,
    }
    answers = {}
    for (source, _, _arm, part), promql in queries.items():
        values = growth.get((source, part), total)
        answers[promql] = RangeAnswer(
            (Series({}, {to_ms(t): v for t, v in zip(times, values, strict=True)}),)
        )
    counts = Counts(policy, [to_ms(t) for t in times], 30_000, answers)
    index = data.draw(st.integers(0, len(pairs) - 1))
    window_seconds = data.draw(st.integers(1, 30 * 3000))
    intervals = max(1, math.ceil(window_seconds / 30))
    k = max(1, math.ceil(bin_seconds(30, window_seconds) / 30))
    planned = [
        q
        for q in plan(policy, with_checkpoint=False, window_seconds=window_seconds)
        if q.key.part in BIN_PARTS and q.key.source is Source.GUARDRAIL and q.key.arm is Arm.TREATMENT
    ]
    readings = counts.readings(planned, index)
    expected = _brute_force(bad, total, index, intervals, k)
    got = [readings[q.key] for q in sorted(planned, key=lambda q: BIN_PARTS.index(q.key.part))]
    if expected[0] == 0:
        assert all(r.kind is ReadingKind.NO_DATA for r in got)
    else:
        assert [r.value for r in got] == pytest.approx(list(expected), rel=1e-9, abs=1e-9)
