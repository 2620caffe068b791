"""Sample-ratio mismatch: does the observed treatment:control split of exposures fit the design?

flagroll's mirrored layout gives the control arm exactly as many users as the treatment arm, so
exposures should split 1:1. If they depart from it beyond chance, assignment or metric collection is
broken and no comparison of the arms can be trusted.

The test is anytime-valid, like the guardrails it protects: a Bayes factor of a Beta-binomial
alternative against the designed share (the two-arm case of Lindon and Malek, "Anytime-valid
inference for multinomial count data", NeurIPS 2022). Under the design the Bayes factor is a test
martingale, so ``P(it ever reaches 1/α) ≤ α`` however often it is looked at:

    BF = B(x + a, y + a) / B(a, a) / (π₀ˣ (1 − π₀)ʸ)

with x, y the exposures of treatment and control, π₀ the designed treatment share and a Beta(a, a)
prior on the share centred on the design (a = 50: the alternative expects departures of a few
percent). Counts are divided by the variance-inflation factor first: exposures are evaluations,
and one user evaluated many times is not many independent draws. Pure Python: ``math`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

METHOD = "Beta-binomial Bayes factor against the designed split"
PRIOR_CONCENTRATION = 50.0  # a in Beta(a, a)


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Stirling's series for ln Γ(z) − ((z − ½) ln z − z + ½ ln 2π): B₂ₖ / (2k (2k − 1) z^(2k − 1)).
_STIRLING = (1.0 / 12.0, -1.0 / 360.0, 1.0 / 1260.0, -1.0 / 1680.0, 1.0 / 1188.0)
_STIRLING_FROM = 10.0  # the first term left out is below 2e-14 from here on


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _stirling_remainder(z: float) -> float:
    """``ln Γ(z) − ((z − ½) ln z − z + ½ ln 2π)``: small, and exact to about 1e-14 at any z > 0."""
    if z < _STIRLING_FROM:
        return math.lgamma(z) - ((z - 0.5) * math.log(z) - z + _HALF_LOG_2PI)
    inverse_square = 1.0 / (z * z)
    total, power = 0.0, 1.0 / z
    for coefficient in _STIRLING:
        total += coefficient * power
        power *= inverse_square
    return total


def _log_gap(observed: float, expected: float, difference: float) -> float:
    """``u − ln(1 + u)`` (≥ 0) for ``u = difference / expected``, where ``observed = expected +
    difference`` > 0: by its series for small u (no cancellation), else from the ratio itself."""
    u = difference / expected
    if abs(u) < 0.01:
        # u²/2 − u³/3 + u⁴/4 − …: eleven terms reach 1e-16 relative for |u| < 0.01.
        total, power = 0.0, u * u
        for k in range(2, 13):
            total += power / k if k % 2 == 0 else -power / k
            power *= u
        return total
    return u - math.log(observed / expected)


def log_bayes_factor(
    treatment: float, control: float, *, designed_share: float = 0.5, prior: float = PRIOR_CONCENTRATION
) -> float:
    """``ln BF`` of "the share is not the designed one" against "it is", for (possibly fractional)
    counts ``treatment`` and ``control``. The prior is Beta(a, a) for a designed share of ½, and
    Beta(2a·π₀, 2a·(1 − π₀)) in general.

    ``ln B(x + a, y + b) − x ln π₀ − y ln(1 − π₀)`` is a difference of terms of order n·ln n whose
    result is of order ln n: computed as written it loses all precision past about 1e12 counts (an
    exact 1:1 split of 1e18 exposures came out as a mismatch). It is computed instead from Stirling's
    formula with the large terms cancelled algebraically: with X = x + a, Y = y + b, N = X + Y and
    d = x(1 − π₀) − yπ₀ (X − Nπ₀ = d, Y − N(1 − π₀) = −d),

        ln BF = d²/(N π₀(1 − π₀)) − x·g(d/(Nπ₀)) − y·g(−d/(N(1 − π₀))) + a ln(X/N) + b ln(Y/N)
                + ½ ln(N/(XY)) + ½ ln 2π + R(X) + R(Y) − R(N) − ln B(a, b),

    g(u) = u − ln(1 + u) and R the remainder of Stirling's series; every term is small or exact.
    """
    if not (math.isfinite(treatment) and treatment >= 0 and math.isfinite(control) and control >= 0):
        raise ValueError(f"counts must be finite and ≥ 0, got {treatment} and {control}")
    if not 0 < designed_share < 1:
        raise ValueError(f"designed_share must be in (0, 1), got {designed_share}")
    share = designed_share
    a = 2.0 * prior * share
    b = 2.0 * prior * (1.0 - share)
    x_, y_ = treatment + a, control + b
    n_ = x_ + y_
    d = treatment * (1.0 - share) - control * share
    divergence = (
        d * d / (n_ * share * (1.0 - share))
        - treatment * _log_gap(x_, n_ * share, d)
        - control * _log_gap(y_, n_ * (1.0 - share), -d)
    )
    prior_terms = a * math.log(x_ / n_) + b * math.log(y_ / n_)
    width = 0.5 * (math.log(n_) - math.log(x_) - math.log(y_)) + _HALF_LOG_2PI
    remainders = _stirling_remainder(x_) + _stirling_remainder(y_) - _stirling_remainder(n_)
    return divergence + prior_terms + width + remainders - log_beta(a, b)


@dataclass(frozen=True)
class SampleRatio:
    treatment: float
    control: float
    designed_share: float
    log_bayes_factor: float
    threshold: float  # ln(1/α)
    alpha: float

    @property
    def share(self) -> float:
        total = self.treatment + self.control
        return self.treatment / total if total > 0 else self.designed_share

    @property
    def mismatch(self) -> bool:
        return self.log_bayes_factor >= self.threshold


def check(
    treatment: float,
    control: float,
    *,
    alpha: float,
    designed_share: float = 0.5,
    variance_inflation: float = 1.0,
) -> SampleRatio:
    """Judge observed exposures against the designed split. A count that is negative, NaN or
    infinite, or a setting out of its range, raises ValueError naming it."""
    for arm, count in (("treatment", treatment), ("control", control)):
        if not (math.isfinite(count) and count >= 0):
            raise ValueError(f"{arm} exposures must be a finite count ≥ 0, got {count}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not (math.isfinite(variance_inflation) and variance_inflation >= 1):
        raise ValueError(f"variance_inflation must be a finite number ≥ 1, got {variance_inflation}")
    statistic = log_bayes_factor(
        treatment / variance_inflation, control / variance_inflation, designed_share=designed_share
    )
    return SampleRatio(
        treatment=treatment,
        control=control,
        designed_share=designed_share,
        log_bayes_factor=statistic,
        threshold=-math.log(alpha),
        alpha=alpha,
    )
