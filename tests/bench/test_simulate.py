"""The rollout simulator (bench/simulate.py) on a small number of runs: it drives flagroll's real
decision code, its simulated Prometheus answers the planner's PromQL, and the statistical policy
keeps its false-rollback promise where a fixed threshold does not."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from bench import simprom, simulate
from controller.core.queries import Arm, Reading


def test_prometheus_histogram_quantile_interpolates_like_prometheus() -> None:
    # 100 requests: 50 at or under 0.1 s, 90 at or under 0.2 s, all at or under 0.4 s.
    edges, cumulative = [0.1, 0.2, 0.4], [50.0, 90.0, 100.0]
    assert simprom.histogram_quantile(0.5, edges, cumulative, 100) == pytest.approx(0.1)
    assert simprom.histogram_quantile(0.95, edges, cumulative, 100) == pytest.approx(0.2 + 0.2 * 5 / 10)
    assert simprom.histogram_quantile(0.99, edges, [50.0, 90.0, 95.0], 100) == 0.4  # in +Inf: top edge


def test_the_latency_model_gives_the_requested_slow_share() -> None:
    scenario = simprom.Scenario("s", "s", 50.0, slow_share_factor=1.2)
    assert scenario.slow_share() == pytest.approx(0.05)  # p95 is the 300 ms bound
    assert scenario.slow_share(scenario.latency_scale()) == pytest.approx(0.06)
    assert sum(scenario.bucket_shares(1.0)) == pytest.approx(1.0)


def test_the_simulated_prometheus_refuses_queries_it_does_not_understand() -> None:
    rng = np.random.default_rng(1)
    series = simprom.simulate_traffic(simprom.Scenario("s", "s", 10.0), 8, rng)
    prometheus = simprom.SimulatedPrometheus(series)
    answer = prometheus.query('max(http_server_requests_total{feature_flag_result_variant="on"})', 4)
    assert answer == Reading.error(
        "the simulator does not understand 'max(http_server_requests_total{feature_flag_result_variant=\"on\"})'"
    )
    total = prometheus.query(
        'sum(increase(http_server_requests_total{feature_flag_result_variant="on"}[60s]))', 8
    )
    assert total.value == series[Arm.TREATMENT].requests[8] - series[Arm.TREATMENT].requests[4]


def test_a_small_simulation_keeps_the_statistical_promise_and_shows_the_fixed_threshold_crying_wolf() -> None:
    args = argparse.Namespace(
        alpha=0.01,
        error_delta=0.0,
        slow_increase=0.05,
        min_samples=200,
        expected_samples=2000,
        guardrails="errors,latency",
        error_weight=3.0,
        fixed=["0.02,0.35"],
        fixed_window="1m",
    )
    rules = [r for r in simulate.rules(args) if r.name != "statistical-errors-only"]
    scenarios = {s.name: s for s in simulate.scenarios()}
    healthy = simulate.simulate(scenarios["aa-10rps"], rules, runs=40, seed=5, jobs=1, max_looks=70)
    regressed = simulate.simulate(scenarios["errors-10rps"], rules, runs=20, seed=6, jobs=1, max_looks=70)

    statistical, fixed = healthy["statistical"], healthy["fixed-0.02-0.35"]
    assert statistical.rollbacks <= 1  # alpha 0.01: expected well under one in 40
    assert statistical.completed + statistical.rollbacks == 40
    assert fixed.rollback_rate >= 0.25  # an absolute bound near the baseline cries wolf at 10 req/s
    caught = regressed["statistical"]
    assert caught.rollbacks == 20
    assert caught.median_minutes is not None
    assert caught.median_minutes <= 10
