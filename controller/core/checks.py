"""Judge readings against a policy's bounds: one :class:`Check` per rule, each with its evidence.

A check is ``error`` when a query it needs failed, ``no_data`` when a value is missing or an arm has
fewer samples than ``traffic.minSamples``, and otherwise ``pass`` or ``fail`` by its bound. Absolute
bounds (``max``, ``min``) judge the treatment arm; relative ones compare it with the control arm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from controller.core import sequential, srm
from controller.core.durations import format_duration
from controller.core.policy import Bounds, Guardrail, Policy
from controller.core.queries import (
    SAMPLE_RATIO,
    Arm,
    Part,
    PlannedQuery,
    QueryKey,
    QueryText,
    Reading,
    ReadingKind,
    Source,
    arms,
    shown,
)
from controller.core.state import Outcome

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


@dataclass(frozen=True, slots=True)
class ArmEvidence:
    query: QueryText
    value: float | None
    samples: float | None


@dataclass(frozen=True, slots=True)
class ArmCount:
    """One arm's counts behind a sequential check: bad requests and all requests."""

    events: float
    samples: float
    events_query: str
    samples_query: str


@dataclass(frozen=True, slots=True)
class SequentialEvidence:
    """What a confidence-sequence check saw and concluded, for the decision record."""

    method: str
    metric: str  # errorRatio or latency
    window_seconds: int
    treatment: ArmCount
    control: ArmCount
    difference: float  # treatment share − control share
    tolerated: float  # the treatment share the rule tolerates, at the control's estimate
    excess: float  # treatment share − tolerated
    excess_lower: float  # anytime-valid lower bound of the excess: above 0 fails
    log_likelihood_ratio: float  # the mSPRT statistic, ln M⁺ at zero excess
    threshold: float  # ln(1/alpha)
    alpha: float  # this rule's share of the budget
    alpha_total: float  # statistics.alpha: the whole rollout's false-rollback budget
    comparisons: int  # rules sharing it (Bonferroni)
    variance_inflation: float
    expected_samples: int
    slower_than_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class SampleRatioEvidence:
    method: str
    window_seconds: int
    treatment: float
    control: float
    share: float  # observed treatment share of exposures
    designed_share: float
    log_bayes_factor: float
    threshold: float  # ln(1/alpha)
    alpha: float
    mismatch: bool


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    kind: Source
    rule: str  # the policy's name for the bound: max, maxIncrease, minSamples…
    limit: float  # the number the policy gives for that rule
    arm: Arm
    query: QueryText  # the text is built when the record is (see queries.shown)
    value: float | None
    bound: float | None  # the threshold the value was held to (for relative rules: from control)
    samples: float | None
    verdict: Outcome
    detail: str = ""
    control: ArmEvidence | None = None
    metric: str | None = None  # errorRatio or latency: judged by a confidence sequence
    sequential: SequentialEvidence | None = None
    sample_ratio: SampleRatioEvidence | None = None
    shadow: bool = False  # a dryRun guardrail: recorded, never acted on

    def as_record(self) -> dict[str, Any]:
        """The check as it is written to the decision log."""
        record = {
            "name": self.name,
            "kind": self.kind.value,
            "rule": self.rule,
            "limit": self.limit,
            "arm": self.arm.value,
            "query": shown(self.query),
            "value": self.value,
            "bound": self.bound,
            "samples": self.samples,
            "verdict": self.verdict.value,
            "detail": self.detail or None,
            "control": None
            if self.control is None
            else {
                "query": shown(self.control.query),
                "value": self.control.value,
                "samples": self.control.samples,
            },
        }
        if self.shadow:
            record["shadow"] = True
        if self.metric is not None:
            record["metric"] = self.metric
        if self.sequential is not None:
            record["sequential"] = asdict(self.sequential)
        if self.sample_ratio is not None:
            record["sample_ratio"] = asdict(self.sample_ratio)
        return record

    def describe(self) -> str:
        return describe(self.as_record())


def describe(check: Mapping[str, Any]) -> str:
    """One line for humans, from a check record: ``error-rate treatment 0.0042 > 0.001 (max; n=812)``,
    ``p95 treatment 0.24 > 0.22 (maxIncrease 0.1 over control 0.2; n=900/910)``."""
    shadow = " [shadow: never acts]" if check.get("shadow") else ""
    head = f"{check.get('name')} {check.get('arm')}{shadow}"
    verdict = str(check.get("verdict"))
    if isinstance(check.get("sequential"), dict) or check.get("metric") is not None:
        return _describe_sequential(check, check.get("sequential") or {}) + shadow
    if isinstance(check.get("sample_ratio"), dict):
        return _describe_sample_ratio(check, check["sample_ratio"])
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


def _signed(value: Any) -> str:
    return ("+" if isinstance(value, int | float) and value > 0 else "") + fmt(value)


def _describe_sequential(check: Mapping[str, Any], seq: Mapping[str, Any]) -> str:
    """``error-ratio treatment 0.021 vs control 0.0098 (maxDelta 0.002; n=6000/6012 over 10m):
    exceeds the tolerated 0.0118 by ≥ +0.0031 (99.5 % confidence sequence; ln LR 8.8 ≥ 5.3)``."""
    control = check.get("control") or {}
    window = seq.get("window_seconds")
    span = f" over {format_duration(float(window))}" if isinstance(window, int | float) else ""
    what = f"{check.get('rule')} {fmt(check.get('limit'))}"
    if seq.get("slower_than_seconds") is not None:
        what = f"share slower than {format_duration(float(seq['slower_than_seconds']))}; {what}"
    head = (
        f"{check.get('name')} treatment {fmt(check.get('value'))} vs control "
        f"{fmt(control.get('value'))} ({what}; "
        f"n={fmt(_rounded(check.get('samples')))}/{fmt(_rounded(control.get('samples')))}{span})"
    )
    verdict = str(check.get("verdict"))
    if not seq:  # not compared: too few samples, no data, an error
        return f"{head}: {verdict}: {check.get('detail') or 'no comparison'}"
    alpha = seq.get("alpha")
    level = f"{fmt(100 * (1 - alpha))} %" if isinstance(alpha, int | float) else "?"
    statistic = f"ln LR {fmt(seq.get('log_likelihood_ratio'))}"
    threshold = fmt(seq.get("threshold"))
    if verdict == Outcome.FAIL.value:
        text = (
            f"{head}: exceeds the tolerated {fmt(seq.get('tolerated'))} by ≥ "
            f"{_signed(seq.get('excess_lower'))} ({level} confidence sequence; {statistic} ≥ {threshold})"
        )
    else:
        text = (
            f"{head}: no credible excess over the tolerated {fmt(seq.get('tolerated'))} "
            f"(lower bound {_signed(seq.get('excess_lower'))} ≤ 0 at {level}; {statistic} < {threshold})"
        )
    detail = check.get("detail")
    if detail and verdict != Outcome.PASS.value:
        text += f"; {verdict}: {detail}"
    return text


def _describe_sample_ratio(check: Mapping[str, Any], ratio: Mapping[str, Any]) -> str:
    share = ratio.get("share")
    designed = ratio.get("designed_share")
    head = (
        f"{check.get('name')} treatment {fmt(_percent(share))} % of exposures, designed "
        f"{fmt(_percent(designed))} % (n={fmt(_rounded(ratio.get('treatment')))}/"
        f"{fmt(_rounded(ratio.get('control')))}; ln BF {fmt(ratio.get('log_bayes_factor'))} "
        f"{'≥' if ratio.get('mismatch') else '<'} {fmt(ratio.get('threshold'))})"
    )
    detail = check.get("detail")
    return f"{head}: {detail}" if detail else head


def _percent(value: Any) -> float | None:
    return 100 * value if isinstance(value, int | float) else None


def _rounded(value: Any) -> float | None:
    return float(round(value)) if isinstance(value, int | float) else None


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
        self.flag = policy.flag_key
        self.planned = {_local(q.key): q for q in queries}
        self.readings = readings
        self.min_samples = policy.spec.traffic.min_samples if policy.spec.traffic else 0

    def reading(self, key: QueryKey) -> Reading:
        """The answer under ``key`` (built without a flag) for this policy's flag."""
        found = self.readings.get(QueryKey(key.source, key.name, key.arm, key.part, self.flag))
        if found is None:
            return Reading.error(f"no answer was gathered for {key.source.value} {key.name!r}")
        return found

    def query(self, key: QueryKey) -> QueryText:
        """The query behind ``key`` (its text is built when the record is)."""
        return self.planned.get(_local(key), "")

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
    return checks


def acting(checks: Sequence[Check]) -> list[Check]:
    """The checks that decide: all but those of shadow (dryRun) guardrails."""
    return [c for c in checks if not c.shadow]


def sample_ratio_mismatch(checks: Sequence[Check]) -> Check | None:
    """The sample-ratio check, if it found the split broken."""
    return next(
        (c for c in checks if c.sample_ratio is not None and c.sample_ratio.mismatch),
        None,
    )


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


def _local(key: QueryKey) -> tuple[Source, str, Arm, Part]:
    """A key within one policy's queries (whose flag is the policy's)."""
    return key.source, key.name, key.arm, key.part


def _window(queries: Sequence[PlannedQuery], key: QueryKey) -> int | None:
    return next((q.window_seconds for q in queries if _local(q.key) == _local(key)), None)


def _count(reading: Reading, arm: Arm, what: str) -> tuple[float | None, tuple[Outcome, str] | None]:
    """A count from a reading, or why there is none."""
    if reading.kind is ReadingKind.ERROR:
        return None, (Outcome.ERROR, f"{arm.value} {what}: {reading.detail}")
    if reading.kind is ReadingKind.NO_DATA or reading.value is None:
        return None, (Outcome.NO_DATA, f"{arm.value} {what}: {reading.detail or 'no data'}")
    return max(reading.value, 0.0), None


def _worst_problem(problems: Sequence[tuple[Outcome, str]]) -> tuple[Outcome, str]:
    outcome = max((o for o, _ in problems), key=SEVERITY.__getitem__)
    return outcome, "; ".join(d for o, d in problems if o is outcome)


def sample_ratio_check(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> Check | None:
    """The exposure split against the designed 1:1, when ``statistics.exposure`` is set."""
    stats = policy.statistics
    if stats.exposure is None or not policy.spec.control:
        return None
    evidence = _Evidence(policy, queries, readings)
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
    result = srm.check(
        treatment, control, alpha=stats.sample_ratio_alpha, variance_inflation=stats.variance_inflation
    )
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
    evidence = _Evidence(policy, queries, readings)
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
    checks = []
    for rule, limit in guardrail.rules():
        checks.append(_sequential_check(policy, guardrail, rule, limit, window, counts, problems))
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
    if problems or treatment is None or control is None or window is None:
        verdict, detail = _worst_problem(problems or [(Outcome.NO_DATA, "no counts")])
        return replace(check, verdict=verdict, detail=detail)
    stats = policy.statistics
    result = sequential.compare(
        sequential.ArmCounts(treatment.events, treatment.samples),
        sequential.ArmCounts(control.events, control.samples),
        rule=rule,
        limit=limit,
        alpha=policy.comparison_alpha(guardrail),
        expected_samples=stats.expected_samples,
        variance_inflation=stats.variance_inflation,
    )
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
        variance_inflation=stats.variance_inflation,
        expected_samples=stats.expected_samples,
        slower_than_seconds=guardrail.latency.slower_than_seconds if guardrail.latency else None,
    )
    return replace(
        check,
        value=result.treatment_share,
        bound=result.tolerated,
        verdict=Outcome.FAIL if result.fails else Outcome.PASS,
        control=ArmEvidence(control.events_query, result.control_share, control.samples),
        sequential=evidence,
    )


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
