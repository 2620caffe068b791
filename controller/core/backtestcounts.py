"""Statistical guardrails in a backtest: counts since exposure began, from each interval's growth. Pure.

The controller asks an errorRatio or latency guardrail (and the sample-ratio check) for counts
``sum(increase(selector[Ws]))`` with ``W`` the time since exposure began, and for sums over the
bins of that window (the dispersion, :func:`~controller.core.queries.dispersion_query`): their text
changes at every evaluation, so a range query cannot answer them. The backtest asks instead, once
for the window, each counter's growth over the interval ending at each evaluation time,
``sum(clamp_min(selector - selector offset <interval>, 0))`` (:func:`interval_query`), and adds up
these per-interval counts over whatever window an evaluation needs, with prefix sums: a reading
costs the same at the first evaluation and the twenty-thousandth.

What differs from the controller's own queries, and why it does not matter for a replay:

- the counts are exact differences of the counter at the window's edges, where ``increase()``
  extrapolates to the window's edges (a share of one scrape interval more or less);
- the dispersion's bins are the evaluation intervals (grouped as the controller widens them for a
  long window, ending at the evaluation time rather than at a multiple of the bin since the epoch);
  a group is a whole number of intervals, the fewest at least as wide as the controller's bin (less
  its rounding up to a whole second), so up to twice as wide.

A chunk Prometheus refused makes every count whose window reaches into it an ``error``; a window in
which the counter has no point at all is ``no_data``, as an empty answer would be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from controller.core.backtestranges import RangeAnswer, reading_at
from controller.core.policy import Guardrail, Policy
from controller.core.queries import (
    BIN_PARTS,
    SAMPLE_RATIO,
    Arm,
    Part,
    PlannedQuery,
    QueryKey,
    Reading,
    ReadingKind,
    Source,
    arms,
    bin_seconds,
    le_matcher,
    render,
    with_suffix,
)

# Which count of a check one interval query gives: (source, check name, arm, part).
CountKey = tuple[Source, str, Arm, Part]
COUNT_PARTS = (Part.EVENTS, Part.FAST, Part.TOTAL)


def interval_query(selector: str, step_ms: int) -> str:
    """A counter's growth over the interval ending at each evaluation time, summed over its series;
    a reset makes one interval's difference negative, which counts as 0."""
    return f"sum(clamp_min({selector} - {selector} offset {step_ms}ms, 0))"


def counted_key(key: QueryKey) -> bool:
    """Whether a planned query is a count since exposure began (or a sum over its bins)."""
    return key.part is not Part.WHOLE or key.source is Source.EXPOSURE


def _guardrail_selectors(guardrail: Guardrail, flag: str, arm: Arm) -> dict[Part, str]:
    if guardrail.error_ratio is not None:
        return {
            Part.EVENTS: render(guardrail.error_ratio.errors, flag=flag, arm=arm),
            Part.TOTAL: render(guardrail.error_ratio.requests, flag=flag, arm=arm),
        }
    if guardrail.latency is not None:
        histogram = render(guardrail.latency.histogram, flag=flag, arm=arm)
        return {
            Part.FAST: with_suffix(histogram, "_bucket", le_matcher(guardrail.latency.slower_than_seconds)),
            Part.TOTAL: with_suffix(histogram, "_count"),
        }
    return {}


def count_queries(policy: Policy, step_ms: int) -> dict[CountKey, str]:
    """Every per-interval count query the policy's statistical checks need, by what it counts."""
    spec = policy.spec
    queries: dict[CountKey, str] = {}
    for guardrail in spec.guardrails:
        if not guardrail.sequential:
            continue
        for arm in arms(spec.control):
            for part, selector in _guardrail_selectors(guardrail, policy.flag_key, arm).items():
                queries[(Source.GUARDRAIL, guardrail.name, arm, part)] = interval_query(selector, step_ms)
    exposure = spec.statistics.exposure if spec.statistics is not None else None
    if exposure is not None and spec.control:
        for arm in arms(spec.control):
            selector = render(exposure, flag=policy.flag_key, arm=arm)
            queries[(Source.EXPOSURE, SAMPLE_RATIO, arm, Part.WHOLE)] = interval_query(selector, step_ms)
    return queries


@dataclass(frozen=True, slots=True)
class Column:
    """One count query's per-interval values at every evaluation time, with prefix sums."""

    cumulative: tuple[float, ...]  # Σ values[0..i]; a missing point counts 0
    present: tuple[int, ...]  # points up to i
    errors: tuple[int, ...]  # failed evaluation times up to i
    values: tuple[float, ...]
    has: tuple[bool, ...]
    details: Mapping[int, str]  # index → why it failed

    @staticmethod
    def of(answer: RangeAnswer | None, times_ms: Sequence[int]) -> Column:
        readings = [
            reading_at(answer, at) if answer is not None else Reading.error("the query was not fetched")
            for at in times_ms
        ]
        values = tuple(
            r.value if r.kind is ReadingKind.VALUE and r.value is not None else 0.0 for r in readings
        )
        has = tuple(r.kind is ReadingKind.VALUE for r in readings)
        failed = [r.kind is ReadingKind.ERROR for r in readings]
        details = {i: r.detail for i, r in enumerate(readings) if r.kind is ReadingKind.ERROR}
        return Column(
            tuple(accumulate(values)),
            tuple(accumulate(int(h) for h in has)),
            tuple(accumulate(int(f) for f in failed)),
            values,
            has,
            details,
        )

    def span(self, prefix: Sequence[float] | Sequence[int], lo: int, hi: int) -> float:
        """Σ over indices lo..hi of what ``prefix`` accumulates."""
        return prefix[hi] - (prefix[lo - 1] if lo > 0 else 0)

    def error_in(self, lo: int, hi: int) -> str | None:
        if self.span(self.errors, lo, hi) == 0:
            return None
        return next(self.details[i] for i in range(lo, hi + 1) if i in self.details)


@dataclass(frozen=True, slots=True)
class BinPair:
    """One arm's bad and total requests per interval, for the dispersion's sums over the bins."""

    bad: tuple[float, ...]
    total: tuple[float, ...]
    kept_data: tuple[bool, ...]  # a bin's total has a point
    sources: tuple[Column, ...]  # whose failures make the sums an error
    by_width: dict[int, tuple[tuple[float, ...], ...]] = field(default_factory=dict)

    def strided(self, k: int) -> tuple[tuple[float, ...], ...]:
        """Prefix sums with stride ``k`` of each group's four terms (kept bins, Σx, Σn, Σx²/n), the
        group at index j being the ``k`` intervals ending there."""
        if k not in self.by_width:
            bad = list(accumulate(self.bad))
            total = list(accumulate(self.total))
            seen = list(accumulate(int(h) for h in self.kept_data))
            prefixes: list[list[float]] = [[], [], [], []]
            for j in range(len(self.bad)):
                x = bad[j] - (bad[j - k] if j >= k else 0.0)
                n = total[j] - (total[j - k] if j >= k else 0.0)
                kept = n > 0 and seen[j] - (seen[j - k] if j >= k else 0) > 0
                terms = (1.0, x, n, x * x / n) if kept else (0.0, 0.0, 0.0, 0.0)
                for prefix, term in zip(prefixes, terms, strict=True):
                    prefix.append(term + (prefix[j - k] if j >= k else 0.0))
            self.by_width[k] = tuple(tuple(p) for p in prefixes)
        return self.by_width[k]


def _bin_pair(source: Source, name: str, arm: Arm, columns: Mapping[CountKey, Column]) -> BinPair | None:
    if source is Source.EXPOSURE:
        treatment = columns.get((source, name, Arm.TREATMENT, Part.WHOLE))
        control = columns.get((source, name, Arm.CONTROL, Part.WHOLE))
        if treatment is None or control is None:
            return None
        total = tuple(t + c for t, c in zip(treatment.values, control.values, strict=True))
        kept = tuple(a and b for a, b in zip(treatment.has, control.has, strict=True))
        return BinPair(treatment.values, total, kept, (treatment, control))
    all_ = columns.get((source, name, arm, Part.TOTAL))
    if all_ is None:
        return None
    events = columns.get((source, name, arm, Part.EVENTS))
    if events is not None:
        return BinPair(events.values, all_.values, all_.has, (events, all_))
    fast = columns.get((source, name, arm, Part.FAST))
    if fast is None:
        return None
    slow = tuple(max(n - f, 0.0) for n, f in zip(all_.values, fast.values, strict=True))
    return BinPair(slow, all_.values, all_.has, (fast, all_))


class Counts:
    """The statistical checks' readings at any evaluation time over any window, from the per-interval
    count queries' answers (:func:`count_queries`)."""

    def __init__(
        self,
        policy: Policy,
        times_ms: Sequence[int],
        step_ms: int,
        answers: Mapping[str, RangeAnswer],
    ) -> None:
        self.interval_seconds = policy.spec.interval_seconds
        self.step_ms = step_ms
        self.columns = {
            key: Column.of(answers.get(promql), times_ms)
            for key, promql in count_queries(policy, step_ms).items()
        }
        self.pairs: dict[tuple[Source, str, Arm], BinPair | None] = {}
        self.memo: dict[tuple[tuple[Source, str, Arm], int, int | None], Reading | list[float]] = {}

    def _intervals(self, window_seconds: int | None) -> int:
        """How many intervals ending at an evaluation time a window covers (one for no window)."""
        if not window_seconds:
            return 1
        return max(1, math.ceil(window_seconds * 1000 / self.step_ms))

    def _bin_intervals(self, window_seconds: int | None) -> int:
        """How many intervals a bin groups: the fewest as wide as the controller's bin, less the
        rounding of that bin up to a whole second (a 90.5 s interval's bins are 91 s: one interval)."""
        width_ms = bin_seconds(self.interval_seconds, window_seconds or 0) * 1000
        return max(1, math.ceil((width_ms - 999) / self.step_ms))

    def readings(self, queries: Sequence[PlannedQuery], index: int) -> dict[QueryKey, Reading]:
        """The readings of the planned statistical queries (:func:`counted_key`) at evaluation ``index``."""
        found: dict[QueryKey, Reading] = {}
        for q in queries:
            if not counted_key(q.key):
                continue
            if q.key.part in BIN_PARTS:
                found[q.key] = self._bin_sum(q, index)
            else:
                found[q.key] = self._count(q, index)
        return found

    def _count(self, q: PlannedQuery, index: int) -> Reading:
        column = self.columns.get((q.key.source, q.key.name, q.key.arm, q.key.part))
        if column is None:
            return Reading.error("the query was not fetched")
        lo = max(0, index - self._intervals(q.window_seconds) + 1)
        failed = column.error_in(lo, index)
        if failed is not None:
            return Reading.error(failed)
        if column.span(column.present, lo, index) == 0:
            return Reading.no_data("no series has a point in the window")
        return Reading.of(column.span(column.cumulative, lo, index))

    def _bin_sum(self, q: PlannedQuery, index: int) -> Reading:
        """One of the four sums over the bins; the four are computed together and kept for the
        evaluation (the report's checks and the decision's ask the same ones)."""
        where = (q.key.source, q.key.name, q.key.arm)
        memo_key = (where, index, q.window_seconds)
        if memo_key not in self.memo:
            if self.memo and next(iter(self.memo))[1] != index:
                self.memo.clear()
            self.memo[memo_key] = self._bin_sums(where, index, q.window_seconds)
        found = self.memo[memo_key]
        return found if isinstance(found, Reading) else Reading.of(found[BIN_PARTS.index(q.key.part)])

    def _bin_sums(
        self, where: tuple[Source, str, Arm], index: int, window_seconds: int | None
    ) -> Reading | list[float]:
        if where not in self.pairs:
            self.pairs[where] = _bin_pair(*where, self.columns)
        pair = self.pairs[where]
        if pair is None:
            return Reading.error("the query was not fetched")
        intervals = self._intervals(window_seconds)
        k = self._bin_intervals(window_seconds)
        groups = math.ceil(intervals / k)
        first = index - groups * k  # the bins may reach up to k - 1 intervals before the window
        for column in pair.sources:
            failed = column.error_in(max(0, first + 1), index)
            if failed is not None:
                return Reading.error(failed)
        prefixes = pair.strided(k)
        sums = [p[index] - (p[first] if first >= 0 else 0.0) for p in prefixes]
        if sums[0] == 0:
            return Reading.no_data("no interval of the window has requests")
        return sums
