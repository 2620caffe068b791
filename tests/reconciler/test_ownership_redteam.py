"""Red-team tests of the ownership promises (docs/how-flagroll-decides.md "Who judges which flag",
docs/gitops.md "Renames, copies and existing flags"): a flag flagroll exposes is always watched by its guardrails, or on-call is
told, loudly, once per unguarded spell; nobody's exposure changes silently.

Each test drives the reconciler through a sequence of operations as production would (files renamed,
broken, copied; a CronJob's new process each run; a human hand-over during a cycle; two controllers)
and asserts the promised behaviour. They fail until the behaviour is fixed."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FlagStore
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore
from controller.adapters.notify import events_from
from controller.adapters.overlay import OverlayStore
from controller.core.decision import Decision
from controller.core.errors import WriteError
from controller.core.flagd import read_state, write_flag
from controller.core.guarding import handover
from controller.core.queries import Reading
from controller.core.records import Context, to_record
from controller.reconciler import Reconciler
from tests.support.environment import POLICY, Environment, healthy
from tests.support.kubefake import FakeKubeApi

USERS = [f"user-{i}" for i in range(400)]


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    environment = Environment(tmp_path)
    environment.add_policy("other", "other")  # a valid file stays: a deletion is unambiguous
    return environment


def _on_delete_rollback() -> str:
    text = POLICY.format(name="cache", key="cache")
    return text.replace("  interval: 10s\n", "  interval: 10s\n  onDelete: rollback\n")


def _flag(env: Environment, key: str = "cache") -> dict[str, Any]:
    return dict(json.loads(env.flags.read_text())["flags"][key])


def _cache_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["flag"] == "cache"]


def _unguarded_events(records: list[dict[str, Any]]) -> int:
    return sum(1 for e in events_from(_cache_records(records)) if e.kind == "unguarded")


def _reconciler(env: Environment, store: FlagStore, decision_log: DecisionLog | None) -> Reconciler:
    return Reconciler(
        policies=env.policies,
        store=store,
        prometheus=env.metrics,
        decision_log=decision_log,
        clock=env.clock,
        grace=env.grace,
    )


# --- A file that cannot be read never lets its flag be rolled back -------------------------------


def _symlink_loop(path: Path) -> None:
    os.symlink(path.name, path)


def _directory(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("unreadable", [_symlink_loop, _directory])
def test_a_policy_file_that_cannot_be_read_never_lets_its_flag_be_rolled_back(
    env: Environment, unreadable: Callable[[Path], None]
) -> None:
    """docs/how-flagroll-decides.md: "Nothing is rolled back while any file cannot be read", and the unguarded record's
    reason "names the file and the problem"."""
    env.add_policy("cache", "cache", _on_delete_rollback())
    env.cycle()
    owner = env.policies / "cache.yaml"
    owner.unlink()
    unreadable(owner)
    records = []
    for _ in range(5):  # well past the grace period: 3 cycles and 2 minutes
        env.clock.now += timedelta(minutes=1)
        records += _cache_records(env.cycle())
    assert env.percent() == 1.0
    assert records
    assert records[0]["guarded"] is False
    assert "cache.yaml" in str(records[0]["reason"])


# --- A copy never takes the flag over ------------------------------------------------------------


def test_an_edited_copy_of_the_owner_never_disarms_its_guardrails(env: Environment) -> None:
    """docs/how-flagroll-decides.md: a copy of the owner in a second file is rejected, "the first file keeps it"; a
    newcomer never takes a flag over. Here the copy sorts before the owner's file and loosens the
    guardrail; the treatment then breaches the owner's bound."""
    env.cycle()
    loose = POLICY.format(name="cache", key="cache").replace("max: 0.01", "max: 0.9")
    (env.policies / "a-copy.yaml").write_text(loose)

    def breaching(promql: str) -> Reading:
        if promql.startswith("sum(errors") and 'v="on"' in promql:
            return Reading.of(0.05)  # above the owner's 0.01, below the copy's 0.9
        return healthy(promql)

    env.metrics.answer = breaching
    env.clock.now += timedelta(seconds=10)
    result = asyncio.run(env.reconciler().cycle())
    assert env.percent() == 0.0  # the owner's guardrail rolled it back
    assert {Path(issue.file).name for issue in result.policy_errors} == {"a-copy.yaml"}  # the copy is ignored


# --- An existing flag in a Git-owned base is never silently switched ------------------------------


def _served(document_text: str, key: str = "cache") -> dict[str, int]:
    core = FlagdCore()
    core.set_flags(document_text)
    counts: dict[str, int] = {}
    for user in USERS:
        value = core.resolve_boolean_value(key, False, EvaluationContext(targeting_key=user)).value
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def test_a_base_flag_on_for_everyone_is_never_silently_switched_off(env: Environment, tmp_path: Path) -> None:
    """docs/how-flagroll-decides.md: existing flags are adopted only when they serve the policy's 'off' value to everyone,
    "never silently changed"; with --base the flag exists in the Git-owned base file, and flagd serves
    the override's definition of it as soon as flagroll writes one."""
    base = tmp_path / "base.json"
    on_for_everyone = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
    base.write_text(json.dumps({"flags": {"cache": on_for_everyone}}))
    merged = tmp_path / "merged.json"
    store = OverlayStore(env.flags, [base], merged)
    store.refresh(force=True)
    assert _served(merged.read_text()) == {"True": len(USERS)}
    result = asyncio.run(_reconciler(env, store, DecisionLog(env.log)).cycle())
    store.refresh(force=True)
    assert _served(merged.read_text()) == {"True": len(USERS)}  # nobody switched to off without an opt-in
    assert any(issue.flag == "cache" for issue in result.policy_errors)  # refused, saying what it serves


# --- A hand-edited flag whose policy is gone ------------------------------------------------------


@pytest.mark.parametrize(
    "targeting",
    [
        {"fractional": [["on", 5000], ["off", 0], ["control", 5000]]},  # someone set 50 % by hand
        {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", "off"]},  # someone wrote their own rule
    ],
    ids=["percent-set-by-hand", "own-rule"],
)
def test_a_hand_edited_flag_whose_policy_is_gone_is_left_as_it_is_and_reported_unguarded(
    env: Environment, targeting: dict[str, Any]
) -> None:
    """docs/how-flagroll-decides.md: a managed flag whose targeting was edited by hand "is reported, not overwritten"; an
    exposed flag no policy judges gets a hold record with guarded: false."""
    env.cycle()
    document = json.loads(env.flags.read_text())
    document["flags"]["cache"]["targeting"] = targeting
    env.flags.write_text(json.dumps(document))
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(seconds=10)
    records = _cache_records(env.cycle())
    assert _flag(env)["targeting"] == targeting  # not overwritten
    assert [r["guarded"] for r in records] == [False]  # and reported as unguarded


# --- A hand-over during a cycle -------------------------------------------------------------------


def test_a_flag_handed_over_during_a_cycle_is_not_reported_unguarded_for_its_old_owner(
    env: Environment,
) -> None:
    """`flagroll adopt` races with the loop: the cycle planned the flag as its deleted owner's orphan,
    then a human handed it to the renamed policy before the cycle committed. The commit must not act
    on the stale plan (as a rollout's commit does not: it re-reads and leaves a moved flag alone)."""
    env.cycle()
    (env.policies / "cache.yaml").write_text(POLICY.format(name="cache-renamed", key="cache"))
    env.clock.now += timedelta(seconds=10)
    env.cycle()  # unguarded: 'cache' is gone, 'cache-renamed' waits for the grace period

    def human_adopts() -> None:
        env.metrics.during = None
        document = json.loads(env.flags.read_text())
        state = read_state(document, "cache")
        assert state is not None
        decision: Decision = handover(state, "cache-renamed", env.clock.now, "", by="human:alice")
        env.flags.write_text(json.dumps(write_flag(document, "cache", decision.after, keep_segment=True)))
        record = to_record(decision, Context("cache", actor="human:alice"), env.clock.now)
        DecisionLog(env.log).append([record])  # as `flagroll adopt` does

    env.metrics.during = human_adopts  # between the plan and the commit
    env.clock.now += timedelta(seconds=10)
    records = _cache_records(env.cycle())
    assert [r for r in records if r["guarded"] is False] == []
    metadata = _flag(env)["metadata"]
    assert metadata["flagroll.policy"] == "cache-renamed"
    assert "flagroll.absentSince" not in metadata  # the new owner's flag is not counted as gone


# --- One notification per unguarded spell ---------------------------------------------------------


def test_a_cronjob_without_a_decision_log_notifies_once_per_unguarded_spell(env: Environment) -> None:
    """docs/operations.md: the notifiers send `unguarded` once, "not repeated for the 10-minute reminders". With a
    Kubernetes store and no --decision-log (the chart's default) and `flagroll run --once` from a
    CronJob, each run is a new process."""
    fake = FakeKubeApi()
    fake.add("configmaps", "team", "flags", {"data": {}})

    def run_once() -> list[dict[str, Any]]:
        store = ConfigMapFlagStore(fake.client("team"), ObjectRef("team", "flags"))
        return asyncio.run(_reconciler(env, store, None).cycle()).records

    run_once()
    (env.policies / "cache.yaml").unlink()
    notified = 0
    for _ in range(4):  # every two minutes, for eight minutes: one spell, no reminder due yet
        env.clock.now += timedelta(minutes=2)
        notified += _unguarded_events(run_once())
    assert notified == 1


def test_a_cronjob_notifies_once_per_unguarded_spell_when_a_newcomer_is_also_rejected(
    env: Environment,
) -> None:
    """The owner's file breaks and a newcomer names its flag: one unguarded spell. Each `run --once`
    (a new process, with the decision log beside the flag file) must not tell it again."""
    env.cycle()
    broken = POLICY.format(name="cache", key="cache").replace("max: 0.01", "max: lots")
    (env.policies / "cache.yaml").write_text(broken)
    env.add_policy("intruder", "cache")
    notified = 0
    for _ in range(4):
        env.clock.now += timedelta(minutes=2)
        notified += _unguarded_events(env.cycle())
    assert notified == 1


def test_two_controllers_on_one_flag_file_notify_once_per_unguarded_spell(env: Environment) -> None:
    """Two controllers on one flag file (the lock makes that safe; docs/reliability.md) share the
    decision log: an unguarded spell is told once, not once per controller."""
    first, second = env.reconciler(), env.reconciler()
    for controller in (first, second):
        asyncio.run(controller.cycle())
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(seconds=10)
    notified = sum(_unguarded_events(asyncio.run(c.cycle()).records) for c in (first, second))
    assert notified == 1


def test_a_cronjob_whose_decision_log_cannot_be_written_notifies_once_per_unguarded_spell(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md: "While the log cannot be written (disk full, read-only), records are kept in memory";
    a CronJob's memory ends with each run, and each new run must still not tell the spell again."""
    env.cycle()
    (env.policies / "cache.yaml").unlink()

    def disk_full(self: DecisionLog, records: object) -> None:
        raise WriteError(f"cannot append to {self.path}: No space left on device")

    monkeypatch.setattr(DecisionLog, "append", disk_full)
    notified = 0
    for _ in range(4):
        env.clock.now += timedelta(minutes=2)
        notified += _unguarded_events(env.cycle())
    assert notified == 1


# --- The grace period counts a policy's absence in a row ------------------------------------------


def test_a_policy_gone_for_one_cycle_after_it_came_back_broken_is_not_rolled_back(env: Environment) -> None:
    """docs/how-flagroll-decides.md: a missing policy's flag is rolled back only once the policy "has been gone for 3 cycles
    and 2 minutes"; "a policy moved between files, or deleted by mistake and restored, is back long
    before". Here it was deleted by mistake (two cycles), restored with a typo (its file fails, so it
    is there), then its file removed for one sync to be added back fixed."""
    env.add_policy("cache", "cache", _on_delete_rollback())
    env.cycle()
    owner = env.policies / "cache.yaml"
    owner.unlink()
    for _ in range(2):
        env.clock.now += timedelta(seconds=30)
        env.cycle()
    owner.write_text(_on_delete_rollback().replace("max: 0.01", "max: lots"))  # back, with a typo
    for _ in range(4):
        env.clock.now += timedelta(seconds=30)
        env.cycle()
    owner.unlink()  # one sync without it
    env.clock.now += timedelta(seconds=30)
    env.cycle()
    assert env.percent() == 1.0
