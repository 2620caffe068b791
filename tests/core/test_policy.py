"""Policy files: every mistake gets a precise issue (file, line, field, what is wrong).

Most tests start from ``BASE``, a valid policy whose line numbers are listed beside it, and change one
thing with :func:`edit`. Expected line numbers are counted from that listing.
"""

from __future__ import annotations

import copy
import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.adapters.policyfile import PolicySet, load_paths, load_text
from controller.core.errors import Issue
from controller.core.metrictemplate import json_schema as template_schema
from controller.core.policy import Policy, json_schema
from tests.support import paths

EXAMPLES = sorted(paths.EXAMPLES.glob("*.yaml"))

# Line numbers of BASE, for counting:
#  1 apiVersion   5 spec         9 flag         13 - percent: 1   17 traffic       21 - name: errors
#  2 kind         6 owner       10 key          14   hold: 5m     18 query         22   query
#  3 metadata     7 aim         11 interval     15 - percent: 5   19 minSamples    23   max
#  4 name         8 mechanism   12 steps        16   hold: 10m    20 guardrails
BASE = textwrap.dedent(
    """\
    apiVersion: flagroll/v1
    kind: RolloutPolicy
    metadata:
      name: demo
    spec:
      owner: sre-lead
      aim: Cut p95 from 450ms to 250ms.
      mechanism: A cache removes repeated I/O.
      flag:
        key: demo
      interval: 30s
      steps:
        - percent: 1
          hold: 5m
        - percent: 5
          hold: 10m
      traffic:
        query: sum(requests_total{v="{{variant}}"})
        minSamples: 100
      guardrails:
        - name: errors
          query: sum(errors_total{v="{{variant}}"})
          max: 0.01
    """
)
assert BASE.count("\n") == 23

# Appended after line 23: checkpoint at 24, expect 25, "- name" 26, max 27.
CHECKPOINT = "  checkpoint:\n    expect:\n      - name: errors\n        max: 0.02\n"
# Replaces line 11 and inserts one line: the new field is at line 11 and `interval` moves to 12.
INTERVAL = "  interval: 30s\n"


def edit(*changes: tuple[str, str], text: str = BASE) -> str:
    """Apply ``(old, new)`` replacements, each of which must match exactly once."""
    for old, new in changes:
        assert text.count(old) == 1, f"{old!r} must occur exactly once"
        text = text.replace(old, new)
    return text


def before_interval(line: str) -> tuple[str, str]:
    return INTERVAL, f"  {line}\n{INTERVAL}"


def load(text: str) -> PolicySet:
    result = load_text(text, "p.yaml")
    assert isinstance(result, PolicySet)
    return result


def shown(result: PolicySet) -> list[str]:
    return [str(issue) for issue in result.issues]


def the_error(result: PolicySet) -> Issue:
    """The one error in ``result``; the policy must have been rejected."""
    assert len(result.errors) == 1, shown(result)
    assert result.policies == [], shown(result)
    return result.errors[0]


def the_policy(result: PolicySet) -> Policy:
    assert result.errors == [], shown(result)
    assert len(result.policies) == 1, shown(result)
    return result.policies[0].policy


# --- a YAML 1.2 reader for the schema check (on/off stay strings, dates become text) -----------------


class _Yaml12Loader(yaml.SafeLoader):
    pass


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def plain_data(text: str) -> Any:
    """``text`` as JSON-compatible data, read with YAML 1.2 booleans."""
    return json.loads(json.dumps(yaml.load(text, Loader=_Yaml12Loader), default=str))


# --- the example policies -------------------------------------------------------------------------


def test_the_examples_directory_holds_policies() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policy_loads_without_errors(path: Path) -> None:
    result = load_paths([path.parent])  # with the directory: a policy may name its templates
    assert result.errors == [], shown(result)
    policies = [p for p in result.policies if p.file == str(path)]
    templates = [t for t in result.templates if t.file == str(path)]
    assert len(policies) + len(templates) >= 1


def test_base_policy_is_valid_and_has_no_warnings() -> None:
    result = load(BASE)
    policy = the_policy(result)
    assert result.issues == []
    assert policy.name == "demo"
    assert policy.flag_key == "demo"
    assert [s.percent for s in policy.spec.steps] == [1, 5]
    assert [s.hold_seconds for s in policy.spec.steps] == [300, 600]
    assert policy.spec.interval_seconds == 30


def test_issue_renders_as_file_line_column_field_message() -> None:
    issue = the_error(load(edit(("    - percent: 5\n", "    - percent: 1\n"))))
    assert (issue.file, issue.line, issue.column) == ("p.yaml", 15, 7)
    assert str(issue) == f"p.yaml:15:7: spec.steps[1].percent: {issue.message}"


# --- YAML 1.2 booleans ------------------------------------------------------------------------------


def test_on_and_off_keys_are_strings_not_booleans() -> None:
    text = edit(("    key: demo\n", "    key: demo\n    variants: {on: true, off: false}\n"))
    variants = the_policy(load(text)).spec.flag.variants
    assert variants == {"on": True, "off": False}
    assert all(isinstance(key, str) for key in variants)
    assert variants["on"] is True
    assert variants["off"] is False


def test_on_and_yes_as_values_stay_strings() -> None:
    text = edit(
        ("    key: demo\n", "    key: demo\n    variants: {on: yes, off: on}\n"),
        ("  owner: sre-lead\n", "  owner: yes\n"),
    )
    policy = the_policy(load(text))
    assert policy.spec.flag.variants == {"on": "yes", "off": "on"}
    assert policy.spec.owner == "yes"


def test_true_and_false_are_still_booleans() -> None:
    text = edit(
        before_interval("control: False"),
        ("    - percent: 5\n", "    - percent: 60\n"),
    )
    policy = the_policy(load(text))
    assert policy.spec.control is False


# --- reading the YAML itself ------------------------------------------------------------------------


def test_duplicate_key_is_an_error_at_the_second_key() -> None:
    issue = the_error(load(edit(("  owner: sre-lead\n", "  owner: sre-lead\n  owner: someone-else\n"))))
    assert (issue.line, issue.column, issue.field) == (7, 3, "spec.owner")
    assert "duplicate key" in issue.message


def test_duplicate_key_inside_a_list_item() -> None:
    issue = the_error(load(edit(("    - percent: 1\n", "    - percent: 1\n      percent: 2\n"))))
    assert (issue.line, issue.field) == (14, "spec.steps[0].percent")
    assert "duplicate key" in issue.message


def test_yaml_syntax_error_has_a_line() -> None:
    issue = the_error(load(edit(("  owner: sre-lead\n", "  owner: [sre-lead\n"))))
    assert issue.line == 7  # where the parser found the unclosed list to go wrong
    assert issue.column is not None
    assert issue.message.startswith("YAML syntax error")


def test_tab_indentation_is_a_syntax_error_with_a_line() -> None:
    issue = the_error(load(edit(("    key: demo\n", "\tkey: demo\n"))))
    assert issue.line == 10
    assert "YAML syntax error" in issue.message


def test_control_character_is_reported_with_its_line() -> None:
    issue = the_error(load(edit(("  owner: sre-lead\n", "  owner: sre\x07lead\n"))))
    assert issue.line == 6, str(issue)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("- apiVersion: flagroll/v1\n- kind: RolloutPolicy\n", id="list"),
        pytest.param("RolloutPolicy\n", id="scalar"),
        pytest.param("42\n", id="number"),
    ],
)
def test_a_document_that_is_not_a_mapping_is_an_error(text: str) -> None:
    issue = the_error(load(text))
    assert issue.line == 1
    assert "must be a mapping" in issue.message


def test_missing_kind() -> None:
    issue = the_error(load(edit(("kind: RolloutPolicy\n", ""))))
    assert (issue.line, issue.field) == (1, "kind")
    assert "missing 'kind: RolloutPolicy'" in issue.message


def test_unknown_kind() -> None:
    issue = the_error(load(edit(("kind: RolloutPolicy\n", "kind: Deployment\n"))))
    assert (issue.line, issue.field) == (2, "kind")
    assert "unknown kind 'Deployment'" in issue.message


def test_wrong_api_version() -> None:
    issue = the_error(load(edit(("apiVersion: flagroll/v1\n", "apiVersion: flagroll/v2\n"))))
    assert (issue.line, issue.column, issue.field) == (1, 1, "apiVersion")
    assert "'flagroll/v1'" in issue.message
    assert "'flagroll/v2'" in issue.message


def test_an_empty_file_has_no_policies_and_no_issues() -> None:
    result = load("# nothing here yet\n")
    assert (result.policies, result.issues) == ([], [])


# --- shape errors (pydantic) ------------------------------------------------------------------------


SHAPE_CASES = [
    pytest.param(
        [("  owner: sre-lead\n", "")],
        5,
        "spec.owner",
        ["missing required field 'owner'", "who can say stop"],
        id="missing-owner",
    ),
    pytest.param(
        [("  aim: Cut p95 from 450ms to 250ms.\n", "")],
        5,
        "spec.aim",
        ["missing required field 'aim'"],
        id="missing-aim",
    ),
    pytest.param(
        [("  owner: sre-lead\n", "  owner: '   '\n")],
        6,
        "spec.owner",
        ["at least 1 character"],
        id="blank-owner",
    ),
    pytest.param(
        [before_interval("maxPercnt: 10")],
        11,
        "spec.maxPercnt",
        ["unknown field 'maxPercnt'", "did you mean 'maxPercent'?"],
        id="unknown-field-did-you-mean",
    ),
    pytest.param(
        [("    - percent: 1\n", "    - percent: 1\n      hodl: 5m\n")],
        14,
        "spec.steps[0].hodl",
        ["unknown field 'hodl'", "did you mean 'hold'?"],
        id="unknown-field-in-step",
    ),
    pytest.param(
        [("    - percent: 1\n", "    - percent: lots\n")],
        13,
        "spec.steps[0].percent",
        ["valid number", "'lots'"],
        id="percent-not-a-number",
    ),
    pytest.param(
        [("    - percent: 1\n", "    - percent: 0\n")],
        13,
        "spec.steps[0].percent",
        ["greater than 0"],
        id="percent-zero",
    ),
    pytest.param(
        [("    - percent: 1\n", "    - percent: 101\n")],
        13,
        "spec.steps[0].percent",
        ["less than or equal to 100"],
        id="percent-above-100",
    ),
    pytest.param(
        [("      max: 0.01\n", "      max: .nan\n")],
        23,
        "spec.guardrails[0].max",
        ["finite number"],
        id="max-nan",
    ),
    pytest.param(
        [("      max: 0.01\n", "      max: .inf\n")],
        23,
        "spec.guardrails[0].max",
        ["finite number"],
        id="max-inf",
    ),
    pytest.param(
        [("      max: 0.01\n", "      max: -.inf\n")],
        23,
        "spec.guardrails[0].max",
        ["finite number"],
        id="max-minus-inf",
    ),
    pytest.param(
        [("      max: 0.01\n", "      max: 0.01\n      maxDecrease: 2\n")],
        24,
        "spec.guardrails[0].maxDecrease",
        ["less than or equal to 1"],
        id="max-decrease-above-1",
    ),
    pytest.param(
        [(INTERVAL, "  interval: 30\n")],
        11,
        "spec.interval",
        ["needs a unit", "'30s'"],
        id="bare-number-duration",
    ),
    pytest.param(
        [("      hold: 10m\n", "      hold: 600\n")],
        16,
        "spec.steps[1].hold",
        ["needs a unit", "'600s'"],
        id="bare-number-hold",
    ),
    pytest.param(
        [(INTERVAL, "  interval: 30 seconds\n")],
        11,
        "spec.interval",
        ["invalid duration '30 seconds'", "90s, 5m"],
        id="bad-duration-string",
    ),
    pytest.param(
        [(INTERVAL, "  interval: 400d\n")],
        11,
        "spec.interval",
        ["longer than a year"],
        id="duration-over-a-year",
    ),
    pytest.param(
        [("      hold: 5m\n", "")],
        13,
        "spec.steps[0].hold",
        ["missing required field 'hold'"],
        id="hold-missing",
    ),
    pytest.param(
        [("    - percent: 1\n      hold: 5m\n    - percent: 5\n      hold: 10m\n", "    []\n")],
        12,
        "spec.steps",
        ["at least 1 item"],
        id="empty-steps",
    ),
    pytest.param(
        [
            (
                '    - name: errors\n      query: sum(errors_total{v="{{variant}}"})\n      max: 0.01\n',
                "    []\n",
            )
        ],
        20,
        "spec.guardrails",
        ["at least 1 item"],
        id="empty-guardrails",
    ),
    pytest.param(
        [before_interval("onNoData: advance")],
        11,
        "spec.onNoData",
        ["'hold' or 'rollback'", "'advance'"],
        id="on-no-data-advance",
    ),
    pytest.param(
        [before_interval("onError: ignore")],
        11,
        "spec.onError",
        ["'hold' or 'rollback'", "'ignore'"],
        id="on-error-ignore",
    ),
    pytest.param(
        [("      max: 0.01\n", "      max: 0.01\n" + CHECKPOINT + "    onPass: maybe\n")],
        28,
        "spec.checkpoint.onPass",
        ["'complete' or 'promote'", "'maybe'"],
        id="checkpoint-on-pass-maybe",
    ),
    pytest.param(
        [("      max: 0.01\n", "      max: 0.01\n" + CHECKPOINT + "    onFail: shrug\n")],
        28,
        "spec.checkpoint.onFail",
        ["'rollback' or 'hold'", "'shrug'"],
        id="checkpoint-on-fail-shrug",
    ),
    pytest.param(
        [("    minSamples: 100\n", "    minSamples: 1.5\n")],
        19,
        "spec.traffic.minSamples",
        ["valid integer"],
        id="min-samples-fraction",
    ),
    pytest.param(
        [("    minSamples: 100\n", "    minSamples: -1\n")],
        19,
        "spec.traffic.minSamples",
        ["greater than or equal to 0"],
        id="min-samples-negative",
    ),
    pytest.param(
        [before_interval("review: soon")],
        11,
        "spec.review",
        ["valid date", "'soon'"],
        id="review-not-a-date",
    ),
    pytest.param(
        [before_interval("review: 2026-13-45")],
        11,
        "spec.review",
        ["month must be in 1..12"],
        id="review-impossible-date",
    ),
    pytest.param(
        [before_interval("segment: 5")],
        11,
        "spec.segment",
        ["valid dictionary"],
        id="segment-not-a-mapping",
    ),
    pytest.param(
        [("  flag:\n    key: demo\n", "  flag: {}\n")],
        9,
        "spec.flag.key",
        ["missing required field 'key'"],
        id="flag-key-missing",
    ),
    pytest.param(
        [("  name: demo\n", "  name: demo\n  labels: {team: 1}\n")],
        5,
        "metadata.labels.team",
        ["valid string"],
        id="label-not-a-string",
    ),
]


@pytest.mark.parametrize(("changes", "line", "field", "fragments"), SHAPE_CASES)
def test_shape_error_is_reported_at_its_line_and_field(
    changes: list[tuple[str, str]], line: int, field: str, fragments: list[str]
) -> None:
    issue = the_error(load(edit(*changes)))
    assert (issue.line, issue.field) == (line, field), str(issue)
    assert issue.file == "p.yaml"
    assert issue.column is not None
    for fragment in fragments:
        assert fragment in issue.message, str(issue)


def test_unknown_field_without_a_close_match_lists_the_allowed_keys() -> None:
    issue = the_error(load(edit(before_interval("zzzzqqq: 10"))))
    assert (issue.line, issue.column, issue.field) == (11, 3, "spec.zzzzqqq")
    assert "unknown field 'zzzzqqq'" in issue.message
    assert "did you mean" not in issue.message
    allowed = issue.message.split("allowed here: ", 1)[1].split(", ")
    assert {"owner", "aim", "flag", "maxPercent", "interval", "steps", "guardrails", "onNoData"} <= set(
        allowed
    )
    assert "max_percent" not in allowed


def test_several_shape_errors_are_all_reported_in_line_order() -> None:
    text = edit(
        ("  owner: sre-lead\n", "  owner: ''\n"),
        ("    - percent: 1\n", "    - percent: lots\n"),
        ("      max: 0.01\n", "      max: .nan\n"),
    )
    result = load(text)
    assert [(i.line, i.field) for i in result.errors] == [
        (6, "spec.owner"),
        (13, "spec.steps[0].percent"),
        (23, "spec.guardrails[0].max"),
    ]
    assert result.policies == []


def test_a_boolean_is_not_a_percentage() -> None:
    issue = the_error(load(edit(("    - percent: 1\n", "    - percent: true\n"))))
    assert (issue.line, issue.field) == (13, "spec.steps[0].percent")


def test_a_date_inside_a_segment_is_located_at_the_date() -> None:
    text = edit(before_interval("segment: {'>=': [{var: signup}, 2026-01-01]}"))
    issue = the_error(load(text))
    assert issue.line == 11
    assert issue.field == "spec.segment.>=[1]", str(issue)
    assert issue.column == 35, str(issue)


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


# --- several documents in one file ------------------------------------------------------------------


OTHER = BASE.replace("demo", "other")


def test_a_bad_document_does_not_stop_a_good_one() -> None:
    # BASE without owner is 22 lines; "---" is line 23; the second document starts at line 24.
    text = edit(("  owner: sre-lead\n", "")) + "---\n" + OTHER
    result = load(text)
    assert [(i.line, i.field) for i in result.issues] == [(5, "spec.owner")]
    assert [(p.policy.name, p.line) for p in result.policies] == [("other", 24)]


def test_issues_in_a_later_document_point_at_its_lines() -> None:
    # BASE is 23 lines; "---" is line 24; the second document's line n is line 24 + n.
    text = BASE + "---\n" + edit(("    - percent: 5\n", "    - percent: 0.5\n"), text=OTHER)
    result = load(text)
    assert [(i.line, i.field) for i in result.issues] == [(39, "spec.steps[1].percent")]
    assert [(p.policy.name, p.line) for p in result.policies] == [("demo", 1)]


def test_a_syntax_error_in_a_later_document_keeps_the_earlier_ones() -> None:
    text = BASE + "---\n" + edit(("  owner: sre-lead\n", "  owner: [x\n"), text=OTHER)
    result = load(text)
    # In a single document the parser stops at line 7 (the next key); here that is 24 + 7.
    assert [i.line for i in result.errors] == [31]
    assert [p.policy.name for p in result.policies] == ["demo"]


def test_three_documents_each_checked_on_its_own() -> None:
    third = BASE.replace("demo", "third")
    text = (
        BASE
        + "---\n"
        + edit(("kind: RolloutPolicy\n", "kind: Other\n"), text=OTHER)
        + "---\n"
        + edit(("  mechanism: A cache removes repeated I/O.\n", ""), text=third)
    )
    result = load(text)
    # Second document: lines 25-47, kind at 26. Third: "---" at 48, starts at 49, spec at 53.
    assert [(i.line, i.field, i.severity) for i in result.issues] == [
        (26, "kind", "error"),
        (53, "spec", "warning"),
    ]
    assert [(p.policy.name, p.line) for p in result.policies] == [("demo", 1), ("third", 49)]


# --- files and directories --------------------------------------------------------------------------


def test_load_paths_reads_policy_files_and_ignores_hidden_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yml").write_text(OTHER)
    (tmp_path / ".hidden.yaml").write_text("this: [is not yaml\n")
    (tmp_path / "notes.txt").write_text("this: [is not yaml\n")
    (tmp_path / "README.md").write_text("# policies\n")
    result = load_paths([tmp_path])
    assert result.issues == [], shown(result)
    assert result.files == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yml")]
    assert sorted(p.policy.name for p in result.policies) == ["demo", "other"]
    assert {p.policy.name: p.file for p in result.policies}["other"] == str(tmp_path / "b.yml")


def test_load_paths_reports_issues_with_the_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(("    - percent: 5\n", "    - percent: 1\n")))
    result = load_paths([tmp_path])
    assert [str(i).split(": ", 1)[0] for i in result.issues] == [f"{bad}:15:7"]


def test_load_paths_reports_a_missing_file(tmp_path: Path) -> None:
    result = load_paths([tmp_path / "absent.yaml"])
    assert len(result.errors) == 1
    assert result.errors[0].file == str(tmp_path / "absent.yaml")
    assert "no such file" in result.errors[0].message


CLASH_CASES = [
    # (change to the second file, field, label in the message)
    pytest.param(("  name: demo\n", "  name: demo-two\n"), "spec.flag.key", "flag key 'demo'", id="flag-key"),
    pytest.param(("    key: demo\n", "    key: demo-two\n"), "metadata.name", "name 'demo'", id="name"),
]


@pytest.mark.parametrize(("change", "field", "label"), CLASH_CASES)
def test_two_policies_that_clash_are_both_rejected(
    tmp_path: Path, change: tuple[str, str], field: str, label: str
) -> None:
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text("# the first policy\n" + BASE)  # the policy starts at line 2
    second.write_text(edit(change))  # the policy starts at line 1
    result = load_paths([tmp_path])
    assert result.policies == []
    assert [(i.file, i.field) for i in result.errors] == [(str(first), field), (str(second), field)]
    first_issue, second_issue = result.errors
    # Each names the other policy's clashing field by file and line.
    assert re.search(
        rf"{label} is also used by the policy at {re.escape(str(second))}:\d+;", first_issue.message
    )
    assert re.search(
        rf"{label} is also used by the policy at {re.escape(str(first))}:\d+;", second_issue.message
    )


@pytest.mark.parametrize(
    ("change", "field", "lines"),
    [
        pytest.param(("  name: demo\n", "  name: demo-two\n"), "spec.flag.key", (11, 10), id="flag-key"),
        pytest.param(("    key: demo\n", "    key: demo-two\n"), "metadata.name", (5, 4), id="name"),
    ],
)
def test_a_clash_is_located_at_the_clashing_field(
    tmp_path: Path, change: tuple[str, str], field: str, lines: tuple[int, int]
) -> None:
    (tmp_path / "a.yaml").write_text("# the first policy\n" + BASE)
    (tmp_path / "b.yaml").write_text(edit(change))
    result = load_paths([tmp_path])
    assert [(i.field, i.line) for i in result.errors] == [(field, lines[0]), (field, lines[1])], shown(result)
    assert all(i.column is not None for i in result.errors), shown(result)


# --- hostile input ----------------------------------------------------------------------------------


def billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    # 9 ** 7 (4.8 million) leaves if expanded: far above the loader's limit, yet small enough that a
    # loader without the limit fails this test instead of exhausting the machine's memory.
    for name in "bcdefg":
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_without_expanding() -> None:
    result = load(billion_laughs())
    issue = the_error(result)
    assert issue.line == 1
    assert "too large" in issue.message


def test_alias_bomb_inside_a_policy_is_refused() -> None:
    bomb = textwrap.indent(billion_laughs(), "    ")
    text = edit(("  name: demo\n", "  name: demo\n  annotations:\n" + bomb))
    issue = the_error(load(text))
    assert issue.field.startswith("metadata.annotations")
    assert "too large" in issue.message


def test_reasonable_aliases_are_fine() -> None:
    text = edit(
        (
            '      query: sum(errors_total{v="{{variant}}"})\n',
            '      query: &q sum(errors_total{v="{{variant}}"})\n',
        ),
        (
            "      max: 0.01\n",
            "      max: 0.01\n"
            + CHECKPOINT.replace("        max: 0.02\n", "        query: *q\n        max: 0.02\n"),
        ),
    )
    policy = the_policy(load(text))
    assert policy.spec.checkpoint is not None
    assert policy.spec.checkpoint.expect[0].query == policy.spec.guardrails[0].query


def test_recursive_alias_is_an_issue_not_a_crash() -> None:
    text = edit(("  name: demo\n", "  name: demo\n  annotations: &loop {self: *loop}\n"))
    issue = the_error(load(text))
    assert issue.line == 5
    assert issue.field.startswith("metadata.annotations")


def test_deep_nesting_is_an_issue_not_a_crash() -> None:
    result = load("spec: " + "[" * 5000 + "]" * 5000 + "\n")
    assert result.policies == []
    assert result.errors
    assert result.errors[0].line == 1


PAYLOADS = [
    # (YAML with the payload, line of the payload); PWNED is replaced by the target path.
    pytest.param('!!python/object/apply:os.mkdir ["PWNED"]\n', 1, id="whole-document"),
    pytest.param(
        edit(("  owner: sre-lead\n", '  owner: !!python/object/apply:os.mkdir ["PWNED"]\n')), 6, id="owner"
    ),
    pytest.param(
        edit(before_interval('segment: {"in": !!python/object/apply:os.mkdir ["PWNED"]}')), 11, id="segment"
    ),
]


@pytest.mark.parametrize(("template", "line"), PAYLOADS)
def test_python_tags_are_not_executed_and_are_errors(tmp_path: Path, template: str, line: int) -> None:
    target = tmp_path / "pwned"
    result = load(template.replace("PWNED", str(target)))
    assert not target.exists()
    assert result.policies == [], shown(result)
    assert [i.line for i in result.errors] == [line], shown(result)


def test_os_system_payload_is_an_error(capfd: pytest.CaptureFixture[str]) -> None:
    result = load(edit(("  owner: sre-lead\n", '  owner: !!python/object/apply:os.system ["echo hi"]\n')))
    assert capfd.readouterr().out == ""
    assert [(i.line, i.field) for i in result.errors] == [(6, "spec.owner")]
    assert result.policies == []


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        pytest.param("!!python/name:os.system", "python/name:os.system", id="python-name"),
        pytest.param("!custom sre-lead", "!custom", id="local-tag"),
    ],
)
def test_unknown_scalar_tag_is_a_one_line_error_at_its_line(value: str, tag: str) -> None:
    issue = the_error(load(edit(("  owner: sre-lead\n", f"  owner: {value}\n"))))
    assert (issue.line, issue.field) == (6, "spec.owner")
    assert tag in issue.message
    assert "\n" not in issue.message, issue.message
    assert "<unicode string>" not in issue.message


def test_a_five_megabyte_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(BASE + "# " + "x" * (5 * 1024 * 1024) + "\n")
    result = load_paths([path])
    assert result.policies == []
    assert len(result.errors) == 1
    assert result.errors[0].file == str(path)
    assert "policy files are small" in result.errors[0].message


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(BASE.replace("sre-lead", "équipe").encode("latin-1"))
    result = load_paths([path])
    assert result.policies == []
    assert "not UTF-8" in the_error(result).message


# --- revision ---------------------------------------------------------------------------------------


REORDERED = textwrap.dedent(
    """\
    # The same policy, with comments, other key order and flow style.
    kind: RolloutPolicy
    apiVersion: flagroll/v1
    spec:
      aim: Cut p95 from 450ms to 250ms.   # the aim
      owner: sre-lead
      guardrails:
        - {max: 0.01, query: 'sum(errors_total{v="{{variant}}"})', name: errors}
      steps:
        - {hold: 5m, percent: 1}
        - {hold: 10m, percent: 5}
      mechanism: A cache removes repeated I/O.
      traffic: {minSamples: 100, query: 'sum(requests_total{v="{{variant}}"})'}
      interval: 30s
      flag: {key: demo}
    metadata: {name: demo}
    """
)


def test_revision_is_twelve_hex_characters() -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", the_policy(load(BASE)).revision)


def test_revision_ignores_comments_key_order_and_style() -> None:
    assert the_policy(load(REORDERED)).revision == the_policy(load(BASE)).revision
    assert the_policy(load("# a comment\n" + BASE)).revision == the_policy(load(BASE)).revision


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(("    - percent: 5\n", "    - percent: 6\n"), id="step-percent"),
        pytest.param(("      hold: 10m\n", "      hold: 11m\n"), id="step-hold"),
        pytest.param(("      max: 0.01\n", "      max: 0.02\n"), id="guardrail-bound"),
    ],
)
def test_revision_changes_when_the_meaning_changes(change: tuple[str, str]) -> None:
    assert the_policy(load(edit(change))).revision != the_policy(load(BASE)).revision


def test_revision_is_stable_across_loads() -> None:
    assert {the_policy(load(BASE)).revision for _ in range(3)} == {the_policy(load(BASE)).revision}


# --- JSON Schema ------------------------------------------------------------------------------------


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_errors(schema: dict[str, Any], value: Any, root: dict[str, Any], where: str = "") -> list[str]:
    """A tiny JSON Schema check: $ref, anyOf, type, const, enum, pattern, bounds, objects, arrays."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return schema_errors(root["$defs"][name], value, root, where)
    if "anyOf" in schema:
        options = [schema_errors(option, value, root, where) for option in schema["anyOf"]]
        return [] if any(not found for found in options) else [f"{where}: no option of anyOf matches"]
    found: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        matches = isinstance(value, _JSON_TYPES[kind]) and not (
            isinstance(value, bool) and kind in ("number", "integer")
        )
        if not matches:
            return [f"{where}: {value!r} is not of type {kind}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{where}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        found.append(f"{where}: too short")
    if "minimum" in schema and value < schema["minimum"]:
        found.append(f"{where}: below minimum")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        found.append(f"{where}: not above exclusiveMinimum")
    if "maximum" in schema and value > schema["maximum"]:
        found.append(f"{where}: above maximum")
    if "minItems" in schema and len(value) < schema["minItems"]:
        found.append(f"{where}: too few items")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        found.extend(f"{where}.{name}: required" for name in schema.get("required", []) if name not in value)
        for name, item in value.items():
            if name in properties:
                found.extend(schema_errors(properties[name], item, root, f"{where}.{name}"))
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}.{name}: additional property")
            elif isinstance(schema.get("additionalProperties"), dict):
                found.extend(schema_errors(schema["additionalProperties"], item, root, f"{where}.{name}"))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found.extend(schema_errors(schema["items"], item, root, f"{where}[{i}]"))
    return found


def property_names(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        if isinstance(schema.get("properties"), dict):
            yield from schema["properties"]
        for value in schema.values():
            yield from property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from property_names(value)


def test_json_schema_describes_a_policy_document() -> None:
    schema = json_schema()
    assert schema["type"] == "object"
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert schema["properties"]["spec"] == {"$ref": "#/$defs/Spec"}
    assert json.loads(json.dumps(schema)) == schema


def test_json_schema_uses_camel_case_names() -> None:
    schema = json_schema()
    definitions = schema["$defs"]
    assert {"maxPercent", "onNoData", "onError", "interval", "steps"} <= set(
        definitions["Spec"]["properties"]
    )
    assert "minSamples" in definitions["Traffic"]["properties"]
    assert {"onPass", "onFail"} <= set(definitions["Checkpoint"]["properties"])
    assert "maxIncrease" in definitions["Guardrail"]["properties"]
    snake = sorted({name for name in property_names(schema) if "_" in name})
    assert snake == []


def test_json_schema_forbids_unknown_fields() -> None:
    definitions = json_schema()["$defs"]
    assert definitions["Spec"]["additionalProperties"] is False
    for name in ("Step", "Traffic", "Guardrail", "Checkpoint", "Expectation", "FlagRef", "Metadata"):
        assert definitions[name]["additionalProperties"] is False, name
    assert set(definitions["Spec"]["required"]) == {"owner", "aim", "flag", "steps", "guardrails"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policy_validates_against_the_json_schema(path: Path) -> None:
    for document in yaml.load_all(path.read_text(), Loader=_Yaml12Loader):
        data = json.loads(json.dumps(document, default=str))
        schema = template_schema() if data["kind"] == "MetricTemplate" else json_schema()
        assert schema_errors(schema, data, schema) == []


def test_json_schema_check_rejects_what_the_loader_rejects() -> None:
    schema = json_schema()
    assert schema_errors(schema, plain_data(BASE), schema) == []
    assert schema_errors(schema, plain_data(edit(before_interval("maxPercnt: 10"))), schema) == [
        ".spec.maxPercnt: additional property"
    ]
    assert schema_errors(schema, plain_data(edit((INTERVAL, "  interval: 30\n"))), schema) == [
        ".spec.interval: 30 is not of type string"
    ]
    assert schema_errors(schema, plain_data(edit(("      hold: 5m\n", ""))), schema) == [
        ".spec.steps[0].hold: required"
    ]


def test_json_schema_defaults_are_valid_values() -> None:
    schema = json_schema()
    wrong = []
    for model, definition in schema["$defs"].items():
        for name, prop in definition.get("properties", {}).items():
            if "default" in prop:
                check = {k: v for k, v in prop.items() if k != "default"}
                if schema_errors(check, prop["default"], schema):
                    wrong.append(f"{model}.{name} = {prop['default']!r}")
    assert wrong == []


# --- properties -------------------------------------------------------------------------------------


YAML_FRAGMENTS = st.sampled_from(
    [*"abon:-[]{},&*!|>'\"#%@`?~ \t.0123456789", "\n", "\n  ", "---\n", "- ", ": ", "!!str", "&x", "*x"]
)
YAML_TEXT = st.lists(YAML_FRAGMENTS, max_size=60).map("".join)
WORDS = st.sampled_from(
    [
        *("apiVersion", "kind", "metadata", "name", "spec", "owner", "aim", "flag", "key", "steps"),
        *("percent", "hold", "guardrails", "query", "max", "min", "on", "off", "control", "interval"),
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["RolloutPolicy", "flagroll/v1", "5m", "30s", "on", "off", "yes", "{{variant}}"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(WORDS, st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=25,
)
BASE_DATA: dict[str, Any] = plain_data(BASE)


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaf_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaf_paths(item, (*path, i))


@st.composite
def mutated_policies(draw: st.DrawFn) -> dict[str, Any]:
    """BASE with one value replaced by arbitrary data, or one key deleted."""
    document = copy.deepcopy(BASE_DATA)
    path = draw(st.sampled_from([p for p in leaf_paths(document) if p]))
    parent: Any = document
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(VALUES)
    return document


def check_consistent(result: PolicySet, data: Any) -> None:
    assert isinstance(result, PolicySet)
    if data is None:
        assert (result.policies, result.issues) == ([], [])
        return
    # A document is either rejected with at least one error, or loaded as exactly one policy.
    if result.errors:
        assert result.policies == []
    else:
        assert len(result.policies) == 1
    for issue in result.issues:
        assert issue.file == "p.yaml"
        assert issue.line is not None, str(issue)
        assert issue.severity in ("error", "warning")
        assert issue.message


PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(st.one_of(st.text(max_size=200), YAML_TEXT))
def test_arbitrary_text_never_raises(text: str) -> None:
    result = load_text(text, "p.yaml")
    assert isinstance(result, PolicySet)
    assert all(isinstance(p.policy, Policy) for p in result.policies)


@PROPERTY_SETTINGS
@given(VALUES)
def test_arbitrary_data_never_raises_and_never_loads_with_errors(data: Any) -> None:
    check_consistent(load_text(yaml.safe_dump(data), "p.yaml"), data)


@PROPERTY_SETTINGS
@given(mutated_policies())
def test_mutated_policy_never_raises_and_never_loads_with_errors(data: dict[str, Any]) -> None:
    result = load_text(yaml.safe_dump(data, sort_keys=False), "p.yaml")
    check_consistent(result, data)
    for loaded in result.policies:
        assert all(w.severity == "warning" for w in loaded.warnings)
