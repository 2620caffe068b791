"""The realistic scenario families: one traffic model each, simulated as A/A (no regression) and
with the headline regression (the treatment's error ratio 1 % → 2 %), at 10 requests/s per arm
(the control arm's rate where the arms differ; the mean over the day for the daily cycle)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.simprom import Ramp, Scenario
from bench.simulation.traffic import Sizes

RATE = 10.0  # requests per second per arm (control's, where they differ)
HEAVY_TAIL = 2.3  # zeta exponent: mean 2.74, infinite variance
# A day-long rollout: 5 %, 20 %, 50 %, 8 hours each, a look a minute, started at a random time of day.
DAY = Ramp(interval_seconds=60, steps=((5, 480), (20, 480), (50, 480)), minutes=24 * 60 + 10)


@dataclass(frozen=True)
class Family:
    key: str
    title: str
    aa: Scenario
    regression: Scenario


def family(key: str, title: str, **model: object) -> Family:
    """The A/A and 1 % → 2 % scenarios of one traffic model."""
    aa = Scenario(f"aa-{key}", f"A/A, {title}", RATE, family=key)
    aa = replace(aa, **model)  # type: ignore[arg-type]  # the model's fields, checked by the dataclass
    return Family(
        key, title, aa, replace(aa, name=f"errors-{key}", title=f"1 % → 2 %, {title}", error_factor=2.0)
    )


def families() -> list[Family]:
    return [
        family("balanced", "balanced, independent (the reference)"),
        family("unequal-10", "treatment serves 10× control's requests", treatment_requests_factor=10.0),
        family("unequal-100", "treatment serves 100× control's requests", treatment_requests_factor=100.0),
        family(
            "bursts-geo3", "errors in bursts, geometric size mean 3", error_bursts=Sizes("geometric", 3.0)
        ),
        family(
            "bursts-geo5", "errors in bursts, geometric size mean 5", error_bursts=Sizes("geometric", 5.0)
        ),
        family(
            "bursts-zeta",
            f"errors in bursts, zeta size s = {HEAVY_TAIL:g} (heavy tail)",
            error_bursts=Sizes("zeta", HEAVY_TAIL),
        ),
        family(
            "users-geo3",
            "evaluations per user geometric, mean 3",
            evaluations_per_user=Sizes("geometric", 3.0),
        ),
        family(
            "users-zeta",
            f"evaluations per user zeta s = {HEAVY_TAIL:g} (heavy tail)",
            evaluations_per_user=Sizes("zeta", HEAVY_TAIL),
        ),
        family("daily", "daily cycle 0.2×–1.8×, 24 h rollout", daily_amplitude=0.8, ramp=DAY),
    ]


def realistic_scenarios() -> list[Scenario]:
    return [s for f in families() for s in (f.aa, f.regression)]
