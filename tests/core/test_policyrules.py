"""Each named policy rule on its own: quiet on a sound policy, and its own finding on the fault it checks.

``test_policy_semantics.py`` checks the rules through the file loader (lines, fields, messages); here each
rule is called directly, so a finding is known to come from the rule that is named.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest

from controller.core import alertrules, policyrules, schedulerules
from controller.core.policy import Policy
from controller.core.policyrules import (
    EXPECTATION_RULES,
    GUARDRAIL_RULES,
    RULES,
    STEP_RULES,
    ItemRule,
    Rule,
    semantic_issues,
)
from controller.core.querytext import Finding

SOUND: dict[str, Any] = {
    "apiVersion": "flagroll/v1",
    "kind": "RolloutPolicy",
    "metadata": {"name": "demo"},
    "spec": {
        "owner": "sre-lead",
        "aim": "Cut p95 from 450ms to 250ms.",
        "mechanism": "A cache removes repeated I/O.",
        "flag": {"key": "demo"},
        "interval": "30s",
        "steps": [{"percent": 1, "hold": "5m"}, {"percent": 5, "hold": "10m"}],
        "traffic": {"query": 'sum(requests_total{v="{{variant}}"})', "minSamples": 100},
        "guardrails": [
            {"name": "errors", "query": 'sum(errors_total{v="{{variant}}"})', "max": 0.01},
            {
                "name": "error-ratio",
                "errorRatio": {
                    "errors": 'http_requests_total{code=~"5..",v="{{variant}}"}',
                    "requests": 'http_requests_total{v="{{variant}}"}',
                },
                "maxDelta": 0.002,
            },
            {
                "name": "slow",
                "latency": {"histogram": 'http_duration_seconds{v="{{variant}}"}', "slowerThan": "300ms"},
                "maxIncrease": 0.1,
            },
        ],
        "statistics": {"exposure": 'flag_evaluations_total{f="{{flag}}",v="{{variant}}"}'},
        "checkpoint": {
            "expect": [
                {"name": "errors", "max": 0.02},
                {"name": "conversion", "query": 'sum(orders{v="{{variant}}"})', "minIncrease": 0.01},
            ]
        },
    },
}

Edit = Callable[[dict[str, Any]], object]


def policy(*edits: Edit) -> Policy:
    """The sound policy with each edit applied to (a copy of) its data."""
    data = copy.deepcopy(SOUND)
    for change in edits:
        change(data["spec"])
    return Policy.model_validate(data)


def found(rule: Rule, target: Policy) -> list[Finding]:
    return list(rule(target))


def found_at(rule: ItemRule, target: Policy, index: int) -> list[Finding]:
    return list(rule(target, index))


def item_count(rule: ItemRule, target: Policy) -> int:
    """How many items (steps, guardrails, expectations) ``rule`` applies to in ``target``."""
    spec = target.spec
    if rule in STEP_RULES:
        return len(spec.steps)
    if rule in GUARDRAIL_RULES:
        return len(spec.guardrails)
    assert rule in EXPECTATION_RULES
    return len(spec.checkpoint.expect) if spec.checkpoint else 0


def test_the_sound_policy_has_no_findings() -> None:
    assert semantic_issues(policy()) == []


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_every_policy_rule_is_quiet_on_the_sound_policy(rule: Rule) -> None:
    assert found(rule, policy()) == []


@pytest.mark.parametrize(
    "rule", [*STEP_RULES, *GUARDRAIL_RULES, *EXPECTATION_RULES], ids=lambda rule: rule.__name__
)
def test_every_item_rule_is_quiet_on_the_sound_policy(rule: ItemRule) -> None:
    target = policy()
    assert item_count(rule, target) >= 2
    for index in range(item_count(rule, target)):
        assert found_at(rule, target, index) == []


def test_every_public_rule_is_listed_once() -> None:
    listed = [*RULES, *STEP_RULES, *GUARDRAIL_RULES, *EXPECTATION_RULES]
    assert len(listed) == len(set(listed))
    runners = {"semantic_issues", "error", "warning"}
    defined = {
        name
        for module in (policyrules, schedulerules, alertrules)
        for name, value in inspect.getmembers(module, inspect.isfunction)
        if value.__module__ == module.__name__ and not name.startswith("_") and name not in runners
    }
    assert defined == {rule.__name__ for rule in listed}


def set_(key: str, value: Any) -> Edit:
    return lambda spec: spec.__setitem__(key, value)


def both(*edits: Edit) -> Edit:
    return lambda spec: [change(spec) for change in edits]


def guardrail(index: int, **fields: Any) -> Edit:
    """Set (or, with None, remove) fields of guardrail ``index``."""

    def change(spec: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is None:
                spec["guardrails"][index].pop(key, None)
            else:
                spec["guardrails"][index][key] = value

    return change


def expectation(index: int, **fields: Any) -> Edit:
    def change(spec: dict[str, Any]) -> None:
        spec["checkpoint"]["expect"][index].update(fields)

    return change


def test_name_is_valid() -> None:
    data = copy.deepcopy(SOUND)
    data["metadata"]["name"] = "Bad_Name"
    [(path, message, severity)] = found(policyrules.name_is_valid, Policy.model_validate(data))
    assert (path, severity) == (("metadata", "name"), "error")
    assert "'Bad_Name' is not a valid name" in message


POLICY_RULE_CASES = [
    pytest.param(
        policyrules.flag_key_is_valid,
        lambda s: s["flag"].update(key="bad key!"),
        ("spec", "flag", "key"),
        "error",
        "'bad key!' is not a valid flag key",
        id="flag_key_is_valid",
    ),
    pytest.param(
        policyrules.variants_are_on_and_off,
        lambda s: s["flag"].update(variants={"yes": 1, "no": 0}),
        ("spec", "flag", "variants"),
        "error",
        "got ['no', 'yes']",
        id="variants_are_on_and_off",
    ),
    pytest.param(
        policyrules.on_and_off_differ,
        lambda s: s["flag"].update(variants={"on": 1, "off": 1}),
        ("spec", "flag", "variants"),
        "warning",
        "'on' and 'off' serve the same value",
        id="on_and_off_differ",
    ),
    pytest.param(
        policyrules.segment_is_one_rule,
        set_("segment", {"==": [1, 1], "in": [1, [1]]}),
        ("spec", "segment"),
        "error",
        "exactly one operator",
        id="segment_is_one_rule",
    ),
    pytest.param(
        policyrules.mechanism_is_given,
        lambda s: s.pop("mechanism"),
        ("spec",),
        "warning",
        "no 'mechanism'",
        id="mechanism_is_given",
    ),
    pytest.param(
        policyrules.interval_is_at_least_a_second,
        set_("interval", "500ms"),
        ("spec", "interval"),
        "error",
        "at least 1s",
        id="interval_is_at_least_a_second",
    ),
    pytest.param(
        policyrules.traffic_is_given,
        lambda s: s.pop("traffic"),
        ("spec",),
        "warning",
        "no 'traffic'",
        id="traffic_is_given",
    ),
    pytest.param(
        policyrules.traffic_is_well_formed,
        lambda s: s["traffic"].update(template="requests"),
        ("spec", "traffic"),
        "error",
        "give exactly one of query and template",
        id="traffic_is_well_formed-two-sources",
    ),
    pytest.param(
        policyrules.traffic_is_well_formed,
        lambda s: s["traffic"].update(query="sum(requests_total)"),
        ("spec", "traffic", "query"),
        "error",
        "must contain {{variant}}",
        id="traffic_is_well_formed-no-variant",
    ),
    pytest.param(
        policyrules.guardrails_can_roll_back,
        lambda s: [g.update(dryRun=True) for g in s["guardrails"]],
        ("spec", "guardrails"),
        "error",
        "every guardrail is dryRun",
        id="guardrails_can_roll_back",
    ),
    pytest.param(
        policyrules.statistics_are_set,
        lambda s: s.pop("statistics"),
        ("spec",),
        "warning",
        "without 'statistics'",
        id="statistics_are_set",
    ),
    pytest.param(
        policyrules.exposure_is_sound,
        set_("control", False),
        ("spec", "statistics", "exposure"),
        "error",
        "the sample-ratio check needs a control arm",
        id="exposure_is_sound-no-control",
    ),
    pytest.param(
        policyrules.exposure_is_sound,
        set_("statistics", {"exposure": 'rate(flag_evaluations_total{v="{{variant}}"}[5m])'}),
        ("spec", "statistics", "exposure"),
        "error",
        "exposure must be a metric selector",
        id="exposure_is_sound-not-a-selector",
    ),
    pytest.param(
        policyrules.sample_ratio_is_checked,
        set_("statistics", {}),
        ("spec", "statistics"),
        "warning",
        "no exposure: the sample ratio is not checked",
        id="sample_ratio_is_checked",
    ),
    pytest.param(
        policyrules.statistics_have_an_effect,
        lambda s: (s.__setitem__("statistics", {}), s.__setitem__("guardrails", s["guardrails"][:1])),
        ("spec", "statistics"),
        "warning",
        "statistics has no effect",
        id="statistics_have_an_effect",
    ),
    pytest.param(
        policyrules.first_step_can_gather_min_samples,
        set_("onNoData", "rollback"),
        ("spec", "onNoData"),
        "warning",
        "onNoData is rollback and traffic.minSamples is 100: the first check after the rollout starts "
        "comes one interval (30s) later, when each arm has had at most 30s of traffic at 1 %; to count "
        "100 samples by then the segment must serve at least 333 requests per second",
        id="first_step_can_gather_min_samples",
    ),
    pytest.param(
        policyrules.promotion_stays_within_max_percent,
        lambda s: (s.__setitem__("maxPercent", 5), s["checkpoint"].update(onPass="promote")),
        ("spec", "checkpoint", "onPass"),
        "error",
        "above maxPercent 5 %",
        id="promotion_stays_within_max_percent",
    ),
]


@pytest.mark.parametrize(("rule", "change", "path", "severity", "fragment"), POLICY_RULE_CASES)
def test_a_policy_rule_finds_its_fault(
    rule: Rule, change: Edit, path: tuple[str | int, ...], severity: str, fragment: str
) -> None:
    [(found_path, message, found_severity)] = found(rule, policy(change))
    assert (found_path, found_severity) == (path, severity)
    assert fragment in message


ITEM_RULE_CASES = [
    pytest.param(
        policyrules.step_fits_a_weight,
        lambda s: s["steps"][1].update(percent=5.005),
        1,
        ("spec", "steps", 1, "percent"),
        "finer than 0.01 %",
        id="step_fits_a_weight",
    ),
    pytest.param(
        policyrules.step_rises,
        lambda s: s["steps"][1].update(percent=1),
        1,
        ("spec", "steps", 1, "percent"),
        "1 % does not rise above the previous step (1 %)",
        id="step_rises",
    ),
    pytest.param(
        policyrules.step_stays_within_limits,
        set_("maxPercent", 2),
        1,
        ("spec", "steps", 1, "percent"),
        "5 % is above maxPercent 2 %",
        id="step_stays_within_limits-max-percent",
    ),
    pytest.param(
        policyrules.step_stays_within_limits,
        lambda s: s["steps"][1].update(percent=60),
        1,
        ("spec", "steps", 1, "percent"),
        "60 % is above 50 %",
        id="step_stays_within_limits-control",
    ),
    pytest.param(
        policyrules.hold_covers_the_interval,
        lambda s: s["steps"][0].update(hold="10s"),
        0,
        ("spec", "steps", 0, "hold"),
        "hold 10s is shorter than the interval 30s",
        id="hold_covers_the_interval",
    ),
    pytest.param(
        policyrules.guardrail_name_is_unique,
        guardrail(2, name="errors"),
        2,
        ("spec", "guardrails", 2, "name"),
        "duplicate guardrail name 'errors' (also at guardrails[0])",
        id="guardrail_name_is_unique",
    ),
    pytest.param(
        policyrules.guardrail_has_one_source,
        guardrail(0, template="errors"),
        0,
        ("spec", "guardrails", 0, "template"),
        "not query and template",
        id="guardrail_has_one_source",
    ),
    pytest.param(
        policyrules.query_guardrail_has_no_min_samples,
        guardrail(0, minSamples=10),
        0,
        ("spec", "guardrails", 0, "minSamples"),
        "a query guardrail uses traffic.minSamples",
        id="query_guardrail_has_no_min_samples",
    ),
    pytest.param(
        policyrules.query_guardrail_has_no_alpha_weight,
        guardrail(0, alphaWeight=2),
        0,
        ("spec", "guardrails", 0, "alphaWeight"),
        "a query guardrail has no false-rollback budget",
        id="query_guardrail_has_no_alpha_weight",
    ),
    pytest.param(
        policyrules.query_guardrail_bounds_are_sound,
        guardrail(0, min=0.5),
        0,
        ("spec", "guardrails", 0, "min"),
        "min 0.5 is above max 0.01",
        id="query_guardrail_bounds_are_sound",
    ),
    pytest.param(
        policyrules.sequential_guardrail_has_control,
        both(set_("control", False), guardrail(2, latency=None, query='sum(x{v="{{variant}}"})')),
        1,
        ("spec", "guardrails", 1, "errorRatio"),
        "set control: true",
        id="sequential_guardrail_has_control",
    ),
    pytest.param(
        policyrules.sequential_guardrail_bounds_apply,
        guardrail(1, max=0.1),
        1,
        ("spec", "guardrails", 1, "max"),
        "max does not apply to",
        id="sequential_guardrail_bounds_apply",
    ),
    pytest.param(
        policyrules.sequential_guardrail_has_a_bound,
        guardrail(2, maxIncrease=None),
        2,
        ("spec", "guardrails", 2),
        "no bound set: a latency guardrail needs maxDelta",
        id="sequential_guardrail_has_a_bound",
    ),
    pytest.param(
        policyrules.max_delta_is_a_share,
        guardrail(1, maxDelta=1.5),
        1,
        ("spec", "guardrails", 1, "maxDelta"),
        "maxDelta is a share between 0 and 1, got 1.5",
        id="max_delta_is_a_share",
    ),
    pytest.param(
        policyrules.error_ratio_selectors_are_sound,
        guardrail(1, errorRatio={"errors": 'r{v="{{variant}}"}', "requests": 'r{v="{{variant}}"}'}),
        1,
        ("spec", "guardrails", 1, "errorRatio", "errors"),
        "errors and requests are the same selector",
        id="error_ratio_selectors_are_sound",
    ),
    pytest.param(
        policyrules.latency_histogram_is_sound,
        guardrail(2, latency={"histogram": 'h_bucket{v="{{variant}}"}', "slowerThan": "300ms"}),
        2,
        ("spec", "guardrails", 2, "latency", "histogram"),
        "give the histogram's base name (h)",
        id="latency_histogram_is_sound",
    ),
    pytest.param(
        policyrules.expectation_name_is_unique,
        expectation(1, name="errors", query=None),
        1,
        ("spec", "checkpoint", "expect", 1, "name"),
        "duplicate expectation name 'errors' (also at checkpoint.expect[0])",
        id="expectation_name_is_unique",
    ),
    pytest.param(
        policyrules.expectation_has_one_source,
        expectation(1, template="orders"),
        1,
        ("spec", "checkpoint", "expect", 1, "template"),
        "give query or template, not both",
        id="expectation_has_one_source",
    ),
    pytest.param(
        policyrules.expectation_names_a_query_guardrail,
        expectation(0, name="unknown"),
        0,
        ("spec", "checkpoint", "expect", 0, "name"),
        "'unknown' is not a guardrail's name; name one of ['error-ratio', 'errors', 'slow']",
        id="expectation_names_a_query_guardrail-unknown",
    ),
    pytest.param(
        policyrules.expectation_names_a_query_guardrail,
        expectation(0, name="slow"),
        0,
        ("spec", "checkpoint", "expect", 0, "name"),
        "'slow' is a latency guardrail, judged with a confidence sequence",
        id="expectation_names_a_query_guardrail-sequential",
    ),
    pytest.param(
        policyrules.expectation_bounds_are_sound,
        expectation(1, query="sum(orders)"),
        1,
        ("spec", "checkpoint", "expect", 1, "query"),
        "must contain {{variant}}",
        id="expectation_bounds_are_sound",
    ),
]


@pytest.mark.parametrize(("rule", "change", "index", "path", "fragment"), ITEM_RULE_CASES)
def test_an_item_rule_finds_its_fault(
    rule: ItemRule, change: Edit, index: int, path: tuple[str | int, ...], fragment: str
) -> None:
    target = policy(change)
    [(found_path, message, severity)] = found_at(rule, target, index)
    assert (found_path, severity) == (path, "error")
    assert fragment in message
    for other in range(item_count(rule, target)):  # the rule speaks of its own item only
        if other != index:
            assert found_at(rule, target, other) == []


def test_rules_of_another_kind_of_guardrail_stay_quiet() -> None:
    """A guardrail with two sources is reported once, by guardrail_has_one_source; no other rule
    judges it as a query or as a sequential guardrail."""
    target = policy(guardrail(1, query='sum(x{v="{{variant}}"})', minSamples=10, max=5))
    found = semantic_issues(target)
    assert [path for path, _, _ in found] == [("spec", "guardrails", 1, "errorRatio")]


def test_an_expectation_with_two_sources_is_reported_once() -> None:
    target = policy(expectation(1, template="orders", min=5, max=1))
    assert [path for path, _, _ in semantic_issues(target)] == [
        ("spec", "checkpoint", "expect", 1, "template")
    ]


def test_findings_come_in_rule_order_item_by_item() -> None:
    target = policy(
        lambda s: s["steps"][0].update(hold="10s"),
        lambda s: s["steps"][1].update(percent=1),
        guardrail(2, name="errors"),
        guardrail(0, min=0.5),
        lambda s: s.pop("mechanism"),
    )
    assert [(path, severity) for path, _, severity in semantic_issues(target)] == [
        (("spec",), "warning"),  # mechanism_is_given
        (("spec", "steps", 0, "hold"), "error"),  # step 0, then step 1
        (("spec", "steps", 1, "percent"), "error"),
        (("spec", "guardrails", 0, "min"), "error"),  # guardrail 0, then guardrail 2
        (("spec", "guardrails", 2, "name"), "error"),
    ]


@pytest.mark.parametrize(
    ("rule", "change", "index", "phrase"),
    [
        (
            policyrules.sequential_guardrail_bounds_apply,
            guardrail(1, max=0.1),
            1,
            "to an errorRatio guardrail",
        ),
        (policyrules.sequential_guardrail_bounds_apply, guardrail(2, max=0.1), 2, "to a latency guardrail"),
        (
            policyrules.sequential_guardrail_has_a_bound,
            guardrail(1, maxDelta=None),
            1,
            "no bound set: an errorRatio guardrail needs",
        ),
        (
            policyrules.expectation_names_a_query_guardrail,
            expectation(0, name="error-ratio"),
            0,
            "'error-ratio' is an errorRatio guardrail, judged",
        ),
        (
            policyrules.expectation_names_a_query_guardrail,
            expectation(0, name="slow"),
            0,
            "'slow' is a latency guardrail, judged",
        ),
    ],
    ids=["bounds-errorRatio", "bounds-latency", "no-bound-errorRatio", "expect-errorRatio", "expect-latency"],
)
def test_messages_name_a_guardrail_kind_with_the_right_article(
    rule: ItemRule, change: Edit, index: int, phrase: str
) -> None:
    [(_, message, _)] = found_at(rule, policy(change), index)
    assert phrase in message


def test_an_expectation_with_its_own_query_under_a_guardrails_name_is_warned() -> None:
    """Its own query is judged (the checkpoint's answers are kept apart from the guardrails'), but
    the record would show two different measurements under one name."""
    target = policy(expectation(1, name="errors"))
    rule = policyrules.expectation_with_its_own_query_has_its_own_name
    [(path, message, severity)] = found_at(rule, target, 1)
    assert (path, severity) == (("spec", "checkpoint", "expect", 1, "name"), "warning")
    assert "'errors' is also a guardrail's name" in message
    assert found_at(rule, target, 0) == []  # naming the guardrail to reuse its query is the point


def test_a_long_malformed_selector_is_refused_at_once() -> None:
    """The selector pattern never backtracks over a run of spaces: a policy file (up to 4 MiB) can
    hold one, and validation must not stall on it."""
    selector = 'requests_total{v="{{variant}}"' + " " * 200_000 + "x"
    target = policy(guardrail(1, errorRatio={"errors": 'e{v="{{variant}}"}', "requests": selector}))
    started = time.monotonic()
    [(path, message, _)] = found_at(policyrules.error_ratio_selectors_are_sound, target, 1)
    assert time.monotonic() - started < 2.0
    assert path == ("spec", "guardrails", 1, "errorRatio", "requests")
    assert "must be a metric selector" in message


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param(
            guardrail(1, minSamples=600),
            "guardrails[1].minSamples is 600",
            id="a-statistical-guardrail-needs-more",
        ),
        pytest.param(
            both(lambda s: s.pop("traffic"), guardrail(0, dryRun=True)),
            "guardrail 'error-ratio' needs 1 request per arm: the first check",
            id="without-traffic-a-statistical-guardrail-needs-one-request",
        ),
    ],
)
def test_the_first_step_is_held_to_the_most_samples_an_acting_check_needs(
    change: Edit, fragment: str
) -> None:
    target = policy(set_("onNoData", "rollback"), change)
    [(path, message, severity)] = found(policyrules.first_step_can_gather_min_samples, target)
    assert (path, severity) == (("spec", "onNoData"), "warning")
    assert fragment in message
    assert "use onNoData: hold" in message


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(set_("onNoData", "hold"), id="onNoData-hold"),
        # 30 samples in 30s at 10 %: one request per second from the segment is enough.
        pytest.param(
            both(
                set_("onNoData", "rollback"),
                lambda s: s["traffic"].update(minSamples=3),
                lambda s: s["steps"][0].update(percent=10),
                lambda s: s["steps"][1].update(percent=20),
            ),
            id="reachable-at-one-request-per-second",
        ),
        pytest.param(
            both(
                set_("onNoData", "rollback"),
                lambda s: s.pop("traffic"),
                lambda s: s.__setitem__("guardrails", s["guardrails"][:1]),
            ),
            id="no-count-is-needed",
        ),
    ],
)
def test_the_first_step_rule_is_quiet_when_a_shortfall_cannot_roll_back(change: Edit) -> None:
    assert found(policyrules.first_step_can_gather_min_samples, policy(change)) == []
