"""The variance inflation a statistical check uses: the dispersion measured from the per-interval
sums Prometheus returned (:mod:`controller.core.dispersion`), with ``statistics.varianceInflation``
as its floor.

What the readings can say, and what each means for the check:

- **measured**: enough bins with requests; the check uses ``max(floor, upper bound of φ)``;
- **too few intervals yet** (an arm has bad and good requests, but fewer than
  :data:`~controller.core.dispersion.MIN_DEGREES_OF_FREEDOM` degrees of freedom from the bins with
  requests, as in the first interval or two of a rollout): the evidence is not enough yet, as with
  ``minSamples``: the check is ``no_data`` (:attr:`Measured.shortfall`) rather than judged at a
  floor that real clustering may far exceed. Only while the window is young (fewer than
  :data:`SETTLING_BINS` bins): a window that long with so few bins with requests is traffic too
  sparse to measure (a nightly batch, one bin a day), not a rollout starting, and waiting would
  leave a real regression unjudged for as long as the traffic stays sparse; the floor is used
  and the record says why;
- **not measured**: the dispersion query failed, returned nothing, or no arm has both bad and good
  requests (nothing to measure, e.g. no error at all): the floor is used and the record says why. A
  missing reading never weakens a check below the policy's own value, and it is not an ``error``
  of the check: the counts it judges are there, only the refinement is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from controller.core import dispersion as dsp
from controller.core.checkrecord import DispersionEvidence, fmt
from controller.core.queries import BIN_PARTS, Arm, Part, QueryKey, ReadingKind, Source, bin_seconds, shown
from controller.core.readings import PolicyReadings

# A window of this many bins or more is no rollout's start: too few bins with requests in it is
# sparse traffic, judged at the floor, not waited for. Continuous traffic gives the estimate its
# degrees of freedom in two or three bins; the rest is slack for a series that appears late, a scrape
# interval longer than the bin, and the subquery's alignment.
SETTLING_BINS = 10

METHOD = (
    f"Pearson dispersion of per-interval counts; the inflation used is its "
    f"{round(100 * (1 - dsp.CONFIDENCE_LOWER_TAIL))} % upper confidence bound, at least the floor"
)


@dataclass(frozen=True, slots=True)
class Measured:
    inflation: float  # what the check uses
    evidence: DispersionEvidence
    shortfall: str | None = None  # set: too few intervals yet, the check is no_data


def _arm_sums(evidence: PolicyReadings, source: Source, name: str, arm: Arm) -> dsp.BinSums | str:
    """One arm's sums over the bins, or why there are none. A successful answer without the bad
    requests' sums (no bad request in any bin: PromQL's sum of nothing is nothing) has zero."""
    readings = {part: evidence.reading(QueryKey(source, name, arm, part)) for part in BIN_PARTS}
    for part, reading in readings.items():
        if reading.kind is ReadingKind.ERROR:
            return f"{arm.value} {part.value}: {reading.detail}"
    bins, total = readings[Part.BINS].value, readings[Part.BIN_TOTAL].value
    if bins is None or total is None:
        return ""  # no bin with a request: nothing of this arm to measure
    events = readings[Part.BIN_EVENTS].value or 0.0
    squares = readings[Part.BIN_SQUARES].value or 0.0
    values = (bins, events, total, squares)
    if any(math.isnan(v) or math.isinf(v) or v < 0 for v in values):
        return f"{arm.value}: sums over the bins are not finite counts ≥ 0: {values}"
    return dsp.BinSums(bins, events, total, squares)


def measure(
    evidence: PolicyReadings,
    source: Source,
    name: str,
    window_seconds: int,
    *,
    sample_ratio: bool = False,
) -> Measured:
    """The inflation for one guardrail's comparison (both arms), or for the sample-ratio check
    (``sample_ratio``: the treatment's exposures among both arms', in one set of sums)."""
    stats = evidence.policy.statistics
    floor = stats.variance_inflation
    sides = (Arm.TREATMENT,) if sample_ratio else (Arm.TREATMENT, Arm.CONTROL)
    seconds = bin_seconds(evidence.policy.spec.interval_seconds, window_seconds)
    query = shown(evidence.query(QueryKey(source, name, Arm.TREATMENT, Part.BINS)))

    def record(result: dsp.Dispersion | None, note: str) -> DispersionEvidence:
        measured = result is not None and result.measured
        return DispersionEvidence(
            method=METHOD,
            used=result.used if result is not None else floor,
            floor=floor,
            estimate=result.estimate if measured and result else None,
            upper_bound=result.adjusted if measured and result else None,
            degrees_of_freedom=result.degrees_of_freedom if result is not None else None,
            bin_seconds=seconds,
            note=note,
            query=query,
        )

    found = [_arm_sums(evidence, source, name, arm) for arm in sides]
    problems = [f for f in found if isinstance(f, str) and f]
    sums = [f for f in found if isinstance(f, dsp.BinSums)]
    if problems or not sums:
        note = "not measured: " + ("; ".join(problems) or "no interval with requests in the answer")
        return Measured(floor, record(None, note))
    try:
        result = (
            dsp.sample_ratio_dispersion(sums[0], floor=floor)
            if sample_ratio
            else dsp.dispersion(sums, floor=floor)
        )
    except ValueError as exc:
        return Measured(floor, record(None, f"not measured: {exc}"))
    if result.measured:
        return Measured(result.used, record(result, ""))
    if not any(0 < s.events < s.total for s in sums):
        note = "not measured: no arm has both bad and good requests to measure it by"
        return Measured(floor, record(result, note))
    if window_seconds >= SETTLING_BINS * seconds:
        note = (
            f"not measured: too few intervals with requests ({fmt(result.degrees_of_freedom)} degrees "
            f"of freedom, {dsp.MIN_DEGREES_OF_FREEDOM} needed) in {SETTLING_BINS} or more bins of "
            f"{seconds}s: the traffic is too sparse to measure its dispersion"
        )
        return Measured(floor, record(result, note))
    note = (
        f"needs {dsp.MIN_DEGREES_OF_FREEDOM} degrees of freedom (intervals with requests, less one "
        f"per arm) to measure the dispersion, has {fmt(result.degrees_of_freedom)} (bins of {seconds}s)"
    )
    return Measured(floor, record(result, note), shortfall=note)


def for_record(evidence: DispersionEvidence, *, passed: bool) -> DispersionEvidence:
    """The evidence as a check's record keeps it: the long query of the sums (eight subqueries) only
    where someone will look for it, for a check that did not pass or a measurement that failed;
    written with every passing check of every cycle it would multiply the decision log's size."""
    return evidence if not passed or evidence.note else replace(evidence, query="")
