"""The rules of a policy that relate several fields, each a small function named after what it checks.

Shape (types, required fields, unknown fields) is checked by pydantic when a policy is built
(:mod:`controller.core.policy`). The rules here check what the shape cannot: steps rise and stay under
``maxPercent``, holds cover the interval, relative bounds need a control arm, an expectation names a
guardrail… Each finding carries the path of the field at fault so that the file loader can point at its
line. :func:`semantic_issues` runs :data:`RULES` in order, and that order is the order in which
``flagroll validate`` lists the findings. A rule of one step, guardrail or expectation takes its index;
its runner applies the item's rules item by item, so that the findings about one item stay together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from controller.core.alertrules import alerts_are_sound
from controller.core.durations import format_duration
from controller.core.policy import (
    FLAG_KEY_PATTERN,
    NAME_PATTERN,
    SEQUENTIAL_RULES,
    Expectation,
    Guardrail,
    Path,
    Policy,
    pct,
)
from controller.core.querytext import (
    Finding,
    Findings,
    bounds_problems,
    error,
    query_problems,
    selector_problems,
    warning,
)
from controller.core.schedulerules import schedule_is_sound
from controller.core.selectors import metric_name

Rule = Callable[[Policy], Findings]
ItemRule = Callable[[Policy, int], Findings]  # a rule of one step, guardrail or expectation, by index

PERCENT_RESOLUTION = 0.01  # flagd weights are integers; one weight unit is 0.01 %
# The least traffic (requests per second, in the whole segment) that first_step_can_gather_min_samples
# assumes a rollout gets: a policy states no traffic figure, so only a need above this is warned.
ASSUMED_REQUESTS_PER_SECOND = 1.0
MAX_INCREASE = 1000.0  # an errorRatio/latency guardrail's largest maxIncrease

_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


# --- the policy as a whole ---------------------------------------------------------------------------


def name_is_valid(policy: Policy) -> Findings:
    """metadata.name is lower-case letters, digits, '-' and '.', starting and ending alphanumeric."""
    if not NAME_PATTERN.match(policy.metadata.name):
        yield error(
            ("metadata", "name"),
            f"{policy.metadata.name!r} is not a valid name: use lower-case letters, digits, "
            "'-' and '.', starting and ending with a letter or digit",
        )


def flag_key_is_valid(policy: Policy) -> Findings:
    """The flag key is letters, digits, '_', '-' and '.', starting and ending alphanumeric."""
    key = policy.spec.flag.key
    if not FLAG_KEY_PATTERN.match(key):
        yield error(
            ("spec", "flag", "key"),
            f"{key!r} is not a valid flag key: use letters, digits, '_', '-' and '.', "
            "starting and ending with a letter or digit",
        )


def variants_are_on_and_off(policy: Policy) -> Findings:
    """The flag's variants are exactly 'on' and 'off' ('control' is flagroll's to add)."""
    names = set(policy.spec.flag.variants)
    if names != {"on", "off"}:
        yield error(
            ("spec", "flag", "variants"),
            f"variants must be exactly 'on' (treatment) and 'off' (everyone else), got "
            f"{sorted(names)}; 'control' is added by flagroll and serves the 'off' value",
        )


def on_and_off_differ(policy: Policy) -> Findings:
    """'on' and 'off' serve different values (a warning: the rollout would change nothing)."""
    variants = policy.spec.flag.variants
    if set(variants) == {"on", "off"} and variants["on"] == variants["off"]:
        yield warning(("spec", "flag", "variants"), "'on' and 'off' serve the same value")


def segment_is_one_rule(policy: Policy) -> Findings:
    """A segment is one JSONLogic rule: a mapping with exactly one operator."""
    segment = policy.spec.segment
    if segment is not None and len(segment) != 1:
        yield error(
            ("spec", "segment"),
            "a segment is one JSONLogic rule: a mapping with exactly one operator, "
            'e.g. {"==": [{"var": "segment"}, "S"]}',
        )


def mechanism_is_given(policy: Policy) -> Findings:
    """The policy says why the change should work (a warning when it does not)."""
    if policy.spec.mechanism is None:
        yield warning(("spec",), "no 'mechanism': say why the change should move the aim's number")


def interval_is_at_least_a_second(policy: Policy) -> Findings:
    """Checks run at most once a second."""
    if policy.spec.interval_seconds < 1:
        yield error(("spec", "interval"), "the interval must be at least 1s")


def steps_are_sound(policy: Policy) -> Findings:
    """Every step, one after the other, by :data:`STEP_RULES`."""
    yield from _item_by_item(policy, len(policy.spec.steps), STEP_RULES)


def traffic_is_given(policy: Policy) -> Findings:
    """Query guardrails have a sample count (a warning: without one, a few requests can decide)."""
    spec = policy.spec
    if spec.traffic is None and not all(g.sequential for g in spec.guardrails):
        yield warning(
            ("spec",),
            "no 'traffic': checks have no sample count, so a handful of requests can trip or "
            "pass a guardrail; set traffic.query and traffic.minSamples",
        )


def traffic_is_well_formed(policy: Policy) -> Findings:
    """Traffic has one of query and template, and its query tells the arms apart by {{variant}}."""
    traffic = policy.spec.traffic
    if traffic is None:
        return
    if (traffic.query is None) == (traffic.template is None):
        yield error(("spec", "traffic"), "give exactly one of query and template")
    elif traffic.query is not None:
        yield from query_problems(("spec", "traffic", "query"), traffic.query, needs_variant=True)


def guardrails_can_roll_back(policy: Policy) -> Findings:
    """At least one guardrail acts: not every guardrail is dryRun."""
    guardrails = policy.spec.guardrails
    if guardrails and all(g.dry_run for g in guardrails):
        yield error(
            ("spec", "guardrails"),
            "every guardrail is dryRun: a rollout needs at least one guardrail that can roll it back",
        )


def guardrails_are_sound(policy: Policy) -> Findings:
    """Every guardrail, one after the other, by :data:`GUARDRAIL_RULES`."""
    yield from _item_by_item(policy, len(policy.spec.guardrails), GUARDRAIL_RULES)


def statistics_are_set(policy: Policy) -> Findings:
    """errorRatio and latency guardrails come with 'statistics' (a warning: defaults are assumed)."""
    spec = policy.spec
    if spec.statistics is None and any(g.sequential for g in spec.guardrails):
        yield warning(
            ("spec",),
            "errorRatio/latency guardrails without 'statistics': alpha 0.01 is assumed and the "
            "sample ratio is not checked; set statistics.exposure to the flag-evaluation counter",
        )


def exposure_is_sound(policy: Policy) -> Findings:
    """statistics.exposure needs a control arm and is a counter selector with {{variant}}."""
    stats = policy.spec.statistics
    if stats is None or stats.exposure is None:
        return
    path: Path = ("spec", "statistics", "exposure")
    if not policy.spec.control:
        yield error(path, "the sample-ratio check needs a control arm; set control: true")
    yield from selector_problems(path, stats.exposure, "exposure")


def sample_ratio_is_checked(policy: Policy) -> Findings:
    """With errorRatio or latency guardrails, statistics sets an exposure (a warning otherwise)."""
    spec = policy.spec
    stats = spec.statistics
    if stats is not None and stats.exposure is None and any(g.sequential for g in spec.guardrails):
        yield warning(
            ("spec", "statistics"),
            "no exposure: the sample ratio is not checked, so a broken assignment or metric "
            "pipeline can go unnoticed; set exposure to the flag-evaluation counter",
        )


def statistics_have_an_effect(policy: Policy) -> Findings:
    """'statistics' is there for a sequential guardrail or an exposure (a warning otherwise)."""
    spec = policy.spec
    stats = spec.statistics
    if stats is not None and stats.exposure is None and not any(g.sequential for g in spec.guardrails):
        yield warning(
            ("spec", "statistics"),
            "no errorRatio or latency guardrail and no exposure: statistics has no effect",
        )


def first_step_can_gather_min_samples(policy: Policy) -> Findings:
    """With onNoData: rollback, the first step plausibly gathers minSamples within one interval (a
    warning otherwise). The first check after the rollout starts comes one interval later, when each
    arm has had at most one interval of traffic at the first step's percentage; below minSamples that
    check is no_data, and onNoData: rollback rolls the rollout back at once. A policy states no traffic
    figure, so the rule assumes as little as :data:`ASSUMED_REQUESTS_PER_SECOND` from the segment."""
    spec = policy.spec
    needed = _most_samples_needed(policy)
    if spec.on_no_data != "rollback" or needed is None:
        return
    samples, need = needed
    interval = spec.interval_seconds
    first = spec.steps[0].percent
    rate = samples / (interval * first / 100)
    if rate <= ASSUMED_REQUESTS_PER_SECOND:
        return
    yield warning(
        ("spec", "onNoData"),
        f"onNoData is rollback and {need}: the first check after the rollout starts "
        f"comes one interval ({format_duration(interval)}) later, when each arm has had at most "
        f"{format_duration(interval)} of traffic at {pct(first)} %; to count {samples} samples by then "
        f"the segment must serve at least {rate:.3g} requests per second, or that check is no_data and "
        "rolls the rollout back at once. The policy states no traffic figure, so this is warned "
        f"whenever it needs more than {ASSUMED_REQUESTS_PER_SECOND:g} request per second; use "
        "onNoData: hold (too few samples then holds the rollout until they come), or a larger first "
        "step, a longer interval or a lower minSamples",
    )


def _most_samples_needed(policy: Policy) -> tuple[int, str] | None:
    """The largest sample count an acting check needs per arm before it is judged, and what sets it:
    traffic.minSamples, or an errorRatio/latency guardrail's own (at least 1 request)."""
    spec = policy.spec
    traffic = spec.traffic.min_samples if spec.traffic is not None else 0
    found: list[tuple[int, str]] = []
    if traffic > 0:
        found.append((traffic, f"traffic.minSamples is {traffic}"))
    for index, guardrail in enumerate(spec.guardrails):
        if not guardrail.sequential or guardrail.dry_run:
            continue
        own = guardrail.min_samples
        if own:
            found.append((own, f"guardrails[{index}].minSamples is {own}"))
        elif own is None and traffic > 0:
            found.append((traffic, f"traffic.minSamples is {traffic}"))
        else:  # a comparison needs one request per arm at the least
            found.append((1, f"guardrail {guardrail.name!r} needs 1 request per arm"))
    return max(found, key=lambda need: need[0], default=None)  # the first of equals


def promotion_stays_within_max_percent(policy: Policy) -> Findings:
    """A checkpoint that promotes (to 100 %) is allowed only without a lower maxPercent."""
    spec = policy.spec
    if (
        spec.checkpoint is not None
        and spec.checkpoint.on_pass == "promote"
        and (spec.max_percent or 100.0) < 100.0
    ):
        yield error(
            ("spec", "checkpoint", "onPass"),
            f"promote sets the flag to 100 %, above maxPercent {pct(spec.max_percent or 100)} %",
        )


def checkpoint_expectations_resolve(policy: Policy) -> Findings:
    """Every checkpoint expectation, one after the other, by :data:`EXPECTATION_RULES`."""
    checkpoint = policy.spec.checkpoint
    if checkpoint is not None:
        yield from _item_by_item(policy, len(checkpoint.expect), EXPECTATION_RULES)


# --- steps -------------------------------------------------------------------------------------------


def _step_path(index: int) -> Path:
    return ("spec", "steps", index)


def step_fits_a_weight(policy: Policy, index: int) -> Findings:
    """A step's percent is a whole number of flagd weight units (0.01 %)."""
    percent = policy.spec.steps[index].percent
    if not _is_multiple(percent, PERCENT_RESOLUTION):
        yield error((*_step_path(index), "percent"), f"{pct(percent)} is finer than 0.01 %")


def step_rises(policy: Policy, index: int) -> Findings:
    """A step's percent is above the previous step's (above 0 for the first)."""
    percent = policy.spec.steps[index].percent
    previous = policy.spec.steps[index - 1].percent if index > 0 else 0.0
    if percent <= previous:
        yield error(
            (*_step_path(index), "percent"),
            f"{pct(percent)} % does not rise above the previous step ({pct(previous)} %)",
        )


def step_stays_within_limits(policy: Policy, index: int) -> Findings:
    """A step's percent is at most maxPercent, and at most 50 % beside an equal control arm."""
    spec = policy.spec
    percent = spec.steps[index].percent
    if spec.max_percent is not None and percent > spec.max_percent:
        yield error(
            (*_step_path(index), "percent"),
            f"{pct(percent)} % is above maxPercent {pct(spec.max_percent)} % (the rollout limit)",
        )
    elif percent > (50.0 if spec.control else 100.0):
        yield error(
            (*_step_path(index), "percent"),
            f"{pct(percent)} % is above 50 %: with an equal control arm, treatment and control "
            "together cannot exceed 100 % (set control: false to ramp further)",
        )


def hold_covers_the_interval(policy: Policy, index: int) -> Findings:
    """A step holds at least one interval, so that it cannot advance unchecked."""
    spec = policy.spec
    hold = spec.steps[index].hold_seconds
    if hold < spec.interval_seconds:
        yield error(
            (*_step_path(index), "hold"),
            f"hold {format_duration(hold)} is shorter than the interval "
            f"{format_duration(spec.interval_seconds)}: the step could advance unchecked",
        )


# --- guardrails --------------------------------------------------------------------------------------


def _guardrail_path(index: int) -> Path:
    return ("spec", "guardrails", index)


def _sources(guardrail: Guardrail) -> list[str]:
    """The sources a guardrail gives, by their YAML names: exactly one is valid."""
    given = (
        ("query", guardrail.query),
        ("template", guardrail.template),
        ("errorRatio", guardrail.error_ratio),
        ("latency", guardrail.latency),
    )
    return [name for name, value in given if value is not None]


def _judged_by_bounds(guardrail: Guardrail) -> bool:
    """A guardrail with one source, a query or a template: judged against its bounds."""
    return len(_sources(guardrail)) == 1 and not guardrail.sequential


def _judged_sequentially(guardrail: Guardrail) -> bool:
    """A guardrail with one source, errorRatio or latency: judged with a confidence sequence."""
    return len(_sources(guardrail)) == 1 and guardrail.sequential


def guardrail_name_is_unique(policy: Policy, index: int) -> Findings:
    """No earlier guardrail has this guardrail's name."""
    guardrails = policy.spec.guardrails
    name = guardrails[index].name
    first = next(i for i, g in enumerate(guardrails) if g.name == name)
    if first < index:
        yield error(
            (*_guardrail_path(index), "name"),
            f"duplicate guardrail name {name!r} (also at guardrails[{first}])",
        )


def guardrail_has_one_source(policy: Policy, index: int) -> Findings:
    """A guardrail gives exactly one of query, template, errorRatio and latency."""
    given = _sources(policy.spec.guardrails[index])
    if len(given) != 1:
        path = _guardrail_path(index)
        yield error(
            path if not given else (*path, given[1]),
            "give exactly one of query or template (judged against its bounds), errorRatio or latency "
            "(judged treatment vs control with a confidence sequence)"
            + (f", not {' and '.join(given)}" if given else ""),
        )


def query_guardrail_has_no_min_samples(policy: Policy, index: int) -> Findings:
    """minSamples belongs to errorRatio and latency guardrails; query ones use traffic.minSamples."""
    guardrail = policy.spec.guardrails[index]
    if _judged_by_bounds(guardrail) and guardrail.min_samples is not None:
        yield error(
            (*_guardrail_path(index), "minSamples"),
            "minSamples on a guardrail applies to errorRatio and latency guardrails; "
            "a query guardrail uses traffic.minSamples",
        )


def query_guardrail_has_no_alpha_weight(policy: Policy, index: int) -> Findings:
    """alphaWeight belongs to errorRatio and latency guardrails: a query one has no alpha to split."""
    guardrail = policy.spec.guardrails[index]
    if _judged_by_bounds(guardrail) and guardrail.alpha_weight is not None:
        yield error(
            (*_guardrail_path(index), "alphaWeight"),
            "alphaWeight splits statistics.alpha between errorRatio and latency guardrails; "
            "a query guardrail has no false-rollback budget",
        )


def query_guardrail_bounds_are_sound(policy: Policy, index: int) -> Findings:
    """A query guardrail's bounds are set and consistent, and its query fits them."""
    guardrail = policy.spec.guardrails[index]
    if _judged_by_bounds(guardrail):
        yield from bounds_problems(_guardrail_path(index), guardrail, guardrail.query, policy.spec.control)


def sequential_guardrail_has_control(policy: Policy, index: int) -> Findings:
    """An errorRatio or latency guardrail compares with the control arm, so it needs one."""
    guardrail = policy.spec.guardrails[index]
    if _judged_sequentially(guardrail) and not policy.spec.control:
        kind = guardrail.kind
        yield error(
            (*_guardrail_path(index), kind),
            f"{kind} compares the treatment arm with the control arm; set control: true",
        )


def sequential_guardrail_bounds_apply(policy: Policy, index: int) -> Findings:
    """An errorRatio or latency guardrail's bounds are maxDelta or maxIncrease only."""
    guardrail = policy.spec.guardrails[index]
    if not _judged_sequentially(guardrail):
        return
    kind = guardrail.kind
    for rule, _ in guardrail.rules():
        if rule not in SEQUENTIAL_RULES:
            yield error(
                (*_guardrail_path(index), rule),
                f"{rule} does not apply to {_a(kind)} guardrail, which compares the share of bad "
                "requests with the control arm: use maxDelta (tolerated rise of the share, e.g. "
                "0.002) or maxIncrease (tolerated relative rise, e.g. 0.1)",
            )


def sequential_guardrail_has_a_bound(policy: Policy, index: int) -> Findings:
    """An errorRatio or latency guardrail sets at least one bound."""
    guardrail = policy.spec.guardrails[index]
    if _judged_sequentially(guardrail) and next(guardrail.rules(), None) is None:
        yield error(
            _guardrail_path(index),
            f"no bound set: {_a(guardrail.kind)} guardrail needs maxDelta (tolerated rise of the share, "
            "e.g. 0.002; 0 tolerates none) or maxIncrease (tolerated relative rise, e.g. 0.1)",
        )


def max_delta_is_a_share(policy: Policy, index: int) -> Findings:
    """An errorRatio or latency guardrail's maxDelta is a share: at least 0, below 1."""
    guardrail = policy.spec.guardrails[index]
    delta = guardrail.max_delta
    if _judged_sequentially(guardrail) and delta is not None and not 0 <= delta < 1:
        yield error(
            (*_guardrail_path(index), "maxDelta"), f"maxDelta is a share between 0 and 1, got {delta}"
        )


def max_increase_is_bounded(policy: Policy, index: int) -> Findings:
    """An errorRatio or latency guardrail's maxIncrease is at most 1000: a larger one bounds nothing
    (the treatment may be over a thousand times worse) and its square overflows the arithmetic."""
    guardrail = policy.spec.guardrails[index]
    increase = guardrail.max_increase
    if _judged_sequentially(guardrail) and increase is not None and increase > MAX_INCREASE:
        yield error(
            (*_guardrail_path(index), "maxIncrease"),
            f"maxIncrease is at most {MAX_INCREASE:g} on {_a(guardrail.kind)} guardrail "
            f"(treatment ≤ control × {MAX_INCREASE + 1:g}), got {increase:g}",
        )


def error_ratio_selectors_are_sound(policy: Policy, index: int) -> Findings:
    """errorRatio's errors and requests are two different counter selectors with {{variant}}."""
    guardrail = policy.spec.guardrails[index]
    ratio = guardrail.error_ratio
    if ratio is None or not _judged_sequentially(guardrail):
        return
    path: Path = (*_guardrail_path(index), guardrail.kind)
    yield from selector_problems((*path, "errors"), ratio.errors, "errors")
    yield from selector_problems((*path, "requests"), ratio.requests, "requests")
    if ratio.errors == ratio.requests:
        yield error((*path, "errors"), "errors and requests are the same selector")


def latency_histogram_is_sound(policy: Policy, index: int) -> Findings:
    """latency names a histogram by its base name, with {{variant}}, and a bound above 0."""
    guardrail = policy.spec.guardrails[index]
    latency = guardrail.latency
    if latency is None or not _judged_sequentially(guardrail):
        return
    path: Path = (*_guardrail_path(index), guardrail.kind)
    yield from selector_problems((*path, "histogram"), latency.histogram, "histogram")
    name = metric_name(latency.histogram) or ""
    if name.endswith(_HISTOGRAM_SUFFIXES):
        base = name.rsplit("_", 1)[0]
        yield error(
            (*path, "histogram"),
            f"give the histogram's base name ({base}): flagroll reads {base}_bucket and {base}_count",
        )
    if latency.slower_than_seconds <= 0:
        yield error((*path, "slowerThan"), "the latency bound must be above 0")


# --- checkpoint expectations -------------------------------------------------------------------------


def _expectation(policy: Policy, index: int) -> Expectation:
    checkpoint = policy.spec.checkpoint
    assert checkpoint is not None, "expectation rules run only on a policy with a checkpoint"
    return checkpoint.expect[index]


def _expectation_path(index: int) -> Path:
    return ("spec", "checkpoint", "expect", index)


def expectation_name_is_unique(policy: Policy, index: int) -> Findings:
    """No earlier expectation has this expectation's name: the answers of a checkpoint are stored
    and looked up by name, so two of one name would both be judged on one query."""
    checkpoint = policy.spec.checkpoint
    assert checkpoint is not None, "expectation rules run only on a policy with a checkpoint"
    name = checkpoint.expect[index].name
    first = next(i for i, e in enumerate(checkpoint.expect) if e.name == name)
    if first < index:
        yield error(
            (*_expectation_path(index), "name"),
            f"duplicate expectation name {name!r} (also at checkpoint.expect[{first}]): both would be "
            "judged on one query; give each expectation its own name, or put the bounds of both in one",
        )


def expectation_with_its_own_query_has_its_own_name(policy: Policy, index: int) -> Findings:
    """An expectation with its own query or template does not take a guardrail's name (a warning):
    its own query is judged, yet a reader of the policy or of a decision record would take it for
    the guardrail's."""
    expectation = _expectation(policy, index)
    if expectation.query is None and expectation.template is None:
        return
    if policy.guardrail(expectation.name) is not None:
        own = "query" if expectation.query is not None else "template"
        yield warning(
            (*_expectation_path(index), "name"),
            f"{expectation.name!r} is also a guardrail's name, but this expectation has its own "
            f"{own}, which is judged instead of the guardrail's; give it a name of its own, or "
            f"leave out its {own} to judge the guardrail's query",
        )


def expectation_has_one_source(policy: Policy, index: int) -> Findings:
    """An expectation gives a query or a template, not both."""
    expectation = _expectation(policy, index)
    if expectation.query is not None and expectation.template is not None:
        yield error((*_expectation_path(index), "template"), "give query or template, not both")


def expectation_names_a_query_guardrail(policy: Policy, index: int) -> Findings:
    """An expectation without its own query names a guardrail judged by a query."""
    expectation = _expectation(policy, index)
    if expectation.query is not None or expectation.template is not None:
        return
    referenced = policy.guardrail(expectation.name)
    if referenced is None:
        names = sorted({g.name for g in policy.spec.guardrails})
        yield error(
            (*_expectation_path(index), "name"),
            f"{expectation.name!r} is not a guardrail's name; name one of "
            f"{names} or give this expectation its own query",
        )
    elif referenced.sequential:
        yield error(
            (*_expectation_path(index), "name"),
            f"{expectation.name!r} is {_a(referenced.kind)} guardrail, judged with a "
            "confidence sequence; give this expectation its own query",
        )


def expectation_bounds_are_sound(policy: Policy, index: int) -> Findings:
    """An expectation's bounds are set and consistent, and its query (or its guardrail's) fits them."""
    expectation = _expectation(policy, index)
    query = expectation.query
    if query is not None and expectation.template is not None:
        return  # expectation_has_one_source
    if query is None and expectation.template is None:
        referenced = policy.guardrail(expectation.name)
        if referenced is None or referenced.sequential:
            return  # expectation_names_a_query_guardrail
        query = referenced.query
    yield from bounds_problems(_expectation_path(index), expectation, query, policy.spec.control)


# --- the rules, in the order of their findings --------------------------------------------------------

STEP_RULES: tuple[ItemRule, ...] = (
    step_fits_a_weight,
    step_rises,
    step_stays_within_limits,
    hold_covers_the_interval,
)

GUARDRAIL_RULES: tuple[ItemRule, ...] = (
    guardrail_name_is_unique,
    guardrail_has_one_source,
    query_guardrail_has_no_min_samples,
    query_guardrail_has_no_alpha_weight,
    query_guardrail_bounds_are_sound,
    sequential_guardrail_has_control,
    sequential_guardrail_bounds_apply,
    sequential_guardrail_has_a_bound,
    max_delta_is_a_share,
    max_increase_is_bounded,
    error_ratio_selectors_are_sound,
    latency_histogram_is_sound,
)

EXPECTATION_RULES: tuple[ItemRule, ...] = (
    expectation_name_is_unique,
    expectation_has_one_source,
    expectation_with_its_own_query_has_its_own_name,
    expectation_names_a_query_guardrail,
    expectation_bounds_are_sound,
)

RULES: tuple[Rule, ...] = (
    name_is_valid,
    flag_key_is_valid,
    variants_are_on_and_off,
    on_and_off_differ,
    segment_is_one_rule,
    mechanism_is_given,
    interval_is_at_least_a_second,
    steps_are_sound,
    traffic_is_given,
    traffic_is_well_formed,
    guardrails_can_roll_back,
    guardrails_are_sound,
    statistics_are_set,
    exposure_is_sound,
    sample_ratio_is_checked,
    statistics_have_an_effect,
    first_step_can_gather_min_samples,
    promotion_stays_within_max_percent,
    checkpoint_expectations_resolve,
    schedule_is_sound,
    alerts_are_sound,
)


def semantic_issues(policy: Policy) -> list[Finding]:
    """Rules across fields. Returns (path, message, severity) with severity 'error' or 'warning'."""
    return [finding for rule in RULES for finding in rule(policy)]


def _item_by_item(policy: Policy, count: int, rules: Sequence[ItemRule]) -> Findings:
    for index in range(count):
        for rule in rules:
            yield from rule(policy, index)


# --- shared by several rules -------------------------------------------------------------------------


def _a(word: str) -> str:
    """``word`` with its indefinite article, by its first letter: "an errorRatio", "a latency"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _is_multiple(value: float, step: float) -> bool:
    return math.isclose(round(value / step) * step, value, rel_tol=0, abs_tol=1e-9)
