"""Policies: the revision (what the policy means, not how it is written) and the JSON Schema published
for editors, checked against ``BASE`` (tests/support/policytext.py), its edits and the examples."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.core.metrictemplate import json_schema as template_schema
from controller.core.policy import json_schema
from tests.support import paths
from tests.support.policytext import (
    BASE,
    INTERVAL,
    Yaml12Loader,
    before_interval,
    edit,
    load,
    plain_data,
    the_error,
    the_policy,
)

EXAMPLES = sorted(paths.EXAMPLES.glob("*.yaml"))


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


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(("  owner: sre-lead\n", "  owner: platform-team\n"), id="owner"),
        pytest.param(("  aim: Cut p95 from 450ms to 250ms.\n", "  aim: Cut p95 to 200ms.\n"), id="aim"),
        pytest.param(("  mechanism: A cache removes repeated I/O.\n", ""), id="mechanism-removed"),
        pytest.param(before_interval("review: 2027-01-15"), id="review-added"),
        pytest.param(("  name: demo\n", "  name: demo\n  labels: {team: search}\n"), id="labels"),
        pytest.param(("  name: demo\n", "  name: demo\n  annotations: {ticket: OPS-1}\n"), id="annotations"),
    ],
)
def test_an_administrative_edit_is_not_a_new_revision(change: tuple[str, str]) -> None:
    """Prose about the rollout (who owns it, why, when to review it, labels) changes neither what is
    exposed nor how it is judged: it must not restart a rolled-back rollout."""
    edited, base = the_policy(load(edit(change))), the_policy(load(BASE))
    assert edited.revision == base.revision
    assert edited.legacy_revision != base.legacy_revision  # the whole text did change


@pytest.mark.parametrize("value", ["required", "none"])
def test_a_steps_approval_is_in_neither_revision(value: str) -> None:
    """Who signs off the next move changes the process, not what is exposed or how it is judged; and
    flags written before ``approval`` existed carry a revision that never hashed it."""
    edited = the_policy(load(edit(("      hold: 5m\n", f"      hold: 5m\n      approval: {value}\n"))))
    base = the_policy(load(BASE))
    assert edited.spec.steps[0].needs_approval is (value == "required")
    assert edited.revision == base.revision
    assert edited.legacy_revision == base.legacy_revision


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(("  name: demo\n", "  name: demo-2\n"), id="metadata-name"),
        pytest.param(("    key: demo\n", "    key: demo-2\n"), id="flag-key"),
        pytest.param(before_interval("control: false"), id="control"),
        pytest.param(before_interval("onDelete: rollback"), id="on-delete"),
        pytest.param(before_interval("maxPercent: 5"), id="max-percent"),
        pytest.param(("    minSamples: 100\n", "    minSamples: 200\n"), id="min-samples"),
    ],
)
def test_what_is_exposed_or_how_it_is_judged_is_a_new_revision(change: tuple[str, str]) -> None:
    assert the_policy(load(edit(change))).revision != the_policy(load(BASE)).revision


def test_the_legacy_revision_is_the_hash_of_the_whole_policy_as_before() -> None:
    """Flag files written before administrative fields left the revision carry this hash; a test in
    tests/reconciler pins its value for the example policies."""
    policy = the_policy(load(BASE))
    assert re.fullmatch(r"[0-9a-f]{12}", policy.legacy_revision)
    assert policy.legacy_revision != policy.revision
    assert the_policy(load(REORDERED)).legacy_revision == policy.legacy_revision


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
    for document in yaml.load_all(path.read_text(), Loader=Yaml12Loader):
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
    approval = edit(("      hold: 5m\n", "      hold: 5m\n      approval: requird\n"))
    assert len(schema_errors(schema, plain_data(approval), schema)) == 1
    error = the_error(load(approval))
    assert (error.line, error.field) == (15, "spec.steps[0].approval")


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
