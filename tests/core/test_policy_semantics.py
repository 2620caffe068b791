"""Policies: each semantic rule (what the shape allows but the policy may not say) is reported at the
field at fault, and warnings keep the policy.

Tests start from ``BASE`` (tests/support/policytext.py) and change one thing with :func:`edit`;
expected line numbers are counted from its listing. Each named rule called on its own is in
test_policyrules.py.
"""

from __future__ import annotations

import pytest

from tests.support.policytext import (
    CHECKPOINT,
    INTERVAL,
    before_interval,
    edit,
    load,
    shown,
    the_error,
    the_policy,
)

# --- semantic rules ---------------------------------------------------------------------------------


SEMANTIC_CASES = [
    pytest.param(
        [("    - percent: 5\n", "    - percent: 1\n")],
        15,
        "spec.steps[1].percent",
        "1 % does not rise above the previous step (1 %)",
        id="steps-not-rising",
    ),
    pytest.param(
        [("    - percent: 5\n", "    - percent: 0.5\n")],
        15,
        "spec.steps[1].percent",
        "0.5 % does not rise above the previous step (1 %)",
        id="steps-falling",
    ),
    pytest.param(
        [before_interval("maxPercent: 2")],
        16,
        "spec.steps[1].percent",
        "5 % is above maxPercent 2 %",
        id="step-above-max-percent",
    ),
    pytest.param(
        [("    - percent: 5\n", "    - percent: 60\n")],
        15,
        "spec.steps[1].percent",
        "60 % is above 50 %",
        id="step-above-50-with-control",
    ),
    pytest.param(
        [("    - percent: 5\n", "    - percent: 5.005\n")],
        15,
        "spec.steps[1].percent",
        "finer than 0.01 %",
        id="percent-finer-than-0.01",
    ),
    pytest.param(
        [("      hold: 10m\n", "      hold: 10s\n")],
        16,
        "spec.steps[1].hold",
        "hold 10s is shorter than the interval 30s",
        id="hold-shorter-than-interval",
    ),
    pytest.param(
        [(INTERVAL, "  interval: 500ms\n")],
        11,
        "spec.interval",
        "at least 1s",
        id="interval-below-one-second",
    ),
    pytest.param(
        [
            (
                "      max: 0.01\n",
                '      max: 0.01\n    - name: errors\n      query: sum(x{v="{{variant}}"})\n      max: 1\n',
            )
        ],
        24,
        "spec.guardrails[1].name",
        "duplicate guardrail name 'errors' (also at guardrails[0])",
        id="duplicate-guardrail-name",
    ),
    pytest.param(
        [("      max: 0.01\n", "")],
        21,
        "spec.guardrails[0]",
        "no bound set",
        id="guardrail-without-bound",
    ),
    pytest.param(
        [("      max: 0.01\n", "      max: 0.01\n      min: 0.5\n")],
        24,
        "spec.guardrails[0].min",
        "min 0.5 is above max 0.01",
        id="min-above-max",
    ),
    pytest.param(
        [before_interval("control: false"), ("      max: 0.01\n", "      maxIncrease: 0.1\n")],
        24,
        "spec.guardrails[0].maxIncrease",
        "maxIncrease compares with the control arm; set control: true",
        id="relative-bound-without-control",
    ),
    pytest.param(
        [
            ('      query: sum(errors_total{v="{{variant}}"})\n', "      query: sum(errors_total)\n"),
            ("      max: 0.01\n", "      maxIncrease: 0.1\n"),
        ],
        22,
        "spec.guardrails[0].query",
        "must contain {{variant}}",
        id="relative-bound-query-without-variant",
    ),
    pytest.param(
        [
            (
                '      query: sum(errors_total{v="{{variant}}"})\n',
                '      query: sum(errors_total{v="{{varient}}"})\n',
            )
        ],
        22,
        "spec.guardrails[0].query",
        "unknown placeholder {{varient}}",
        id="unknown-placeholder",
    ),
    pytest.param(
        [('    query: sum(requests_total{v="{{variant}}"})\n', "    query: sum(requests_total)\n")],
        18,
        "spec.traffic.query",
        "must contain {{variant}}",
        id="traffic-without-variant",
    ),
    pytest.param(
        [("      max: 0.01\n", "      max: 0.01\n" + CHECKPOINT.replace("name: errors", "name: latency"))],
        26,
        "spec.checkpoint.expect[0].name",
        "'latency' is not a guardrail's name; name one of ['errors']",
        id="checkpoint-names-unknown-guardrail",
    ),
    pytest.param(
        [
            before_interval("maxPercent: 5"),
            ("      max: 0.01\n", "      max: 0.01\n" + CHECKPOINT + "    onPass: promote\n"),
        ],
        29,
        "spec.checkpoint.onPass",
        "promote sets the flag to 100 %, above maxPercent 5 %",
        id="promote-with-max-percent-below-100",
    ),
    pytest.param(
        [("    key: demo\n", "    key: demo\n    variants: {on: true, off: false, control: false}\n")],
        11,
        "spec.flag.variants",
        "variants must be exactly 'on' (treatment) and 'off'",
        id="variants-with-control",
    ),
    pytest.param(
        [("    key: demo\n", "    key: demo\n    variants: {yes: true, no: false}\n")],
        11,
        "spec.flag.variants",
        "got ['no', 'yes']",
        id="variants-yes-no",
    ),
    pytest.param(
        [before_interval("segment: {'==': [{var: plan}, free], 'in': [{var: country}, [FR]]}")],
        11,
        "spec.segment",
        "exactly one operator",
        id="segment-two-operators",
    ),
    pytest.param(
        [("    key: demo\n", '    key: "bad key!"\n')],
        10,
        "spec.flag.key",
        "'bad key!' is not a valid flag key",
        id="invalid-flag-key",
    ),
    pytest.param(
        [("  name: demo\n", "  name: Bad_Name\n")],
        4,
        "metadata.name",
        "'Bad_Name' is not a valid name",
        id="invalid-metadata-name",
    ),
]


@pytest.mark.parametrize(("changes", "line", "field", "fragment"), SEMANTIC_CASES)
def test_semantic_error_is_reported_at_the_field_at_fault(
    changes: list[tuple[str, str]], line: int, field: str, fragment: str
) -> None:
    result = load(edit(*changes))
    issue = the_error(result)
    assert (issue.line, issue.field) == (line, field), str(issue)
    assert issue.severity == "error"
    assert fragment in issue.message, str(issue)


def test_a_step_above_50_is_allowed_without_a_control_arm() -> None:
    text = edit(before_interval("control: false"), ("    - percent: 5\n", "    - percent: 60\n"))
    policy = the_policy(load(text))
    assert policy.spec.control is False
    assert policy.step_percent(1) == 60


def test_percent_at_the_resolution_is_accepted() -> None:
    policy = the_policy(load(edit(("    - percent: 5\n", "    - percent: 5.25\n"))))
    assert policy.step_percent(1) == 5.25


def test_checkpoint_with_its_own_query_may_use_a_new_name() -> None:
    checkpoint = CHECKPOINT.replace("name: errors", "name: latency").replace(
        "        max: 0.02\n", '        query: sum(latency{v="{{variant}}"})\n        max: 0.02\n'
    )
    policy = the_policy(load(edit(("      max: 0.01\n", "      max: 0.01\n" + checkpoint))))
    assert policy.spec.checkpoint is not None
    assert policy.spec.checkpoint.expect[0].name == "latency"


def test_two_expectations_with_one_name_are_an_error_at_the_second() -> None:
    """Each expectation is judged on the answers stored under its name: two of one name would both
    be judged on one query (a healthy rollout was rolled back so)."""
    second = '      - name: errors\n        query: sum(latency{v="{{variant}}"})\n        max: 0.3\n'
    result = load(edit(("      max: 0.01\n", "      max: 0.01\n" + CHECKPOINT + second)))
    issue = the_error(result)
    assert (issue.line, issue.column, issue.field) == (28, 9, "spec.checkpoint.expect[1].name"), str(issue)
    assert "duplicate expectation name 'errors' (also at checkpoint.expect[0])" in issue.message
    assert str(issue).startswith("p.yaml:28:9: spec.checkpoint.expect[1].name: duplicate expectation name")


def test_several_semantic_errors_are_all_reported() -> None:
    text = edit(
        ("  name: demo\n", "  name: Bad_Name\n"),
        ("    - percent: 5\n", "    - percent: 1\n"),
        ("      max: 0.01\n", "      max: 0.01\n      min: 0.5\n"),
    )
    result = load(text)
    assert [(i.line, i.field) for i in result.errors] == [
        (4, "metadata.name"),
        (15, "spec.steps[1].percent"),
        (24, "spec.guardrails[0].min"),
    ]
    assert result.policies == []


# --- warnings ---------------------------------------------------------------------------------------


WARNING_CASES = [
    pytest.param(
        ("  mechanism: A cache removes repeated I/O.\n", ""), 5, "spec", "no 'mechanism'", id="no-mechanism"
    ),
    pytest.param(
        ('  traffic:\n    query: sum(requests_total{v="{{variant}}"})\n    minSamples: 100\n', ""),
        5,
        "spec",
        "no 'traffic'",
        id="no-traffic",
    ),
    pytest.param(
        ('      query: sum(errors_total{v="{{variant}}"})\n', "      query: sum(errors_total)\n"),
        22,
        "spec.guardrails[0].query",
        "the query has no {{variant}}",
        id="absolute-bound-query-without-variant",
    ),
]


WARNING_CASES.append(
    pytest.param(
        before_interval("onNoData: rollback"),
        11,
        "spec.onNoData",
        "the segment must serve at least 333 requests per second, or that check is no_data and rolls "
        "the rollout back at once",
        id="no-data-rollback-before-the-first-step-can-count-min-samples",
    )
)


@pytest.mark.parametrize(("change", "line", "field", "fragment"), WARNING_CASES)
def test_warning_keeps_the_policy(change: tuple[str, str], line: int, field: str, fragment: str) -> None:
    result = load(edit(change))
    the_policy(result)
    assert len(result.warnings) == 1, shown(result)
    warning = result.warnings[0]
    assert warning.severity == "warning"
    assert (warning.line, warning.field) == (line, field)
    assert fragment in warning.message
    assert result.policies[0].warnings == (warning,)
    assert str(warning).startswith(f"p.yaml:{line}:")
    assert f"warning: {field}: " in str(warning)
