"""Judge readings against a policy's bounds: one :class:`Check` per rule, each with its evidence.

A check is ``error`` when a query it needs failed, ``no_data`` when a value is missing or an arm has
fewer samples than ``traffic.minSamples``, and otherwise ``pass`` or ``fail`` by its bound. Absolute
bounds (``max``, ``min``) judge the treatment arm; relative ones compare it with the control arm.
errorRatio and latency guardrails and the sample-ratio check are judged in
:mod:`controller.core.statchecks`; the :class:`Check` record and its description are in
:mod:`controller.core.checkrecord`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from controller.core.alerts import alert_checks
from controller.core.checkrecord import SEVERITY, SYMBOL, ArmEvidence, Check, fmt
from controller.core.policy import Bounds, Policy
from controller.core.queries import (
    Arm,
    PlannedQuery,
    QueryKey,
    Reading,
    ReadingKind,
    Source,
    arms,
    expectation_source,
)
from controller.core.readings import PolicyReadings, Readings
from controller.core.statchecks import sample_ratio_check, sequential_checks
from controller.core.state import Outcome


def guardrail_checks(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> list[Check]:
    """A cycle's guardrail checks for one policy: traffic, the sample ratio, then every guardrail's
    rules (a shadow guardrail's marked); on a sample-ratio mismatch, comparisons with control are
    not judged. Then one check per alert of ``spec.alerts`` (:mod:`controller.core.alerts`)."""
    checks = traffic_checks(policy, queries, readings)
    ratio = sample_ratio_check(policy, queries, readings)
    if ratio is not None:
        checks.append(ratio)
    for guardrail in policy.spec.guardrails:
        if guardrail.sequential:
            judged = sequential_checks(policy, queries, readings, guardrail)
        else:
            judged = bound_checks(
                policy,
                queries,
                readings,
                source=Source.GUARDRAIL,
                name=guardrail.name,
                bounds=guardrail,
                reading_key=QueryKey(Source.GUARDRAIL, guardrail.name, Arm.TREATMENT),
            )
        if guardrail.dry_run:
            judged = [replace(c, shadow=True) for c in judged]
        checks.extend(judged)
    if ratio is not None and ratio.sample_ratio is not None and ratio.sample_ratio.mismatch:
        checks = [_distrusted(c) for c in checks]
    checks.extend(alert_checks(policy, queries, readings))
    return checks


def traffic_checks(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> list[Check]:
    """One ``minSamples`` check per arm, so a record shows how much evidence there was."""
    if policy.spec.traffic is None:
        return []
    evidence = PolicyReadings(policy, queries, readings)
    checks = []
    for arm in arms(policy.spec.control):
        key = QueryKey(Source.TRAFFIC, "traffic", arm)
        reading = evidence.reading(key)
        shortfall = evidence.shortfall(arm)
        verdict, detail = shortfall if shortfall is not None else (Outcome.PASS, "")
        checks.append(
            Check(
                name="traffic",
                kind=Source.TRAFFIC,
                rule="minSamples",
                limit=evidence.min_samples,
                arm=arm,
                query=evidence.query(key),
                value=reading.value,
                bound=evidence.min_samples,
                samples=reading.value,
                verdict=verdict,
                detail=detail,
            )
        )
    return checks


def bound_checks(
    policy: Policy,
    queries: Sequence[PlannedQuery],
    readings: Readings,
    *,
    source: Source,
    name: str,
    bounds: Bounds,
    reading_key: QueryKey,
) -> list[Check]:
    """Judge every rule in ``bounds`` on the readings stored under ``reading_key`` (its arm ignored)."""
    evidence = PolicyReadings(policy, queries, readings)
    t_key = QueryKey(reading_key.source, reading_key.name, Arm.TREATMENT)
    c_key = QueryKey(reading_key.source, reading_key.name, Arm.CONTROL)
    treatment = evidence.reading(t_key)
    checks = []
    for rule, limit in bounds.rules():
        relative = rule not in {"max", "min"}
        control_reading = evidence.reading(c_key) if policy.spec.control else None
        control = None
        if control_reading is not None:
            control = ArmEvidence(
                evidence.query(c_key), control_reading.value, evidence.sample_count(Arm.CONTROL)
            )
        verdict, detail, bound = _judge(
            rule,
            limit,
            relative,
            treatment,
            control_reading,
            evidence,
        )
        checks.append(
            Check(
                name=name,
                kind=source,
                rule=rule,
                limit=limit,
                arm=Arm.TREATMENT,
                query=evidence.query(t_key),
                value=treatment.value,
                bound=bound,
                samples=evidence.sample_count(Arm.TREATMENT),
                verdict=verdict,
                detail=detail,
                control=control,
            )
        )
    return checks


def _judge(
    rule: str,
    limit: float,
    relative: bool,
    treatment: Reading,
    control: Reading | None,
    evidence: PolicyReadings,
) -> tuple[Outcome, str, float | None]:
    involved: list[tuple[Arm, Reading]] = [(Arm.TREATMENT, treatment)]
    if relative:
        if control is None:  # validation forbids this; judge it as missing evidence all the same
            return Outcome.ERROR, "relative bound without a control arm", None
        involved.append((Arm.CONTROL, control))
    bound: float | None = limit
    if relative:
        bound = None if control is None or control.value is None else _bound(rule, limit, control.value)
    ratio_without_base = (
        rule in RATIO_RULES and control is not None and control.value is not None and control.value <= 0
    )
    problems: list[tuple[Outcome, str]] = []
    for arm, reading in involved:
        # One problem per arm, the most serious: an error, then too little evidence, then no value.
        shortfall = evidence.shortfall(arm)
        if reading.kind is ReadingKind.ERROR:
            problems.append((Outcome.ERROR, f"{arm.value}: {reading.detail}"))
        elif shortfall is not None:
            problems.append(shortfall)
        elif reading.kind is ReadingKind.NO_DATA:
            problems.append((Outcome.NO_DATA, f"{arm.value}: {reading.detail or 'no data'}"))
    if ratio_without_base:
        problems.append(
            (
                Outcome.NO_DATA,
                f"control is {fmt(control.value if control else None)}: a ratio to it cannot judge "
                "(add maxDelta for an absolute margin)",
            )
        )
    if problems:
        outcome = max((o for o, _ in problems), key=SEVERITY.__getitem__)
        return outcome, "; ".join(d for o, d in problems if o is outcome), bound
    if treatment.value is None or bound is None:  # unreachable: a missing value is a problem above
        return Outcome.NO_DATA, "no value", bound
    if _holds(rule, treatment.value, bound):
        return Outcome.PASS, "", bound
    return Outcome.FAIL, "", bound


RATIO_RULES = frozenset({"maxIncrease", "maxDecrease", "minIncrease", "minDecrease"})


def _bound(rule: str, limit: float, control: float) -> float:
    if rule == "maxIncrease":
        return control * (1 + limit)
    if rule == "maxDecrease":
        return control * (1 - limit)
    if rule == "minIncrease":
        return control * (1 + limit)
    if rule == "minDecrease":
        return control * (1 - limit)
    if rule in {"maxDelta", "minDelta"}:
        return control + limit
    raise ValueError(rule)


def _holds(rule: str, value: float, bound: float) -> bool:
    return value <= bound if SYMBOL[rule] == "≤" else value >= bound


def _compares_arms(check: Check) -> bool:
    return check.sequential is not None or (
        check.kind is not Source.TRAFFIC and check.sample_ratio is None and check.rule not in {"max", "min"}
    )


def _distrusted(check: Check) -> Check:
    """A comparison with control while the split is broken: not judged."""
    if not _compares_arms(check) or check.verdict is Outcome.ERROR:
        return check
    return replace(
        check,
        verdict=Outcome.ERROR,
        detail="not judged: sample ratio mismatch, the arms are not comparable"
        + (f" (it would be {check.verdict.value})" if check.verdict in {Outcome.PASS, Outcome.FAIL} else ""),
    )


def checkpoint_checks(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> list[Check]:
    checkpoint = policy.spec.checkpoint
    if checkpoint is None:
        return []
    checks = []
    for expectation in checkpoint.expect:
        checks.extend(
            bound_checks(
                policy,
                queries,
                readings,
                source=Source.CHECKPOINT,
                name=expectation.name,
                bounds=expectation,
                reading_key=QueryKey(expectation_source(expectation), expectation.name, Arm.TREATMENT),
            )
        )
    return checks
