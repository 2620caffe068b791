"""The statistics behind errorRatio/latency guardrails and the sample-ratio check, checked against
independent computations (scipy, numerical integration, textbook formulas) and by simulation."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from controller.core import sequential, srm
from controller.core.sequential import ArmCounts, compare


@pytest.mark.parametrize("x", [-45.0, -38.0, -30.5, -29.5, -8.0, -1.0, 0.0, 0.5, 3.0, 9.0])
def test_log_normal_cdf_matches_scipy_far_into_the_tail(x: float) -> None:
    assert sequential.log_normal_cdf(x) == pytest.approx(stats.norm.logcdf(x), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("s", "v", "rho"), [(0.0, 50.0, 10.0), (3.0, 100.0, 20.0), (-4.0, 400.0, 30.0), (40.0, 900.0, 100.0)]
)
def test_the_mixture_ratio_is_the_integral_of_likelihood_ratios_over_a_half_normal_prior(
    s: float, v: float, rho: float
) -> None:
    prior_density = 2 * math.sqrt(rho / (2 * math.pi))

    def integrand(lam: float) -> float:
        return math.exp(lam * s - lam * lam * v / 2 - rho * lam * lam / 2) * prior_density

    peak = max(s, 0.0) / (v + rho)
    width = 12 / math.sqrt(v + rho)
    value, _ = integrate.quad(integrand, 0, peak + width, points=[peak], limit=200)
    assert sequential.log_mixture_ratio(s, v, rho) == pytest.approx(math.log(value), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize(
    ("v", "rho", "alpha"), [(10.0, 5.0, 0.05), (5000.0, 300.0, 0.005), (1e6, 1e3, 0.001)]
)
def test_the_boundary_is_where_the_ratio_reaches_one_over_alpha(v: float, rho: float, alpha: float) -> None:
    b = sequential.boundary(v, rho, alpha)
    assert sequential.log_mixture_ratio(b, v, rho) == pytest.approx(math.log(1 / alpha), abs=1e-8)
    # Between the two-sided normal-mixture boundaries at 2α and at α (Robbins' closed form).
    two_sided = math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha**2)))
    loose = math.sqrt((v + rho) * math.log((v + rho) / (rho * (2 * alpha) ** 2)))
    assert loose <= b <= two_sided


def test_a_tolerance_whose_square_overflows_is_refused() -> None:
    with pytest.raises(ValueError, match=r"maxIncrease 1e\+200 is too large to compare"):
        compare(
            ArmCounts(60, 6000),
            ArmCounts(61, 6010),
            rule="maxIncrease",
            limit=1e200,
            alpha=0.01,
            expected_samples=2000,
        )


@pytest.mark.parametrize("alpha", [1e-12, 1e-170, 1e-300])
def test_the_boundary_holds_for_budgets_whose_square_underflows(alpha: float) -> None:
    # α² is 0 in floating point below about 1e-162: the boundary must not divide by it.
    b = sequential.boundary(1000.0, 100.0, alpha)
    assert sequential.log_mixture_ratio(b, 1000.0, 100.0) == pytest.approx(-math.log(alpha), rel=1e-9)
    result = compare(
        ArmCounts(60, 6000), ArmCounts(61, 6010), rule="maxDelta", limit=0, alpha=alpha, expected_samples=2000
    )
    assert not result.fails
    assert result.excess_lower < 0


@pytest.mark.parametrize("alpha", [0.2, 0.05, 0.01, 0.0025, 1e-4, 1e-6])
@pytest.mark.parametrize("expected", [50, 2000, 1e6])
def test_the_boundary_is_tightest_at_expected_samples_pairs(alpha: float, expected: float) -> None:
    # expectedSamples is per arm: the mixing precision must make the boundary at V = expected
    # pairs the narrowest any precision gives there (found numerically over ρ).
    def width(log_rho: float) -> float:
        return sequential.boundary(expected, math.exp(log_rho), alpha) / expected

    around = math.log(expected)
    best = optimize.minimize_scalar(
        width, bounds=(around - 12, around + 3), method="bounded", options={"xatol": 1e-9}
    )
    rho = sequential.mixing_precision(expected, alpha)
    assert rho == pytest.approx(math.exp(best.x), rel=1e-3)
    assert width(math.log(rho)) <= best.fun * (1 + 1e-9)


def test_a_comparison_recomputed_independently_with_scipy() -> None:
    treatment, control = ArmCounts(130, 6000), ArmCounts(61, 6010)
    result = compare(
        treatment,
        control,
        rule="maxIncrease",
        limit=0.2,
        alpha=0.005,
        expected_samples=3000,
        variance_inflation=1.5,
    )
    # Independent computation: smoothed shares, pair variance, effective pairs, half-normal mixture.
    # The variance is the larger of the one at each arm's own share and the one at the shares of
    # both arms together under the null p_t = k·p_c (here the null's: control's share is lower).
    k = 1.2
    own = (130.5 / 6001, 61.5 / 6011)
    null_c = (130 + 61 + 0.5) / (k * 6000 + 6010 + 1)
    candidates = []
    for pt, pc in (own, (k * null_c, null_c)):
        sigma2_at = pt * (1 - pt) + k * k * pc * (1 - pc)
        candidates.append((pt * (1 - pt) / 6000 + k * k * pc * (1 - pc) / 6010, sigma2_at))
    assert candidates[1][0] > candidates[0][0]
    variance_at, sigma2 = max(candidates)
    pairs = sigma2 / (1.5 * variance_at)
    excess = 130 / 6000 - k * 61 / 6010
    s = pairs * excess / math.sqrt(sigma2)
    rho = sequential.mixing_precision(3000, 0.005)  # checked on its own above
    w = pairs + rho
    expected = math.log(2) + 0.5 * math.log(rho / w) + s * s / (2 * w) + special.log_ndtr(s / math.sqrt(w))
    assert result.excess == pytest.approx(excess)
    assert result.effective_pairs == pytest.approx(pairs)
    assert result.log_likelihood_ratio == pytest.approx(expected, rel=1e-10)
    assert result.tolerated == pytest.approx(k * 61 / 6010)
    # The lower bound is where the test at that excess would sit exactly on the boundary.
    at_lower = pairs * (excess - result.excess_lower) / math.sqrt(sigma2)
    assert sequential.log_mixture_ratio(at_lower, pairs, rho) == pytest.approx(math.log(200), abs=1e-7)
    assert result.fails == (result.excess_lower > 0)


def test_a_doubled_error_ratio_fails_and_equal_ratios_pass() -> None:
    doubled = compare(
        ArmCounts(120, 6000),
        ArmCounts(60, 6000),
        rule="maxDelta",
        limit=0.0,
        alpha=0.005,
        expected_samples=2000,
    )
    same = compare(
        ArmCounts(60, 6000),
        ArmCounts(60, 6000),
        rule="maxDelta",
        limit=0.0,
        alpha=0.005,
        expected_samples=2000,
    )
    assert doubled.fails
    assert doubled.excess_lower > 0
    assert not same.fails
    assert same.excess_lower < 0 < same.threshold


def test_a_wider_tolerance_never_fails_where_a_narrower_one_passes() -> None:
    counts = (ArmCounts(95, 5000), ArmCounts(50, 5000))
    verdicts = [
        compare(*counts, rule="maxDelta", limit=delta, alpha=0.01, expected_samples=2000).fails
        for delta in (0.0, 0.002, 0.004, 0.006, 0.01)
    ]
    assert verdicts == sorted(verdicts, reverse=True)
    assert verdicts[0]
    assert not verdicts[-1]


def test_variance_inflation_makes_the_test_more_cautious() -> None:
    counts = (ArmCounts(110, 6000), ArmCounts(60, 6000))
    plain = compare(*counts, rule="maxDelta", limit=0.0, alpha=0.01, expected_samples=2000)
    inflated = compare(
        *counts, rule="maxDelta", limit=0.0, alpha=0.01, expected_samples=2000, variance_inflation=4
    )
    assert plain.fails
    assert not inflated.fails
    assert inflated.effective_pairs == pytest.approx(plain.effective_pairs / 4)


def test_counts_from_extrapolated_increases_are_clamped() -> None:
    result = compare(
        ArmCounts(101.3, 100.2),
        ArmCounts(0.0, 100.0),
        rule="maxDelta",
        limit=0.0,
        alpha=0.01,
        expected_samples=100,
    )
    assert result.treatment_share == 1.0
    assert result.control_share == 0.0


NOT_COUNTS = [math.nan, math.inf, -math.inf, -0.4]
ARM_FIELDS = ["treatment.events", "treatment.total", "control.events", "control.total"]


@pytest.mark.parametrize("bad", NOT_COUNTS, ids=str)
@pytest.mark.parametrize("field", ARM_FIELDS)
def test_a_comparison_refuses_counts_that_are_not_counts(bad: float, field: str) -> None:
    counts = {
        "treatment.events": 60.0,
        "treatment.total": 6000.0,
        "control.events": 61.0,
        "control.total": 6010.0,
    }
    counts[field] = bad
    with pytest.raises(ValueError, match=rf"{field.replace('.', ' ')} must be a finite count ≥ 0, got {bad}"):
        compare(
            ArmCounts(counts["treatment.events"], counts["treatment.total"]),
            ArmCounts(counts["control.events"], counts["control.total"]),
            rule="maxDelta",
            limit=0.0,
            alpha=0.01,
            expected_samples=2000,
        )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("limit", math.nan),
        ("limit", math.inf),
        ("limit", -0.1),
        ("alpha", math.nan),
        ("alpha", 0.0),
        ("alpha", 0.5),
        ("expected_samples", math.nan),
        ("expected_samples", math.inf),
        ("variance_inflation", math.nan),
        ("variance_inflation", math.inf),
        ("variance_inflation", 0.5),
    ],
)
def test_a_comparison_refuses_settings_that_are_not_usable(setting: str, value: float) -> None:
    settings: dict[str, float] = {
        "limit": 0.0,
        "alpha": 0.01,
        "expected_samples": 2000,
        "variance_inflation": 1.0,
    }
    settings[setting] = value
    with pytest.raises(ValueError, match=setting):
        compare(
            ArmCounts(60, 6000),
            ArmCounts(61, 6010),
            rule="maxDelta",
            limit=settings["limit"],
            alpha=settings["alpha"],
            expected_samples=settings["expected_samples"],
            variance_inflation=settings["variance_inflation"],
        )


def test_rules_other_than_delta_and_increase_are_refused() -> None:
    with pytest.raises(ValueError, match="maxDelta or maxIncrease"):
        compare(ArmCounts(1, 10), ArmCounts(1, 10), rule="max", limit=0.1, alpha=0.01, expected_samples=10)


def _aa_crossings(
    paths: int,
    looks: int,
    requests_per_look: float,
    error_ratio: float,
    alpha: float,
    regression: float = 1.0,
) -> list[int | None]:
    """Run the real comparison at every look of simulated A/A (or regressed) rollouts; return the
    look at which each path first failed, or None."""
    rng = np.random.default_rng(7)
    first: list[int | None] = []
    for _ in range(paths):
        n = rng.poisson(requests_per_look, size=(looks, 2)).cumsum(axis=0)
        per_look = np.diff(np.vstack([[0, 0], n]), axis=0)
        errors = np.column_stack(
            [
                rng.binomial(per_look[:, 0], error_ratio * regression),
                rng.binomial(per_look[:, 1], error_ratio),
            ]
        ).cumsum(axis=0)
        crossed = None
        for look in range(looks):
            result = compare(
                ArmCounts(float(errors[look, 0]), float(n[look, 0])),
                ArmCounts(float(errors[look, 1]), float(n[look, 1])),
                rule="maxDelta",
                limit=0.0,
                alpha=alpha,
                expected_samples=2000,
            )
            if result.fails:
                crossed = look
                break
        first.append(crossed)
    return first


def test_looking_at_every_interval_keeps_false_failures_under_alpha() -> None:
    # 1,000 healthy rollouts, 60 looks each (30 minutes at 30 s), 10 requests/s per arm, 1 % errors.
    # A fixed-sample z-test at the same alpha, re-run at every look, fails about 7 % of them; the
    # confidence sequence must stay under alpha.
    crossings = _aa_crossings(1000, 60, 300, 0.01, alpha=0.01)
    false_failures = sum(1 for c in crossings if c is not None)
    assert false_failures / len(crossings) <= 0.01


def test_a_doubled_error_ratio_is_caught_within_the_rollout() -> None:
    crossings = _aa_crossings(100, 60, 300, 0.01, alpha=0.01, regression=2.0)
    caught = [c for c in crossings if c is not None]
    assert len(caught) >= 95
    assert sorted(caught)[int(0.9 * len(caught)) - 1] <= 24  # p90 within 12 minutes of 30 s looks


# Sample ratio -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "y"), [(0, 0), (10, 3), (5300, 4700), (120.5, 80.25)])
def test_the_sample_ratio_bayes_factor_matches_scipy(x: float, y: float) -> None:
    a = srm.PRIOR_CONCENTRATION
    expected = special.betaln(x + a, y + a) - special.betaln(a, a) - (x + y) * math.log(0.5)
    assert srm.log_bayes_factor(x, y) == pytest.approx(expected, rel=1e-10, abs=1e-10)


# ln B(a, b) in 60-digit decimal arithmetic from Stirling's series (B₂…B₁₆; the first term left
# out is below 1e-17 for arguments ≥ 10): a reference that shares no code and no floating-point
# cancellation with the module under test.
_BERNOULLI = [(1, 6), (-1, 30), (1, 42), (-1, 30), (5, 66), (-691, 2730), (7, 6), (-3617, 510)]
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")


def _decimal_log_gamma(z: Decimal) -> Decimal:
    assert z >= 10
    series = sum(
        (
            Decimal(n) / Decimal(d) / (2 * k * (2 * k - 1)) / z ** (2 * k - 1)
            for k, (n, d) in enumerate(_BERNOULLI, start=1)
        ),
        Decimal(0),
    )
    return (z - Decimal("0.5")) * z.ln() - z + (2 * _PI).ln() / 2 + series


def _decimal_log_bayes_factor(x: float, y: float, designed_share: float) -> float:
    with localcontext() as context:
        context.prec = 60
        share = Decimal(designed_share)
        prior = Decimal(srm.PRIOR_CONCENTRATION)
        a, b = 2 * prior * share, 2 * prior * (1 - share)
        tx, ty = Decimal(x), Decimal(y)

        def log_beta(p: Decimal, q: Decimal) -> Decimal:
            return _decimal_log_gamma(p) + _decimal_log_gamma(q) - _decimal_log_gamma(p + q)

        alternative = log_beta(tx + a, ty + b) - log_beta(a, b)
        null = tx * share.ln() + ty * (1 - share).ln()
        return float(alternative - null)


@pytest.mark.parametrize("total", [1e6, 1e9, 1e12, 1e15, 1e18])
@pytest.mark.parametrize("departure", [0.0, 1.0, 3.0, 6.0])  # treatment − control, in standard deviations
def test_the_sample_ratio_bayes_factor_is_exact_at_any_count(total: float, departure: float) -> None:
    difference = round(departure * math.sqrt(total))
    x, y = (total + difference) / 2, (total - difference) / 2
    assert srm.log_bayes_factor(x, y) == pytest.approx(
        _decimal_log_bayes_factor(x, y, 0.5), rel=1e-9, abs=1e-7
    )


@pytest.mark.parametrize("total", [1e12, 1e15, 1e18])
def test_an_exact_split_is_never_a_mismatch_however_large_the_counts(total: float) -> None:
    result = srm.check(total / 2, total / 2, alpha=0.001)
    assert not result.mismatch
    assert result.log_bayes_factor < 0
    assert srm.check(total * 0.501, total * 0.499, alpha=0.001).mismatch


@pytest.mark.parametrize("total", [3e3, 1e9, 1e15, 1e18])
def test_the_bayes_factor_of_an_unequal_design_is_exact_at_any_count(total: float) -> None:
    x = round(total * 2 / 3 + 2 * math.sqrt(total))
    y = total - x
    assert srm.log_bayes_factor(x, y, designed_share=2 / 3) == pytest.approx(
        _decimal_log_bayes_factor(x, y, 2 / 3), rel=1e-9, abs=1e-7
    )


@pytest.mark.parametrize(("x", "y"), [(0, 0), (1, 0), (3, 40), (0.25, 7.5), (512, 9490)])
@pytest.mark.parametrize("designed_share", [0.02, 0.05, 0.95])
def test_the_bayes_factor_with_a_small_prior_arm_matches_scipy(
    x: float, y: float, designed_share: float
) -> None:
    # A designed share far from ½ puts a Beta parameter under 10, below the series' range.
    a, b = 100 * designed_share, 100 * (1 - designed_share)
    expected = (
        special.betaln(x + a, y + b)
        - special.betaln(a, b)
        - x * math.log(designed_share)
        - y * math.log1p(-designed_share)
    )
    assert srm.log_bayes_factor(x, y, designed_share=designed_share) == pytest.approx(
        expected, rel=1e-10, abs=1e-10
    )


def test_the_sample_ratio_bayes_factor_is_the_binomial_marginal_over_its_prior() -> None:
    x, y = 30, 14
    prior = stats.beta(srm.PRIOR_CONCENTRATION, srm.PRIOR_CONCENTRATION)
    marginal, _ = integrate.quad(lambda p: stats.binom.pmf(x, x + y, p) * prior.pdf(p), 0, 1)
    assert srm.log_bayes_factor(x, y) == pytest.approx(
        math.log(marginal / stats.binom.pmf(x, x + y, 0.5)), rel=1e-8
    )


def test_an_unequal_designed_split_is_the_null() -> None:
    balanced = srm.log_bayes_factor(2000, 1000, designed_share=2 / 3)
    assert balanced < 0  # the counts fit a 2:1 design
    assert srm.log_bayes_factor(2000, 1000) > math.log(1000)  # but not a 1:1 one


def test_a_two_point_split_error_is_a_mismatch_and_chance_is_not() -> None:
    assert srm.check(10_400, 9_600, alpha=0.001).mismatch
    assert not srm.check(10_080, 9_920, alpha=0.001).mismatch
    # Evaluations of the same users are not independent: inflation discounts them.
    assert not srm.check(10_400, 9_600, alpha=0.001, variance_inflation=5).mismatch


@pytest.mark.parametrize("bad", NOT_COUNTS, ids=str)
@pytest.mark.parametrize("arm", ["treatment", "control"])
def test_the_sample_ratio_check_refuses_counts_that_are_not_counts(bad: float, arm: str) -> None:
    counts = {"treatment": 6000.0, "control": 6010.0, arm: bad}
    with pytest.raises(ValueError, match=rf"{arm} exposures must be a finite count ≥ 0, got {bad}"):
        srm.check(counts["treatment"], counts["control"], alpha=0.001)


@pytest.mark.parametrize("value", [math.nan, math.inf, 0.5])
def test_the_sample_ratio_check_refuses_an_unusable_inflation(value: float) -> None:
    with pytest.raises(ValueError, match="variance_inflation"):
        srm.check(6000, 6010, alpha=0.001, variance_inflation=value)


@pytest.mark.parametrize(("treatment", "control"), [(0, 0), (0, 5), (5, 0), (1e18, 3.0), (2.5, 1e-300)])
def test_the_shown_split_is_a_share_between_zero_and_one(treatment: float, control: float) -> None:
    ratio = srm.check(treatment, control, alpha=0.001)
    assert 0.0 <= ratio.share <= 1.0
    assert 0.0 <= 1.0 - ratio.share <= 1.0


def test_watching_the_split_every_interval_keeps_false_mismatches_under_alpha() -> None:
    rng = np.random.default_rng(11)
    alpha, paths, looks = 0.01, 500, 120
    counts = rng.poisson(60, size=(paths, looks, 2)).cumsum(axis=1)
    false_alarms = 0
    for path in counts:
        if any(srm.check(float(t), float(c), alpha=alpha).mismatch for t, c in path):
            false_alarms += 1
    assert false_alarms / paths <= alpha


@pytest.mark.parametrize("exponent", [12, 18, 20, 22, 24, 42, 96, 156, 200, 300])
@pytest.mark.parametrize(
    ("treatment_share", "control_share", "rule", "limit"),
    [
        (0.0, 0.01, "maxDelta", 0.001),  # a treatment without a single error
        (0.01, 0.01, "maxDelta", 0.001),  # equal shares
        (0.005, 0.01, "maxDelta", 0.0),  # half the control's errors
        (0.05, 0.05, "maxIncrease", 0.1),
        (0.001, 0.5, "maxDelta", 0.0),
    ],
)
def test_a_treatment_no_worse_than_control_never_fails_however_large_the_counts(
    exponent: int, treatment_share: float, control_share: float, rule: str, limit: float
) -> None:
    """Far below the boundary the statistic is the sum of two huge terms of opposite sign,
    ``S²/(2(V + ρ))`` and ``ln Φ(S/√(V + ρ))``; added as computed they lost every digit from about
    10¹⁸ requests on, and a treatment with no error at all failed, or the arithmetic overflowed."""
    n = 10.0**exponent
    result = compare(
        ArmCounts(treatment_share * n, n),
        ArmCounts(control_share * n, n),
        rule=rule,
        limit=limit,
        alpha=0.005,
        expected_samples=2000,
    )
    assert not result.fails
    assert math.isfinite(result.log_likelihood_ratio)
    assert math.isfinite(result.excess_lower)
    assert result.excess_lower <= result.excess


@pytest.mark.parametrize("x", [-1e3, -1e8, -1e12, -1e40, -1e160, -1e300])
def test_the_mixture_ratio_far_below_the_boundary_matches_its_asymptote(x: float) -> None:
    """``ln M⁺`` at ``S = x·√(V + ρ)``: ``ln 2 + ½ ln(ρ/(V + ρ)) + x²/2 + ln Φ(x)``, the last two
    computed together from Mills' ratio in exact decimal arithmetic."""
    v, rho = 1e6, 100.0
    w = v + rho
    with localcontext() as ctx:
        ctx.prec = 60
        big = Decimal(x)
        inverse = 1 / (big * big)
        series = 1 - inverse + 3 * inverse * inverse - 15 * inverse**3
        half_square_plus_log_cdf = -(-big).ln() - Decimal(2 * math.pi).sqrt().ln() + series.ln()
    expected = math.log(2.0) + 0.5 * math.log(rho / w) + float(half_square_plus_log_cdf)
    s = x * math.sqrt(w)
    assert sequential.log_mixture_ratio(s, v, rho) == pytest.approx(expected, rel=1e-12, abs=1e-9)
