"""Policies: every mistake in a policy's shape gets a precise issue (file, line, field, what is wrong),
and the example policies load.

Most tests start from ``BASE`` (tests/support/policytext.py), a valid policy whose line numbers are
listed beside it, and change one thing with :func:`edit`. Expected line numbers are counted from that
listing. The semantic rules and warnings are in test_policy_semantics.py, the revision and the JSON
Schema in test_policy_schema.py, reading the YAML and the files in tests/adapters/test_policyfile.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.adapters.policyfile import load_paths
from tests.support import paths
from tests.support.policytext import (
    BASE,
    CHECKPOINT,
    INTERVAL,
    before_interval,
    edit,
    load,
    shown,
    the_error,
    the_policy,
)

EXAMPLES = sorted(paths.EXAMPLES.glob("*.yaml"))


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
