"""Judge readings against a policy's bounds: one :class:`Check` per rule, each with its evidence.

A check is ``error`` when a query it needs failed, ``no_data`` when a value is missing or an arm has
fewer samples than ``traffic.minSamples``, and otherwise ``pass`` or ``fail`` by its bound. Absolute
bounds (``max``, ``min``) judge the treatment arm; relative ones compare it with the control arm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.policy import Bounds, Policy
from controller.queries import Arm, PlannedQuery, QueryKey, Reading, ReadingKind, Source, arms
from controller.state import Outcome

Readings = Mapping[QueryKey, Reading]

# Worst first: a failure outranks an error, which outranks missing data.
SEVERITY = {Outcome.FAIL: 3, Outcome.ERROR: 2, Outcome.NO_DATA: 1, Outcome.PASS: 0}

_SYMBOL = {
    "max": "≤",
    "min": "≥",
    "maxIncrease": "≤",
    "maxDecrease": "≥",
    "minIncrease": "≥",
    "minDecrease": "≤",
    "maxDelta": "≤",
    "minDelta": "≥",
    "minSamples": "≥",
}


@dataclass(frozen=True)
class ArmEvidence:
    query: str
    value: float | None
    samples: float | None


@dataclass(frozen=True)
class Check:
    name: str
    kind: Source
    rule: str  # the policy's name for the bound: max, maxIncrease, minSamples…
    limit: float  # the number the policy gives for that rule
    arm: Arm
    query: str
    value: float | None
    bound: float | None  # the threshold the value was held to (for relative rules: from control)
    samples: float | None
    verdict: Outcome
    detail: str = ""
    control: ArmEvidence | None = None

    def as_record(self) -> dict[str, Any]:
        """The check as it is written to the decision log."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "rule": self.rule,
            "limit": self.limit,
            "arm": self.arm.value,
            "query": self.query,
            "value": self.value,
            "bound": self.bound,
            "samples": self.samples,
            "verdict": self.verdict.value,
            "detail": self.detail or None,
            "control": None
            if self.control is None
            else {
                "query": self.control.query,
                "value": self.control.value,
                "samples": self.control.samples,
            },
        }

    def describe(self) -> str:
        return describe(self.as_record())


def describe(check: Mapping[str, Any]) -> str:
    """One line for humans, from a check record: ``error-rate treatment 0.0042 > 0.001 (max; n=812)``,
    ``p95 treatment 0.24 > 0.22 (maxIncrease 0.1 over control 0.2; n=900/910)``."""
    head = f"{check.get('name')} {check.get('arm')}"
    verdict = str(check.get("verdict"))
    value, rule = check.get("value"), str(check.get("rule"))
    if value is None or rule not in _SYMBOL:
        return f"{head}: {verdict} ({check.get('detail') or 'no value'})"
    symbol = _SYMBOL[rule]
    if verdict == Outcome.FAIL.value:
        symbol = {"≤": ">", "≥": "<"}[symbol]
    how = rule
    control = check.get("control") or {}
    if rule not in {"max", "min", "minSamples"}:
        how = f"{rule} {fmt(check.get('limit'))} over control {fmt(control.get('value'))}"
    samples = check.get("samples")
    if samples is not None and check.get("kind") != Source.TRAFFIC.value:
        how += f"; n={fmt(round(samples))}"
        if control.get("samples") is not None:
            how += f"/{fmt(round(control['samples']))}"
    text = f"{head} {fmt(value)} {symbol} {fmt(check.get('bound'))} ({how})"
    detail = check.get("detail")
    if detail and verdict != Outcome.PASS.value:
        text += f": {detail}"
    return text


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def worst(checks: Sequence[Check]) -> Outcome:
    if not checks:
        return Outcome.PASS
    return max((c.verdict for c in checks), key=SEVERITY.__getitem__)


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
    return value <= bound if _SYMBOL[rule] == "≤" else value >= bound


class _Evidence:
    """Looks up readings and sample counts for one policy."""

    def __init__(self, policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> None:
        self.policy = policy
        self.promql = {q.key: q.promql for q in queries}
        self.readings = readings
        self.min_samples = policy.spec.traffic.min_samples if policy.spec.traffic else 0

    def reading(self, key: QueryKey) -> Reading:
        found = self.readings.get(key)
        if found is None:
            return Reading.error(f"no answer was gathered for {key.source.value} {key.name!r}")
        return found

    def samples(self, arm: Arm) -> Reading | None:
        if self.policy.spec.traffic is None:
            return None
        return self.reading(QueryKey(Source.TRAFFIC, "traffic", arm))

    def shortfall(self, arm: Arm) -> tuple[Outcome, str] | None:
        """Why this arm's evidence is not enough, if it is not."""
        samples = self.samples(arm)
        if samples is None:
            return None
        if samples.kind is ReadingKind.ERROR:
            return Outcome.ERROR, f"{arm.value} sample count: {samples.detail}"
        if samples.kind is ReadingKind.NO_DATA or samples.value is None:
            return Outcome.NO_DATA, f"{arm.value} sample count: {samples.detail or 'no data'}"
        if samples.value < self.min_samples:
            missing = self.min_samples - samples.value
            return (
                Outcome.NO_DATA,
                f"{arm.value} has {fmt(samples.value)} of {self.min_samples} samples "
                f"({fmt(missing)} missing)",
            )
        return None

    def sample_count(self, arm: Arm) -> float | None:
        samples = self.samples(arm)
        return samples.value if samples is not None else None


def traffic_checks(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> list[Check]:
    """One ``minSamples`` check per arm, so a record shows how much evidence there was."""
    if policy.spec.traffic is None:
        return []
    evidence = _Evidence(policy, queries, readings)
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
                query=evidence.promql.get(key, ""),
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
    evidence = _Evidence(policy, queries, readings)
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
                evidence.promql.get(c_key, ""), control_reading.value, evidence.sample_count(Arm.CONTROL)
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
                query=evidence.promql.get(t_key, ""),
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
    evidence: _Evidence,
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


def guardrail_checks(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> list[Check]:
    checks = traffic_checks(policy, queries, readings)
    for guardrail in policy.spec.guardrails:
        checks.extend(
            bound_checks(
                policy,
                queries,
                readings,
                source=Source.GUARDRAIL,
                name=guardrail.name,
                bounds=guardrail,
                reading_key=QueryKey(Source.GUARDRAIL, guardrail.name, Arm.TREATMENT),
            )
        )
    return checks


def checkpoint_checks(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> list[Check]:
    checkpoint = policy.spec.checkpoint
    if checkpoint is None:
        return []
    checks = []
    for expectation in checkpoint.expect:
        source = Source.CHECKPOINT if expectation.query is not None else Source.GUARDRAIL
        checks.extend(
            bound_checks(
                policy,
                queries,
                readings,
                source=Source.CHECKPOINT,
                name=expectation.name,
                bounds=expectation,
                reading_key=QueryKey(source, expectation.name, Arm.TREATMENT),
            )
        )
    return checks
