"""Traffic that is neither balanced nor independent, per scrape tick (15 s), for bench/simprom.py.

- **Bursts of errors**: errors arrive as clusters (a retry storm, a bad pod, one user hammering):
  cluster arrivals are Poisson, each cluster's size is drawn from :class:`Sizes`, and a whole cluster
  lands in one scrape tick (a burst is shorter than 15 s). The expected error ratio is unchanged; the
  variance of an arm's error count is ``E[S²]/E[S]`` times the binomial one (``2m − 1`` for a
  geometric size of mean m; infinite for a zeta size of exponent ≤ 3).
- **Repeated evaluations per user**: users arrive Poisson, each is evaluated K times (K from
  :class:`Sizes`), all in their own arm, spread uniformly over a session after their arrival. The
  exposure count's variance is ``E[K²]/E[K]`` times the Poisson one.
- **A daily cycle**: volume multiplied by ``1 + a · sin(2π (t / 24 h + phase))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

DAY_SECONDS = 86_400
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Sizes:
    """A distribution on 1, 2, 3, …: errors in one burst, or evaluations of one user.

    ``one``: always 1 (independent requests); ``geometric``: mean ``parameter``; ``zeta``: a
    discrete Pareto, ``P(k) ∝ k^−s`` with ``s = parameter`` (finite mean for s > 2, finite variance
    only for s > 3)."""

    kind: Literal["one", "geometric", "zeta"] = "one"
    parameter: float = 1.0

    def __post_init__(self) -> None:
        if self.kind == "geometric" and self.parameter < 1:
            raise ValueError(f"a geometric size needs a mean ≥ 1, got {self.parameter}")
        if self.kind == "zeta" and self.parameter <= 2:
            raise ValueError(f"a zeta size needs an exponent > 2 for a finite mean, got {self.parameter}")

    @property
    def independent(self) -> bool:
        return self.kind == "one"

    @property
    def mean(self) -> float:
        if self.kind == "one":
            return 1.0
        if self.kind == "geometric":
            return self.parameter
        return _zeta(self.parameter - 1.0) / _zeta(self.parameter)

    @property
    def inflation(self) -> float:
        """``E[S²]/E[S]``: the variance of a count of such clusters over that of independent
        events (``math.inf`` when the second moment is infinite)."""
        if self.kind == "one":
            return 1.0
        if self.kind == "geometric":
            return 2.0 * self.parameter - 1.0
        if self.parameter <= 3:
            return math.inf
        return _zeta(self.parameter - 2.0) / _zeta(self.parameter - 1.0)

    def draw(self, rng: np.random.Generator, count: int) -> IntArray:
        if self.kind == "one":
            return np.ones(count, dtype=np.int64)
        if self.kind == "geometric":
            return rng.geometric(1.0 / self.parameter, count).astype(np.int64)
        return rng.zipf(self.parameter, count).astype(np.int64)

    def describe(self) -> str:
        if self.kind == "one":
            return "1"
        if self.kind == "geometric":
            return f"geometric, mean {self.parameter:g}"
        return f"zeta s = {self.parameter:g} (mean {self.mean:.2f}, infinite variance)"


INDEPENDENT = Sizes()


def _zeta(s: float) -> float:
    """Riemann ζ(s) for s > 1 (Euler–Maclaurin after 20 terms: ample for these exponents)."""
    if s <= 1:
        raise ValueError(f"ζ(s) diverges for s ≤ 1, got {s}")
    n = 20.0
    head = math.fsum(math.pow(k, -s) for k in range(1, 20))
    tail = math.pow(n, 1 - s) / (s - 1) + 0.5 * math.pow(n, -s) + s * math.pow(n, -s - 1) / 12
    return head + tail - s * (s + 1) * (s + 2) * math.pow(n, -s - 3) / 720


def daily_volume(ticks: int, tick_seconds: int, amplitude: float, phase: float) -> FloatArray:
    """The volume multiplier of each tick: ``1 + amplitude · sin(2π (t / day + phase))`` (ones when
    ``amplitude`` is 0). With amplitude 0.8 the volume swings between 0.2× and 1.8× over 24 h."""
    if amplitude == 0:
        return np.ones(ticks)
    t = np.arange(ticks) * tick_seconds
    return 1.0 + amplitude * np.sin(2 * np.pi * (t / DAY_SECONDS + phase))


def clustered_counts(
    rng: np.random.Generator, expected: FloatArray, sizes: Sizes, limit: IntArray
) -> IntArray:
    """Events per tick arriving in clusters, ``expected`` events per tick on average, each tick's
    count capped at ``limit`` (the requests it holds: an error is a request)."""
    if sizes.independent:
        return np.minimum(rng.poisson(expected), limit)
    clusters = rng.poisson(expected / sizes.mean)
    drawn = sizes.draw(rng, int(clusters.sum()))
    per_tick = np.bincount(
        np.repeat(np.arange(len(expected)), clusters), weights=drawn, minlength=len(expected)
    )
    return np.minimum(per_tick.astype(np.int64), limit)


def user_evaluations(
    rng: np.random.Generator, expected: FloatArray, sizes: Sizes, session_ticks: int
) -> IntArray:
    """Flag evaluations per tick from users who arrive Poisson (``expected`` evaluations per tick on
    average) and are evaluated K times each, spread uniformly over ``session_ticks`` ticks from their
    arrival (evaluations past the end are not counted)."""
    ticks = len(expected)
    users = rng.poisson(expected / sizes.mean)
    per_user = sizes.draw(rng, int(users.sum()))
    arrival = np.repeat(np.repeat(np.arange(ticks), users), per_user)
    offset = rng.integers(0, max(1, session_ticks), len(arrival))
    at = arrival + offset
    return np.bincount(at[at < ticks], minlength=ticks).astype(np.int64)
