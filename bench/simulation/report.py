"""The realistic families' figures, their targets, and the tables printed and written to the docs.

For each family (traffic model) and rule: A/A false rollbacks and runs held for a sample-ratio
mismatch, each with an exact (Clopper–Pearson) 95 % binomial interval; for the 1 % → 2 %
regression the share detected, the median and the 90th percentile of the time to rollback.
The targets, for the statistical policy with its defaults:

- A/A false rollbacks ≤ ``statistics.alpha``;
- A/A runs held for a sample-ratio mismatch ≤ ``statistics.sampleRatioAlpha``;
- the regression detected in ≥ 95 % of runs, with a p90 time to rollback ≤ 1.5 × the balanced,
  independent family's p90 in the same run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from scipy.stats import beta

from bench.simulation.families import Family

CONFIDENCE = 0.95
DETECTED_AT_LEAST = 0.95
P90_AT_MOST = 1.5  # × the balanced family's p90
REFERENCE = "balanced"
STATISTICAL = "statistical"


class Summary(Protocol):
    """What the report reads of a rule's summary (bench/simulate.py's RuleSummary)."""

    @property
    def title(self) -> str: ...
    @property
    def runs(self) -> int: ...
    @property
    def rollbacks(self) -> int: ...
    @property
    def runs_held_for_sample_ratio(self) -> int: ...
    @property
    def median_minutes(self) -> float | None: ...
    @property
    def p90_minutes(self) -> float | None: ...
    @property
    def inflation_median(self) -> dict[str, float]: ...


def interval(events: int, runs: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a binomial proportion."""
    if runs <= 0:
        return (math.nan, math.nan)
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if events == 0 else float(beta.ppf(tail, events, runs - events + 1))
    high = 1.0 if events == runs else float(beta.ppf(1.0 - tail, events + 1, runs - events))
    return (low, high)


@dataclass(frozen=True)
class Share:
    events: int
    runs: int

    @property
    def rate(self) -> float:
        return self.events / self.runs if self.runs else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return interval(self.events, self.runs)

    def text(self) -> str:
        low, high = self.interval
        return f"{_percent(self.rate)} ({self.events}/{self.runs}; {_percent(low)}–{_percent(high)})"

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {"events": self.events, "runs": self.runs, "rate": self.rate, "low": low, "high": high}


def _percent(value: float) -> str:
    if value == 0:
        return "0 %"
    return f"{value * 100:.2f} %" if value < 0.1 else f"{value * 100:.1f} %"


def _minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


@dataclass(frozen=True)
class RuleFigures:
    rule: str
    title: str
    false_rollbacks: Share
    false_holds: Share  # A/A runs held at least once for a sample-ratio mismatch
    detected: Share
    median_minutes: float | None
    p90_minutes: float | None
    inflation: dict[str, float]  # A/A: median over runs of the inflation the last look used, per check

    def inflation_text(self) -> str:
        if not self.inflation:
            return "—"
        errors, ratio = self.inflation.get("errors"), self.inflation.get("sample_ratio")
        return " / ".join("—" if v is None else f"{v:.2f}" for v in (errors, ratio))

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "title": self.title,
            "aa_false_rollbacks": self.false_rollbacks.as_dict(),
            "aa_runs_held_for_sample_ratio": self.false_holds.as_dict(),
            "detected": self.detected.as_dict(),
            "median_minutes": self.median_minutes,
            "p90_minutes": self.p90_minutes,
            "aa_inflation_median": self.inflation,
        }


def figures(
    chosen: Sequence[Family], results: Mapping[str, Mapping[str, Summary]]
) -> dict[str, list[RuleFigures]]:
    """Per family whose two scenarios were simulated: one entry per rule."""
    out: dict[str, list[RuleFigures]] = {}
    for family in chosen:
        if family.aa.name not in results or family.regression.name not in results:
            continue
        aa, bad = results[family.aa.name], results[family.regression.name]
        out[family.key] = [
            RuleFigures(
                rule=rule,
                title=summary.title,
                false_rollbacks=Share(summary.rollbacks, summary.runs),
                false_holds=Share(summary.runs_held_for_sample_ratio, summary.runs),
                detected=Share(bad[rule].rollbacks, bad[rule].runs),
                median_minutes=bad[rule].median_minutes,
                p90_minutes=bad[rule].p90_minutes,
                inflation=summary.inflation_median,
            )
            for rule, summary in aa.items()
            if rule in bad
        ]
    return out


def targets(
    by_family: Mapping[str, list[RuleFigures]], *, alpha: float, sample_ratio_alpha: float
) -> list[tuple[str, bool, str]]:
    """Each family's targets for the statistical policy, as (what, met, the figure)."""
    reference = next((f for f in by_family.get(REFERENCE, []) if f.rule == STATISTICAL), None)
    reference_p90 = reference.p90_minutes if reference else None
    checks = []
    for key, rules in by_family.items():
        mine = next((f for f in rules if f.rule == STATISTICAL), None)
        if mine is None:
            continue
        checks.append(
            (
                f"{key}: A/A false rollbacks ≤ {alpha:g}",
                mine.false_rollbacks.rate <= alpha,
                mine.false_rollbacks.text(),
            )
        )
        checks.append(
            (
                f"{key}: A/A runs held for a sample-ratio mismatch ≤ {sample_ratio_alpha:g}",
                mine.false_holds.rate <= sample_ratio_alpha,
                mine.false_holds.text(),
            )
        )
        checks.append(
            (
                f"{key}: 1 % → 2 % detected in ≥ {DETECTED_AT_LEAST * 100:g} %",
                mine.detected.rate >= DETECTED_AT_LEAST,
                mine.detected.text(),
            )
        )
        if reference_p90 is not None:
            bound = P90_AT_MOST * reference_p90
            ok = mine.p90_minutes is not None and mine.p90_minutes <= bound
            checks.append(
                (
                    f"{key}: p90 time to rollback ≤ {P90_AT_MOST:g} × balanced ({bound:.2f} min)",
                    ok,
                    f"{_minutes(mine.p90_minutes)} min",
                )
            )
    return checks


def text_table(chosen: Sequence[Family], by_family: Mapping[str, list[RuleFigures]]) -> str:
    lines = [
        f"{'family':<12} {'rule':<44} {'A/A false rollbacks (95 % CI)':>34} "
        f"{'A/A SRM-held runs':>30} {'1 %→2 % detected':>32} {'median':>7} {'p90':>7}"
    ]
    for family in chosen:
        for f in by_family.get(family.key, []):
            lines.append(
                f"{family.key:<12} {f.title[:44]:<44} {f.false_rollbacks.text():>34} "
                f"{f.false_holds.text():>30} {f.detected.text():>32} {_minutes(f.median_minutes):>7} "
                f"{_minutes(f.p90_minutes):>7}"
            )
    return "\n".join(lines)


def markdown_table(chosen: Sequence[Family], by_family: Mapping[str, list[RuleFigures]]) -> str:
    """The table docs/statistics.md shows: one row per family and rule. "inflation used": the median
    over A/A runs of the inflation the last look used, errorRatio guardrail / sample-ratio check."""
    lines = [
        "| traffic | rule | A/A false rollbacks (95 % CI) | A/A runs held for SRM | 1 % → 2 % detected "
        "| median | p90 | inflation used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family in chosen:
        for i, f in enumerate(by_family.get(family.key, [])):
            name = family.title if i == 0 else ""
            rule = f"**{f.title}**" if f.rule == STATISTICAL else f.title
            lines.append(
                f"| {name} | {rule} | {f.false_rollbacks.text()} | {f.false_holds.text()} | "
                f"{f.detected.text()} | {_minutes(f.median_minutes)} | {_minutes(f.p90_minutes)} | "
                f"{f.inflation_text()} |"
            )
    return "\n".join(lines)
