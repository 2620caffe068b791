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


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def log_bayes_factor(
    treatment: float, control: float, *, designed_share: float = 0.5, prior: float = PRIOR_CONCENTRATION
) -> float:
    """``ln BF`` of "the share is not the designed one" against "it is", for (possibly fractional)
    counts ``treatment`` and ``control``. The prior is Beta(a, a) for a designed share of ½, and
    Beta(2a·π₀, 2a·(1 − π₀)) in general."""
    if not (math.isfinite(treatment) and treatment >= 0 and math.isfinite(control) and control >= 0):
        raise ValueError(f"counts must be finite and ≥ 0, got {treatment} and {control}")
    if not 0 < designed_share < 1:
        raise ValueError(f"designed_share must be in (0, 1), got {designed_share}")
    a = 2.0 * prior * designed_share
    b = 2.0 * prior * (1.0 - designed_share)
    alternative = log_beta(treatment + a, control + b) - log_beta(a, b)
    null = treatment * math.log(designed_share) + control * math.log1p(-designed_share)
    return alternative - null


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
