"""Simulate many rollouts and measure how often flagroll's guardrails cry wolf and how fast they
catch a regression: statistical guardrails (confidence sequences, treatment vs control) against
fixed thresholds configured the way users of other rollout tools do, on the same traffic.

The decisions are flagroll's own: each policy is loaded from YAML by the real loader, and every
look goes through ``decision.rebase`` → ``decision.queries_for`` → ``decision.decide``. Only
Prometheus is simulated (bench/simprom.py): :class:`~bench.simprom.SimulatedPrometheus` keeps
per-arm counters (requests, errors, histogram buckets, flag evaluations) fed by Poisson arrivals,
and answers the PromQL that the real query planner wrote (``sum(increase(…[Ns]))``, ``rate``
ratios, ``histogram_quantile``), so the window arithmetic, ``{{variant}}`` substitution and ``le``
matchers are exercised too.

    .venv/bin/python bench/simulate.py                 # 1,000 rollouts per scenario (a few minutes)
    .venv/bin/python bench/simulate.py --runs 100      # quicker, rougher

It prints a table, writes JSON (``--json``) and plots time-to-rollback distributions (``--plot``).
See docs/statistics.md for the model, the figures and how to read them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

if not __package__:  # run as a file (python bench/simulate.py): make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.simprom import (
    CLASSIC,
    SLO_SECONDS,
    TICK_SECONDS,
    Ramp,
    Scenario,
    SimulatedPrometheus,
    simulate_traffic,
)
from bench.simulation import options, report
from bench.simulation.families import families, realistic_scenarios
from controller.adapters.policyfile import load_text
from controller.core.checkrecord import Check
from controller.core.decision import decide, queries_for, rebase
from controller.core.policy import Policy
from controller.core.state import Action, RolloutState, Status

ROOT = Path(__file__).resolve().parent.parent

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
INTERVAL_SECONDS = CLASSIC.interval_seconds  # the policies' check interval (the classic scenarios)
FLAG = "checkout-http-client"
SAMPLE_RATIO_ALPHA = 0.001  # statistics.sampleRatioAlpha: the policies leave it at its default

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

STEPS = CLASSIC.steps  # (percent, hold minutes): a 30-minute ramp

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
    ramp: Ramp = CLASSIC,
    variance_inflation: float = 1.0,
) -> str:
    text = _HEAD.format(name="statistical", flag=FLAG, interval=ramp.interval_seconds, steps=_steps(ramp))
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
    varianceInflation: {variance_inflation:g}
    exposure: >-
      feature_flag_evaluations_total{{feature_flag_key="{{{{flag}}}}",
      feature_flag_result_variant="{{{{variant}}}}"}}
"""
    )


def fixed_policy(name: str, *, error_max: float, p95_max: float, window: str, ramp: Ramp = CLASSIC) -> str:
    """What a user of a threshold-based tool writes: absolute bounds on the treatment arm over a
    short rate window; one failed check rolls back; no sample minimum."""
    return _HEAD.format(name=name, flag=FLAG, interval=ramp.interval_seconds, steps=_steps(ramp)) + (
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


def _steps(ramp: Ramp) -> str:
    return "\n".join(f"    - {{percent: {p}, hold: {h}m}}" for p, h in ramp.steps)


def load(text: str) -> Policy:
    loaded = load_text(text, "<simulation>")
    if loaded.errors:
        raise SystemExit("\n".join(str(e) for e in loaded.errors))
    return loaded.policies[0].policy


# Running rollouts ------------------------------------------------------------------------------


@dataclass
class Outcome:
    rolled_back_after_seconds: float | None = None  # since the regression began (or since exposure)
    completed: bool = False
    looks: int = 0
    sample_ratio_holds: int = 0
    reason: str = ""
    inflation: dict[str, float] = field(default_factory=dict)  # per check, the last it was judged with


def run_rollout(
    policy: Policy,
    prometheus: SimulatedPrometheus,
    scenario: Scenario,
    max_looks: int,
) -> Outcome:
    """Drive one rollout through flagroll's decision code until it completes, rolls back or runs out
    of simulated time."""
    stored: RolloutState | None = None
    outcome = Outcome()
    interval = scenario.ramp.interval_seconds
    for look in range(max_looks + 1):
        now = T0 + timedelta(seconds=look * interval)
        state = rebase(policy, stored, now).state
        queries = queries_for(policy, state, now)
        tick = look * interval // TICK_SECONDS
        decision = decide(policy, stored, queries, prometheus.answer(queries, tick), now)
        outcome.inflation.update(_inflation(decision.checks))
        outcome.looks = look
        if decision.action is Action.HOLD and "sample ratio mismatch" in decision.reason:
            outcome.sample_ratio_holds += 1
        if decision.action is Action.ROLLBACK:
            outcome.rolled_back_after_seconds = look * interval - scenario.regression_at_seconds
            outcome.reason = decision.reason
            return outcome
        if decision.after.status is Status.COMPLETED:
            outcome.completed = True
            return outcome
        stored = decision.after
    return outcome


def _inflation(checks: Sequence[Check]) -> dict[str, float]:
    """The variance inflation each statistical check used at a look, from its record."""
    found = {}
    for check in checks:
        if check.sequential is not None:
            found["errors" if check.sequential.metric == "errorRatio" else "latency"] = (
                check.sequential.variance_inflation
            )
        elif check.sample_ratio is not None:
            found["sample_ratio"] = check.sample_ratio.variance_inflation
    return found


@dataclass(frozen=True)
class Rule:
    name: str
    title: str
    policy_text: str


Mode = Literal["estimated", "policy", "oracle"]
Work = tuple[Scenario, list[Rule], int, int, Mode]


def _one_run(args: Work) -> dict[str, dict[str, Any]]:
    scenario, rules, seed, max_looks, mode = args
    rng = np.random.default_rng(seed)
    ticks = max_looks * scenario.ramp.interval_seconds // TICK_SECONDS + 1
    series = simulate_traffic(scenario, ticks, rng)
    prometheus = SimulatedPrometheus(series, measure_dispersion=mode == "estimated")
    results = {}
    for rule in rules:
        results[rule.name] = asdict(run_rollout(_policy(rule.policy_text), prometheus, scenario, max_looks))
    return results


_POLICIES: dict[str, Policy] = {}


def _policy(text: str) -> Policy:
    if text not in _POLICIES:
        _POLICIES[text] = load(text)
    return _POLICIES[text]


def _chunk(args: list[Work]) -> list[dict[str, dict[str, Any]]]:
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
    runs_held_for_sample_ratio: int  # runs with at least one such look
    rollback_rate: float
    median_minutes: float | None
    p90_minutes: float | None
    minutes: list[float] = field(default_factory=list)
    # The median over runs of the inflation the last look used, per check (measured inflation only).
    inflation_median: dict[str, float] = field(default_factory=dict)


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
        runs_held_for_sample_ratio=sum(1 for o in outcomes if o["sample_ratio_holds"]),
        rollback_rate=len(times) / len(outcomes) if outcomes else math.nan,
        median_minutes=_quantile(times, 0.5),
        p90_minutes=_quantile(times, 0.9),
        minutes=times,
        inflation_median={
            check: float(np.median([o["inflation"][check] for o in outcomes if check in o["inflation"]]))
            for check in ("errors", "latency", "sample_ratio")
            if any(check in o["inflation"] for o in outcomes)
        },
    )


def _quantile(values: list[float], q: float) -> float | None:
    """The smallest value with at least q of the values at or below it (no interpolation: times
    are whole check intervals)."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def simulate(
    scenario: Scenario,
    rules: list[Rule],
    *,
    runs: int,
    seed: int,
    jobs: int,
    max_looks: int,
    inflation: Mode = "estimated",
) -> dict[str, RuleSummary]:
    """``runs`` rollouts of ``scenario`` under every rule. ``inflation``: "estimated" answers the
    controller's queries of sums over bins, so it measures the variance inflation as it does against
    Prometheus; "policy" and "oracle" fail them, and the controller uses the policy's
    ``varianceInflation`` (which :func:`rules` sets to the traffic's true inflation for "oracle")."""
    work: list[Work] = [(scenario, rules, seed * 1_000_003 + i, max_looks, inflation) for i in range(runs)]
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


def rules(
    args: argparse.Namespace,
    ramp: Ramp = CLASSIC,
    *,
    errors_only: bool = True,
    variance_inflation: float = 1.0,
) -> list[Rule]:
    """The rules every scenario is judged by: the statistical policy, the same with its errorRatio
    guardrail alone (``errors_only``), and the fixed thresholds, all over ``ramp``;
    ``variance_inflation`` is the statistical policies' ``varianceInflation``."""
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
                ramp=ramp,
                variance_inflation=variance_inflation,
            ),
        )
    ]
    if args.guardrails != "errors" and errors_only:
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
                    ramp=ramp,
                    variance_inflation=variance_inflation,
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
                fixed_policy(name, error_max=error_max, p95_max=p95_max, window=args.fixed_window, ramp=ramp),
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


def _parser() -> argparse.ArgumentParser:
    return options.parser(__doc__.split("\n\n")[0] if __doc__ else None, ROOT)


def _family(args: argparse.Namespace) -> list[Scenario]:
    return scenarios() if args.family == "classic" else realistic_scenarios()


def _chosen_scenarios(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios asked for, the regression moved to ``--regression-at`` where there is one, the
    simulated time set by ``--minutes``."""
    chosen = []
    for s in _family(args):
        if args.scenario and s.name not in args.scenario:
            continue
        if args.families and s.family not in args.families.split(","):
            continue
        ramp = s.ramp if args.minutes is None else replace(s.ramp, minutes=args.minutes)
        chosen.append(replace(s, regression_at_seconds=args.regression_at if s.regression else 0, ramp=ramp))
    return chosen


def _rules_of(args: argparse.Namespace, scenario: Scenario) -> list[Rule]:
    inflation = oracle_inflation(scenario) if args.inflation == "oracle" else 1.0
    return rules(args, scenario.ramp, errors_only=args.family == "classic", variance_inflation=inflation)


def oracle_inflation(scenario: Scenario) -> float:
    """The true variance inflation of the scenario's error counts (``E[S²]/E[S]`` of its bursts):
    what a test told the truth would be widened by (``--inflation oracle``)."""
    inflation = scenario.error_bursts.inflation
    if not math.isfinite(inflation):
        raise SystemExit(
            f"{scenario.name}: its error bursts have an infinite second moment "
            f"({scenario.error_bursts.describe()}): there is no true inflation to tell a test"
        )
    return inflation


def _simulate_all(
    args: argparse.Namespace, chosen: list[Scenario], started: float
) -> dict[str, dict[str, RuleSummary]]:
    results: dict[str, dict[str, RuleSummary]] = {}
    for scenario in chosen:
        runs = args.runs if scenario.regression or args.aa_runs is None else args.aa_runs
        results[scenario.name] = simulate(
            scenario,
            _rules_of(args, scenario),
            runs=runs,
            seed=args.seed,
            jobs=args.jobs,
            max_looks=scenario.ramp.max_looks,
            inflation=args.inflation,
        )
        print(
            f"  {scenario.name}: {runs} rollouts simulated ({time.monotonic() - started:.0f}s)",
            file=sys.stderr,
        )
    return results


def _document(
    argv: list[str] | None,
    args: argparse.Namespace,
    chosen: list[Scenario],
    results: dict[str, dict[str, RuleSummary]],
    started: float,
) -> dict[str, Any]:
    """Every figure of the run, as written to ``--json``."""
    document: dict[str, Any] = {
        "command": "bench/simulate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "family": args.family,
        "inflation": args.inflation,
        "runs": args.runs,
        "aa_runs": args.aa_runs or args.runs,
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
            {"target": what, "met": ok, "value": value} for what, ok, value in _targets(args, results)
        ],
        "policies": {
            f"{rule.name} ({s.ramp.interval_seconds}s)": rule.policy_text
            for s in chosen
            for rule in _rules_of(args, s)
        },
    }
    if args.family == "realistic":
        by_family = report.figures(families(), results)
        document["families"] = {key: [f.as_dict() for f in rules] for key, rules in by_family.items()}
    return document


def _targets(
    args: argparse.Namespace, results: dict[str, dict[str, RuleSummary]]
) -> list[tuple[str, bool, str]]:
    if args.family == "classic":
        return targets(results, args.alpha)
    return report.targets(
        report.figures(families(), results), alpha=args.alpha, sample_ratio_alpha=SAMPLE_RATIO_ALPHA
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.fixed is None:
        args.fixed = ["0.02,0.35", "0.05,0.5"]
    if args.json is None:
        name = "simulation.json" if args.family == "classic" else "realistic.json"
        args.json = ROOT / "bench" / "results" / name
    chosen = _chosen_scenarios(args)
    if not chosen:
        parser.error(f"no scenario named {args.scenario}; choose from {[s.name for s in _family(args)]}")
    started = time.monotonic()
    results = _simulate_all(args, chosen, started)
    if args.family == "classic":
        print(table(results, chosen))
    else:
        by_family = report.figures(families(), results)
        print(report.text_table(families(), by_family))
        print()
        print(report.markdown_table(families(), by_family))
    print()
    for what, ok, value in _targets(args, results):
        print(f"  [{'met ' if ok else 'MISS'}] {what}: {value}")
    document = _document(argv, args, chosen, results, started)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(f"\nJSON: {args.json}")
    if not args.no_plot and args.family == "classic":
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        minutes = max(s.ramp.minutes for s in chosen)
        plot(results, [s for s in chosen if s.exposure_loss == 0] or chosen, args.plot, minutes)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
