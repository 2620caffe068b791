"""Anytime-valid comparison of a rate between the treatment and control arms.

The controller looks at every interval, so a fixed-sample test would cry wolf: it is re-run at every
look and its false alarms add up. This module uses a **confidence sequence** instead (Howard,
Ramdas, McAuliffe and Sekhon, *Annals of Statistics* 2021; the asymptotic form of Waudby-Smith et
al.): a lower confidence bound that holds at *all* looks simultaneously with probability ≥ 1 − α,
so looking as often as one likes costs nothing. Equivalently it is an mSPRT (Johari, Pekelis and
Walsh): the guardrail fails when a mixture likelihood ratio exceeds ``1 / α``.

The quantity judged is the **excess** of the treatment share over what the policy tolerates:

- ``maxDelta δ``:     excess = p_t − p_c − δ
- ``maxIncrease x``:  excess = p_t − (1 + x) · p_c

where p is the share of bad requests (errors, or requests slower than a latency bound) in an arm.
The guardrail fails when the anytime-valid lower bound of the excess is above zero.

The statistic: with k = 1 (delta) or 1 + x (increase), one treatment request and one control
request form a pair whose difference ``D = X_t − k X_c`` has variance
``σ² = p_t(1 − p_t) + k² p_c(1 − p_c)``. The counts give the estimate and its variance
``v = p_t(1 − p_t)/n_t + k² p_c(1 − p_c)/n_c`` (times a variance-inflation factor φ ≥ 1 for
requests that are not independent); ``V = σ²/v`` is the number of effective pairs and
``S = V · excess / σ`` the standardised sum. The shares in σ² and v are either each arm's own or
those of both arms together under the null of no excess (``p_t = k p_c + δ``), whichever gives
the larger v: each arm's own share alone lets a small arm with few bad requests by chance look more
certain than it is, which made arms of very different sizes (retries, hedging) fail far more often
than α. A one-sided (half-normal) mixture of the Gaussian
likelihood ratios over the effect, with mixing precision ρ (in pairs), is the test martingale

    M⁺ = 2 · sqrt(ρ / (V + ρ)) · exp(S² / (2 (V + ρ))) · Φ(S / sqrt(V + ρ))

and the guardrail fails when ``M⁺ ≥ 1/α``. ρ sets where the boundary is tightest; it is chosen
so that the boundary is narrowest at an expected number of samples per arm. Shares in the variance
are smoothed (``(e + ½)/(n + 1)``) so that an arm with no bad request yet does not claim zero
variance. Pure Python: the ``math`` module only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_LOG_2 = math.log(2.0)
_SQRT_2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

METHOD = "confidence sequence (one-sided normal mixture)"


_MILLS_FROM = -30.0  # below it ln Φ comes from the asymptotic series of Mills' ratio


def _log_mills_tail(x: float) -> float:
    """``x²/2 + ln Φ(x)`` for ``x < -30``, from Φ(x) ≈ φ(x)/|x| · (1 − 1/x² + 3/x⁴): the two huge
    terms of opposite sign cancelled algebraically, and no power of x formed (x⁴ overflows)."""
    inverse_square = (1.0 / x) / x
    return -math.log(-x) - _LOG_SQRT_2PI + math.log1p(inverse_square * (3.0 * inverse_square - 1.0))


def log_normal_cdf(x: float) -> float:
    """``ln Φ(x)``, accurate far into the lower tail."""
    if x > _MILLS_FROM:
        return math.log(0.5 * math.erfc(-x / _SQRT_2))
    return -0.5 * x * x + _log_mills_tail(x)


def log_mixture_ratio(s: float, v: float, rho: float) -> float:
    """``ln M⁺``: the one-sided normal-mixture likelihood ratio of a standardised sum ``s`` after
    ``v`` units of intrinsic time (effective pairs), with mixing precision ``rho``.

    Far below zero (``s/√(v + ρ) < -30``) ``s²/(2(v + ρ))`` and ``ln Φ(s/√(v + ρ))`` are huge and
    opposite; added, they lost every digit from about 10¹⁸ requests per arm on (a treatment with no
    error at all failed), so their sum is taken from Mills' ratio directly."""
    if v < 0 or rho <= 0:
        raise ValueError(f"need v ≥ 0 and rho > 0, got v={v}, rho={rho}")
    w = v + rho
    x = s / math.sqrt(w)
    if x <= _MILLS_FROM:
        return _LOG_2 + 0.5 * math.log(rho / w) + _log_mills_tail(x)
    return _LOG_2 + 0.5 * math.log(rho / w) + s * s / (2.0 * w) + log_normal_cdf(x)


def boundary(v: float, rho: float, alpha: float) -> float:
    """The standardised sum ``s*`` at which ``ln M⁺(s*, v) = ln(1/α)``: crossing it fails the test.

    ``M⁺`` rises with ``s``. The two-sided normal-mixture boundary at α is an upper bracket (there
    ``M⁺`` already exceeds the symmetric mixture, which equals ``1/α``); at 2α a lower one.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    w = v + rho
    target = -math.log(alpha)
    log_ratio = math.log(w / rho)  # in logarithms: α² underflows to 0 below about 1e-162
    high = math.sqrt(w * (log_ratio + 2.0 * target))
    low = math.sqrt(w * max(0.0, log_ratio + 2.0 * target - 2.0 * _LOG_2))
    for _ in range(60):
        middle = 0.5 * (low + high)
        if log_mixture_ratio(middle, v, rho) < target:
            low = middle
        else:
            high = middle
        if high - low <= 1e-10 * high:
            break
    return high


def mixing_precision(expected_samples: float, alpha: float) -> float:
    """ρ (in pairs) that makes the boundary narrowest at ``V = expected_samples`` pairs, that is
    ``expected_samples`` requests per arm.

    Setting the derivative of the boundary ``s*(ρ)`` (``ln M⁺(s*, V, ρ) = ln(1/α)``) to zero gives,
    with ``u = s*/sqrt(V + ρ)`` and ``x = V/ρ``:

        x = u² + u·φ(u)/Φ(u)    and    u² = 2 ln(1/(2α)) + ln(1 + x) − 2 ln Φ(u),

    solved by iteration from ``x = 2 ln(1/(2α)) + ln(1 + 2 ln(1/(2α)))``, the optimum of the
    two-sided normal-mixture boundary at 2α (which the one-sided one at α approaches when Φ(u) → 1).
    """
    if not expected_samples > 0 or not math.isfinite(expected_samples):
        raise ValueError(f"expected_samples must be positive, got {expected_samples}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    twice_log = -2.0 * math.log(2.0 * alpha)
    x = twice_log + math.log1p(twice_log)
    u = math.sqrt(x)
    for _ in range(200):
        log_cdf = log_normal_cdf(u)
        u = math.sqrt(twice_log + math.log1p(x) - 2.0 * log_cdf)
        log_cdf = log_normal_cdf(u)
        mills = math.exp(-0.5 * u * u - _LOG_SQRT_2PI - log_cdf)  # φ(u)/Φ(u)
        following = u * u + u * mills
        if abs(following - x) <= 1e-13 * following:
            break
        x = following
    return expected_samples / following


@dataclass(frozen=True)
class ArmCounts:
    """Bad events and all events (requests) of one arm since its exposure began."""

    events: float
    total: float

    @property
    def share(self) -> float:
        return self.events / self.total if self.total > 0 else 0.0


@dataclass(frozen=True)
class Comparison:
    """The evidence behind one look at one rule."""

    treatment_share: float
    control_share: float
    tolerated: float  # the treatment share the rule tolerates, at the control's point estimate
    excess: float  # estimate of p_t − tolerated (its sign says which side of the bound it is)
    excess_lower: float  # anytime-valid lower confidence bound of the excess
    log_likelihood_ratio: float  # ln M⁺ at zero excess
    threshold: float  # ln(1/α): the statistic at or above it fails
    alpha: float
    effective_pairs: float  # V: effective treatment/control pairs (after variance inflation)
    rho: float

    @property
    def fails(self) -> bool:
        return self.log_likelihood_ratio >= self.threshold


def _smoothed(arm: ArmCounts) -> float:
    return (arm.events + 0.5) / (arm.total + 1.0)


def _null_shares(
    treatment: ArmCounts, control: ArmCounts, factor: float, delta: float
) -> tuple[float, float]:
    """The arms' shares under the null of no excess (``p_t = k·p_c + δ``), from the bad requests of
    both arms together: ``n_t (k p_c + δ) + n_c p_c = e_t + e_c``, smoothed like one arm's share
    (for ``k = 1, δ = 0`` it is the pooled share ``(e_t + e_c + ½)/(n_t + n_c + 1)``)."""
    pooled = treatment.events + control.events + 0.5 - delta * treatment.total
    p_c = pooled / (factor * treatment.total + control.total + 1.0)
    p_c = min(max(p_c, 0.0), (1.0 - delta) / factor)
    return factor * p_c + delta, p_c


def _pair_variances(
    treatment: ArmCounts, control: ArmCounts, factor: float, delta: float
) -> tuple[float, float]:
    """``(σ², v)``: the variance of one pair's difference and of the estimate, at the shares that
    give the larger ``v``: each arm's own (smoothed) share, or both arms' under the null. Each arm's
    own share alone lets an arm with few bad requests by chance look more certain than it is, which
    matters most when the arms differ in size; the null shares alone would understate the variance
    of a real excess. The larger of the two is conservative either way."""
    candidates = []
    for p_t, p_c in (
        (_smoothed(treatment), _smoothed(control)),
        _null_shares(treatment, control, factor, delta),
    ):
        var_t = p_t * (1.0 - p_t)
        var_c = factor * factor * p_c * (1.0 - p_c)
        candidates.append((var_t / treatment.total + var_c / control.total, var_t + var_c))
    variance, sigma2 = max(candidates)
    return sigma2, variance


def compare(
    treatment: ArmCounts,
    control: ArmCounts,
    *,
    rule: str,
    limit: float,
    alpha: float,
    expected_samples: float,
    variance_inflation: float = 1.0,
) -> Comparison:
    """Judge ``treatment`` against ``control`` under ``rule`` (``maxDelta`` or ``maxIncrease``).

    Both arms need ``total > 0``; events above ``total`` are clamped to it (Prometheus's
    ``increase`` extrapolates, so a count can be fractional or a hair above its total). A count
    that is negative, NaN or infinite, or a setting out of its range, raises ValueError naming it.
    """
    for name, value in (
        ("treatment events", treatment.events),
        ("treatment total", treatment.total),
        ("control events", control.events),
        ("control total", control.total),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite count ≥ 0, got {value}")
    if not (math.isfinite(limit) and limit >= 0):
        raise ValueError(f"limit must be a finite number ≥ 0, got {limit}")
    if not (math.isfinite(variance_inflation) and variance_inflation >= 1):
        raise ValueError(f"variance_inflation must be a finite number ≥ 1, got {variance_inflation}")
    if rule == "maxDelta":
        factor, delta = 1.0, limit
    elif rule == "maxIncrease":
        factor, delta = 1.0 + limit, 0.0
    else:
        raise ValueError(f"a rate comparison takes maxDelta or maxIncrease, not {rule!r}")
    if treatment.total <= 0 or control.total <= 0:
        raise ValueError("both arms need at least one sample")
    rho = mixing_precision(expected_samples, alpha)
    treatment = ArmCounts(min(treatment.events, treatment.total), treatment.total)
    control = ArmCounts(min(control.events, control.total), control.total)
    sigma2, variance = _pair_variances(treatment, control, factor, delta)
    if not math.isfinite(sigma2):
        raise ValueError(f"{rule} {limit:g} is too large to compare (the variance overflows)")
    pairs = sigma2 / (variance_inflation * variance)
    sigma = math.sqrt(sigma2)
    tolerated = factor * control.share + delta
    excess = treatment.share - tolerated
    statistic = log_mixture_ratio(pairs * excess / sigma, pairs, rho)
    lower = excess - boundary(pairs, rho, alpha) * sigma / pairs
    return Comparison(
        treatment_share=treatment.share,
        control_share=control.share,
        tolerated=tolerated,
        excess=excess,
        excess_lower=lower,
        log_likelihood_ratio=statistic,
        threshold=-math.log(alpha),
        alpha=alpha,
        effective_pairs=pairs,
        rho=rho,
    )
