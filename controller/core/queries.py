"""Which PromQL a rollout needs this cycle, and what an answer to one query can be.

A policy's queries are templates: ``{{variant}}`` becomes the arm's variant (``on`` for treatment,
``control`` for control) and ``{{flag}}`` the flag key. Substitution is plain text replacement with
values escaped for a PromQL label matcher; nothing in a policy is ever evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from controller.core.flagd import CONTROL, TREATMENT
from controller.core.metrictemplate import MetricTemplate, promql_label
from controller.core.policy import Expectation, Guardrail, Policy
from controller.core.selectors import STRING, parse_selector

_PLACEHOLDER = re.compile(r"\{\{\s*(variant|flag)\s*\}\}")


class Arm(StrEnum):
    TREATMENT = "treatment"
    CONTROL = "control"

    @property
    def variant(self) -> str:
        return TREATMENT if self is Arm.TREATMENT else CONTROL


class Source(StrEnum):
    TRAFFIC = "traffic"
    GUARDRAIL = "guardrail"
    CHECKPOINT = "checkpoint"
    EXPOSURE = "exposure"
    ALERT = "alert"  # spec.alerts: the firing alerts matching a selector


class Part(StrEnum):
    """Which count of a sequential guardrail a query gives (a plain query has no part)."""

    WHOLE = ""
    EVENTS = "events"  # bad requests (errors) since exposure began
    FAST = "fast"  # requests at or under the latency bound (the histogram bucket) since exposure began
    TOTAL = "total"  # all requests since exposure began
    # Sums over the bins (intervals) of the exposure window, for the dispersion estimate: one query
    # per guardrail (and one for the sample-ratio check) returns them all, from the same bins.
    BINS = "bins"  # bins with at least one request
    BIN_EVENTS = "bin_events"  # Σ x_i: bad requests (treatment exposures for the sample-ratio check)
    BIN_TOTAL = "bin_total"  # Σ n_i: all requests (both arms' exposures)
    BIN_SQUARES = "bin_squares"  # Σ x_i² / n_i


@dataclass(frozen=True, order=True, slots=True)
class QueryKey:
    """Names one answer of a cycle. ``flag`` keeps the answers of different rollouts apart: two
    policies may both have a guardrail called ``error-rate``, and both have traffic."""

    source: Source
    name: str
    arm: Arm
    part: Part = Part.WHOLE
    flag: str = ""


@dataclass(frozen=True, slots=True)
class Split:
    """Which series of a template's answer is this arm's: the one whose labels name its flag and
    variant."""

    template: str
    flag_label: str
    variant_label: str
    flag: str
    variant: str

    def selector(self) -> str:
        return (
            f'{{{promql_label(self.flag_label)}="{escape_label_value(self.flag)}", '
            f'{promql_label(self.variant_label)}="{escape_label_value(self.variant)}"}}'
        )


@dataclass(frozen=True, slots=True)
class PlannedQuery:
    key: QueryKey
    promql: str  # for a template, its query: the same for every rollout that uses it
    window_seconds: int | None = None  # the increase() range of a count since exposure began
    split: Split | None = None  # set when the answer is a template's, split per flag and arm
    # The answer is a list of series, not one number (the firing alerts of spec.alerts): its reading
    # is how many there are, with their names in the detail (see :func:`listed`).
    listing: bool = False

    @property
    def shown(self) -> str:
        """The query as decision records show it: a template's is marked with the series taken."""
        if self.split is None:
            return self.promql
        return f"# template {self.split.template}, series {self.split.selector()}\n{self.promql}"


QueryText = PlannedQuery | str  # a planned query stands for its text until the text is written out


def shown(query: QueryText) -> str:
    """The text of ``query`` as decision records show it. Checks keep the planned query itself and
    the text is built when the record is: a template's text names each arm's series, and thousands
    of rollouts would otherwise each hold copies of it all cycle long."""
    return query if isinstance(query, str) else query.shown


class ReadingKind(StrEnum):
    VALUE = "value"
    NO_DATA = "no_data"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Reading:
    """Prometheus's answer to one query, already judged for shape: a number, no data, or an error."""

    kind: ReadingKind
    value: float | None = None
    detail: str = ""
    series: tuple[str, ...] = ()  # a listing's series, each as name{labels} (see PlannedQuery.listing)

    @staticmethod
    def of(value: float) -> Reading:
        return Reading(ReadingKind.VALUE, value)

    @staticmethod
    def listed(series: Sequence[str]) -> Reading:
        """A listing's answer: how many series, and which."""
        return Reading(ReadingKind.VALUE, float(len(series)), "", tuple(series))

    @staticmethod
    def no_data(detail: str) -> Reading:
        return Reading(ReadingKind.NO_DATA, None, detail)

    @staticmethod
    def error(detail: str) -> Reading:
        return Reading(ReadingKind.ERROR, None, detail)


def escape_label_value(value: str) -> str:
    """Escape a value for use inside a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(template: str, *, flag: str, arm: Arm) -> str:
    values = {"variant": escape_label_value(arm.variant), "flag": escape_label_value(flag)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def arms(control: bool) -> tuple[Arm, ...]:
    return (Arm.TREATMENT, Arm.CONTROL) if control else (Arm.TREATMENT,)


def expectation_source(expectation: Expectation) -> Source:
    """Where a checkpoint expectation's answers are: its own (a query or a template), planned under
    the checkpoint, or those of the guardrail it names."""
    if expectation.query is not None or expectation.template is not None:
        return Source.CHECKPOINT
    return Source.GUARDRAIL


SAMPLE_RATIO = "sample-ratio"  # the name of the exposure check


def _le_values(bound: float) -> list[str]:
    """How clients spell a bucket edge in ``le``: Python's client writes ``0.3`` and ``1.0``,
    Go's ``0.3`` and ``1``; both (and exponent forms) are matched."""
    spellings = {repr(float(bound)), f"{bound:g}"}
    if float(bound).is_integer():
        spellings.add(str(int(bound)))
    return sorted(spellings)


def le_matcher(bound: float) -> str:
    """A PromQL matcher for the bucket whose upper edge is ``bound`` seconds."""
    alternatives = "|".join(re.escape(v).replace("\\", "\\\\") for v in _le_values(bound))
    return f'le=~"{alternatives}"'


def with_suffix(selector: str, suffix: str, extra_matcher: str = "") -> str:
    """``name{labels}`` → ``name<suffix>{labels,extra}`` (for a histogram's series); a name quoted as
    Prometheus 3 allows, ``{"a.b", labels}``, becomes ``{"a.b<suffix>", labels, extra}``."""
    parsed = parse_selector(selector)
    if parsed is not None and parsed.quoted:
        return parsed.with_suffix(suffix, extra_matcher)
    name, brace, labels = selector.partition("{")
    labels = labels.strip()
    inner = labels[:-1].strip().rstrip(",").strip() if brace else ""
    matchers = ", ".join(m for m in (inner, extra_matcher) if m)
    return f"{name.strip()}{suffix}{{{matchers}}}"


def counted(selector: str, window_seconds: int) -> str:
    """The increase of a counter selector over the exposure window, summed over its series."""
    return f"sum(increase({selector}[{window_seconds}s]))"


def sequential_templates(guardrail: Guardrail, window_seconds: int) -> list[tuple[Part, str]]:
    """The count queries (templates, per arm) an errorRatio or latency guardrail needs."""
    if guardrail.error_ratio is not None:
        return [
            (Part.EVENTS, counted(guardrail.error_ratio.errors, window_seconds)),
            (Part.TOTAL, counted(guardrail.error_ratio.requests, window_seconds)),
        ]
    if guardrail.latency is not None:
        histogram = guardrail.latency.histogram
        bucket = with_suffix(histogram, "_bucket", le_matcher(guardrail.latency.slower_than_seconds))
        return [
            (Part.FAST, counted(bucket, window_seconds)),
            (Part.TOTAL, counted(with_suffix(histogram, "_count"), window_seconds)),
        ]
    return []


BIN_PARTS = (Part.BINS, Part.BIN_EVENTS, Part.BIN_TOTAL, Part.BIN_SQUARES)
ARM_LABEL = "flagroll_arm"  # which arm's sums a series of a dispersion query holds
SUM_LABEL = "flagroll_sum"  # and which sum (a Part's value)
DISPERSION = "dispersion"  # how a dispersion query's records name it
MAX_BINS = 1440  # bins per query at most: a day at one a minute; longer windows get wider bins


def bin_seconds(interval_seconds: float, window_seconds: int) -> int:
    """The width of a bin: the policy's interval in whole seconds, widened so that a long window
    (a completed rollout's day) has at most :data:`MAX_BINS` of them."""
    return max(1, math.ceil(interval_seconds), math.ceil(window_seconds / MAX_BINS))


def _per_bin(selector: str, seconds: int) -> str:
    """A counter's growth over the bin ending at each step, summed over its series: the difference
    of its values at the bin's edges. Adjacent bins share their edges, so every increment lands in
    exactly one bin, and nothing is extrapolated (``increase`` over a bin would scale each bin's
    count up by the share of the bin its samples do not span, and the dispersion with it). A
    counter reset makes one bin's difference negative; it counts as 0."""
    return f"sum(clamp_min({selector} - {selector} offset {seconds}s, 0))"


def _bin_sums(bad: str, total: str, window_seconds: int, seconds: int, arm: str) -> str:
    """The four sums over the bins of one arm (``bad`` and ``total`` are per-bin expressions), as
    four series labelled with the arm and the sum. One query, one evaluation time: the same bins."""
    kept = f"({total} > 0)"
    over = f"[{window_seconds}s:{seconds}s]"
    sums = {
        Part.BINS: f"count_over_time({kept}{over})",
        Part.BIN_EVENTS: f"sum_over_time(({bad} and {kept}){over})",
        Part.BIN_TOTAL: f"sum_over_time({kept}{over})",
        Part.BIN_SQUARES: f"sum_over_time(({bad} ^ 2 / {kept}){over})",
    }
    return " or ".join(
        f'label_replace(label_replace({expression}, "{SUM_LABEL}", "{part.value}", "", ""), '
        f'"{ARM_LABEL}", "{arm}", "", "")'
        for part, expression in sums.items()
    )


def dispersion_query(guardrail: Guardrail, flag: str, window_seconds: int, seconds: int) -> str:
    """Both arms' sums over the bins for an errorRatio or latency guardrail's dispersion. The bad
    requests are the rare side: errors, or the requests slower than the bound (count − bucket), so
    the Pearson sum's one subtraction keeps its digits."""
    parts = []
    for arm in (Arm.TREATMENT, Arm.CONTROL):
        if guardrail.error_ratio is not None:
            bad = _per_bin(render(guardrail.error_ratio.errors, flag=flag, arm=arm), seconds)
            total = _per_bin(render(guardrail.error_ratio.requests, flag=flag, arm=arm), seconds)
        elif guardrail.latency is not None:
            histogram = render(guardrail.latency.histogram, flag=flag, arm=arm)
            bucket = with_suffix(histogram, "_bucket", le_matcher(guardrail.latency.slower_than_seconds))
            total = _per_bin(with_suffix(histogram, "_count"), seconds)
            bad = f"clamp_min({total} - {_per_bin(bucket, seconds)}, 0)"
        else:
            return ""
        parts.append(_bin_sums(bad, total, window_seconds, seconds, arm.value))
    return " or ".join(parts)


def exposure_dispersion_query(exposure: str, flag: str, window_seconds: int, seconds: int) -> str:
    """The sample-ratio check's sums over the bins: the treatment's exposures among both arms'."""
    treatment = _per_bin(render(exposure, flag=flag, arm=Arm.TREATMENT), seconds)
    control = _per_bin(render(exposure, flag=flag, arm=Arm.CONTROL), seconds)
    return _bin_sums(treatment, f"({treatment} + {control})", window_seconds, seconds, Arm.TREATMENT.value)


_NO_TEMPLATES: Mapping[str, MetricTemplate] = MappingProxyType({})


def plan(
    policy: Policy,
    *,
    with_checkpoint: bool,
    window_seconds: int | None = None,
    templates: Mapping[str, MetricTemplate] = _NO_TEMPLATES,
) -> list[PlannedQuery]:
    """Every query the policy needs this cycle, one per arm.

    A traffic, guardrail or expectation that names a template gets the template's query, marked with
    the series to take from its answer (``templates`` holds the definitions; a name missing from it
    plans an empty query, which is an ``error`` reading).

    ``window_seconds`` is how long the arms have been exposed; the counts of errorRatio and latency
    guardrails and of the sample-ratio check are taken over it. With None (nobody exposed yet) the
    same counts are asked over one interval, only to learn whether Prometheus answers: flagroll does
    not start a rollout while it cannot see. Their planned ``window_seconds`` is then None. Once
    exposed, each errorRatio/latency guardrail and the sample-ratio check also get one query of
    sums over the window's bins for their dispersion (:func:`dispersion_query`), split per arm and
    sum like a template's answer.
    """
    spec = policy.spec
    counted_seconds = window_seconds or max(1, math.ceil(spec.interval_seconds))
    seconds = bin_seconds(spec.interval_seconds, window_seconds or 0)
    planned: list[PlannedQuery] = []

    def add(source: Source, name: str, query: str | None, part: Part = Part.WHOLE, shared: str = "") -> None:
        window = window_seconds if part is not Part.WHOLE or source is Source.EXPOSURE else None
        for arm in arms(spec.control):
            key = QueryKey(source, name, arm, part, policy.flag_key)
            if query is not None:
                planned.append(PlannedQuery(key, render(query, flag=policy.flag_key, arm=arm), window))
                continue
            template = templates.get(shared)
            split = Split(
                shared,
                template.spec.flag_label if template else "",
                template.spec.variant_label if template else "",
                policy.flag_key,
                arm.variant,
            )
            planned.append(PlannedQuery(key, template.spec.query if template else "", window, split))

    def add_sums(source: Source, name: str, query: str, sides: Sequence[Arm]) -> None:
        for arm in sides:
            for part in BIN_PARTS:
                key = QueryKey(source, name, arm, part, policy.flag_key)
                split = Split(DISPERSION, ARM_LABEL, SUM_LABEL, arm.value, part.value)
                planned.append(PlannedQuery(key, query, window_seconds, split))

    if spec.traffic is not None:
        add(Source.TRAFFIC, "traffic", spec.traffic.query, shared=spec.traffic.template or "")
    for guardrail in spec.guardrails:
        if not guardrail.sequential:
            add(Source.GUARDRAIL, guardrail.name, guardrail.query, shared=guardrail.template or "")
        else:
            for part, template in sequential_templates(guardrail, counted_seconds):
                add(Source.GUARDRAIL, guardrail.name, template, part)
            if window_seconds:
                query = dispersion_query(guardrail, policy.flag_key, window_seconds, seconds)
                add_sums(Source.GUARDRAIL, guardrail.name, query, arms(spec.control))
    exposure = spec.statistics.exposure if spec.statistics is not None else None
    if exposure is not None and spec.control:
        add(Source.EXPOSURE, SAMPLE_RATIO, counted(exposure, counted_seconds))
        if window_seconds:
            query = exposure_dispersion_query(exposure, policy.flag_key, window_seconds, seconds)
            add_sums(Source.EXPOSURE, SAMPLE_RATIO, query, (Arm.TREATMENT,))
    if with_checkpoint and spec.checkpoint is not None:
        for e in spec.checkpoint.expect:
            if expectation_source(e) is Source.CHECKPOINT:
                add(Source.CHECKPOINT, e.name, e.query, shared=e.template or "")
    for alert in spec.alerts or ():
        key = QueryKey(Source.ALERT, alert.name, Arm.TREATMENT, flag=policy.flag_key)
        planned.append(PlannedQuery(key, alerts_query(alert.selector), listing=True))
    return planned


ALERTS_METRIC = "ALERTS"  # the series Prometheus's rule manager keeps for every pending or firing alert


def alert_matchers(selector: str) -> tuple[str, ...] | None:
    """The label matchers of an alert selector (``{service="checkout"}``, or with the name
    ``ALERTS``), sorted and without repeats; None when it is not one. Matchers on ``alertstate`` or
    the metric name are not a selector's to give: flagroll asks for the firing ones of ``ALERTS``."""
    text = selector.strip()
    parsed = parse_selector(text if not text.startswith("{") else ALERTS_METRIC + text)
    if parsed is None or parsed.bare_name != ALERTS_METRIC:
        return None
    return tuple(sorted({_MATCHER_SPACES.sub(r"\1\2", m, count=1) for m in parsed.matchers}))


# A matcher's label and operator, with the spaces around the operator (not part of the matcher).
_MATCHER_SPACES = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*|" + STRING + r")\s*(=~|!~|!=|=)\s*")


def alerts_query(selector: str) -> str:
    """The query of an alert selector: the firing ``ALERTS`` series matching it. Selectors that
    differ only in spacing or the order of their matchers make the same text, so that every rollout
    sharing a selector shares one query. An unreadable selector (refused when the policy is loaded)
    plans an empty query, which is an ``error`` reading."""
    matchers = alert_matchers(selector)
    if matchers is None:
        return ""
    inner = ", ".join(('alertstate="firing"', *matchers))
    return f"{ALERTS_METRIC}{{{inner}}}"


class MetricsSource(Protocol):
    """Where readings come from: Prometheus in production, anything with this method in tests."""

    async def query_all(self, queries: Sequence[PlannedQuery]) -> dict[QueryKey, Reading]: ...
