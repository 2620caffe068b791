"""The simulator's realistic traffic models (bench/simulation/traffic.py, bench/simprom.py) produce
what they claim, seeded: burst sizes and their variance inflation, arm ratios, evaluations per user,
the daily volume. Each test runs in well under a second."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import simprom
from bench.simulation import families
from bench.simulation.traffic import Sizes, daily_volume, user_evaluations
from controller.core.queries import Arm


def _per_tick(cumulative: np.typing.NDArray[np.float64]) -> np.typing.NDArray[np.float64]:
    return np.diff(cumulative)


def _scenario(key: str, *, regressed: bool = False) -> simprom.Scenario:
    family = next(f for f in families.families() if f.key == key)
    return family.regression if regressed else family.aa


def test_geometric_sizes_have_the_mean_and_the_inflation_they_claim() -> None:
    for mean in (3.0, 5.0):
        sizes = Sizes("geometric", mean)
        drawn = sizes.draw(np.random.default_rng(11), 400_000).astype(float)
        assert drawn.min() == 1
        assert drawn.mean() == pytest.approx(mean, rel=0.01)
        assert (drawn**2).mean() / drawn.mean() == pytest.approx(sizes.inflation, rel=0.02)
        assert sizes.inflation == 2 * mean - 1


def test_zeta_sizes_follow_their_law_and_have_no_finite_inflation() -> None:
    sizes = Sizes("zeta", families.HEAVY_TAIL)
    drawn = sizes.draw(np.random.default_rng(12), 400_000)
    zeta = 1.0 / (drawn == 1).mean()  # P(K = 1) = 1/ζ(s)
    assert zeta == pytest.approx(1.4324, rel=0.01)  # ζ(2.3)
    assert (drawn == 2).mean() == pytest.approx(2**-families.HEAVY_TAIL / 1.4324, rel=0.02)
    assert sizes.mean == pytest.approx(2.7450, rel=1e-4)  # ζ(1.3)/ζ(2.3)
    assert sizes.inflation == math.inf
    assert drawn.max() > 1_000  # a heavy tail: some bursts are huge
    with pytest.raises(ValueError, match="finite mean"):
        Sizes("zeta", 2.0)


def test_bursts_keep_the_error_ratio_and_inflate_the_variance_by_2m_minus_1() -> None:
    ticks = 40_000  # about a week of 15 s scrapes
    for key, inflation in (("balanced", 1.0), ("bursts-geo3", 5.0), ("bursts-geo5", 9.0)):
        series = simprom.simulate_traffic(_scenario(key), ticks, np.random.default_rng(13))
        for arm in (Arm.TREATMENT, Arm.CONTROL):
            requests, errors = _per_tick(series[arm].requests), _per_tick(series[arm].errors)
            ratio = errors.sum() / requests.sum()
            assert ratio == pytest.approx(0.01, rel=0.05), key
            pearson = ((errors - ratio * requests) ** 2 / (ratio * (1 - ratio) * requests)).mean()
            assert pearson == pytest.approx(inflation, rel=0.1), key


def test_the_regression_doubles_the_error_ratio_of_the_treatment_only() -> None:
    series = simprom.simulate_traffic(
        _scenario("bursts-geo3", regressed=True), 40_000, np.random.default_rng(14)
    )
    treatment = series[Arm.TREATMENT].errors[-1] / series[Arm.TREATMENT].requests[-1]
    control = series[Arm.CONTROL].errors[-1] / series[Arm.CONTROL].requests[-1]
    assert treatment == pytest.approx(0.02, rel=0.05)
    assert control == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("factor", [10.0, 100.0])
def test_unequal_arms_serve_the_treatment_more_requests_but_expose_users_one_to_one(factor: float) -> None:
    scenario = _scenario(f"unequal-{factor:.0f}")
    series = simprom.simulate_traffic(scenario, 2_000, np.random.default_rng(15))
    treatment, control = series[Arm.TREATMENT], series[Arm.CONTROL]
    assert treatment.requests[-1] / control.requests[-1] == pytest.approx(factor, rel=0.02)
    assert control.requests[-1] / (2_000 * simprom.TICK_SECONDS) == pytest.approx(10.0, rel=0.02)
    assert treatment.evaluations[-1] / control.evaluations[-1] == pytest.approx(1.0, abs=0.02)
    assert treatment.errors[-1] / treatment.requests[-1] == pytest.approx(0.01, rel=0.05)
    assert treatment.buckets[-1, -1] <= treatment.requests[-1]  # every request has a latency


def test_repeated_evaluations_keep_the_rate_and_inflate_the_exposure_variance_by_k2_over_k() -> None:
    ticks, rate, window = 40_000, 150.0, 40  # 10 evaluations/s; windows of 10 min, longer than a session
    for sizes in (Sizes("geometric", 3.0), Sizes("geometric", 5.0)):
        per_tick = user_evaluations(np.random.default_rng(16), np.full(ticks, rate), sizes, 4)
        assert per_tick.mean() == pytest.approx(rate, rel=0.01)
        windows = per_tick[: ticks // window * window].reshape(-1, window).sum(axis=1)
        assert windows.var() / windows.mean() == pytest.approx(sizes.inflation, rel=0.12)
    # One evaluation per user is a Poisson count: no inflation.
    single = user_evaluations(np.random.default_rng(17), np.full(ticks, rate), Sizes(), 4)
    assert single.var() / single.mean() == pytest.approx(1.0, rel=0.05)


def test_a_users_evaluations_spread_over_the_session_and_stay_in_their_arm() -> None:
    # One user a tick at most, evaluated 5 times on average: counts spread over 4 ticks.
    per_tick = user_evaluations(np.random.default_rng(18), np.full(20_000, 0.5), Sizes("geometric", 5.0), 4)
    lag = np.corrcoef(per_tick[:-1], per_tick[1:])[0, 1]
    assert lag > 0.3  # one user's evaluations land in neighbouring ticks
    assert np.corrcoef(per_tick[:-8], per_tick[8:])[0, 1] == pytest.approx(0.0, abs=0.05)
    series = simprom.simulate_traffic(_scenario("users-geo3"), 4_000, np.random.default_rng(19))
    both = [series[arm].evaluations[-1] for arm in (Arm.TREATMENT, Arm.CONTROL)]
    assert both[0] / both[1] == pytest.approx(1.0, abs=0.05)
    assert both[1] / (4_000 * simprom.TICK_SECONDS) == pytest.approx(10.0, rel=0.05)


def test_the_daily_cycle_swings_between_a_fifth_and_nine_fifths_of_the_mean_over_24_hours() -> None:
    per_day = 86_400 // simprom.TICK_SECONDS
    volume = daily_volume(per_day, simprom.TICK_SECONDS, 0.8, phase=0.0)
    assert volume.min() == pytest.approx(0.2, abs=1e-3)
    assert volume.max() == pytest.approx(1.8, abs=1e-3)
    assert volume.mean() == pytest.approx(1.0, abs=1e-9)
    assert np.argmax(volume) * simprom.TICK_SECONDS == pytest.approx(6 * 3600, abs=15)  # a quarter day in

    scenario = _scenario("daily")
    assert scenario.ramp.minutes >= 24 * 60  # the rollout lasts the whole cycle
    series = simprom.simulate_traffic(scenario, per_day, np.random.default_rng(20))
    hourly = _per_tick(series[Arm.CONTROL].requests).reshape(24, -1).sum(axis=1) / 3600
    assert hourly.mean() == pytest.approx(10.0, rel=0.02)
    assert hourly.max() == pytest.approx(18.0, rel=0.05)
    assert hourly.min() == pytest.approx(2.0, rel=0.15)  # hourly means smooth the trough a little
