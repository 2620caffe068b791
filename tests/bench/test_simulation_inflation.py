"""The simulator measures the variance inflation from per-interval counts as the controller does
(bench/simulation/bins.py) and hands each check its own: the guardrails through the policy's
varianceInflation, the sample-ratio check through the exposures it divides."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from bench import simprom, simulate
from bench.simulation import bins, families
from controller.core import dispersion, srm
from controller.core.decision import decide, queries_for, rebase
from controller.core.policy import Policy
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading
from controller.core.state import RolloutState


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


def test_bin_sums_are_the_sums_over_complete_intervals_since_exposure_began() -> None:
    series = _series("bursts-geo3", 200, 1)
    binned = bins.Binned(series, 30)
    requests = np.diff(series[Arm.CONTROL].requests[::2])[:40]
    errors = np.diff(series[Arm.CONTROL].errors[::2])[:40]
    sums = binned.errors[Arm.CONTROL].sums(40)
    assert sums.bins == np.count_nonzero(requests)
    assert sums.events == errors.sum()
    assert sums.total == requests.sum()
    assert sums.squares == pytest.approx((errors**2 / requests).sum())
    exposures = binned.exposures.sums(40)
    treatment = np.diff(series[Arm.TREATMENT].evaluations[::2])[:40]
    assert exposures.events == treatment.sum()
    assert exposures.total == treatment.sum() + np.diff(series[Arm.CONTROL].evaluations[::2])[:40].sum()


def test_the_estimate_finds_bursts_in_the_errors_and_repeated_evaluations_in_the_exposures() -> None:
    ticks = 2 * 24 * 60  # 12 h of 15 s ticks: 1,440 bins of 30 s
    bursts = bins.Binned(_series("bursts-geo5", ticks, 2), 30).inflation(1_440, 1.0)
    assert bursts.errors.estimate == pytest.approx(9.0, rel=0.15)  # 2m − 1
    assert bursts.sample_ratio.estimate == pytest.approx(1.0, rel=0.15)
    users = bins.Binned(_series("users-geo3", ticks, 3), 30).inflation(1_440, 1.0)
    assert users.errors.estimate == pytest.approx(1.0, rel=0.15)
    # E[K²]/E[K] = 5, of which a bin holds only the part of a session (60 s) that falls in it.
    assert 2.0 < users.sample_ratio.estimate < 5.0
    assert users.sample_ratio.used >= users.sample_ratio.estimate  # an upper confidence bound


def _looked(
    policy: Policy, key: str, look: int, seed: int
) -> tuple[RolloutState | None, list[PlannedQuery], dict[QueryKey, Reading], datetime]:
    """A rollout of the regressed scenario of ``key`` up to ``look``: what the decision sees there."""
    family = next(f for f in families.families() if f.key == key)
    prometheus = simprom.SimulatedPrometheus(
        simprom.simulate_traffic(family.regression, 2 * look + 1, np.random.default_rng(seed))
    )
    stored = None
    for earlier in range(3):
        now = simulate.T0 + timedelta(seconds=30 * earlier)
        queries = queries_for(policy, rebase(policy, stored, now).state, now)
        stored = decide(policy, stored, queries, prometheus.answer(queries, earlier * 2), now).after
    now = simulate.T0 + timedelta(seconds=30 * look)
    queries = queries_for(policy, rebase(policy, stored, now).state, now)
    return stored, list(queries), prometheus.answer(queries, look * 2), now


def test_each_guardrail_is_judged_at_its_own_inflation_not_the_largest() -> None:
    policy = _statistical()
    stored, queries, answers, now = _looked(policy, "balanced", 60, 5)  # 30 minutes of 1 % → 2 %
    plain = decide(policy, stored, queries, answers, now)
    assert plain.action.value == "rollback"

    def measured(errors: float, latency: float) -> bins.Inflation:
        return bins.Inflation(
            errors=dispersion.Dispersion(errors, 100, errors),
            latency=dispersion.Dispersion(latency, 100, latency),
            sample_ratio=dispersion.Dispersion(1.0, 100, 1.0),
        )

    # The errors' own inflation is 1: a latency estimate of 50 must not hide their failure.
    decision, judged = bins.decide_measured(policy, stored, queries, answers, now, measured(1.0, 50.0))
    assert decision.action.value == "rollback"
    assert judged.statistics.variance_inflation == 1.0
    # At an inflation of 50 of their own, the same errors are not evidence enough.
    decision, judged = bins.decide_measured(policy, stored, queries, answers, now, measured(50.0, 1.0))
    assert decision.action.value != "rollback"
    assert judged.statistics.variance_inflation == 50.0


def test_the_hand_over_gives_the_guardrails_and_the_sample_ratio_check_each_its_own_inflation() -> None:
    policy = _statistical()
    prometheus = simprom.SimulatedPrometheus(_series("users-geo3", 200, 4))
    stored = None
    for look in range(3):  # the first step, then a look with counts
        now = simulate.T0 + timedelta(seconds=30 * look)
        queries = queries_for(policy, rebase(policy, stored, now).state, now)
        stored = decide(policy, stored, queries, prometheus.answer(queries, look * 2), now).after
    look = 60
    now = simulate.T0 + timedelta(seconds=30 * look)
    queries = queries_for(policy, rebase(policy, stored, now).state, now)
    answers = prometheus.answer(queries, look * 2)
    measured = bins.Inflation(
        errors=dispersion.Dispersion(1.1, 100, 1.7),
        latency=dispersion.Dispersion(1.0, 100, 1.2),
        sample_ratio=dispersion.Dispersion(4.0, 100, 4.5),
    )
    decision, judged = bins.decide_measured(policy, stored, queries, answers, now, measured)

    assert not decision.notes  # no policy edit seen: the copy's revision is the stored one's
    by_name = {c.name: c for c in decision.checks}
    for name in ("payment-errors", "slow-payments"):
        evidence = by_name[name].sequential
        assert evidence is not None
        assert evidence.variance_inflation == 1.7  # nothing failed: judged at the larger estimate
    ratio = by_name["sample-ratio"].sample_ratio
    assert ratio is not None
    treatment, control = (
        prometheus.query(q.promql, look * 2).value for q in queries if q.key.source.value == "exposure"
    )
    assert treatment is not None
    assert control is not None
    expected = srm.check(treatment, control, alpha=0.001, variance_inflation=4.5)
    assert ratio.log_bayes_factor == pytest.approx(
        expected.log_bayes_factor, rel=1e-9
    )  # the scaled exposures round a little
    assert bins.restore(policy, judged, decision.after).revision == policy.revision
