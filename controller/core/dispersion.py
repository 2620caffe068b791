"""How much more variable the counts are than independent requests would make them: the dispersion
factor φ, measured from per-interval counts of the arms, instead of guessed by hand.

Requests are not independent: errors come in bursts (a retry storm, a bad pod, one user hammering)
and one user is evaluated many times. With bursts of geometric size of mean m the variance of a
count is about (2m − 1) times the binomial one, and a comparison that assumes independence rolls
back healthy changes. The controller already sees the counts interval by interval, so it measures
the excess variance: the quasi-likelihood (Pearson) dispersion factor. For each arm a, with x_i bad
requests among n_i requests in bin i (bins with no request left out) and p̂_a = Σx / Σn,

    φ̂ = Σ_arms Σ_i (x_i − n_i p̂_a)² / (n_i p̂_a (1 − p̂_a))  /  (Σ_arms B_a − number of arms)

From the sums over the bins (:class:`BinSums`) the Pearson sum of an arm is
``(Σ x_i²/n_i − X²/N) / (p̂ (1 − p̂))``: one subtraction of two nearly equal numbers, done once, in
that order, with ``p̂ (1 − p̂)`` formed as ``(X / N) ((N − X) / N)`` so that a share near 1 (the
latency check counts the *fast* requests, a share of about 0.95) loses nothing to ``1 − p̂``, and no
count is squared (N² overflows past about 10¹⁵⁴).

A few bins give a noisy estimate, and the estimate is used at every look, from the first minutes
on. The inflation a comparison uses is therefore not the estimate itself but an upper confidence
bound of φ: the Pearson sum over the χ² quantile at :data:`CONFIDENCE_LOWER_TAIL` of its degrees of
freedom (``X² ≈ φ χ²_df``), never below the policy's floor. Early on, with few degrees of freedom,
it errs on the side of caution (a wider interval, slower detection: about 1.6 times the estimate at
10 degrees of freedom, 1.25 at 40, 1.13 at 100) instead of trusting an estimate that may be far too
low under real clustering; as bins accumulate it converges on the estimate. Below
:data:`MIN_DEGREES_OF_FREEDOM` there is no estimate at all (``estimate`` is NaN).

Pure Python: the ``math`` module only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE_LOWER_TAIL = 0.2  # the inflation used is an 80 % upper confidence bound of φ
MIN_DEGREES_OF_FREEDOM = 2  # fewer: no estimate (one bin per arm says nothing about dispersion)


@dataclass(frozen=True)
class BinSums:
    """Sums over the bins (intervals) of one arm's counts, bins with no request left out."""

    bins: float  # B: number of bins with at least one request
    events: float  # Σ x_i   (bad requests, or for the sample-ratio check: treatment exposures)
    total: float  # Σ n_i   (all requests, or: exposures of both arms)
    squares: float  # Σ x_i² / n_i


@dataclass(frozen=True)
class Dispersion:
    estimate: float  # the Pearson dispersion factor φ̂ (≥ 0; 1 for independent requests)
    degrees_of_freedom: float
    used: float  # the inflation the comparison uses: max(floor, the estimate as adjusted)
    adjusted: float = math.nan  # the upper confidence bound of φ (NaN without an estimate)
    pearson: float = 0.0  # the Pearson sum behind the estimate

    @property
    def measured(self) -> bool:
        """Whether there were enough bins for an estimate."""
        return not math.isnan(self.estimate)


def _check_sums(sums: BinSums, what: str) -> None:
    values = {"bins": sums.bins, "events": sums.events, "total": sums.total, "squares": sums.squares}
    for name, value in values.items():
        if math.isnan(value) or value < 0 or math.isinf(value):
            raise ValueError(f"{what}: {name} must be a finite count ≥ 0, got {value}")


def _check_floor(floor: float) -> None:
    if math.isnan(floor) or floor < 1 or math.isinf(floor):
        raise ValueError(f"floor must be a finite number ≥ 1, got {floor}")


def _pearson(sums: BinSums, variance: float) -> float:
    """``Σ_i (x_i − n_i p̂)² / (n_i v)`` about the observed share ``p̂ = X/N``, for a per-request
    variance ``v``, from the sums: ``(Σ x²/n − 2 p̂ X + p̂² N) / v = (Σ x²/n − X p̂) / v``, a single
    subtraction."""
    deviation = sums.squares - sums.events * (sums.events / sums.total)
    # Rounding may leave a hair below zero where the bins agree exactly (Cauchy–Schwarz: ≥ 0).
    return max(deviation, 0.0) / variance


def _arm_pearson(sums: BinSums) -> tuple[float, float] | None:
    """An arm's Pearson sum about its own share and its degrees of freedom (B − 1), or None when
    the arm says nothing about dispersion (no requests, or every request bad or every one good)."""
    events = min(sums.events, sums.total)
    if sums.total <= 0 or events <= 0 or events >= sums.total or sums.bins < 1:
        return None
    variance = (events / sums.total) * ((sums.total - events) / sums.total)  # N² would overflow
    return _pearson(BinSums(sums.bins, events, sums.total, sums.squares), variance), sums.bins - 1


def _result(pearson: float, degrees_of_freedom: float, floor: float) -> Dispersion:
    if degrees_of_freedom < MIN_DEGREES_OF_FREEDOM:
        return Dispersion(math.nan, degrees_of_freedom, floor, math.nan, pearson)
    estimate = pearson / degrees_of_freedom
    adjusted = pearson / chi_square_quantile(CONFIDENCE_LOWER_TAIL, degrees_of_freedom)
    return Dispersion(estimate, degrees_of_freedom, max(floor, adjusted), adjusted, pearson)


def dispersion(arms: Sequence[BinSums], *, floor: float = 1.0) -> Dispersion:
    """The Pearson dispersion factor of bad requests across ``arms`` (each against its own share),
    and the inflation a comparison uses: ``max(floor, upper confidence bound of φ)``.

    An arm without bad requests, or with nothing but, carries no information about dispersion and
    is left out (neither its bins nor its degree of freedom count). Without enough degrees of
    freedom the estimate is NaN and ``used`` is the floor."""
    _check_floor(floor)
    pearson = 0.0
    degrees_of_freedom = 0.0
    for index, sums in enumerate(arms):
        _check_sums(sums, f"arm {index}")
        found = _arm_pearson(sums)
        if found is not None:
            pearson += found[0]
            degrees_of_freedom += found[1]
    return _result(pearson, degrees_of_freedom, floor)


def sample_ratio_dispersion(bins: BinSums, *, designed_share: float = 0.5, floor: float = 1.0) -> Dispersion:
    """The dispersion of the treatment's exposures per bin (``events``) among both arms' exposures
    (``total``): for K evaluations per user within a bin it estimates E[K²]/E[K].

    The deviations are taken about the *observed* share over the window (one degree of freedom
    spent), and scaled by the designed share's variance π₀(1 − π₀). About the designed share
    instead, a real mismatch would count as dispersion: a steady 45:55 split at 600 exposures a
    bin adds about 6 to the estimate, and dividing the exposures by it would hide the very mismatch
    the check exists to find."""
    _check_floor(floor)
    if not 0 < designed_share < 1:
        raise ValueError(f"designed_share must be in (0, 1), got {designed_share}")
    _check_sums(bins, "exposures")
    events = min(bins.events, bins.total)
    if bins.total <= 0 or bins.bins < 1:
        return _result(0.0, 0.0, floor)
    variance = designed_share * (1.0 - designed_share)
    clamped = BinSums(bins.bins, events, bins.total, bins.squares)
    return _result(_pearson(clamped, variance), bins.bins - 1, floor)


def _log_lower_gamma_series(a: float, x: float) -> float:
    """ln P(a, x) by its power series (converges fast for x < a + 1)."""
    term = 1.0 / a
    total = term
    for n in range(1, 10_000):
        term *= x / (a + n)
        total += term
        if abs(term) < abs(total) * 1e-16:
            break
    return math.log(total) - x + a * math.log(x) - math.lgamma(a)


def _upper_gamma_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction (modified Lentz; for x ≥ a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi_square_cdf(x: float, degrees_of_freedom: float) -> float:
    """P(χ²_df ≤ x): the regularised lower incomplete gamma function P(df/2, x/2)."""
    if degrees_of_freedom <= 0:
        raise ValueError(f"degrees_of_freedom must be positive, got {degrees_of_freedom}")
    if x <= 0:
        return 0.0
    a, half = degrees_of_freedom / 2.0, x / 2.0
    if half < a + 1.0:
        return math.exp(_log_lower_gamma_series(a, half))
    return 1.0 - _upper_gamma_fraction(a, half)


@functools.lru_cache(maxsize=4096)
def chi_square_quantile(probability: float, degrees_of_freedom: float) -> float:
    """The x with ``P(χ²_df ≤ x) = probability``, by bisection on :func:`chi_square_cdf`.

    Kept per (probability, degrees of freedom): a bisection costs up to a millisecond, and every
    statistical check of every rollout asks for one each cycle, almost always with the same few
    whole numbers of degrees of freedom."""
    if not 0 < probability < 1:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    low, high = 0.0, max(1.0, degrees_of_freedom)
    while chi_square_cdf(high, degrees_of_freedom) < probability:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if chi_square_cdf(middle, degrees_of_freedom) < probability:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return 0.5 * (low + high)
