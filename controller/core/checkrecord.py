"""The record of one check: what a rule judged, the evidence it saw, and how it reads for people.

A :class:`Check` is built by the checks (:mod:`controller.core.checks` for bounds, traffic and
checkpoints, :mod:`controller.core.statchecks` for the statistical ones), written to the decision log
as :meth:`Check.as_record`, and described in one line by :func:`describe`, from the record alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from controller.core.durations import format_duration
from controller.core.queries import Arm, QueryText, Source, shown
from controller.core.state import Outcome

# Worst first: a failure outranks an error, which outranks missing data.
SEVERITY = {Outcome.FAIL: 3, Outcome.ERROR: 2, Outcome.NO_DATA: 1, Outcome.PASS: 0}

# How each rule holds the value to its bound.
SYMBOL = {
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
class DispersionEvidence:
    """How much the counts vary beyond independent requests, measured from per-interval counts,
    and the variance inflation the check used because of it."""

    method: str
    used: float  # the inflation the check used: max(floor, upper bound)
    floor: float  # statistics.varianceInflation
    estimate: float | None  # the Pearson dispersion factor (None: not measured)
    upper_bound: float | None  # its upper confidence bound (the estimate as adjusted for few bins)
    degrees_of_freedom: float | None
    bin_seconds: int | None
    note: str = ""  # why the floor was used, when it was not measured
    query: str = ""


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
    variance_inflation: float  # the inflation the comparison used (see dispersion)
    expected_samples: int
    slower_than_seconds: float | None = None
    dispersion: DispersionEvidence | None = None


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
    variance_inflation: float = 1.0  # what the exposures were divided by (see dispersion)
    dispersion: DispersionEvidence | None = None


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
    # Still gathering what it needs to be judged (the dispersion's first intervals): the check
    # holds, but it is no outage, so onNoData's rollback does not apply to it.
    settling: bool = False
    firing: tuple[str, ...] = ()  # an alert check's firing alerts, as name{labels}

    def as_record(self) -> dict[str, Any]:
        """The check as it is written to the decision log."""
        record: dict[str, Any] = {
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
        if self.settling:
            record["settling"] = True
        if self.kind is Source.ALERT:
            record["firing"] = list(self.firing)
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
    if check.get("kind") == Source.ALERT.value:
        return _describe_alert(check)
    value, rule = check.get("value"), str(check.get("rule"))
    if value is None or rule not in SYMBOL:
        return f"{head}: {verdict} ({check.get('detail') or 'no value'})"
    symbol = SYMBOL[rule]
    if verdict == Outcome.FAIL.value or (rule == "minSamples" and verdict != Outcome.PASS.value):
        symbol = {"≤": ">", "≥": "<"}[symbol]  # too few samples: the count is below minSamples
    elif verdict != Outcome.PASS.value:
        symbol = "vs"  # not judged (too few samples, a missing control…): neither a pass nor a failure
    how = rule
    control = check.get("control") or {}
    if rule not in {"max", "min", "minSamples"}:
        how = f"{rule} {fmt(check.get('limit'))} over control {fmt(control.get('value'))}"
    samples = check.get("samples")
    if samples is not None and check.get("kind") != Source.TRAFFIC.value:
        how += f"; n={fmt(_rounded(samples))}"
        if control.get("samples") is not None:
            how += f"/{fmt(_rounded(control['samples']))}"
    text = f"{head} {fmt(value)} {symbol} {fmt(check.get('bound'))} ({how})"
    detail = check.get("detail")
    if detail and verdict != Outcome.PASS.value:
        text += f": {detail}"
    return text


def _describe_alert(check: Mapping[str, Any]) -> str:
    """``checkout-pages: 2 alerts firing (CheckoutErrors{severity="page"}, …); onFiring: hold``."""
    name, verdict = check.get("name"), check.get("verdict")
    if verdict == Outcome.PASS.value:
        return f"alert {name}: none firing"
    if verdict != Outcome.FAIL.value:
        return f"alert {name}: {verdict} ({check.get('detail') or 'no answer'})"
    value = check.get("value")
    count = int(value) if isinstance(value, int | float) else 0
    firing = [str(f) for f in check.get("firing") or []]
    named = ", ".join(firing) + (f" and {count - len(firing)} more" if count > len(firing) else "")
    noun = "alert" if count == 1 else "alerts"
    return f"alert {name}: {count} {noun} firing ({named}); onFiring: {check.get('rule')}"


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
    text += inflation(seq)
    detail = check.get("detail")
    if detail and verdict != Outcome.PASS.value:
        text += f"; {verdict}: {detail}"
    return text


def inflation(evidence: Mapping[str, Any]) -> str:
    """``; inflation 2.3 (dispersion 1.9 over 38 df; floor 1)``: the variance inflation a check
    used and where it came from (empty for a record written before it was measured)."""
    found = evidence.get("dispersion")
    if not isinstance(found, Mapping):
        return ""
    used, floor = fmt(found.get("used")), fmt(found.get("floor"))
    if found.get("estimate") is None:
        note = found.get("note") or "not measured"
        return f"; inflation {used} (the floor: dispersion {note})"
    return (
        f"; inflation {used} (dispersion {fmt(found.get('estimate'))} over "
        f"{fmt(found.get('degrees_of_freedom'))} df; floor {floor})"
    )


def _describe_sample_ratio(check: Mapping[str, Any], ratio: Mapping[str, Any]) -> str:
    share = ratio.get("share")
    designed = ratio.get("designed_share")
    head = (
        f"{check.get('name')} treatment {fmt(_percent(share))} % of exposures, designed "
        f"{fmt(_percent(designed))} % (n={fmt(_rounded(ratio.get('treatment')))}/"
        f"{fmt(_rounded(ratio.get('control')))}; ln BF {fmt(ratio.get('log_bayes_factor'))} "
        f"{'≥' if ratio.get('mismatch') else '<'} {fmt(ratio.get('threshold'))}{inflation(ratio)})"
    )
    detail = check.get("detail")
    return f"{head}: {detail}" if detail else head


def _percent(value: Any) -> float | None:
    return 100 * value if isinstance(value, int | float) else None


def _rounded(value: Any) -> float | None:
    if not isinstance(value, int | float):
        return None
    return float(round(value)) if math.isfinite(value) else float(value)


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):  # "nan", "inf", "-inf": shown as they are, never a traceback
        return str(float(value))
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def worst(checks: Sequence[Check]) -> Outcome:
    if not checks:
        return Outcome.PASS
    return max((c.verdict for c in checks), key=SEVERITY.__getitem__)


def acting(checks: Sequence[Check]) -> list[Check]:
    """The checks that decide: all but those of shadow (dryRun) guardrails."""
    return [c for c in checks if not c.shadow]


def sample_ratio_mismatch(checks: Sequence[Check]) -> Check | None:
    """The sample-ratio check, if it found the split broken."""
    return next(
        (c for c in checks if c.sample_ratio is not None and c.sample_ratio.mismatch),
        None,
    )
