"""Simulated traffic and a simulated Prometheus for the rollout simulator (bench/simulate.py).

:func:`simulate_traffic` draws per-arm counters (requests, errors, histogram buckets, flag
evaluations) from Poisson arrivals, one step per scrape; :class:`SimulatedPrometheus` answers the
PromQL that flagroll's real query planner wrote (``sum(increase(…[Ns]))``, ``rate`` ratios,
``histogram_quantile``) from those counters, so the window arithmetic, ``{{variant}}`` substitution
and ``le`` matchers are exercised too.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.simulation.traffic import INDEPENDENT, Sizes, clustered_counts, daily_volume, user_evaluations
from controller.core.queries import BIN_PARTS, Arm, PlannedQuery, QueryKey, Reading

TICK_SECONDS = 15  # Prometheus scrape interval: counters advance in steps of this
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
SLO_SECONDS = 0.3  # "p95 ≤ 300 ms"
VARIANT = {Arm.TREATMENT: "on", Arm.CONTROL: "control"}

Array = npt.NDArray[np.float64]

# Traffic ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ramp:
    """The rollout a scenario is simulated with: the policies' interval, their steps, how long."""

    interval_seconds: int = 30
    steps: tuple[tuple[int, int], ...] = ((5, 10), (20, 10), (50, 10))  # (percent, hold minutes)
    minutes: int = 45  # simulated time per rollout

    @property
    def max_looks(self) -> int:
        return self.minutes * 60 // self.interval_seconds


CLASSIC = Ramp()


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    requests_per_second: float  # per arm
    error_ratio: float = 0.01
    latency_median_seconds: float = 0.12
    latency_p95_seconds: float = 0.3
    regression_at_seconds: int = 0  # after exposure starts
    error_factor: float = 1.0  # treatment's error ratio is multiplied by this after the regression
    slow_share_factor: float = 1.0  # treatment's share of requests slower than the SLO, likewise
    exposure_loss: float = 0.0  # share of the treatment arm's flag evaluations that go unrecorded
    # Realistic traffic (bench/simulation/traffic.py); the defaults are balanced, independent traffic.
    family: str = "balanced"  # the traffic model this scenario belongs to (A/A and regression alike)
    treatment_requests_factor: float = 1.0  # treatment serves this many times control's requests
    error_bursts: Sizes = INDEPENDENT  # errors per burst
    evaluations_per_user: Sizes | None = None  # None: one flag evaluation per (non-extra) request
    session_seconds: int = 60  # a user's evaluations spread over this long after their arrival
    daily_amplitude: float = 0.0  # volume × (1 + a·sin(2π(t/24 h + phase))), phase random per run
    ramp: Ramp = CLASSIC

    @property
    def regression(self) -> bool:
        return self.error_factor != 1.0 or self.slow_share_factor != 1.0

    @property
    def sigma(self) -> float:
        """Log-normal latency: median and p95 fix its two parameters."""
        return math.log(
            self.latency_p95_seconds / self.latency_median_seconds
        ) / statistics.NormalDist().inv_cdf(0.95)

    def slow_share(self, scale: float = 1.0) -> float:
        """Share of requests slower than the SLO when every latency is multiplied by ``scale``."""
        z = (math.log(SLO_SECONDS / scale) - math.log(self.latency_median_seconds)) / self.sigma
        return 1.0 - statistics.NormalDist().cdf(z)

    def latency_scale(self) -> float:
        """The latency multiplier that raises the slow share by ``slow_share_factor``."""
        target = self.slow_share() * self.slow_share_factor
        if not 0 < target < 1:
            raise ValueError(f"slow share {target} is not a share")
        z = statistics.NormalDist().inv_cdf(1.0 - target)
        return SLO_SECONDS / math.exp(math.log(self.latency_median_seconds) + z * self.sigma)

    def bucket_shares(self, scale: float) -> list[float]:
        """Probability of each bucket (BUCKETS, then +Inf) for latencies multiplied by ``scale``."""
        normal = statistics.NormalDist()
        below = [
            normal.cdf((math.log(edge / scale) - math.log(self.latency_median_seconds)) / self.sigma)
            for edge in BUCKETS
        ]
        shares = [below[0]] + [b - a for a, b in itertools.pairwise(below)] + [1.0 - below[-1]]
        return [max(s, 0.0) for s in shares]


@dataclass
class ArmSeries:
    """Cumulative counters of one arm at each tick (index 0 = exposure start, all zero)."""

    requests: Array
    errors: Array
    buckets: Array  # ticks × len(BUCKETS): cumulative count at or below each edge
    evaluations: Array


def simulate_traffic(scenario: Scenario, ticks: int, rng: np.random.Generator) -> dict[Arm, ArmSeries]:
    start = scenario.regression_at_seconds // TICK_SECONDS
    scale = scenario.latency_scale() if scenario.slow_share_factor != 1.0 else 1.0
    volume = None
    if scenario.daily_amplitude:
        volume = daily_volume(ticks, TICK_SECONDS, scenario.daily_amplitude, phase=rng.random())
    series = {}
    for arm in (Arm.TREATMENT, Arm.CONTROL):
        mean = scenario.requests_per_second * TICK_SECONDS * (volume if volume is not None else 1.0)
        requests = rng.poisson(mean, ticks)
        users = requests  # requests that evaluate the flag (one evaluation each, unless modelled)
        extra = scenario.treatment_requests_factor - 1.0
        if arm is Arm.TREATMENT and extra > 0:  # retries, hedging: requests that evaluate no flag
            requests = requests + rng.poisson(mean * extra, ticks)
        error_ratio = np.full(ticks, scenario.error_ratio)
        bad = arm is Arm.TREATMENT and scenario.regression
        if bad:
            error_ratio[start:] = min(1.0, scenario.error_ratio * scenario.error_factor)
        if scenario.error_bursts.independent:
            errors = rng.binomial(requests, error_ratio)
        else:
            errors = clustered_counts(rng, requests * error_ratio, scenario.error_bursts, requests)
        healthy = np.array(scenario.bucket_shares(1.0))
        per_bucket = np.empty((ticks, len(BUCKETS) + 1), dtype=np.int64)
        per_bucket[:start] = rng.multinomial(requests[:start], healthy)
        per_bucket[start:] = rng.multinomial(
            requests[start:], np.array(scenario.bucket_shares(scale)) if bad else healthy
        )
        evaluations = users
        if scenario.evaluations_per_user is not None:
            expected = scenario.requests_per_second * TICK_SECONDS * (volume if volume is not None else 1.0)
            evaluations = user_evaluations(
                rng,
                np.broadcast_to(np.asarray(expected, dtype=np.float64), (ticks,)),
                scenario.evaluations_per_user,
                max(1, scenario.session_seconds // TICK_SECONDS),
            )
        if arm is Arm.TREATMENT and scenario.exposure_loss > 0:
            evaluations = rng.binomial(evaluations, 1.0 - scenario.exposure_loss)
        series[arm] = ArmSeries(
            requests=_cumulative(requests),
            errors=_cumulative(errors),
            buckets=np.vstack([np.zeros(len(BUCKETS)), np.cumsum(per_bucket[:, :-1], axis=0).cumsum(axis=1)]),
            evaluations=_cumulative(evaluations),
        )
    return series


def _cumulative(per_tick: npt.NDArray[Any]) -> Array:
    return np.concatenate([[0.0], np.cumsum(per_tick, dtype=np.float64)])


# A Prometheus that answers from the simulated counters ---------------------------------------

_RANGE = re.compile(r"(increase|rate)\(([A-Za-z_:][A-Za-z0-9_:]*)\{([^{}]*)\}\[(\d+)(s|m)\]\)")
_VARIANT = re.compile(r'feature_flag_result_variant="([^"]*)"')
_LE = re.compile(r'le=~?"([^"]*)"')
_SUBQUERY = re.compile(r"\[(\d+)s:(\d+)s\]")


class SimulatedPrometheus:
    """Answers the PromQL shapes the simulated policies produce, from cumulative counters. Anything
    else is an error reading, so a change in the planner cannot go unnoticed.

    ``measure_dispersion``: answer the queries of sums over bins that the controller asks to measure
    the variance inflation (:meth:`_bin_sums`); without it they fail, and the controller falls back
    to the policy's ``varianceInflation`` (the simulator's ``--inflation policy``)."""

    def __init__(self, series: dict[Arm, ArmSeries], *, measure_dispersion: bool = True) -> None:
        self.series = series
        self.arm_of = {VARIANT[arm]: arm for arm in series}
        self.measure_dispersion = measure_dispersion
        self._sums: dict[tuple[str, int], dict[Arm, tuple[float, float, float, float] | None]] = {}

    def answer(self, queries: Sequence[PlannedQuery], tick: int) -> dict[QueryKey, Reading]:
        return {
            q.key: self._bin_sum(q, tick) if q.key.part in BIN_PARTS else self.query(q.promql, tick)
            for q in queries
        }

    def _bin_sum(self, query: PlannedQuery, tick: int) -> Reading:
        """One of the four sums (a :class:`Part`) of one arm that a dispersion query returns."""
        if not self.measure_dispersion:
            return Reading.error("the simulator does not measure dispersion (--inflation policy)")
        if (query.promql, tick) not in self._sums:
            self._sums = {(query.promql, tick): self._bin_sums(query.promql, tick)}  # one look's
        sums = self._sums[query.promql, tick].get(query.key.arm)
        if isinstance(sums, str):
            return Reading.error(sums)
        if sums is None:
            return Reading.no_data("empty result: no bin with a request")
        index = BIN_PARTS.index(query.key.part)
        return Reading.of(sums[index])

    def _bin_sums(self, promql: str, tick: int) -> dict[Arm, Any]:
        """Evaluate a dispersion query (controller/core/queries.py, ``dispersion_query``): per arm,
        the counter's growth over each bin ``(t − S, t]`` for the steps t of the subquery
        ``[W s:S s]`` (multiples of S since exposure began, which is a whole minute), bins without
        a request left out, summed as bins, Σx, Σn and Σx²/n."""
        found = _SUBQUERY.search(promql)
        if found is None or "flagroll_sum" not in promql:
            return dict.fromkeys(self.series, f"the simulator does not understand {promql[:80]!r}…")
        window, step = int(found.group(1)), int(found.group(2))
        now = tick * TICK_SECONDS
        edges = np.arange(now // step * step, max(now - window, 0) - 1, -step)[::-1]  # ascending
        at = edges // TICK_SECONDS

        def per_bin(cumulative: Array) -> Array:
            return np.clip(np.diff(cumulative[at]), 0, None)

        out: dict[Arm, Any] = {}
        for arm, counts in self.series.items():
            if "feature_flag_evaluations_total" in promql:
                if arm is not Arm.TREATMENT:
                    continue
                bad = per_bin(counts.evaluations)
                total = bad + per_bin(self.series[Arm.CONTROL].evaluations)
            elif 'code=~"5.."' in promql:
                bad, total = per_bin(counts.errors), per_bin(counts.requests)
            elif "_bucket" in promql:
                index = _bucket_index(promql)
                if index is None:
                    out[arm] = "no series has the bucket"
                    continue
                total = per_bin(counts.requests)
                bad = np.clip(total - per_bin(counts.buckets[:, index]), 0, None)
            else:
                out[arm] = f"the simulator does not understand {promql[:80]!r}…"
                continue
            kept = total > 0
            if not kept.any():
                out[arm] = None
                continue
            x, n = bad[kept], total[kept]
            out[arm] = (float(kept.sum()), float(x.sum()), float(n.sum()), float((x * x / n).sum()))
        return out

    def query(self, promql: str, tick: int) -> Reading:
        terms = _RANGE.findall(promql)
        try:
            if promql.startswith("histogram_quantile(") and len(terms) == 1:
                quantile = float(promql.split("(", 1)[1].split(",", 1)[0])
                return self._quantile(quantile, terms[0], tick)
            if promql.startswith("sum(increase(") and len(terms) == 1:
                return self._increase(terms[0], tick, per_second=False)
            if promql.startswith("sum(rate(") and len(terms) == 2 and ") / sum(" in promql:
                top = self._increase(terms[0], tick, per_second=True)
                bottom = self._increase(terms[1], tick, per_second=True)
                if top.value is None or bottom.value is None:
                    return top if top.value is None else bottom
                if bottom.value == 0:
                    return Reading.no_data("NaN (e.g. 0/0: nothing in the window)")
                return Reading.of(top.value / bottom.value)
        except ValueError as exc:
            return Reading.error(str(exc))
        return Reading.error(f"the simulator does not understand {promql!r}")

    def _window_ticks(self, amount: str, unit: str) -> int:
        seconds = int(amount) * (60 if unit == "m" else 1)
        return max(1, round(seconds / TICK_SECONDS))

    def _values(self, metric: str, labels: str, tick: int) -> tuple[ArmSeries, Array]:
        found = _VARIANT.search(labels)
        if found is None or found.group(1) not in self.arm_of:
            raise ValueError(f"no arm in {labels!r}")
        arm = self.series[self.arm_of[found.group(1)]]
        if metric == "http_server_requests_total":
            return arm, arm.errors if 'code=~"5.."' in labels else arm.requests
        if metric == "feature_flag_evaluations_total":
            return arm, arm.evaluations
        if metric == "http_server_request_duration_seconds_count":
            return arm, arm.requests
        if metric == "http_server_request_duration_seconds_bucket":
            le = _LE.search(labels)
            if le is None:
                raise ValueError("a bucket selector without le is answered by histogram_quantile only")
            index = _bucket_index(labels)
            if index is None:
                raise _Empty()
            return arm, arm.buckets[:, index]
        raise ValueError(f"unknown metric {metric}")

    def _increase(self, term: tuple[str, ...], tick: int, *, per_second: bool) -> Reading:
        _, metric, labels, amount, unit = term
        try:
            arm, values = self._values(metric, labels, tick)
        except _Empty:
            return Reading.no_data("empty result: no series matched")
        if arm.requests[tick] == 0:
            return Reading.no_data("empty result: no series matched")  # no request yet: no series
        window = self._window_ticks(amount, unit)
        value = float(values[tick] - values[max(0, tick - window)])
        return Reading.of(value / (window * TICK_SECONDS) if per_second else value)

    def _quantile(self, quantile: float, term: tuple[str, ...], tick: int) -> Reading:
        _, metric, labels, amount, unit = term
        if metric != "http_server_request_duration_seconds_bucket":
            raise ValueError(f"histogram_quantile over {metric}")
        found = _VARIANT.search(labels)
        if found is None or found.group(1) not in self.arm_of:
            raise ValueError(f"no arm in {labels!r}")
        arm = self.series[self.arm_of[found.group(1)]]
        window = self._window_ticks(amount, unit)
        start = max(0, tick - window)
        counts = arm.buckets[tick] - arm.buckets[start]
        total = float(arm.requests[tick] - arm.requests[start])
        if arm.requests[tick] == 0:
            return Reading.no_data("empty result: no series matched")
        if total == 0:
            return Reading.no_data("NaN (e.g. 0/0: nothing in the window)")
        return Reading.of(histogram_quantile(quantile, list(BUCKETS), [float(c) for c in counts], total))


class _Empty(Exception):
    pass


def _bucket_index(text: str) -> int | None:
    """The bucket an ``le`` matcher in ``text`` selects (both spellings of a whole second match)."""
    le = _LE.search(text)
    if le is None:
        return None
    spelled = le.group(1).replace("\\\\", "\\")
    for index, edge in enumerate(BUCKETS):
        if re.fullmatch(spelled, repr(edge)) or re.fullmatch(spelled, f"{edge:g}"):
            return index
    return None


def histogram_quantile(q: float, edges: list[float], cumulative: list[float], total: float) -> float:
    """Prometheus's interpolation: linear within the bucket holding rank q·total; a rank in the
    +Inf bucket gives the highest finite edge."""
    rank = q * total
    lower_edge, lower_count = 0.0, 0.0
    for edge, count in zip(edges, cumulative, strict=True):
        if count >= rank:
            if count == lower_count:
                return edge
            return lower_edge + (edge - lower_edge) * (rank - lower_count) / (count - lower_count)
        lower_edge, lower_count = edge, count
    return edges[-1]
