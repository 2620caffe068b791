"""Equal parts of parsed policies are kept once, and sharing never changes what a policy says."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from controller.adapters.policyfile import load_paths
from controller.core.policy import Policy
from controller.core.sharing import Parts


class Colour(StrEnum):
    RED = "red"


class Leaf(BaseModel):
    model_config = ConfigDict(frozen=True)
    value: object = None
    label: str = ""


class Root(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    leaves: list[Leaf] = []
    extra: dict[str, object] = {}


def test_equal_parts_of_two_models_become_one_object() -> None:
    parts = Parts()
    a = parts.share(Root(name="a", leaves=[Leaf(value=1, label="x")], extra={"k": [1, 2]}))
    b = parts.share(Root(name="b", leaves=[Leaf(value=1, label="x")], extra={"k": [1, 2]}))
    assert a.leaves is b.leaves
    assert a.leaves[0] is b.leaves[0]
    assert a.extra is b.extra
    assert a.model_fields_set == b.model_fields_set == {"name", "leaves", "extra"}
    assert (a.name, b.name) == ("a", "b")
    assert a is not b


def test_values_that_compare_equal_but_read_differently_stay_apart() -> None:
    parts = Parts()
    one = parts.share(Leaf(value=1))
    one_point_zero = parts.share(Leaf(value=1.0))
    true = parts.share(Leaf(value=True))
    red = parts.share(Leaf(value=Colour.RED))
    text = parts.share(Leaf(value="red"))
    utc = parts.share(Leaf(value=datetime(2026, 1, 1, 12, tzinfo=UTC)))
    paris = parts.share(Leaf(value=datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))))
    assert [repr(leaf.value) for leaf in (one, one_point_zero, true)] == ["1", "1.0", "True"]
    assert type(red.value) is Colour
    assert type(text.value) is str
    assert [str(utc.value), str(paris.value)] == [  # equal instants, each as written
        "2026-01-01 12:00:00+00:00",
        "2026-01-01 13:00:00+01:00",
    ]
    assert len({id(leaf) for leaf in (one, one_point_zero, true, red, text, utc, paris)}) == 7


def test_models_that_differ_in_what_the_document_set_stay_apart() -> None:
    parts = Parts()
    defaulted = parts.share(Leaf())
    explicit = parts.share(Leaf(value=None, label=""))
    assert defaulted is not explicit
    assert explicit.model_dump(exclude_unset=True) == {"value": None, "label": ""}
    assert defaulted.model_dump(exclude_unset=True) == {}


def test_own_types_are_not_held_but_what_they_hold_is() -> None:
    parts = Parts(own=(Root,))
    first = parts.share(Root(name="same", leaves=[Leaf(value=date(2026, 1, 1))]))
    second = parts.share(Root(name="same", leaves=[Leaf(value=date(2026, 1, 1))]))
    assert first is not second
    assert first.leaves is second.leaves


def test_the_table_starts_afresh_once_full_and_shared_parts_stay_intact() -> None:
    parts = Parts(max_parts=3)
    first = parts.share(Root(name="r0", leaves=[Leaf(value=0, label="l0")]))
    held_after_one = len(parts)
    assert held_after_one > 3
    second = parts.share(Root(name="r1", leaves=[Leaf(value=1, label="l1")]))
    assert len(parts) == held_after_one  # emptied first, then holds only the second one's parts
    third = parts.share(Root(name="r1", leaves=[Leaf(value=1, label="l1")]))
    assert third.leaves is not second.leaves  # emptied again: nothing left to share with
    assert (first.name, first.leaves[0].value, first.leaves[0].label) == ("r0", 0, "l0")
    assert (second.name, second.leaves[0].value, second.leaves[0].label) == ("r1", 1, "l1")


POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {name}}}
spec:
  owner: sre-lead
  aim: Cut p95 from 450ms to 250ms.
  mechanism: A cache removes repeated I/O.
  flag: {{key: {name}}}
  steps:
    - {{percent: 5, hold: 1h}}
    - {{percent: {second}, hold: 1h}}
  traffic: {{query: 'sum(requests{{v="{{{{variant}}}}"}})', minSamples: 10}}
  guardrails:
    - name: errors
      query: 'sum(errors{{v="{{{{variant}}}}"}})'
      max: 0.01
"""


def test_policies_loaded_from_files_share_their_equal_parts_and_read_as_written(tmp_path: Path) -> None:
    for name, second in (("alpha", 25), ("beta", 25), ("gamma", 50)):
        (tmp_path / f"{name}.yaml").write_text(POLICY.format(name=name, second=second))
    loaded = {p.policy.name: p.policy for p in load_paths([tmp_path]).policies}
    alpha, beta, gamma = loaded["alpha"], loaded["beta"], loaded["gamma"]
    assert alpha.spec.steps is beta.spec.steps
    assert alpha.spec.guardrails[0] is gamma.spec.guardrails[0]
    assert alpha.spec.steps[0] is gamma.spec.steps[0]
    assert alpha.spec.steps[1] is not gamma.spec.steps[1]
    assert [s.percent for s in gamma.spec.steps] == [5, 50]
    for name, second in (("alpha", 25), ("beta", 25), ("gamma", 50)):
        unshared = Policy.model_validate(yaml.safe_load(POLICY.format(name=name, second=second)))
        assert loaded[name].model_dump_json() == unshared.model_dump_json()
        assert loaded[name].model_dump(exclude_unset=True) == unshared.model_dump(exclude_unset=True)
        assert loaded[name].revision == unshared.revision


def test_variants_equal_in_value_but_not_in_type_are_kept_apart(tmp_path: Path) -> None:
    for name, value in (("number", "1"), ("decimal", "1.0"), ("boolean", "true")):
        text = POLICY.format(name=name, second=25).replace(
            f"flag: {{key: {name}}}", f"flag: {{key: {name}, variants: {{on: {value}, off: 0}}}}"
        )
        (tmp_path / f"{name}.yaml").write_text(text)
    loaded = {p.policy.name: p.policy.spec.flag.variants["on"] for p in load_paths([tmp_path]).policies}
    assert [repr(loaded[name]) for name in ("number", "decimal", "boolean")] == ["1", "1.0", "True"]


def test_a_dict_with_keys_other_than_text_is_not_shared() -> None:
    parts = Parts()
    one = parts.share(Leaf(value={1: "x"}))
    true = parts.share(Leaf(value={True: "x"}))
    assert isinstance(one.value, dict)
    assert isinstance(true.value, dict)
    assert [type(key) for key in one.value] == [int]
    assert [type(key) for key in true.value] == [bool]
