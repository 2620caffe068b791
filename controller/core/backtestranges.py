"""Readings from range answers, for ``flagroll backtest``: what an instant query at one evaluation time
would have given, from a query's answers over the whole window. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from controller.core.alerts import series_name
from controller.core.queries import PlannedQuery, QueryKey, Reading, Split


def to_ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a range answer: its labels and its points (milliseconds since the epoch → value)."""

    labels: Mapping[str, str]
    points: Mapping[int, float]


@dataclass(frozen=True, slots=True)
class Failure:
    """A chunk of the window whose answer could not be used: every time in it reads as an error."""

    start_ms: int
    end_ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class RangeAnswer:
    """One query's answers over the window, gathered from its chunks."""

    series: tuple[Series, ...] = ()
    failures: tuple[Failure, ...] = ()

    @property
    def points(self) -> int:
        return sum(len(s.points) for s in self.series)


def judge_value(value: float) -> Reading:
    """A number as the controller judges it: NaN and ±Inf are no data, never a value."""
    if math.isnan(value):
        return Reading.no_data("NaN (e.g. 0/0: nothing in the window)")
    if math.isinf(value):
        return Reading.no_data(f"{'+' if value > 0 else '-'}Inf (division by zero?)")
    return Reading.of(value)


def reading_at(answer: RangeAnswer, at_ms: int, split: Split | None = None) -> Reading:
    """The reading an instant query at ``at_ms`` would have given (for a template, this arm's series)."""
    for failure in answer.failures:
        if failure.start_ms <= at_ms <= failure.end_ms:
            return Reading.error(failure.detail)
    candidates = answer.series
    if split is not None:
        candidates = tuple(
            s
            for s in candidates
            if s.labels.get(split.flag_label) == split.flag
            and s.labels.get(split.variant_label) == split.variant
        )
    present = [s for s in candidates if at_ms in s.points]
    if not present:
        where = f" {split.selector()} of template {split.template!r}" if split is not None else ""
        return Reading.no_data(f"no series{where} has a point at this time")
    if len(present) > 1:
        labels = ", ".join(
            "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}" for s in present[:5]
        )
        return Reading.error(
            f"{len(present)} series where one is expected: {labels}; aggregate them (sum, max…)"
        )
    return judge_value(present[0].points[at_ms])


def listing_at(answer: RangeAnswer, at_ms: int) -> Reading:
    """A listing's reading at ``at_ms`` (the alerts firing then): the series with a point at it."""
    for failure in answer.failures:
        if failure.start_ms <= at_ms <= failure.end_ms:
            return Reading.error(failure.detail)
    return Reading.listed(sorted(series_name(s.labels) for s in answer.series if at_ms in s.points))


def readings_at(
    queries: Sequence[PlannedQuery], answers: Mapping[str, RangeAnswer], at_ms: int
) -> dict[QueryKey, Reading]:
    """Every planned query's reading at one evaluation time."""
    readings: dict[QueryKey, Reading] = {}
    for q in queries:
        answer = answers.get(q.promql)
        if q.split is not None and not q.promql:
            readings[q.key] = Reading.error(f"template {q.split.template!r} is not defined")
        elif answer is None:
            readings[q.key] = Reading.error(
                "the query is empty" if not q.promql else "the query was not fetched"
            )
        elif q.listing:
            readings[q.key] = listing_at(answer, at_ms)
        else:
            readings[q.key] = reading_at(answer, at_ms, q.split)
    return readings
