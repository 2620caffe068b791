"""A policy for a flag that already exists: adopted when it serves the policy's off value to everyone
(checked with the real flagd evaluator), refused with what it serves otherwise, unless the policy says
``flag.adopt: replace``; never anyone's exposure changed silently."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from controller.adapters.decisionlog import read_records
from controller.adapters.flagstore import FileFlagStore
from tests.support.environment import POLICY, Environment

USERS = [f"user-{i}" for i in range(400)]


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    return Environment(tmp_path)


def served(flags: Path, key: str = "cache") -> dict[str, int]:
    """How many of USERS the flagd evaluator serves each value."""
    core = FlagdCore()
    core.set_flags(flags.read_text())
    counts: dict[str, int] = {}
    for user in USERS:
        details = core.resolve_boolean_value(key, True, EvaluationContext(targeting_key=user))
        counts[str(details.value)] = counts.get(str(details.value), 0) + 1
    return counts


def existing(env: Environment, flag: dict[str, Any]) -> None:
    env.flags.write_text(
        json.dumps(
            {
                "flags": {
                    "cache": flag,
                    "untouched": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"},
                }
            }
        )
    )


OFF_FOR_EVERYONE = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "metadata": {"team": "pricing"},
}


def test_a_flag_off_for_everyone_is_adopted_then_ramped(env: Environment) -> None:
    existing(env, OFF_FOR_EVERYONE)
    assert served(env.flags) == {"False": len(USERS)}
    (adopt,) = env.cycle()
    assert (adopt["action"], adopt["to_percent"], adopt["policy"]) == ("adopt", 0.0, "cache")
    assert "nobody's exposure changes" in str(adopt["reason"])
    assert served(env.flags) == {"False": len(USERS)}  # adopting changed nobody's value
    flag = json.loads(env.flags.read_text())["flags"]["cache"]
    assert flag["metadata"]["team"] == "pricing"
    assert flag["metadata"]["flagroll.policy"] == "cache"
    env.clock.now += timedelta(seconds=10)
    (start,) = env.cycle()
    assert (start["action"], start["to_percent"]) == ("advance", 1.0)
    assert json.loads(env.flags.read_text())["flags"]["untouched"] == {
        "state": "ENABLED",
        "variants": {"a": 1},
        "defaultVariant": "a",
    }


def test_a_disabled_flag_is_adopted_and_enabled(env: Environment) -> None:
    existing(env, {**OFF_FOR_EVERYONE, "state": "DISABLED", "defaultVariant": "on"})
    (adopt,) = env.cycle()
    assert adopt["action"] == "adopt"
    assert "DISABLED" in str(adopt["reason"])
    assert json.loads(env.flags.read_text())["flags"]["cache"]["state"] == "ENABLED"
    assert served(env.flags) == {"False": len(USERS)}


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ({**OFF_FOR_EVERYONE, "defaultVariant": "on"}, "variant 'on' (true) to everyone"),
        (
            {"state": "ENABLED", "variants": {"yes": 1, "no": 0}, "defaultVariant": "no"},
            "variant 'no' (0) to everyone",
        ),
        (
            {**OFF_FOR_EVERYONE, "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", "off"]}},
            "its own targeting rule",
        ),
    ],
)
def test_a_flag_serving_anything_else_is_refused_and_left_alone(
    env: Environment, flag: dict[str, Any], says: str
) -> None:
    existing(env, flag)
    before = env.flags.read_bytes()
    for _ in range(2):
        cycle = asyncio.run(env.reconciler().cycle())
        (issue,) = cycle.policy_errors
        assert says in issue.message
        assert "spec.flag.adopt: replace" in issue.message
        assert issue.field == "spec.flag.key"
    assert env.flags.read_bytes() == before
    assert list(read_records(env.log)) == []


def test_adopt_replace_takes_the_flag_and_the_record_says_whose_exposure_changed(env: Environment) -> None:
    existing(env, {**OFF_FOR_EVERYONE, "defaultVariant": "on"})
    assert served(env.flags) == {"True": len(USERS)}
    text = POLICY.format(name="cache", key="cache").replace(
        "  flag: {key: cache}\n", "  flag: {key: cache, adopt: replace}\n"
    )
    env.add_policy("cache", "cache", text)
    (adopt,) = env.cycle()
    assert adopt["action"] == "adopt"
    assert "variant 'on' (true) to everyone" in str(adopt["reason"])
    assert "EXPOSURE CHANGES" in str(adopt["reason"])
    assert served(env.flags) == {"False": len(USERS)}


def test_a_flag_that_changed_between_plan_and_commit_is_not_adopted(env: Environment) -> None:
    existing(env, OFF_FOR_EVERYONE)
    store = FileFlagStore(env.flags)
    original = store.read

    def read_then_edit() -> Any:
        snapshot = original()
        existing(env, {**OFF_FOR_EVERYONE, "defaultVariant": "on"})
        return snapshot

    store.read = read_then_edit  # type: ignore[method-assign]  # the plan sees off, the commit on
    result = asyncio.run(env.reconciler(store=store).cycle())
    assert [r["action"] for r in result.records] == []
    assert json.loads(env.flags.read_text())["flags"]["cache"]["defaultVariant"] == "on"
