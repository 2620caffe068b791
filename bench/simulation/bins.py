"""The variance inflation measured from per-interval counts, as the controller measures it, and
handed to flagroll's decision code.

At every look, each arm's counts are cut into bins of the policy's interval over the exposure
window (the complete intervals since exposure began), summed as
:class:`~controller.core.dispersion.BinSums` and passed through the estimator
(:func:`~controller.core.dispersion.dispersion` for a guardrail's bad requests in both arms,
:func:`~controller.core.dispersion.sample_ratio_dispersion` for the treatment's exposures among
both arms'), with the policy's ``varianceInflation`` as the floor.

The decision code reads one inflation, ``statistics.varianceInflation``, for every check. The
estimates differ per check (bursts of errors inflate the errorRatio guardrail, not the sample-ratio
check; repeated evaluations the reverse), so :func:`decide_measured` gives each check its own:

- a guardrail's inflation is handed over as the policy's ``varianceInflation`` (a copy of the
  policy; the stored state follows its revision, because the controller keeps the estimate out of
  the revision), once per distinct inflation of the guardrails (see :func:`decide_measured`);
- the sample-ratio check divides exposures by the inflation, so the exposures it reads are scaled
  by ``guardrails / sample-ratio``: it then divides them by its own estimate in effect.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from bench.simprom import BUCKETS, SLO_SECONDS, TICK_SECONDS, ArmSeries
from controller.core import dispersion as estimator
from controller.core.decision import Decision, decide
from controller.core.dispersion import BinSums, Dispersion
from controller.core.policy import Guardrail, Policy
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading, ReadingKind, Source
from controller.core.state import Outcome, RolloutState

Array = npt.NDArray[np.float64]
InflationMode = Literal["estimated", "policy"]

# The estimator's χ² quantile depends on the degrees of freedom alone, and a simulation asks for the
# same ones in every run: remember them (a pure function, so the answers are the same).
if hasattr(estimator, "chi_square_quantile"):
    estimator.chi_square_quantile = functools.lru_cache(maxsize=None)(estimator.chi_square_quantile)


@dataclass(frozen=True)
class _Cumulative:
    """Running sums over the bins of one count: ``values[k]`` sums bins 0 … k − 1."""

    bins: Array
    events: Array
    total: Array
    squares: Array

    @classmethod
    def of(cls, events: Array, total: Array) -> _Cumulative:
        filled = total > 0
        squares = np.divide(events * events, total, out=np.zeros_like(total), where=filled)
        return cls(
            *(np.concatenate([[0.0], np.cumsum(a)]) for a in (filled.astype(float), events, total, squares))
        )

    def sums(self, bins: int) -> BinSums:
        k = min(bins, len(self.bins) - 1)
        return BinSums(
            bins=float(self.bins[k]),
            events=float(self.events[k]),
            total=float(self.total[k]),
            squares=float(self.squares[k]),
        )


class Binned:
    """One run's counts, cut into bins of ``interval_seconds``: the sums the estimator reads."""

    def __init__(self, series: dict[Arm, ArmSeries], interval_seconds: int) -> None:
        step = max(1, interval_seconds // TICK_SECONDS)
        slo = BUCKETS.index(SLO_SECONDS)

        def per_bin(cumulative: Array) -> Array:
            return np.diff(cumulative[::step])

        self.errors: dict[Arm, _Cumulative] = {}
        self.slow: dict[Arm, _Cumulative] = {}
        for arm, counts in series.items():
            requests = per_bin(counts.requests)
            self.errors[arm] = _Cumulative.of(per_bin(counts.errors), requests)
            self.slow[arm] = _Cumulative.of(requests - per_bin(counts.buckets[:, slo]), requests)
        treatment = per_bin(series[Arm.TREATMENT].evaluations)
        self.exposures = _Cumulative.of(treatment, treatment + per_bin(series[Arm.CONTROL].evaluations))

    def inflation(self, bins: int, floor: float) -> Inflation:
        """The estimates after ``bins`` complete intervals of exposure."""
        arms = (Arm.TREATMENT, Arm.CONTROL)
        return Inflation(
            errors=estimator.dispersion([self.errors[a].sums(bins) for a in arms], floor=floor),
            latency=estimator.dispersion([self.slow[a].sums(bins) for a in arms], floor=floor),
            sample_ratio=estimator.sample_ratio_dispersion(self.exposures.sums(bins), floor=floor),
        )


@dataclass(frozen=True)
class Inflation:
    errors: Dispersion
    latency: Dispersion
    sample_ratio: Dispersion

    def of(self, guardrail: Guardrail) -> float:
        """The inflation a guardrail's comparison uses: its own count's estimate."""
        return self.errors.used if guardrail.error_ratio is not None else self.latency.used


def hand_over(
    policy: Policy,
    stored: RolloutState | None,
    readings: dict[QueryKey, Reading],
    *,
    guardrails: float,
    sample_ratio: float,
) -> tuple[Policy, RolloutState | None, dict[QueryKey, Reading]]:
    """The policy, stored state and readings that make the decision code judge every guardrail with
    the inflation ``guardrails`` and the sample-ratio check with ``sample_ratio``."""
    statistics = policy.statistics.model_copy(update={"variance_inflation": guardrails})
    judged = policy.model_copy(update={"spec": policy.spec.model_copy(update={"statistics": statistics})})
    for cached in ("revision", "legacy_revision"):  # computed afresh for the copy, not copied
        judged.__dict__.pop(cached, None)
    if stored is not None and policy.is_revision(stored.revision):
        stored = replace(stored, revision=judged.revision)
    scale = guardrails / sample_ratio
    if scale != 1.0:
        readings = {
            key: Reading.of(reading.value * scale)
            if key.source is Source.EXPOSURE
            and reading.kind is ReadingKind.VALUE
            and reading.value is not None
            else reading
            for key, reading in readings.items()
        }
    return judged, stored, readings


def decide_measured(
    policy: Policy,
    stored: RolloutState | None,
    queries: Sequence[PlannedQuery],
    readings: dict[QueryKey, Reading],
    now: datetime,
    inflation: Inflation,
) -> tuple[Decision, Policy]:
    """The decision with each guardrail judged at its own inflation (and the decision's policy).

    One call of the decision code judges every guardrail at one inflation, so it is asked at each
    guardrail's inflation, the largest first. A comparison that fails at a larger inflation fails at
    its own smaller one too (less variance, the same excess), so a failure at the largest is real; a
    failure at a smaller level is real only for a guardrail whose own inflation that is. Without a
    real failure the decision at the largest stands: nothing fails there."""
    own = {g.name: inflation.of(g) for g in policy.spec.guardrails if g.sequential}
    levels = sorted(set(own.values()) or {policy.statistics.variance_inflation}, reverse=True)
    first: tuple[Decision, Policy] | None = None
    for index, level in enumerate(levels):
        judged, view, handed = hand_over(
            policy, stored, readings, guardrails=level, sample_ratio=inflation.sample_ratio.used
        )
        decision = decide(judged, view, queries, handed, now)
        failed = [c for c in decision.checks if c.verdict is Outcome.FAIL and not c.shadow]
        if any(index == 0 or own.get(c.name) == level for c in failed):
            return decision, judged
        if first is None:
            first = (decision, judged)
    assert first is not None
    return first


def restore(policy: Policy, judged: Policy, state: RolloutState) -> RolloutState:
    """The state as the controller would store it: under the policy's own revision."""
    if state.revision == judged.revision:
        return replace(state, revision=policy.revision)
    return state
