"""The statistical checks: errorRatio and latency guardrails compared with the control arm by an
anytime-valid confidence sequence (:mod:`controller.core.sequential`), and the sample-ratio check of the
exposure split against the designed 1:1 (:mod:`controller.core.srm`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from controller.core import sequential, srm
from controller.core.checkrecord import (
    SEVERITY,
    ArmCount,
    ArmEvidence,
    Check,
    SampleRatioEvidence,
    SequentialEvidence,
    fmt,
)
from controller.core.durations import format_duration
from controller.core.measured import Measured, for_record, measure
from controller.core.policy import Guardrail, Policy
from controller.core.queries import (
    SAMPLE_RATIO,
    Arm,
    Part,
    PlannedQuery,
    QueryKey,
    Reading,
    ReadingKind,
    Source,
    shown,
)
from controller.core.readings import PolicyReadings, Readings, local_key
from controller.core.state import Outcome


def sample_ratio_check(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> Check | None:
    """The exposure split against the designed 1:1, when ``statistics.exposure`` is set."""
    stats = policy.statistics
    if stats.exposure is None or not policy.spec.control:
        return None
    evidence = PolicyReadings(policy, queries, readings)
    t_key = QueryKey(Source.EXPOSURE, SAMPLE_RATIO, Arm.TREATMENT)
    c_key = QueryKey(Source.EXPOSURE, SAMPLE_RATIO, Arm.CONTROL)
    base = Check(
        name=SAMPLE_RATIO,
        kind=Source.EXPOSURE,
        rule="sampleRatio",
        limit=stats.sample_ratio_alpha,
        arm=Arm.TREATMENT,
        query=evidence.query(t_key),
        value=None,
        bound=0.5,
        samples=None,
        verdict=Outcome.NO_DATA,
        detail="",
        control=ArmEvidence(evidence.query(c_key), None, None),
    )
    window = _window(queries, t_key)
    treatment, t_problem = _count(evidence.reading(t_key), Arm.TREATMENT, "exposures")
    control, c_problem = _count(evidence.reading(c_key), Arm.CONTROL, "exposures")
    problems = [p for p in (t_problem, c_problem) if p is not None]
    if window is None:  # asked only to learn whether Prometheus answers
        errors = [p for p in problems if p[0] is Outcome.ERROR]
        verdict, detail = _worst_problem(errors or [(Outcome.NO_DATA, "nobody is exposed yet")])
        return replace(base, verdict=verdict, detail=detail)
    if problems or treatment is None or control is None:
        verdict, detail = _worst_problem(problems)
        return replace(base, samples=treatment, verdict=verdict, detail=detail)
    measured = measure(evidence, Source.EXPOSURE, SAMPLE_RATIO, window, sample_ratio=True)
    if measured.shortfall is not None:
        return replace(
            base, samples=treatment, verdict=Outcome.NO_DATA, detail=measured.shortfall, settling=True
        )
    try:
        result = srm.check(
            treatment, control, alpha=stats.sample_ratio_alpha, variance_inflation=measured.inflation
        )
    except ValueError as refused:  # the pure function refuses what is not a count: never a pass
        return replace(base, samples=treatment, verdict=Outcome.ERROR, detail=f"not judged: {refused}")
    ratio = SampleRatioEvidence(
        method=srm.METHOD,
        window_seconds=window,
        treatment=treatment,
        control=control,
        share=result.share,
        designed_share=result.designed_share,
        log_bayes_factor=result.log_bayes_factor,
        threshold=result.threshold,
        alpha=result.alpha,
        mismatch=result.mismatch,
        variance_inflation=measured.inflation,
        dispersion=for_record(measured.evidence, passed=not result.mismatch),
    )
    detail = ""
    verdict = Outcome.PASS
    if result.mismatch:
        verdict = Outcome.ERROR
        detail = (
            "sample ratio mismatch: the arms' exposures depart from the designed 1:1 split beyond "
            "chance, so assignment or metric collection is broken and no comparison with control "
            "can be trusted"
        )
    return replace(
        base,
        value=result.share,
        samples=treatment,
        verdict=verdict,
        detail=detail,
        control=ArmEvidence(base.control.query if base.control else "", 1 - result.share, control),
        sample_ratio=ratio,
    )


def sequential_checks(
    policy: Policy, queries: Sequence[PlannedQuery], readings: Readings, guardrail: Guardrail
) -> list[Check]:
    """One check per rule of an errorRatio or latency guardrail, judged with a confidence sequence."""
    evidence = PolicyReadings(policy, queries, readings)
    bad_part = Part.EVENTS if guardrail.error_ratio is not None else Part.FAST

    def key(arm: Arm, part: Part) -> QueryKey:
        return QueryKey(Source.GUARDRAIL, guardrail.name, arm, part)

    minimum = guardrail.min_samples
    if minimum is None:
        minimum = policy.spec.traffic.min_samples if policy.spec.traffic is not None else 0
    window = _window(queries, key(Arm.TREATMENT, Part.TOTAL))
    counts: dict[Arm, ArmCount] = {}
    problems: list[tuple[Outcome, str]] = []
    for arm in (Arm.TREATMENT, Arm.CONTROL):
        if window is None:  # asked only to learn whether Prometheus answers
            problems.extend(
                _count(evidence.reading(key(arm, part)), arm, part.value)[1] or (Outcome.NO_DATA, "")
                for part in (bad_part, Part.TOTAL)
            )
            problems = [p for p in problems if p[0] is Outcome.ERROR]
            continue
        bad_reading = evidence.reading(key(arm, bad_part))
        bad, bad_problem = _count(bad_reading, arm, "errors" if bad_part is Part.EVENTS else "fast requests")
        total, total_problem = _count(evidence.reading(key(arm, Part.TOTAL)), arm, "requests")
        if (
            bad_part is Part.FAST
            and bad_reading.kind is ReadingKind.NO_DATA
            and total is not None
            and total > 0
        ):
            # Requests were counted, yet no series has the bucket: the bound is not a bucket edge.
            bad_problem = _not_a_bucket_edge(guardrail, arm)
        if bad_problem is None and total_problem is None and bad is not None and total is not None:
            events = max(total - bad, 0.0) if bad_part is Part.FAST else min(bad, total)
            counts[arm] = ArmCount(
                events,
                total,
                shown(evidence.query(key(arm, bad_part))),
                shown(evidence.query(key(arm, Part.TOTAL))),
            )
            if total < max(minimum, 1):
                problems.append(
                    (
                        Outcome.NO_DATA,
                        f"{arm.value} has {fmt(round(total, 1))} of {max(minimum, 1)} samples "
                        f"({fmt(round(max(minimum, 1) - total, 1))} missing)",
                    )
                )
        else:
            problems.extend(p for p in (bad_problem, total_problem) if p is not None)
    if window is None and not problems:
        problems.append((Outcome.NO_DATA, "nobody is exposed yet"))
    measured = None
    if window is not None and not problems:
        measured = measure(evidence, Source.GUARDRAIL, guardrail.name, window)
        if measured.shortfall is not None:
            problems.append((Outcome.NO_DATA, measured.shortfall))
    checks = []
    for rule, limit in guardrail.rules():
        checks.append(_sequential_check(policy, guardrail, rule, limit, window, counts, problems, measured))
    if measured is not None and measured.shortfall is not None:
        return [replace(c, settling=True) for c in checks]
    return checks


def _not_a_bucket_edge(guardrail: Guardrail, arm: Arm) -> tuple[Outcome, str]:
    bound = guardrail.latency.slower_than_seconds if guardrail.latency else math.nan
    return (
        Outcome.ERROR,
        f"{arm.value}: requests were counted but no series has the bucket le={bound:g}: slowerThan "
        f"{format_duration(bound)} is not one of the histogram's bucket edges; use an edge the "
        "service exports",
    )


def _sequential_check(
    policy: Policy,
    guardrail: Guardrail,
    rule: str,
    limit: float,
    window: int | None,
    counts: Mapping[Arm, ArmCount],
    problems: Sequence[tuple[Outcome, str]],
    measured: Measured | None,
) -> Check:
    treatment, control = counts.get(Arm.TREATMENT), counts.get(Arm.CONTROL)
    check = Check(
        name=guardrail.name,
        kind=Source.GUARDRAIL,
        rule=rule,
        limit=limit,
        arm=Arm.TREATMENT,
        query=treatment.events_query if treatment else "",
        value=treatment.events / treatment.samples if treatment and treatment.samples > 0 else None,
        bound=None,
        samples=treatment.samples if treatment else None,
        verdict=Outcome.NO_DATA,
        metric=guardrail.kind,
        control=ArmEvidence(
            control.events_query if control else "",
            control.events / control.samples if control and control.samples > 0 else None,
            control.samples if control else None,
        ),
    )
    if problems or treatment is None or control is None or window is None or measured is None:
        verdict, detail = _worst_problem(problems or [(Outcome.NO_DATA, "no counts")])
        return replace(check, verdict=verdict, detail=detail)
    stats = policy.statistics
    try:
        result = sequential.compare(
            sequential.ArmCounts(treatment.events, treatment.samples),
            sequential.ArmCounts(control.events, control.samples),
            rule=rule,
            limit=limit,
            alpha=policy.comparison_alpha(guardrail),
            expected_samples=stats.expected_samples,
            variance_inflation=measured.inflation,
        )
    except ValueError as refused:  # the pure function refuses what is not a count: never a pass
        return replace(check, verdict=Outcome.ERROR, detail=f"not judged: {refused}")
    evidence = SequentialEvidence(
        method=sequential.METHOD,
        metric=guardrail.kind,
        window_seconds=window,
        treatment=treatment,
        control=control,
        difference=result.treatment_share - result.control_share,
        tolerated=result.tolerated,
        excess=result.excess,
        excess_lower=result.excess_lower,
        log_likelihood_ratio=result.log_likelihood_ratio,
        threshold=result.threshold,
        alpha=result.alpha,
        alpha_total=stats.alpha,
        comparisons=policy.comparisons,
        variance_inflation=measured.inflation,
        expected_samples=stats.expected_samples,
        slower_than_seconds=guardrail.latency.slower_than_seconds if guardrail.latency else None,
        dispersion=for_record(measured.evidence, passed=not result.fails),
    )
    return replace(
        check,
        value=result.treatment_share,
        bound=result.tolerated,
        verdict=Outcome.FAIL if result.fails else Outcome.PASS,
        control=ArmEvidence(control.events_query, result.control_share, control.samples),
        sequential=evidence,
    )


def _window(queries: Sequence[PlannedQuery], key: QueryKey) -> int | None:
    return next((q.window_seconds for q in queries if local_key(q.key) == local_key(key)), None)


def _count(reading: Reading, arm: Arm, what: str) -> tuple[float | None, tuple[Outcome, str] | None]:
    """A count from a reading, or why there is none."""
    if reading.kind is ReadingKind.ERROR:
        return None, (Outcome.ERROR, f"{arm.value} {what}: {reading.detail}")
    if reading.kind is ReadingKind.NO_DATA or reading.value is None:
        return None, (Outcome.NO_DATA, f"{arm.value} {what}: {reading.detail or 'no data'}")
    if not math.isfinite(reading.value):  # a count of nothing: neither a pass nor no data
        return None, (Outcome.ERROR, f"{arm.value} {what}: not a finite count ({reading.value})")
    return max(reading.value, 0.0), None


def _worst_problem(problems: Sequence[tuple[Outcome, str]]) -> tuple[Outcome, str]:
    outcome = max((o for o, _ in problems), key=SEVERITY.__getitem__)
    return outcome, "; ".join(d for o, d in problems if o is outcome)
