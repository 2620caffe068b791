"""``kind: Freeze`` documents in the policy directory: a valid one loads and reaches the policies it
selects; each mistake is an error at its file, line and field; a Freeze that does not validate (or a
file that cannot be read through and names the kind) holds every rollout, fail-safe."""

from __future__ import annotations

from pathlib import Path

from controller.adapters.policyfile import PolicySet, load_paths, load_text
from controller.core.freezedoc import json_schema
from tests.core.test_policy_schema import schema_errors
from tests.support.policytext import BASE, plain_data

# Lines: apiVersion 1, kind 2, metadata 3, name 4, spec 5, from 6, to 7, reason 8, selector 9,
# matchLabels 10, team 11.
FREEZE = """\
apiVersion: flagroll/v1
kind: Freeze
metadata:
  name: holiday-freeze
spec:
  from: 2026-12-24T00:00:00Z
  to: 2027-01-02T00:00:00Z
  reason: "holiday freeze"
  selector:
    matchLabels:
      team: checkout
"""
LABELLED = BASE.replace("  name: demo\n", "  name: demo\n  labels: {team: checkout}\n")
OTHER = BASE.replace("  name: demo\n", "  name: other\n  labels: {team: search}\n").replace(
    "key: demo", "key: other"
)


def load(text: str) -> PolicySet:
    return load_text(text, "freeze.yaml")


def shown(result: PolicySet) -> list[str]:
    return [str(issue) for issue in result.issues]


def broken(result: PolicySet) -> list[str]:
    return [entry.freeze.where for entry in result.freezes if not entry.freeze.valid]


def test_a_valid_freeze_loads() -> None:
    result = load(FREEZE)
    assert result.issues == []
    (entry,) = result.freezes
    assert entry.freeze.valid
    assert entry.where == "freeze.yaml:1"
    assert entry.freeze.labels == {"team": "checkout"}
    assert entry.freeze.reason == "holiday freeze"


def test_each_policy_gets_the_freezes_that_select_it(tmp_path: Path) -> None:
    (tmp_path / "freeze.yaml").write_text(FREEZE)
    (tmp_path / "demo.yaml").write_text(LABELLED)
    (tmp_path / "other.yaml").write_text(OTHER)
    result = load_paths([tmp_path])
    assert result.errors == [], shown(result)
    chosen = {p.policy.name: [f.name for f in p.freezes] for p in result.policies}
    assert chosen == {"demo": ["holiday-freeze"], "other": []}


def test_from_after_to_is_an_error_at_to() -> None:
    result = load(FREEZE.replace("to: 2027-01-02T00:00:00Z", "to: 2026-12-01"))
    assert shown(result) == [
        "freeze.yaml:7:3: spec.to: 'to' (2026-12-01) is not after 'from' (2026-12-24T00:00:00Z): the "
        "freeze would cover nothing"
    ]
    assert broken(result) == ["freeze.yaml:1"]


def test_an_unknown_field_is_an_error_with_a_did_you_mean() -> None:
    result = load(FREEZE.replace("  reason:", "  reasn:"))
    assert shown(result) == ["freeze.yaml:8:3: spec.reasn: unknown field 'reasn' (did you mean 'reason'?)"]
    assert broken(result) == ["freeze.yaml:1"]


def test_a_bad_selector_is_an_error_at_its_field() -> None:
    result = load(FREEZE.replace("    matchLabels:", "    matchLabel:"))
    assert any(
        s.startswith("freeze.yaml:10:5: spec.selector.matchLabel: unknown field") for s in shown(result)
    )
    result = load(FREEZE.replace("      team: checkout", "      'not a label': checkout"))
    assert shown(result) == [
        "freeze.yaml:11:7: spec.selector.matchLabels.not a label: 'not a label' is not a label name"
    ]
    result = load(FREEZE.replace("    matchLabels:\n      team: checkout", "    matchLabels: {}"))
    assert "an empty matchLabels would cover every rollout" in shown(result)[0]
    assert shown(result)[0].startswith("freeze.yaml:10:5: spec.selector.matchLabels:")


def test_a_time_without_an_offset_or_a_bad_date_is_an_error() -> None:
    result = load(FREEZE.replace("from: 2026-12-24T00:00:00Z", "from: 2026-12-24T00:00:00"))
    assert shown(result)[0].startswith("freeze.yaml:6:3: spec.from: 2026-12-24T00:00:00 has no offset")
    result = load(FREEZE.replace("from: 2026-12-24T00:00:00Z", "from: christmas"))
    assert shown(result)[0].startswith("freeze.yaml:6:3: spec.from: 'christmas' is neither a date")


def test_a_name_used_twice_is_an_error_and_both_still_hold(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FREEZE)
    (tmp_path / "b.yaml").write_text(FREEZE.replace("team: checkout", "team: search"))
    (tmp_path / "demo.yaml").write_text(LABELLED)
    (tmp_path / "other.yaml").write_text(OTHER)
    result = load_paths([tmp_path])
    assert [str(i) for i in result.errors] == [
        f"{tmp_path / 'b.yaml'}:4:3: metadata.name: Freeze 'holiday-freeze' is also defined at "
        f"{tmp_path / 'a.yaml'}:1; each Freeze name must be unique (both still hold what they cover)"
    ]
    assert all(len(p.freezes) == 1 for p in result.policies)


def test_an_invalid_freeze_holds_every_policy(tmp_path: Path) -> None:
    (tmp_path / "freeze.yaml").write_text(FREEZE.replace("  from:", "  form:"))
    (tmp_path / "other.yaml").write_text(OTHER)
    result = load_paths([tmp_path])
    assert len(result.errors) == 2  # the unknown 'form', the missing 'from'
    (policy,) = result.policies
    (held,) = policy.freezes
    assert not held.valid
    assert held.name == "holiday-freeze"
    assert held.labels is None
    assert held.begins is None
    assert held.ends is None
    assert held.problem is not None
    assert held.problem.startswith("line 5: spec.from: missing required field 'from'")


def test_a_kind_written_in_lower_case_is_a_freeze_that_fails() -> None:
    result = load(FREEZE.replace("kind: Freeze", "kind: freeze"))
    assert broken(result) == ["freeze.yaml:1"]
    assert shown(result) == ["freeze.yaml:2:1: kind: Input should be 'Freeze' (got 'freeze')"]


def test_a_file_that_cannot_be_read_through_and_names_a_freeze_holds_everything(tmp_path: Path) -> None:
    result = load(FREEZE.replace("  reason:", "reason: ["))
    assert result.unreadable == {"freeze.yaml"}
    assert [e.freeze.where for e in result.freezes] == ["freeze.yaml:2"]
    assert not result.freezes[0].freeze.valid
    (tmp_path / "latin1.yaml").write_bytes(
        FREEZE.replace("holiday freeze", "Weihnachtsstille \xe4").encode("latin-1")
    )
    (tmp_path / "other.yaml").write_text(OTHER)
    loaded = load_paths([tmp_path])
    (policy,) = loaded.policies
    assert [f.where for f in policy.freezes] == [f"{tmp_path / 'latin1.yaml'}:2"]


def test_a_broken_policy_file_that_names_no_freeze_holds_nothing() -> None:
    result = load(BASE.replace("  owner: sre-lead", "  owner: ["))
    assert result.unreadable == {"freeze.yaml"}
    assert result.freezes == []


def test_a_freeze_is_no_claim_on_a_flag() -> None:
    result = load(FREEZE.replace("  from:", "  form:"))
    assert result.claims == []


def test_the_json_schema_accepts_the_example_and_names_the_fields() -> None:
    schema = json_schema()
    assert schema["title"] == "flagroll Freeze"
    assert schema_errors(schema, plain_data(FREEZE), schema) == []
    spec = schema["$defs"]["FreezeSpec"]  # type: ignore[index]
    assert set(spec["properties"]) == {"from", "to", "reason", "selector"}
    assert spec["required"] == ["from"]
