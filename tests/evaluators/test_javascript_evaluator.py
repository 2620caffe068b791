"""The flag file a rollout writes (the real reconciler's cycles: ramp, rollback, re-ramp) as the two
real evaluators serve it to 20,000 targeting keys: the JavaScript evaluator (@openfeature/flagd-core
4.0.1, run with node) and the pinned Python in-process evaluator (openfeature-flagd-core 2.0.0).
Each keeps every user in their arm; they put users in different arms, by as much as
docs/evaluators.md says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.bucketing import (
    FLAG,
    KEYS,
    agreement,
    crossings,
    documented_agreement,
    fine_document,
    javascript_hash,
    modelled,
    python_variants,
    share_percent,
)
from tests.support.jsevaluator import javascript_variants
from tests.support.paths import ROOT
from tests.support.ramp import RAMP, SEQUENCE, ramp_rollback_reramp

PAGE = ROOT / "docs" / "evaluators.md"
EVALUATORS = ["python", "javascript"]
# Code units beyond Latin-1, and tails whose block is negative as a signed 32-bit integer (U+AC00 in the
# third place of a tail), where the JavaScript evaluator's hashing is not murmur3 over UTF-8.
ODD_KEYS = ["é", "ÿÿÿ", "ключ", "😀", "ab가", "가가가", "z" * 301, "a b\tc"]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    steps = ramp_rollback_reramp(tmp_path_factory.mktemp("ramp"), FLAG)
    assert [percent for percent, _ in steps] == list(SEQUENCE)
    return [document for _, document in steps]


@pytest.fixture(scope="module")
def served(written: list[dict[str, Any]], javascript: Path) -> dict[str, list[list[str]]]:
    """Per evaluator, the variants served to :data:`KEYS` at each step of :data:`SEQUENCE`."""
    return {
        "python": [python_variants(document, FLAG, KEYS) for document in written],
        "javascript": javascript_variants(javascript, written, FLAG, KEYS),
    }


@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_each_step_serves_its_share_within_one_point(
    served: dict[str, list[list[str]]], evaluator: str
) -> None:
    for percent, variants in zip(SEQUENCE, served[evaluator], strict=True):
        on, control = share_percent(variants, "on"), share_percent(variants, "control")
        assert abs(on - percent) <= 1, f"{evaluator} at {percent} %: treatment {on} %"
        assert abs(control - percent) <= 1, f"{evaluator} at {percent} %: control {control} %"
        assert share_percent(variants, "off") == pytest.approx(100 - on - control)


@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_no_user_changes_arms_over_a_ramp_a_rollback_and_a_re_ramp(
    served: dict[str, list[list[str]]], evaluator: str
) -> None:
    steps = served[evaluator]
    assert crossings(steps) == 0
    assert set(steps[SEQUENCE.index(0)]) == {"off"}
    first_ramp, re_ramp = steps[: len(RAMP)], steps[len(RAMP) + 1 :]
    assert re_ramp == first_ramp  # the re-ramp exposes the same users in the same arms


def test_the_evaluators_put_users_in_different_arms_as_the_docs_say(
    served: dict[str, list[list[str]]],
) -> None:
    first_ramp = zip(RAMP, served["python"][: len(RAMP)], served["javascript"][: len(RAMP)], strict=True)
    measured = [agreement(percent, python, javascript) for percent, python, javascript in first_ramp]
    assert documented_agreement(PAGE) == measured
    # The docs' warning stays true: most users exposed by one evaluator get another variant from the other.
    at_5 = measured[RAMP.index(5)]
    assert at_5.exposed_elsewhere_percent > 30
    at_50 = RAMP.index(50)
    swapped = {
        (p, j) for p, j in zip(served["python"][at_50], served["javascript"][at_50], strict=True) if p != j
    }
    assert swapped == {("on", "control"), ("control", "on")}  # at 50 % a disagreement swaps the arms


def test_the_javascript_model_is_the_javascript_evaluator(
    written: list[dict[str, Any]], javascript: Path
) -> None:
    """The model docs/evaluators.md and test_bucketing_model.py rely on, against the real thing."""
    keys = [*KEYS, *ODD_KEYS]
    first_ramp = written[: len(RAMP)]
    real = javascript_variants(javascript, first_ramp, FLAG, keys)
    for percent, document, variants in zip(RAMP, first_ramp, real, strict=True):
        model = modelled(document, FLAG, keys, javascript_hash)
        wrong = [(k, m, v) for k, m, v in zip(keys, model, variants, strict=True) if m != v]
        assert not wrong, f"at {percent} %: {len(wrong)} keys differ, e.g. {wrong[:3]}"
    fine = fine_document(FLAG)
    (real_fine,) = javascript_variants(javascript, [fine], FLAG, keys)
    assert real_fine == modelled(fine, FLAG, keys, javascript_hash)
    # as docs/evaluators.md says: 15 units, the last at or above U+8000, so the last three do not count
    by_key = dict(zip(keys, real_fine, strict=True))
    assert by_key["ab가"] == by_key["가가가"]
