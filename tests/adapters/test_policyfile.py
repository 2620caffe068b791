"""Policy files (controller.adapters.policyfile): the YAML as read (YAML 1.2 booleans, duplicate keys,
syntax errors, documents that are not policies), several documents in one file, files and
directories, policies that clash, hostile input (alias bombs, Python tags, huge or non-UTF-8 files),
and property tests: no text, data or mutated policy makes the loader raise.

Tests start from ``BASE`` (tests/support/policytext.py) and change one thing with :func:`edit`;
expected line numbers are counted from its listing.
"""

from __future__ import annotations

import copy
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
from controller.core.policy import Policy
from tests.support.policytext import (
    BASE,
    CHECKPOINT,
    before_interval,
    edit,
    load,
    plain_data,
    shown,
    the_error,
    the_policy,
)

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
