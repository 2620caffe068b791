"""The demo's scenarios are built so that the comparison with control, not the fixed ceiling, catches
the regression, and so that healthy noise never trips it.

Checked on seeded counts at the demo's own settings (its policy, loaded as the controller loads it;
its rates and error ratios), judged by the real comparison at every look: each request fails
independently, as in the demo service. The service delivers less than its nominal rate on a busy
machine, so the counts are drawn at 80 % of it; Prometheus shows them a few seconds late. The
regression is judged with a variance inflation of 4.5, about the most measured in a demo run (the
real inflation is measured, at least 1; most runs measure 1 to 2 once they have ten bins), so that it
must be caught even when the counts vary that much;
healthy rollouts are judged with none, where chance trips a comparison most easily.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controller.adapters.policyfile import load_text
from controller.core import sequential
from controller.core.policy import Policy
from controller.demo import runner

DELIVERED = 0.8  # of the nominal request rate
LAG_SECONDS = 3  # scrape, and the look just before it
MOST_INFLATION = 4.5
SEEDS = range(100)


def demo_policy() -> Policy:
    loaded = load_text(runner.POLICY, "demo.yaml")
    assert not [issue for issue in loaded.issues if issue.severity == "error"], loaded.issues
    [policy] = loaded.policies
    return policy.policy


@dataclass
class Outcome:
    tripped: str | None  # "comparison", "ceiling", or None (completed)
    seconds: int  # since exposure began


def share(policy: Policy, second: int) -> tuple[float, int]:
    """The treatment's percent at ``second`` after exposure began, and the step's end."""
    end = 0
    for step in policy.spec.steps:
        end += int(step.hold_seconds)
        if second < end:
            return step.percent, end
    return policy.spec.steps[-1].percent, end


def looks(
    policy: Policy, seed: int, treatment_errors: float
) -> Iterator[tuple[int, list[tuple[int, int, int, int]]]]:
    """Per-second counts (treatment requests, errors, control requests, errors) as the controller sees
    them at each look, until the last step's hold is over."""
    draw = random.Random(seed)
    seconds: list[tuple[int, int, int, int]] = []
    interval = int(policy.spec.interval_seconds)
    rate = runner.SERVICE_RPS * DELIVERED
    last = sum(int(step.hold_seconds) for step in policy.spec.steps)
    for second in range(last + 1):
        percent, _ = share(policy, second)
        n = round(rate * percent / 100)
        t = sum(draw.random() < treatment_errors for _ in range(n))
        c = sum(draw.random() < runner.ERROR_RATIO for _ in range(n))
        seconds.append((n, t, n, c))
        if second % interval == 0:
            yield second, seconds[: max(0, len(seconds) - LAG_SECONDS)]


def rollout(policy: Policy, seed: int, treatment_errors: float, inflation: float) -> Outcome:
    [guardrail] = [g for g in policy.spec.guardrails if g.error_ratio is not None]
    [(rule, limit)] = guardrail.rules()
    minimum = policy.spec.traffic.min_samples if policy.spec.traffic else 1
    for second, seen in looks(policy, seed, treatment_errors):
        window = seen[-runner.WINDOW_SECONDS :]
        requests, errors = sum(s[0] for s in window), sum(s[1] for s in window)
        if requests >= minimum and errors / requests > runner.ERROR_CEILING:
            return Outcome("ceiling", second)
        t_n, t_e = sum(s[0] for s in seen), sum(s[1] for s in seen)
        c_n, c_e = sum(s[2] for s in seen), sum(s[3] for s in seen)
        if min(t_n, c_n) < minimum:
            continue
        result = sequential.compare(
            sequential.ArmCounts(t_e, t_n),
            sequential.ArmCounts(c_e, c_n),
            rule=rule,
            limit=limit,
            alpha=policy.comparison_alpha(guardrail),
            expected_samples=policy.statistics.expected_samples,
            variance_inflation=inflation,
        )
        if result.fails:
            return Outcome("comparison", second)
    return Outcome(None, second)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return demo_policy()


def test_healthy_noise_never_trips_a_guardrail(policy: Policy) -> None:
    outcomes = [rollout(policy, seed, runner.ERROR_RATIO, 1.0) for seed in SEEDS]
    assert [o.tripped for o in outcomes] == [None] * len(SEEDS)


def test_the_comparison_catches_the_regression_before_the_rollout_completes(policy: Policy) -> None:
    outcomes = [rollout(policy, seed, runner.REGRESSION_ERROR_RATIO, MOST_INFLATION) for seed in SEEDS]
    assert {o.tripped for o in outcomes} == {"comparison"}
