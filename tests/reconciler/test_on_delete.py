"""What deleting a policy does: by default the flag stays as it is (reported as without a policy);
with `onDelete: rollback` an exposed rollout is rolled back, once, with a record saying why."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controller.adapters.policyfile import load_paths
from controller.core.commands import stop
from controller.core.flagd import read_state, write_flag
from controller.core.guarding import Grace
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


def _flag_records(env: Environment) -> list[dict[str, object]]:
    return [r for r in env.cycle() if r["flag"] == "cache"]


def test_on_delete_rollback_acts_once_the_policy_has_been_gone_for_the_grace_period(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy("rollback"))
    env.add_policy("other", "other")  # another valid policy remains: the deletion is unambiguous
    env.cycle()
    metadata = json.loads(env.flags.read_text())["flags"]["cache"]["metadata"]
    assert metadata["flagroll.onDelete"] == "rollback"  # remembered in the flag: the policy will be gone
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(seconds=10)
    (first,) = _flag_records(env)
    assert (first["action"], first["guarded"]) == ("hold", False)  # exposed and judged by nobody: loud
    assert "UNGUARDED" in str(first["reason"])
    assert "rolled back (onDelete)" in str(first["reason"])
    assert _percent(env) == 1.0
    for _ in range(2):  # three cycles, but not yet two minutes: still waiting
        env.clock.now += timedelta(seconds=10)
        assert _flag_records(env) == []
    assert _percent(env) == 1.0
    env.clock.now += timedelta(minutes=2)
    records = _flag_records(env)
    assert [r["action"] for r in records] == ["rollback"]
    assert str(records[0]["reason"]).startswith("policy deleted; onDelete: rollback")
    assert _percent(env) == 0.0
    env.clock.now += timedelta(seconds=10)
    assert _flag_records(env) == []


def test_a_policy_back_within_the_grace_period_is_never_rolled_back(env: Environment) -> None:
    """A policy moved between files (gone for a cycle, then back, identical) keeps its rollout."""
    env.add_policy("cache", "cache", _policy("rollback"))
    env.add_policy("other", "other")
    env.cycle()
    (env.policies / "cache.yaml").rename(env.policies / ".cache.yaml.moving")
    env.clock.now += timedelta(seconds=10)
    assert [r["action"] for r in _flag_records(env)] == ["hold"]
    (env.policies / ".cache.yaml.moving").rename(env.policies / "moved.yaml")
    env.clock.now += timedelta(minutes=5)
    (back,) = _flag_records(env)
    assert back["guarded"] is True
    assert back["action"] != "rollback"
    assert any("judged again by policy 'cache'" in str(n) for n in back["notes"])  # type: ignore[attr-defined]
    metadata = json.loads(env.flags.read_text())["flags"]["cache"]["metadata"]
    assert "flagroll.absentSince" not in metadata
    env.clock.now += timedelta(minutes=5)
    assert all(r["action"] != "rollback" for r in _flag_records(env))


def test_by_default_a_deleted_policy_leaves_its_flag_exposed_and_says_so_loudly(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy(None))
    env.add_policy("other", "other")
    env.cycle()
    (env.policies / "cache.yaml").unlink()
    (record,) = _flag_records(env)
    assert (record["action"], record["guarded"]) == ("hold", False)
    assert "no policy judges this flag" in str(record["reason"])
    assert "its policy 'cache' was deleted or renamed" in str(record["reason"])
    for _ in range(3):  # not repeated every cycle …
        env.clock.now += timedelta(minutes=2)
        assert _flag_records(env) == []
    env.clock.now += timedelta(minutes=5)  # … but at least every ten minutes, as a reminder
    (reminder,) = _flag_records(env)
    assert reminder["reason"] == record["reason"]
    assert reminder.get("reminder") is True
    assert _percent(env) == 1.0


def test_explicit_leave_is_the_same_as_the_default(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy("leave"))
    env.add_policy("other", "other")
    env.cycle()
    (env.policies / "cache.yaml").unlink()
    for _ in range(4):
        env.clock.now += timedelta(minutes=2)
        assert all(r["action"] == "hold" for r in _flag_records(env))
    assert _percent(env) == 1.0


def test_a_deleted_policys_flag_nobody_is_exposed_to_is_only_logged(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy(None))
    env.add_policy("other", "other")
    env.cycle()
    document = json.loads(env.flags.read_text())
    state = read_state(document, "cache")
    assert state is not None
    env.flags.write_text(
        json.dumps(write_flag(document, "cache", stop(state, "oops", env.clock.now).after, keep_segment=True))
    )
    (env.policies / "cache.yaml").unlink()
    with capture_logs() as logs:
        assert _flag_records(env) == []
    assert [e["event"] for e in logs if e.get("flag") == "cache"] == ["flag_without_policy"]


def test_no_rollback_while_another_policy_file_is_broken(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy("rollback"))
    env.cycle()
    (env.policies / "cache.yaml").unlink()
    (env.policies / "other.yaml").write_text("apiVersion: flagroll/v1\nkind: RolloutPolicy\nspec: [\n")
    env.cycle()
    assert _percent(env) == 1.0  # the broken file might be the missing policy: do nothing


def test_new_optional_fields_keep_the_revisions_of_existing_policies() -> None:
    """Upgrading flagroll must not look like a policy edit to running rollouts. Revisions as flag files
    written before administrative fields left the revision hold them (the hash of the whole policy)
    still name the same revision; the revisions computed now are pinned too."""
    policies = {p.policy.name: p.policy for p in load_paths([EXAMPLES]).policies}
    written_before = {
        "checkout-http-client": "b0797c18dcfc",
        "onboarding-checklist-prompt": "6371cca34316",
        "price-quote-cache": "fa8a31d8cea4",
    }
    for name, revision in written_before.items():
        assert policies[name].legacy_revision == revision
        assert policies[name].is_revision(revision)
    assert {name: p.revision for name, p in policies.items()} == {
        "checkout-http-client": "baa387470ba4",
        "onboarding-checklist-prompt": "af132f5f6486",
        "price-quote-cache": "a5ae27d26a45",
        "search-ranking": "c11deba6f71e",
    }


def test_an_empty_policy_directory_rolls_nothing_back_but_one_valid_file_is_enough(env: Environment) -> None:
    import asyncio

    env.grace = Grace(cycles=1, seconds=0)  # the loop's cycles come at once: act at the first one
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
