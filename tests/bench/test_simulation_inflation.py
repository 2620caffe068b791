"""The simulated Prometheus answers the controller's queries of sums over bins (its dispersion
measurement) from the simulated counters, so the simulator measures the variance inflation exactly
as the controller does against Prometheus; ``--inflation policy`` fails them and the policy's value
holds."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import numpy.typing as npt
import pytest

from bench import simprom, simulate
from bench.simulation import families
from controller.core import dispersion
from controller.core.decision import Decision, decide, queries_for, rebase
from controller.core.policy import Policy
from controller.core.queries import BIN_PARTS, Arm, Part, QueryKey, Source

Array = npt.NDArray[np.float64]


def _statistical() -> Policy:
    return simulate.load(
        simulate.statistical_policy(
            alpha=0.01,
            error_delta=0.0,
            slow_increase=0.05,
            min_samples=200,
            expected_samples=2000,
            error_weight=3,
        )
    )


def _series(key: str, ticks: int, seed: int) -> dict[Arm, simprom.ArmSeries]:
    family = next(f for f in families.families() if f.key == key)
    return simprom.simulate_traffic(family.aa, ticks, np.random.default_rng(seed))


def _run(prometheus: simprom.SimulatedPrometheus, policy: Policy, looks: int) -> Decision:
    """Looks every 30 s from exposure start; the last look's decision."""
    stored = None
    for look in range(looks + 1):
        now = simulate.T0 + timedelta(seconds=30 * look)
        queries = queries_for(policy, rebase(policy, stored, now).state, now)
        decision = decide(policy, stored, queries, prometheus.answer(queries, 2 * look), now)
        stored = decision.after
    return decision


def _sums(bad: Array, total: Array) -> dispersion.BinSums:
    kept = total > 0
    x, n = bad[kept], total[kept]
    return dispersion.BinSums(float(kept.sum()), float(x.sum()), float(n.sum()), float((x * x / n).sum()))


def test_the_dispersion_queries_are_answered_with_the_sums_over_the_bins_since_exposure_began() -> None:
    policy = _statistical()
    series = _series("bursts-geo3", 200, 1)
    prometheus = simprom.SimulatedPrometheus(series)
    now = simulate.T0 + timedelta(seconds=30 * 40)
    stored = _run(prometheus, policy, 2).after
    queries = queries_for(policy, rebase(policy, stored, now).state, now)
    answers = prometheus.answer(queries, 80)

    def per_bin(cumulative: Array) -> Array:
        return np.diff(cumulative[:81:2])  # 40 bins of 30 s

    def answered(source: Source, name: str, arm: Arm) -> dispersion.BinSums:
        values = [
            answers[q.key].value
            for part in BIN_PARTS
            for q in queries
            if q.key == QueryKey(source, name, arm, part, policy.flag_key)
        ]
        assert all(v is not None for v in values)
        return dispersion.BinSums(*(float(v or 0.0) for v in values))

    slo = simprom.BUCKETS.index(simprom.SLO_SECONDS)
    for arm in (Arm.TREATMENT, Arm.CONTROL):
        requests = per_bin(series[arm].requests)
        assert answered(Source.GUARDRAIL, "payment-errors", arm) == _sums(
            per_bin(series[arm].errors), requests
        )
        slow = requests - per_bin(series[arm].buckets[:, slo])
        assert answered(Source.GUARDRAIL, "slow-payments", arm) == _sums(slow, requests)
    treatment = per_bin(series[Arm.TREATMENT].evaluations)
    both = treatment + per_bin(series[Arm.CONTROL].evaluations)
    assert answered(Source.EXPOSURE, "sample-ratio", Arm.TREATMENT) == _sums(treatment, both)
    assert all(
        q.key.part is not Part.BINS or q.key.arm is Arm.TREATMENT
        for q in queries
        if q.key.source is Source.EXPOSURE
    )


def test_the_controller_measures_bursts_in_the_errors_and_nothing_in_independent_exposures() -> None:
    policy = _statistical()
    decision = _run(simprom.SimulatedPrometheus(_series("bursts-geo5", 1_500, 2)), policy, 700)  # ~6 h
    by_name = {c.name: c for c in decision.checks}
    errors = by_name["payment-errors"].sequential
    ratio = by_name["sample-ratio"].sample_ratio
    assert errors is not None
    assert ratio is not None
    assert errors.dispersion is not None
    assert ratio.dispersion is not None
    estimate = errors.dispersion.estimate
    assert estimate == pytest.approx(9.0, rel=0.2)  # 2m − 1 for geometric bursts of mean 5
    assert estimate is not None
    assert errors.variance_inflation == errors.dispersion.used >= estimate
    assert ratio.dispersion.estimate == pytest.approx(1.0, rel=0.2)


def test_with_inflation_policy_the_controller_falls_back_to_the_policys_value() -> None:
    policy = _statistical()
    prometheus = simprom.SimulatedPrometheus(_series("bursts-geo5", 200, 3), measure_dispersion=False)
    decision = _run(prometheus, policy, 60)
    errors = next(c for c in decision.checks if c.name == "payment-errors").sequential
    assert errors is not None
    assert errors.variance_inflation == 1.0
    assert errors.dispersion is not None
    assert "not measured" in errors.dispersion.note


def test_with_inflation_oracle_the_policy_is_told_the_traffics_true_inflation() -> None:
    by_key = {f.key: f for f in families.families()}
    assert simulate.oracle_inflation(by_key["bursts-geo5"].aa) == 9.0  # 2m − 1
    assert simulate.oracle_inflation(by_key["daily"].aa) == 1.0  # independent errors
    with pytest.raises(SystemExit, match="infinite second moment"):
        simulate.oracle_inflation(by_key["bursts-zeta"].aa)
    told = simulate.load(
        simulate.statistical_policy(
            alpha=0.01,
            error_delta=0.0,
            slow_increase=0.05,
            min_samples=200,
            expected_samples=2000,
            variance_inflation=9.0,
        )
    )
    prometheus = simprom.SimulatedPrometheus(_series("bursts-geo5", 200, 3), measure_dispersion=False)
    errors = next(c for c in _run(prometheus, told, 60).checks if c.name == "payment-errors").sequential
    assert errors is not None
    assert errors.variance_inflation == 9.0
