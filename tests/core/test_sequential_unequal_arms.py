"""The comparison with arms of very different sizes (retries, hedging, a chattier client), checked
against one-look tests computed independently with scipy and by simulation.

An anytime-valid test pays for looking at every interval, so at any single look it must never be
more significant than a test built for that one look: ``1/M⁺`` is at least the one-look p-value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from controller.core.sequential import ArmCounts, compare

# Treatment:control sizes, the smaller arm's requests, shares of bad requests.
RATIOS = [(1, 1), (10, 1), (1, 10), (100, 1), (1, 100)]
SMALLER_ARM = [200, 20_000]
SHARES = [0.001, 0.01, 0.1]
CELLS = [
    pytest.param(r, m, p, id=f"{r[0]}:{r[1]}-{m}-{p:g}") for r in RATIOS for m in SMALLER_ARM for p in SHARES
]


def _treatment_events(n_t: int, n_c: int, e_c: int, share: float) -> list[int]:
    """Treatment bad requests from the null expectation to well past significance (pooled z ≈ 7)."""
    start = round(share * n_t)
    p = max(share, 1 / (n_t + n_c))
    step_z = math.sqrt(p * (1 - p) * (1 / n_t + 1 / n_c)) * n_t  # events per unit of pooled z
    return sorted({min(n_t, start + round(step_z * z / 2)) for z in range(15)} | {start + 1, start + 2})


def _pooled_z_p_value(e_t: int, n_t: int, e_c: int, n_c: int) -> float:
    pooled = (e_t + e_c) / (n_t + n_c)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    if se == 0:
        return 1.0
    return float(stats.norm.sf((e_t / n_t - e_c / n_c) / se))


@pytest.mark.parametrize("expected_samples", [200, 2000])
@pytest.mark.parametrize(("ratio", "smaller", "share"), CELLS)
def test_the_statistic_is_never_more_significant_than_one_look_tests(
    ratio: tuple[int, int], smaller: int, share: float, expected_samples: int
) -> None:
    n_t, n_c = ratio[0] * smaller, ratio[1] * smaller
    e_c = round(share * n_c)
    for e_t in _treatment_events(n_t, n_c, e_c, share):
        result = compare(
            ArmCounts(e_t, n_t),
            ArmCounts(e_c, n_c),
            rule="maxDelta",
            limit=0.0,
            alpha=0.01,
            expected_samples=expected_samples,
        )
        z_p = _pooled_z_p_value(e_t, n_t, e_c, n_c)
        fisher_p = float(stats.fisher_exact([[e_t, n_t - e_t], [e_c, n_c - e_c]], alternative="greater")[1])
        where = f"{e_t}/{n_t} vs {e_c}/{n_c}: ln M {result.log_likelihood_ratio:.3f}"
        assert result.log_likelihood_ratio <= -math.log(z_p) + 1e-9, f"{where}, z-test p {z_p:.3g}"
        assert result.log_likelihood_ratio <= -math.log(fisher_p) + 1e-9, f"{where}, Fisher p {fisher_p:.3g}"


def _restricted_z_p_value(e_t: float, n_t: float, e_c: float, n_c: float, k: float, delta: float) -> float:
    """One-sided z-test of p_t − k·p_c − δ ≤ 0 with the variance at the maximum-likelihood shares
    under p_t = k·p_c + δ (found numerically, not by any formula of the code under test)."""

    def negative_log_likelihood(p_c: float) -> float:
        p_t = k * p_c + delta
        return -float(stats.binom.logpmf(e_t, n_t, p_t) + stats.binom.logpmf(e_c, n_c, p_c))

    upper = (1 - delta) / k
    fit = optimize.minimize_scalar(
        negative_log_likelihood, bounds=(1e-12, upper - 1e-12), method="bounded", options={"xatol": 1e-14}
    )
    p_c = float(fit.x)
    p_t = k * p_c + delta
    se = math.sqrt(p_t * (1 - p_t) / n_t + k * k * p_c * (1 - p_c) / n_c)
    return float(stats.norm.sf((e_t / n_t - k * e_c / n_c - delta) / se))


@pytest.mark.parametrize(("rule", "limit"), [("maxDelta", 0.002), ("maxIncrease", 0.2), ("maxIncrease", 1.0)])
@pytest.mark.parametrize("ratio", RATIOS, ids=lambda r: f"{r[0]}:{r[1]}")
def test_tolerant_rules_are_no_more_significant_than_a_one_look_test_under_their_null(
    rule: str, limit: float, ratio: tuple[int, int]
) -> None:
    k, delta = (1.0, limit) if rule == "maxDelta" else (1.0 + limit, 0.0)
    for smaller in SMALLER_ARM:
        n_t, n_c = ratio[0] * smaller, ratio[1] * smaller
        for share in (0.01, 0.1):
            e_c = round(share * n_c)
            null_t = (k * share + delta) * n_t
            for e_t in _treatment_events(n_t, n_c, e_c, k * share + delta):
                if e_t <= null_t:
                    continue
                result = compare(
                    ArmCounts(e_t, n_t),
                    ArmCounts(e_c, n_c),
                    rule=rule,
                    limit=limit,
                    alpha=0.01,
                    expected_samples=2000,
                )
                reference = _restricted_z_p_value(e_t, n_t, e_c, n_c, k, delta)
                assert result.log_likelihood_ratio <= -math.log(reference) + 1e-6, (
                    f"{e_t}/{n_t} vs {e_c}/{n_c}: ln M {result.log_likelihood_ratio:.3f}, p {reference:.3g}"
                )


def test_a_control_arm_without_errors_by_chance_does_not_roll_back_a_healthy_treatment() -> None:
    # Treatment 50 errors in 5,000 against control 0 in 500: the one-look Fisher exact test gives
    # p = 0.008, so no anytime-valid test at alpha 1 % may fail it.
    assert stats.fisher_exact([[50, 4950], [0, 500]], alternative="greater")[1] == pytest.approx(
        0.00833, abs=1e-4
    )
    result = compare(
        ArmCounts(50, 5000), ArmCounts(0, 500), rule="maxDelta", limit=0.0, alpha=0.01, expected_samples=2000
    )
    assert not result.fails
    assert result.excess_lower < 0


def _false_rollbacks(paths: int, treatment_per_look: float, control_per_look: float, alpha: float) -> int:
    """Healthy rollouts (1 % errors in both arms), 60 looks each, through the real comparison."""
    rng = np.random.default_rng(17)
    failed = 0
    for _ in range(paths):
        n = np.column_stack([rng.poisson(treatment_per_look, 60), rng.poisson(control_per_look, 60)]).cumsum(
            axis=0
        )
        errors = rng.binomial(np.diff(n, axis=0, prepend=0), 0.01).cumsum(axis=0)
        for (e_t, e_c), (n_t, n_c) in zip(errors, n, strict=True):
            outcome = compare(
                ArmCounts(float(e_t), float(n_t)),
                ArmCounts(float(e_c), float(n_c)),
                rule="maxDelta",
                limit=0.0,
                alpha=alpha,
                expected_samples=2000,
            )
            if outcome.fails:
                failed += 1
                break
    return failed


def test_looking_every_interval_at_ten_times_the_treatment_traffic_keeps_false_rollbacks_under_alpha() -> (
    None
):
    # 1,000 healthy rollouts, 60 looks (30 minutes at 30 s): control 10 requests/s, treatment 100.
    # With each arm's variance from its own share, about 4 % of them rolled back at alpha 1 %.
    assert _false_rollbacks(1000, 3000, 300, alpha=0.01) <= 10
