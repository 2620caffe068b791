"""What deleting a policy does: by default the flag stays as it is (reported as without a policy);
with `onDelete: rollback` an exposed rollout is rolled back, once, with a record saying why."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controller.adapters.policyfile import load_paths
from tests.support.environment import POLICY, Environment
from tests.support.paths import EXAMPLES


def _policy(on_delete: str | None) -> str:
    text = POLICY.format(name="cache", key="cache")
    return (
        text
        if on_delete is None
        else text.replace("  interval: 10s\n", f"  interval: 10s\n  onDelete: {on_delete}\n")
    )


def _percent(env: Environment) -> float:
    return float(json.loads(env.flags.read_text())["flags"]["cache"]["metadata"]["flagroll.percent"])


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    return Environment(tmp_path)


def test_on_delete_rollback_rolls_an_exposed_rollout_back_once(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy("rollback"))
    env.add_policy("other", "other")  # another valid policy remains: the deletion is unambiguous
    env.cycle()
    metadata = json.loads(env.flags.read_text())["flags"]["cache"]["metadata"]
    assert metadata["flagroll.onDelete"] == "rollback"  # remembered in the flag: the policy will be gone
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(seconds=10)
    records = [r for r in env.cycle() if r["flag"] == "cache"]
    assert [(r["action"], r["reason"]) for r in records] == [
        ("rollback", "policy deleted; onDelete: rollback")
    ]
    assert _percent(env) == 0.0
    env.clock.now += timedelta(seconds=10)
    assert [r for r in env.cycle() if r["flag"] == "cache"] == []


def test_by_default_a_deleted_policy_leaves_its_flag_alone(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy(None))
    env.add_policy("other", "other")
    env.cycle()
    (env.policies / "cache.yaml").unlink()
    with capture_logs() as logs:
        assert [r for r in env.cycle() if r["flag"] == "cache"] == []
    assert _percent(env) == 1.0
    assert [e["event"] for e in logs if e.get("flag") == "cache"] == ["flag_without_policy"]


def test_explicit_leave_is_the_same_as_the_default(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy("leave"))
    env.add_policy("other", "other")
    env.cycle()
    (env.policies / "cache.yaml").unlink()
    assert [r for r in env.cycle() if r["flag"] == "cache"] == []
    assert _percent(env) == 1.0


def test_no_rollback_while_another_policy_file_is_broken(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy("rollback"))
    env.cycle()
    (env.policies / "cache.yaml").unlink()
    (env.policies / "other.yaml").write_text("apiVersion: flagroll/v1\nkind: RolloutPolicy\nspec: [\n")
    env.cycle()
    assert _percent(env) == 1.0  # the broken file might be the missing policy: do nothing


def test_new_optional_fields_keep_the_revisions_of_existing_policies() -> None:
    """Upgrading flagroll must not look like a policy edit to running rollouts."""
    revisions = {p.policy.name: p.policy.revision for p in load_paths([EXAMPLES]).policies}
    del revisions["search-ranking"]  # written with templates, after the fields below
    assert revisions == {
        "checkout-http-client": "b0797c18dcfc",
        "onboarding-checklist-prompt": "6371cca34316",
        "price-quote-cache": "fa8a31d8cea4",
    }


def test_an_empty_policy_directory_rolls_nothing_back_but_one_valid_file_is_enough(env: Environment) -> None:
    import asyncio

    env.add_policy("cache", "cache", _policy("rollback"))
    env.cycle()
    (env.policies / "cache.yaml").unlink()
    asyncio.run(env.reconciler().run(once=True))
    assert _percent(env) == 1.0
    env.add_policy("other", "other")
    stop = asyncio.Event()

    async def go() -> None:
        task = asyncio.create_task(env.reconciler().run(stop=stop))
        for _ in range(200):
            if _percent(env) == 0.0:
                break
            await asyncio.sleep(0.01)  # yields to the loop under test; bounded by the count
        stop.set()
        await task

    asyncio.run(go())
    assert _percent(env) == 0.0  # rolled back by the loop, not only by a direct cycle
