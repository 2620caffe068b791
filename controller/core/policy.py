"""The rollout policy: pydantic models of the YAML contract, revision, JSON Schema.

Shape (types, required fields, unknown fields) is checked by pydantic. Rules that relate several
fields (steps rise, stay under ``maxPercent``, hold at least one interval, relative bounds need a
control arm…) live in :mod:`controller.core.policyrules`, each returning its problems with the path
of the field at fault so that the file loader can point at its line. Nothing here reads files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import date
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    StrictBool,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from controller.core.durations import parse_duration

API_VERSION = "flagroll/v1"
KIND = "RolloutPolicy"
PLACEHOLDERS = ("variant", "flag")

Path = tuple[str | int, ...]

PLACEHOLDER_PATTERN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9.\-]{0,251}[a-z0-9])?$")
FLAG_KEY_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,251}[A-Za-z0-9])?$")


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"a duration such as '30s' or '5m' is needed, not {str(value).lower()}")
    if isinstance(value, int | float):
        raise ValueError(
            f"a duration needs a unit: write '{value}s' or '{value}m', not the bare number {value}"
        )
    return parse_duration(value)


# YAML numbers and booleans are told apart: `percent: true` is an error, not 1 %.
Number = Annotated[float, Strict()]
Count = Annotated[int, Strict()]


Seconds = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
            "description": "A duration with a unit: 90s, 5m, 1h, 1h30m.",
        }
    ),
]

NonEmptyText = Annotated[str, Field(min_length=1)]


class Model(BaseModel):
    """Strict, immutable, camelCase in YAML."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        str_strip_whitespace=True,
        allow_inf_nan=False,
    )


class Bounds(Model):
    """Bounds a value must respect. Absolute ones judge the treatment arm; relative ones compare it
    with the control arm (ratios are fractions of the control value, deltas are in the metric's unit).
    """

    max: Number | None = Field(None, description="Treatment value must be at most this.")
    min: Number | None = Field(None, description="Treatment value must be at least this.")
    max_increase: Number | None = Field(
        None, ge=0, description="Treatment ≤ control × (1 + maxIncrease). 0.10 = at most 10 % above."
    )
    max_decrease: Number | None = Field(
        None, ge=0, le=1, description="Treatment ≥ control × (1 − maxDecrease)."
    )
    min_increase: Number | None = Field(
        None, ge=0, description="Treatment ≥ control × (1 + minIncrease): the change must help."
    )
    min_decrease: Number | None = Field(
        None, ge=0, le=1, description="Treatment ≤ control × (1 − minDecrease): the change must help."
    )
    max_delta: Number | None = Field(None, description="Treatment − control ≤ maxDelta.")
    min_delta: Number | None = Field(None, description="Treatment − control ≥ minDelta.")

    def rules(self) -> Iterator[tuple[str, float]]:
        """The bounds that are set, as (YAML name, number), in a fixed order."""
        for field_name in BOUND_FIELDS:
            value = getattr(self, field_name)
            if value is not None:
                yield BOUND_NAMES[field_name], value


BOUND_FIELDS = (
    "max",
    "min",
    "max_increase",
    "max_decrease",
    "min_increase",
    "min_decrease",
    "max_delta",
    "min_delta",
)
BOUND_NAMES = {name: to_camel(name) for name in BOUND_FIELDS}  # as YAML spells them
RELATIVE_RULES = frozenset(
    {"maxIncrease", "maxDecrease", "minIncrease", "minDecrease", "maxDelta", "minDelta"}
)


class Step(Model):
    percent: Number = Field(gt=0, le=100, description="Share of users (of the segment) in the treatment arm.")
    hold_seconds: Seconds = Field(
        alias="hold",
        description="How long the step runs at least; it then advances at the first cycle in which "
        "every check passes.",
    )
    approval: Literal["required", "none"] | None = Field(
        default=None,
        description="required: after the hold, with every check passing, the next move (an advance, or "
        "after the last step the completion or promotion) waits for `flagroll approve FLAG --reason "
        "TEXT`; none (the default): it does not. Not part of the revision.",
    )

    @property
    def needs_approval(self) -> bool:
        return self.approval == "required"


TEMPLATE_DESCRIPTION = (
    "The name of a MetricTemplate (asked once per cycle for every rollout), instead of query."
)


class Traffic(Model):
    query: NonEmptyText | None = Field(
        None, description="PromQL giving the number of samples (requests) per arm; use {{variant}}."
    )
    template: NonEmptyText | None = Field(None, description=TEMPLATE_DESCRIPTION)
    min_samples: Count = Field(
        0, ge=0, description="Below this many samples in an arm, its checks are no_data."
    )


class ErrorRatio(Model):
    """Errors over requests per arm, from two counters, compared with the control arm sequentially."""

    errors: NonEmptyText = Field(
        description="Counter selector of failed requests, e.g. "
        'http_server_requests_total{code=~"5..",feature_flag_result_variant="{{variant}}"}.'
    )
    requests: NonEmptyText = Field(
        description="Counter selector of all requests, e.g. "
        'http_server_requests_total{feature_flag_result_variant="{{variant}}"}.'
    )


class Latency(Model):
    """The share of requests slower than a bound per arm, read from a histogram's bucket at that
    bound, compared with the control arm sequentially ("p95 ≤ 300 ms" is "≤ 5 % slower than 300 ms")."""

    histogram: NonEmptyText = Field(
        description="Histogram base name and labels, without _bucket/_count, e.g. "
        'http_server_request_duration_seconds{feature_flag_result_variant="{{variant}}"}.'
    )
    slower_than_seconds: Seconds = Field(
        alias="slowerThan",
        description="The latency bound; it must be one of the histogram's bucket edges (le).",
    )


class Guardrail(Bounds):
    name: NonEmptyText
    query: NonEmptyText | None = Field(
        None, description="PromQL returning one number per arm; use {{variant}}."
    )
    template: NonEmptyText | None = Field(None, description=TEMPLATE_DESCRIPTION)
    error_ratio: ErrorRatio | None = Field(
        None, description="Judge the error ratio treatment vs control with a confidence sequence."
    )
    latency: Latency | None = Field(
        None,
        description="Judge the share of slow requests treatment vs control with a confidence sequence.",
    )
    min_samples: Count | None = Field(
        None,
        ge=0,
        description="errorRatio and latency guardrails: requests each arm needs before it is judged "
        "(default: traffic.minSamples).",
    )
    dry_run: StrictBool | None = Field(
        None,  # None, not False: a field left out must not change the revision of existing policies
        alias="dryRun",
        description="A shadow guardrail: evaluated and recorded every cycle, but it never rolls back, "
        "holds or blocks an advance. Try a new guardrail this way before it acts.",
    )
    alpha_weight: Number | None = Field(
        None,
        alias="alphaWeight",
        ge=0.001,  # below, a rule's share of alpha falls far under the budget's own floor
        le=1000,
        description="errorRatio and latency guardrails: this guardrail's weight in the split of "
        "statistics.alpha (default 1 each): a weight of 3 next to a 1 gives it 3/4 of the budget. "
        "From 0.001 to 1000.",
    )

    @property
    def sequential(self) -> bool:
        """Judged by the anytime-valid comparison of counts (errorRatio, latency), not a query."""
        return self.error_ratio is not None or self.latency is not None

    @property
    def kind(self) -> str:
        return "errorRatio" if self.error_ratio is not None else "latency" if self.latency else "query"


SEQUENTIAL_RULES = ("maxDelta", "maxIncrease")

# The range of statistics.alpha and sampleRatioAlpha. Below 1e-6 a budget buys nothing a guardrail
# could use (it would need millions of requests to act) and its logarithms leave the range the
# boundary's arithmetic is checked over; above 0.2 it is no longer a guard.
BUDGET_MINIMUM = 1e-6
BUDGET_MAXIMUM = 0.2


class Statistics(Model):
    """How errorRatio and latency guardrails are judged, and the sample-ratio check."""

    alpha: Number = Field(
        0.01,
        ge=BUDGET_MINIMUM,
        le=BUDGET_MAXIMUM,
        description="False-rollback budget for the whole rollout: every look, every errorRatio and "
        "latency guardrail (split between them by alphaWeight). From 1e-6 to 0.2.",
    )
    expected_samples: Count = Field(
        2000,
        ge=1,
        le=10**12,
        description="Requests per arm at which the confidence sequence is tightest (at most 1e12).",
    )
    variance_inflation: Number = Field(
        1.0,
        ge=1,
        le=1000,
        description="The least variance multiplier (≥ 1): flagroll measures the dispersion of "
        "per-interval counts (bursts of errors, many requests per user) and uses it when larger; "
        "also divides exposures in the sample-ratio check.",
    )
    exposure: NonEmptyText | None = Field(
        None,
        description="Counter selector of flag evaluations per arm for the sample-ratio check, e.g. "
        'feature_flag_evaluations_total{feature_flag_key="{{flag}}",'
        'feature_flag_result_variant="{{variant}}"}.',
    )
    sample_ratio_alpha: Number = Field(
        0.001,
        ge=BUDGET_MINIMUM,
        le=BUDGET_MAXIMUM,
        description="How unlikely under the designed 1:1 split an exposure split must be to hold the "
        "rollout as a sample-ratio mismatch. From 1e-6 to 0.2.",
    )


class Expectation(Bounds):
    name: NonEmptyText = Field(description="A guardrail's name (reuses its query) or a new name.")
    query: str | None = Field(None, min_length=1, description="PromQL, if not a guardrail's.")
    template: NonEmptyText | None = Field(None, description=TEMPLATE_DESCRIPTION)


class Checkpoint(Model):
    expect: list[Expectation] = Field(min_length=1)
    on_pass: Literal["complete", "promote"] = "complete"
    on_fail: Literal["rollback", "hold"] = "rollback"


def _default_variants() -> dict[str, JsonValue]:
    return {"on": True, "off": False}


class FlagRef(Model):
    key: str = Field(description="The flagd flag key.")
    variants: dict[str, JsonValue] = Field(
        default_factory=_default_variants,
        description="Values served to treatment ('on') and everyone else ('off').",
    )
    adopt: Literal["ifOff", "replace"] | None = Field(
        default=None,
        description="A flag that already exists in the flag file and is not flagroll's: 'ifOff' (the "
        "default) adopts it only when it serves this policy's 'off' value to everyone (or is "
        "disabled), so that nobody's exposure changes; 'replace' adopts it whatever it serves, and the "
        "adopt record says whose exposure changes.",
    )


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


def _clock_time(value: Any) -> str:
    """A time of day on the wall clock, ``HH:MM`` (24-hour; ``24:00`` is the end of a day)."""
    found = _CLOCK_TIME.match(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"{value!r} is not a time of day: write 24-hour HH:MM, such as '09:00'")
    hours, minutes = int(found.group(1)), int(found.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(
            f"{value!r} is not a time of day: hours 00 to 23, minutes 00 to 59 (24:00 only as 'to')"
        )
    return f"{hours:02d}:{minutes:02d}"


ClockTime = Annotated[
    str,
    BeforeValidator(_clock_time),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(([01]?[0-9]|2[0-3]):[0-5][0-9]|24:00)$",
            "description": "A time of day on the wall clock of the schedule's time zone, 24-hour "
            "HH:MM; 24:00 (as 'to' only) is the end of the day.",
        }
    ),
]


class ChangeWindow(Model):
    """A weekly window in which due advances may happen. A window whose 'to' is earlier than its
    'from' runs across midnight and belongs to the day it starts."""

    days: list[DayName] = Field(min_length=1, description="Days the window starts on: mon … sun.")
    opens: ClockTime = Field(alias="from", description="When the window opens (HH:MM, local time).")
    closes: ClockTime = Field(
        alias="to", description="When it closes (HH:MM, local time; not part of the window; 24:00 allowed)."
    )


class Freeze(Model):
    """Dates on which no advance happens, both days included (local dates of the schedule's zone)."""

    first_day: date = Field(alias="from", description="The first frozen date.")
    last_day: date = Field(alias="to", description="The last frozen date (included).")
    reason: str = Field("", description="Why: shown in every decision the freeze holds.")


class Schedule(Model):
    """When due advances may happen. Outside every window, or inside a freeze, a due move that would
    change exposure waits; guardrails stay armed. Not part of the revision."""

    timezone: NonEmptyText | None = Field(
        None,
        description="IANA time zone of the windows and freeze dates, e.g. Europe/Berlin; required with "
        "windows (a freeze alone is judged in UTC without it).",
    )
    windows: list[ChangeWindow] | None = Field(
        None, min_length=1, description="Advances happen only inside one of these (their union)."
    )
    freeze: list[Freeze] | None = Field(
        None, description="Date ranges with no advance, whatever the windows say."
    )


class Alert(Model):
    """A Prometheus alert as a signal: while an alert matching the selector fires (``ALERTS`` with
    ``alertstate="firing"``), the rollout holds, or rolls back. Not part of the revision."""

    name: NonEmptyText = Field(description="Names this signal in records, status and explain.")
    selector: NonEmptyText = Field(
        description='Label matchers of the ALERTS series, e.g. \'{service="checkout", '
        'severity="page"}\'; flagroll adds alertstate="firing". \'{}\' matches every firing alert.'
    )
    on_firing: Literal["hold", "rollback"] = Field(
        "hold", description="While any matching alert fires: hold (no move raises exposure) or roll back."
    )


class Spec(Model):
    owner: NonEmptyText = Field(description="Who can say stop.")
    aim: NonEmptyText = Field(description="The outcome sought, with numbers.")
    mechanism: str | None = Field(None, description="We believe X moves Y because Z.")
    review: date | None = Field(None, description="A partial rollout past this date is stale.")
    flag: FlagRef
    segment: dict[str, JsonValue] | None = Field(
        None, description="JSONLogic rule; users outside it always get 'off'."
    )
    control: StrictBool = Field(True, description="Hold out an equal-size control arm.")
    max_percent: Number | None = Field(None, gt=0, le=100, description="Rollout limit.")
    interval_seconds: Seconds = Field(
        "30s",  # validated into seconds; the schema shows it as written
        alias="interval",
        validate_default=True,
        description="How often checks run.",
    )
    steps: list[Step] = Field(min_length=1)
    traffic: Traffic | None = None
    guardrails: list[Guardrail] = Field(min_length=1)
    statistics: Statistics | None = Field(
        None, description="Settings of errorRatio and latency guardrails and the sample-ratio check."
    )
    checkpoint: Checkpoint | None = None
    on_no_data: Literal["hold", "rollback"] = "hold"
    on_error: Literal["hold", "rollback"] = "hold"
    schedule: Schedule | None = Field(
        None,
        description="Change windows and freeze dates: when due advances may happen (not part of the "
        "revision).",
    )
    alerts: list[Alert] | None = Field(
        None,
        description="Prometheus alerts as signals: while one fires, the rollout holds or rolls back "
        "(not part of the revision).",
    )
    on_delete: Literal["leave", "rollback"] | None = Field(
        None,  # None means leave; None keeps the revision of policies written before the field
        alias="onDelete",
        description="When the policy is deleted: leave the flag as it is (default; reported as without "
        "a policy) or roll it back to 0 %.",
    )


class Metadata(Model):
    name: str
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Policy(Model):
    """One ``kind: RolloutPolicy`` document."""

    api_version: Literal["flagroll/v1"]
    kind: Literal["RolloutPolicy"]
    metadata: Metadata
    spec: Spec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def flag_key(self) -> str:
        return self.spec.flag.key

    @cached_property
    def revision(self) -> str:
        """Computed once: a policy is frozen, and the loop asks for it every cycle."""
        return revision_of(self)

    @cached_property
    def legacy_revision(self) -> str:
        """The revision as flagroll computed it before administrative fields left it (a hash of the
        whole policy): flag files written then carry it, and it names the same revision."""
        return legacy_revision_of(self)

    def is_revision(self, revision: str, *, owner: str = "", review: date | None = None) -> bool:
        """Whether a stored ``revision`` names this policy's revision (either way of computing it).
        ``owner`` and ``review`` are those the flag recorded beside it: a revision computed the old way
        hashed them too, so it is still recognised after an edit of the owner or review date alone
        (not after one of the aim, mechanism, labels or annotations: the flag does not record them)."""
        if revision in (self.revision, self.legacy_revision):
            return True
        if not owner or (owner, review) == (self.spec.owner, self.spec.review):
            return False
        return revision == legacy_revision_of(self, recorded=(owner, review))

    def step_percent(self, index: int) -> float:
        return self.spec.steps[index].percent

    def template_references(self) -> list[tuple[Path, str]]:
        """Every MetricTemplate the policy names, with the path of the field that names it."""
        spec = self.spec
        found: list[tuple[Path, str]] = []
        if spec.traffic is not None and spec.traffic.template is not None:
            found.append((("spec", "traffic", "template"), spec.traffic.template))
        for i, guardrail in enumerate(spec.guardrails):
            if guardrail.template is not None:
                found.append((("spec", "guardrails", i, "template"), guardrail.template))
        for i, expectation in enumerate(spec.checkpoint.expect if spec.checkpoint else []):
            if expectation.template is not None:
                found.append((("spec", "checkpoint", "expect", i, "template"), expectation.template))
        return found

    def guardrail(self, name: str) -> Guardrail | None:
        return next((g for g in self.spec.guardrails if g.name == name), None)

    @property
    def statistics(self) -> Statistics:
        """The statistics settings, defaults filled in."""
        return self.spec.statistics or _DEFAULT_STATISTICS

    @property
    def comparisons(self) -> int:
        """How many sequential rules share the false-rollback budget (shadow guardrails take none)."""
        return sum(1 for g in self.spec.guardrails if g.sequential and not g.dry_run for _ in g.rules())

    def comparison_alpha(self, guardrail: Guardrail) -> float:
        """A sequential rule's share of ``statistics.alpha``: a weighted Bonferroni split (every rule
        of a guardrail gets its ``alphaWeight``, 1 by default), so the shares add up to the budget."""
        acting = [g for g in self.spec.guardrails if g.sequential and not g.dry_run]
        total = sum(g.alpha_weight or 1.0 for g in acting for _ in g.rules())
        if guardrail.dry_run:  # judged at the share it would get if it acted; takes none from the others
            total += sum(guardrail.alpha_weight or 1.0 for _ in guardrail.rules())
        return self.statistics.alpha * (guardrail.alpha_weight or 1.0) / (total or 1.0)


_DEFAULT_STATISTICS = Statistics.model_validate({})


# Fields that tell people about a rollout and change neither what is exposed nor how it is judged,
# as (section, field) of the YAML: an edit of these alone is not a new revision. Every other field
# counts (``metadata.name`` too: it is the judge's identity, and a rename is a hand-over).
ADMINISTRATIVE_FIELDS: tuple[tuple[str, str], ...] = (
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("spec", "owner"),
    ("spec", "aim"),
    ("spec", "mechanism"),
    ("spec", "review"),
    ("spec", "schedule"),  # when moves may happen, not what is exposed or how it is judged
    ("spec", "alerts"),  # operational signals (someone is paged): like the schedule, when moves may happen
)


# Fields of each step that, like the administrative fields, say how the process runs and not what is
# exposed or judged: ``approval`` (a human signs off the next move).
STEP_ADMINISTRATIVE_FIELDS = ("approval",)


def _without_step_administration(document: dict[str, Any]) -> dict[str, Any]:
    for step in document["spec"].get("steps", []):
        for name in STEP_ADMINISTRATIVE_FIELDS:
            step.pop(name, None)
    return document


def _hash(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def revision_of(policy: Policy) -> str:
    """A short hash of what the policy exposes and how it judges: comments, key order and the
    :data:`ADMINISTRATIVE_FIELDS` do not change it."""
    document = _without_step_administration(policy.model_dump(mode="json", exclude_none=True))
    for section, name in ADMINISTRATIVE_FIELDS:
        document[section].pop(name, None)
    return _hash(document)


def legacy_revision_of(policy: Policy, *, recorded: tuple[str, date | None] | None = None) -> str:
    """The hash of the whole policy, administrative fields included: the revision before they left
    it. Kept so that flags written then are not taken for a new revision (see :meth:`Policy.is_revision`).
    ``recorded``: the owner and review date to hash instead of the policy's (those a flag recorded)."""
    document = _without_step_administration(policy.model_dump(mode="json", exclude_none=True))
    if recorded is not None:
        owner, review = recorded
        document["spec"]["owner"] = owner
        document["spec"].pop("review", None)
        if review is not None:
            document["spec"]["review"] = review.isoformat()
    return _hash(document)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document, for editors and CI."""
    schema = Policy.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flagroll RolloutPolicy"
    return schema


def placeholders(query: str) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER_PATTERN.finditer(query)]


def pct(value: float) -> str:
    """A percentage for messages: ``5``, ``0.5``, ``12.25`` (no trailing ``.0``)."""
    return f"{value:g}"
