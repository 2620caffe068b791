"""The demo service's behaviour: each path's error ratio, and a regression from the first request."""

from __future__ import annotations

import argparse
import statistics

import pytest

from controller.demo.service import ERROR_RATIO, REGRESSION_ERROR_RATIO, Behaviour, _ratio


def shares(behaviour: Behaviour, draws: int = 20_000) -> tuple[float, float, float]:
    treatment = [behaviour.treatment() for _ in range(draws)]
    baseline = [behaviour.baseline() for _ in range(draws)]
    return (
        sum(failed for _, failed in treatment) / draws,
        sum(failed for _, failed in baseline) / draws,
        statistics.median(latency for latency, _ in treatment),
    )


def test_by_default_both_paths_fail_rarely_until_the_regression_is_injected() -> None:
    behaviour = Behaviour()
    treatment, baseline, _ = shares(behaviour)
    assert treatment == pytest.approx(ERROR_RATIO, abs=0.001)
    assert baseline == pytest.approx(ERROR_RATIO, abs=0.001)
    behaviour.regression = True
    treatment, baseline, latency = shares(behaviour)
    assert treatment == pytest.approx(REGRESSION_ERROR_RATIO, abs=0.01)
    assert latency > 0.2  # the added 200 ms


def test_a_service_regressed_from_the_start_fails_more_on_the_treatment_path_only() -> None:
    behaviour = Behaviour(
        3, error_ratio=0.01, regression_error_ratio=0.05, regression_latency_seconds=0, regression=True
    )
    treatment, baseline, latency = shares(behaviour)
    assert treatment == pytest.approx(0.05, abs=0.005)
    assert baseline == pytest.approx(0.01, abs=0.003)
    assert latency == pytest.approx(0.033, abs=0.005)  # no latency added: errors only


def test_a_ratio_outside_0_to_1_is_refused_by_name() -> None:
    assert _ratio("0.05") == 0.05
    with pytest.raises(argparse.ArgumentTypeError, match="between 0 and 1, got 5"):
        _ratio("5")
