"""Simulate many rollouts and measure how often flagroll's guardrails cry wolf and how fast they
catch a regression: statistical guardrails (confidence sequences, treatment vs control) against
fixed thresholds configured the way users of other rollout tools do, on the same traffic.

The decisions are flagroll's own: each policy is loaded from YAML by the real loader, and every
look goes through ``decision.rebase`` → ``decision.queries_for`` → ``decision.decide``. Only
Prometheus is simulated: :class:`SimulatedPrometheus` keeps per-arm counters (requests, errors,
histogram buckets, flag evaluations) fed by Poisson arrivals, and answers the PromQL that the real
query planner wrote (``sum(increase(…[Ns]))``, ``rate`` ratios, ``histogram_quantile``), so the
window arithmetic, ``{{variant}}`` substitution and ``le`` matchers are exercised too.

    .venv/bin/python bench/simulate.py                 # 1,000 rollouts per scenario (a few minutes)
    .venv/bin/python bench/simulate.py --runs 100      # quicker, rougher

It prints a table, writes JSON (``--json``) and plots time-to-rollback distributions (``--plot``).
See docs/statistics.md for the model, the figures and how to read them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.adapters.policyfile import load_text
from controller.core.decision import decide, queries_for, rebase
from controller.core.policy import Policy
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading
from controller.core.state import Action, RolloutState, Status

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
TICK_SECONDS = 15  # Prometheus scrape interval: counters advance in steps of this
INTERVAL_SECONDS = 30  # the policies' check interval
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
SLO_SECONDS = 0.3  # "p95 ≤ 300 ms"
FLAG = "checkout-http-client"
VARIANT = {Arm.TREATMENT: "on", Arm.CONTROL: "control"}

Array = npt.NDArray[np.float64]

# The policies --------------------------------------------------------------------------------

_HEAD = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {name}}}
spec:
  owner: payments-sre
  aim: Cut p95 of /checkout/pay without more payment errors.
  mechanism: Pooled connections avoid TLS handshakes on the payment path.
  flag: {{key: {flag}}}
  interval: {interval}s
  steps:
{steps}
"""

STEPS = ((5, 10), (20, 10), (50, 10))  # (percent, hold minutes): a 30-minute ramp

_SELECT = 'route="/checkout/pay",feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"'


def statistical_policy(
    *,
    alpha: float,
    error_delta: float,
    slow_increase: float,
    min_samples: int,
    expected_samples: int,
    guardrails: Sequence[str] = ("errors", "latency"),
    error_weight: float = 1.0,
) -> str:
    text = _HEAD.format(name="statistical", flag=FLAG, interval=INTERVAL_SECONDS, steps=_steps())
    text += "  guardrails:\n"
    if "errors" in guardrails:
        text += f"""\
    - name: payment-errors
      errorRatio:
        errors: http_server_requests_total{{{_SELECT},code=~"5.."}}
        requests: http_server_requests_total{{{_SELECT}}}
      maxDelta: {error_delta}
      minSamples: {min_samples}
      alphaWeight: {error_weight:g}
"""
    if "latency" in guardrails:
        text += f"""\
    - name: slow-payments
      latency:
        histogram: http_server_request_duration_seconds{{{_SELECT}}}
        slowerThan: {round(SLO_SECONDS * 1000)}ms
      maxIncrease: {slow_increase}
      minSamples: {min_samples}
"""
    return (
        text
        + f"""\
  statistics:
    alpha: {alpha}
    expectedSamples: {expected_samples}
    exposure: >-
      feature_flag_evaluations_total{{feature_flag_key="{{{{flag}}}}",
      feature_flag_result_variant="{{{{variant}}}}"}}
"""
    )


def fixed_policy(name: str, *, error_max: float, p95_max: float, window: str) -> str:
    """What a user of a threshold-based tool writes: absolute bounds on the treatment arm over a
    short rate window; one failed check rolls back; no sample minimum."""
    return _HEAD.format(name=name, flag=FLAG, interval=INTERVAL_SECONDS, steps=_steps()) + (
        f"""\
  guardrails:
    - name: error-rate
      query: >-
        sum(rate(http_server_requests_total{{{_SELECT},code=~"5.."}}[{window}]))
        / sum(rate(http_server_requests_total{{{_SELECT}}}[{window}]))
      max: {error_max}
    - name: p95-latency
      query: >-
        histogram_quantile(0.95, sum by (le)
        (rate(http_server_request_duration_seconds_bucket{{{_SELECT}}}[{window}])))
      max: {p95_max}
"""
    )


def _steps() -> str:
    return "\n".join(f"    - {{percent: {p}, hold: {h}m}}" for p, h in STEPS)


def load(text: str) -> Policy:
    loaded = load_text(text, "<simulation>")
    if loaded.errors:
        raise SystemExit("\n".join(str(e) for e in loaded.errors))
    return loaded.policies[0].policy


# Traffic ---------------------------------------------------------------------------------------


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
    series = {}
    for arm in (Arm.TREATMENT, Arm.CONTROL):
        requests = rng.poisson(scenario.requests_per_second * TICK_SECONDS, ticks)
        error_ratio = np.full(ticks, scenario.error_ratio)
        bad = arm is Arm.TREATMENT and scenario.regression
        if bad:
            error_ratio[start:] = min(1.0, scenario.error_ratio * scenario.error_factor)
        errors = rng.binomial(requests, error_ratio)
        healthy = np.array(scenario.bucket_shares(1.0))
        per_bucket = np.empty((ticks, len(BUCKETS) + 1), dtype=np.int64)
        per_bucket[:start] = rng.multinomial(requests[:start], healthy)
        per_bucket[start:] = rng.multinomial(
            requests[start:], np.array(scenario.bucket_shares(scale)) if bad else healthy
        )
        evaluations = requests
        if arm is Arm.TREATMENT and scenario.exposure_loss > 0:
            evaluations = rng.binomial(requests, 1.0 - scenario.exposure_loss)
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


class SimulatedPrometheus:
    """Answers the PromQL shapes the simulated policies produce, from cumulative counters. Anything
    else is an error reading, so a change in the planner cannot go unnoticed."""

    def __init__(self, series: dict[Arm, ArmSeries]) -> None:
        self.series = series
        self.arm_of = {VARIANT[arm]: arm for arm in series}

    def answer(self, queries: Sequence[PlannedQuery], tick: int) -> dict[QueryKey, Reading]:
        return {q.key: self.query(q.promql, tick) for q in queries}

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
            spelled = le.group(1).replace("\\\\", "\\")
            for index, edge in enumerate(BUCKETS):
                if re.fullmatch(spelled, repr(edge)) or re.fullmatch(spelled, f"{edge:g}"):
                    return arm, arm.buckets[:, index]
            raise _Empty()
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


# Running rollouts ------------------------------------------------------------------------------


@dataclass
class Outcome:
    rolled_back_after_seconds: float | None = None  # since the regression began (or since exposure)
    completed: bool = False
    looks: int = 0
    sample_ratio_holds: int = 0
    reason: str = ""


def run_rollout(
    policy: Policy, prometheus: SimulatedPrometheus, scenario: Scenario, max_looks: int
) -> Outcome:
    """Drive one rollout through flagroll's decision code until it completes, rolls back or runs out
    of simulated time."""
    stored: RolloutState | None = None
    outcome = Outcome()
    for look in range(max_looks + 1):
        now = T0 + timedelta(seconds=look * INTERVAL_SECONDS)
        state = rebase(policy, stored, now).state
        queries = queries_for(policy, state, now)
        tick = look * INTERVAL_SECONDS // TICK_SECONDS
        decision = decide(policy, stored, queries, prometheus.answer(queries, tick), now)
        outcome.looks = look
        if decision.action is Action.HOLD and "sample ratio mismatch" in decision.reason:
            outcome.sample_ratio_holds += 1
        if decision.action is Action.ROLLBACK:
            outcome.rolled_back_after_seconds = look * INTERVAL_SECONDS - scenario.regression_at_seconds
            outcome.reason = decision.reason
            return outcome
        if decision.after.status is Status.COMPLETED:
            outcome.completed = True
            return outcome
        stored = decision.after
    return outcome


@dataclass(frozen=True)
class Rule:
    name: str
    title: str
    policy_text: str


def _one_run(args: tuple[Scenario, list[Rule], int, int]) -> dict[str, dict[str, Any]]:
    scenario, rules, seed, max_looks = args
    rng = np.random.default_rng(seed)
    ticks = max_looks * INTERVAL_SECONDS // TICK_SECONDS + 1
    prometheus = SimulatedPrometheus(simulate_traffic(scenario, ticks, rng))
    results = {}
    for rule in rules:
        results[rule.name] = asdict(run_rollout(_policy(rule.policy_text), prometheus, scenario, max_looks))
    return results


_POLICIES: dict[str, Policy] = {}


def _policy(text: str) -> Policy:
    if text not in _POLICIES:
        _POLICIES[text] = load(text)
    return _POLICIES[text]


def _chunk(args: list[tuple[Scenario, list[Rule], int, int]]) -> list[dict[str, dict[str, Any]]]:
    return [_one_run(a) for a in args]


@dataclass
class RuleSummary:
    rule: str
    title: str
    runs: int
    rollbacks: int
    completed: int
    unfinished: int  # neither: held to the end of the simulated time
    sample_ratio_holds: int  # looks held for a sample-ratio mismatch, all runs together
    rollback_rate: float
    median_minutes: float | None
    p90_minutes: float | None
    minutes: list[float] = field(default_factory=list)


def summarise(rule: Rule, outcomes: list[dict[str, Any]]) -> RuleSummary:
    times = sorted(
        o["rolled_back_after_seconds"] / 60 for o in outcomes if o["rolled_back_after_seconds"] is not None
    )
    return RuleSummary(
        rule=rule.name,
        title=rule.title,
        runs=len(outcomes),
        rollbacks=len(times),
        completed=sum(1 for o in outcomes if o["completed"]),
        unfinished=sum(1 for o in outcomes if o["rolled_back_after_seconds"] is None and not o["completed"]),
        sample_ratio_holds=sum(o["sample_ratio_holds"] for o in outcomes),
        rollback_rate=len(times) / len(outcomes) if outcomes else math.nan,
        median_minutes=_quantile(times, 0.5),
        p90_minutes=_quantile(times, 0.9),
        minutes=times,
    )


def _quantile(values: list[float], q: float) -> float | None:
    """The smallest value with at least q of the values at or below it (no interpolation: times
    are whole check intervals)."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def simulate(
    scenario: Scenario, rules: list[Rule], *, runs: int, seed: int, jobs: int, max_looks: int
) -> dict[str, RuleSummary]:
    work = [(scenario, rules, seed * 1_000_003 + i, max_looks) for i in range(runs)]
    if jobs <= 1:
        results = _chunk(work)
    else:
        size = max(1, math.ceil(len(work) / (jobs * 4)))
        chunks = [work[i : i + size] for i in range(0, len(work), size)]
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = [r for part in pool.map(_chunk, chunks) for r in part]
    return {rule.name: summarise(rule, [r[rule.name] for r in results]) for rule in rules}


# The benchmark ---------------------------------------------------------------------------------


def scenarios() -> list[Scenario]:
    return [
        Scenario("aa-10rps", "A/A, 10 req/s per arm", 10.0),
        Scenario("errors-10rps", "error ratio 1 % → 2 %, 10 req/s per arm", 10.0, error_factor=2.0),
        Scenario("aa-50rps", "A/A, 50 req/s per arm", 50.0),
        Scenario(
            "slow-50rps",
            "share slower than 300 ms +20 % (5 % → 6 %), 50 req/s per arm",
            50.0,
            slow_share_factor=1.2,
        ),
        Scenario(
            "srm-10rps",
            "A/A, 10 req/s per arm, 10 % of treatment evaluations unrecorded",
            10.0,
            exposure_loss=0.1,
        ),
    ]


def rules(args: argparse.Namespace) -> list[Rule]:
    chosen = [
        Rule(
            "statistical",
            f"flagroll statistical (alpha {args.alpha:g})",
            statistical_policy(
                alpha=args.alpha,
                error_delta=args.error_delta,
                slow_increase=args.slow_increase,
                min_samples=args.min_samples,
                expected_samples=args.expected_samples,
                guardrails=args.guardrails.split(","),
                error_weight=args.error_weight,
            ),
        )
    ]
    if args.guardrails != "errors":
        # The same policy with the errorRatio guardrail alone: the whole budget is its own.
        chosen.append(
            Rule(
                "statistical-errors-only",
                f"flagroll statistical, errorRatio only (alpha {args.alpha:g})",
                statistical_policy(
                    alpha=args.alpha,
                    error_delta=args.error_delta,
                    slow_increase=args.slow_increase,
                    min_samples=args.min_samples,
                    expected_samples=args.expected_samples,
                    guardrails=["errors"],
                ),
            )
        )
    for spec in args.fixed:
        if spec == "none":
            continue
        error_max, p95_max = (float(x) for x in spec.split(","))
        name = f"fixed-{error_max:g}-{p95_max:g}"
        chosen.append(
            Rule(
                name,
                f"fixed: errors ≤ {error_max * 100:g} %, p95 ≤ {p95_max * 1000:g} ms ({args.fixed_window})",
                fixed_policy(name, error_max=error_max, p95_max=p95_max, window=args.fixed_window),
            )
        )
    return chosen


def _minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def table(results: dict[str, dict[str, RuleSummary]], chosen: list[Scenario]) -> str:
    lines = [
        f"{'scenario':<14} {'rule':<52} {'rollbacks':>13} {'median':>7} {'p90':>6} "
        f"{'done':>6} {'held':>5} {'srm':>5}",
    ]
    for scenario in chosen:
        for summary in results[scenario.name].values():
            label = "false rollbacks" if not scenario.regression else "detected"
            share = f"{summary.rollbacks}/{summary.runs} ({summary.rollback_rate * 100:.1f} %)"
            lines.append(
                f"{scenario.name:<14} {summary.title:<52} {share:>13} {_minutes(summary.median_minutes):>7} "
                f"{_minutes(summary.p90_minutes):>6} {summary.completed:>6} {summary.unfinished:>5} "
                f"{summary.sample_ratio_holds:>5}   {label}"
            )
    lines.append(
        "median/p90: minutes from the regression (A/A: from exposure start) to the rollback; done: "
        "rollouts completed; held: neither completed nor rolled back by the end; srm: looks held "
        "for a sample-ratio mismatch"
    )
    return "\n".join(lines)


def targets(results: dict[str, dict[str, RuleSummary]], alpha: float) -> list[tuple[str, bool, str]]:
    checks = []
    statistical = [
        r for r in ("statistical", "statistical-errors-only") if any(r in v for v in results.values())
    ]
    for rule in statistical:
        label = "" if rule == "statistical" else ", errorRatio only"
        for name in ("aa-10rps", "aa-50rps"):
            if name in results:
                rate = results[name][rule].rollback_rate
                checks.append(
                    (
                        f"A/A false rollbacks ≤ 1 % at alpha {alpha:g} ({name}{label})",
                        rate <= 0.01,
                        f"{rate * 100:.2f} %",
                    )
                )
        if "errors-10rps" in results:
            s = results["errors-10rps"][rule]
            checks.append(
                (
                    f"error 1 % → 2 % at 10 req/s detected in ≥ 95 %{label}",
                    s.rollback_rate >= 0.95,
                    f"{s.rollback_rate * 100:.1f} %",
                )
            )
            ok = s.p90_minutes is not None and s.p90_minutes <= 10
            checks.append((f"… p90 time to rollback ≤ 10 min{label}", ok, f"{_minutes(s.p90_minutes)} min"))
        if "slow-50rps" in results and rule == "statistical":
            s = results["slow-50rps"][rule]
            checks.append(
                (
                    "slow share +20 % at 50 req/s detected in ≥ 95 %",
                    s.rollback_rate >= 0.95,
                    f"{s.rollback_rate * 100:.1f} %",
                )
            )
    return checks


def plot(
    results: dict[str, dict[str, RuleSummary]], chosen: list[Scenario], path: Path, max_minutes: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(2, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.9 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(chosen) :]:
        ax.set_visible(False)
    for ax, scenario in zip(axes.flat, chosen, strict=False):
        for summary in results[scenario.name].values():
            xs = [0.0, *summary.minutes, max_minutes]
            ys = [0.0, *[(i + 1) / summary.runs for i in range(len(summary.minutes))], summary.rollback_rate]
            style = "-" if summary.rule.startswith("statistical") else "--"
            ax.step(xs, [y * 100 for y in ys], where="post", linestyle=style, label=summary.title)
        ax.set_title(scenario.title, fontsize=9)
        ax.set_xlabel(
            "minutes since the regression" if scenario.regression else "minutes since exposure start"
        )
        ax.set_xlim(0, max_minutes)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("% of rollouts rolled back")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"Time to rollback over {next(iter(results[chosen[0].name].values())).runs} simulated "
        "rollouts per scenario",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1000, help="simulated rollouts per scenario")
    parser.add_argument("--seed", type=int, default=20261102)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument(
        "--alpha", type=float, default=0.01, help="statistics.alpha of the statistical policy"
    )
    parser.add_argument("--error-delta", type=float, default=0.0, help="maxDelta of the errorRatio guardrail")
    parser.add_argument(
        "--slow-increase", type=float, default=0.05, help="maxIncrease of the latency guardrail"
    )
    parser.add_argument("--min-samples", type=int, default=200)
    parser.add_argument("--expected-samples", type=int, default=2000, help="statistics.expectedSamples")
    parser.add_argument(
        "--error-weight",
        type=float,
        default=3.0,
        help="alphaWeight of the errorRatio guardrail next to the latency guardrail's 1 (default 3: "
        "3/4 of alpha for errors)",
    )
    parser.add_argument(
        "--guardrails", default="errors,latency", help="statistical guardrails in the policy: errors, latency"
    )
    parser.add_argument(
        "--regression-at", type=int, default=0, help="seconds after exposure start when the regression begins"
    )
    parser.add_argument(
        "--fixed",
        action="append",
        default=None,
        help="a fixed-threshold rule as ERROR_MAX,P95_MAX_SECONDS, or none (repeatable; "
        "default 0.02,0.35 and 0.05,0.5)",
    )
    parser.add_argument("--fixed-window", default="1m", help="rate window of the fixed-threshold rules")
    parser.add_argument("--minutes", type=int, default=45, help="simulated time per rollout")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "simulation.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "time-to-rollback.png")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.fixed is None:
        args.fixed = ["0.02,0.35", "0.05,0.5"]
    chosen = [
        replace(s, regression_at_seconds=args.regression_at if s.regression else 0)
        for s in scenarios()
        if not args.scenario or s.name in args.scenario
    ]
    if not chosen:
        parser.error(f"no scenario named {args.scenario}; choose from {[s.name for s in scenarios()]}")
    chosen_rules = rules(args)
    max_looks = args.minutes * 60 // INTERVAL_SECONDS
    started = time.monotonic()
    results: dict[str, dict[str, RuleSummary]] = {}
    for scenario in chosen:
        results[scenario.name] = simulate(
            scenario, chosen_rules, runs=args.runs, seed=args.seed, jobs=args.jobs, max_looks=max_looks
        )
        print(
            f"  {scenario.name}: {args.runs} rollouts simulated ({time.monotonic() - started:.0f}s)",
            file=sys.stderr,
        )
    print(table(results, chosen))
    print()
    for what, ok, value in targets(results, args.alpha):
        print(f"  [{'met ' if ok else 'MISS'}] {what}: {value}")
    document = {
        "command": "bench/simulate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": args.runs,
        "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
        "interval_seconds": INTERVAL_SECONDS,
        "steps": [{"percent": p, "hold_minutes": h} for p, h in STEPS],
        "scenarios": {
            s.name: {
                "scenario": {**asdict(s), "slow_share": s.slow_share(), "latency_scale": s.latency_scale()},
                "rules": {name: asdict(summary) for name, summary in results[s.name].items()},
            }
            for s in chosen
        },
        "targets": [
            {"target": what, "met": ok, "value": value} for what, ok, value in targets(results, args.alpha)
        ],
        "policies": {rule.name: rule.policy_text for rule in chosen_rules},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(f"\nJSON: {args.json}")
    if not args.no_plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(results, [s for s in chosen if s.exposure_loss == 0] or chosen, args.plot, args.minutes)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
