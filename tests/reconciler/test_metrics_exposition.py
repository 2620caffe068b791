"""What flagroll's own ``/metrics`` exposition says about rollouts, as the loop feeds it: a flag that
left the flag file leaves the exposition, and a replica that does not hold the Lease shows no rollout
(the leader's gauges are the true ones; alerts aggregate over replicas with ``max``)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore
from controller.adapters.telemetry import Telemetry
from controller.core.state import RolloutState, Status
from controller.reconciler import Reconciler
from tests.adapters.test_kube_lease import Clocks, elector
from tests.support.environment import POLICY, T0, Clock, Environment, FakeMetrics, failing
from tests.support.kubefake import FakeKubeApi

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# The series that describe a rollout (rather than this process): only the leader shows them.
ROLLOUT_METRICS = {
    "flagroll_flag_percent",
    "flagroll_rollout_status",
    "flagroll_rollout_stale",
    "flagroll_rollout_unguarded",
    "flagroll_rollout_waiting",
    "flagroll_guardrail_value",
    "flagroll_guardrail_bound",
    "flagroll_policy_errors",
}


def samples(telemetry: Telemetry) -> Samples:
    found = {}
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def names_of(found: Samples, flag: str | None = None) -> set[str]:
    """The metric names shown (for ``flag`` only, when given)."""
    return {name for name, labels in found if flag is None or ("flag", flag) in labels}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


# --- flags that left the flag file ---------------------------------------------------------------


def _run_once(env: Environment, telemetry: Telemetry) -> None:
    reconciler = Reconciler(
        policies=env.policies,
        store=FileFlagStore(env.flags),
        prometheus=env.metrics,
        decision_log=DecisionLog(env.log),
        clock=env.clock,
        observer=telemetry,
        keep_records=False,
    )
    asyncio.run(reconciler.run(once=True))


@pytest.fixture
def two_judged(tmp_path: Path) -> tuple[Environment, Telemetry]:
    """``cache`` and ``search`` started, then judged once by their guardrails (gauges all set)."""
    env = Environment(tmp_path)
    env.add_policy("search", "search")
    telemetry = Telemetry(clock=lambda: env.clock.now.timestamp())
    _run_once(env, telemetry)  # both start at 1 %
    env.clock.now += timedelta(seconds=15)
    _run_once(env, telemetry)  # both held, their guardrails judged
    found = samples(telemetry)
    for flag in ("cache", "search"):
        assert value(found, "flagroll_guardrail_value", flag=flag, guardrail="errors", rule="max") == 0.001
        assert value(found, "flagroll_guardrail_bound", flag=flag, guardrail="errors", rule="max") == 0.01
        assert value(found, "flagroll_flag_percent", flag=flag) == 1.0
        assert value(found, "flagroll_rollout_unguarded", flag=flag) == 0.0
        assert value(found, "flagroll_rollout_waiting", flag=flag, reason="window") == 0.0
        assert value(found, "flagroll_decisions_total", flag=flag, action="hold") == 1.0
    return env, telemetry


def _remove_flag(env: Environment, key: str) -> None:
    document = json.loads(env.flags.read_text())
    del document["flags"][key]
    env.flags.write_text(json.dumps(document))


def test_a_flag_removed_with_its_policy_leaves_every_series_of_the_exposition(
    two_judged: tuple[Environment, Telemetry],
) -> None:
    env, telemetry = two_judged
    (env.policies / "search.yaml").unlink()
    _remove_flag(env, "search")
    env.clock.now += timedelta(seconds=15)
    _run_once(env, telemetry)
    found = samples(telemetry)
    assert names_of(found, "search") == set()  # guardrails, percent, status, counters: all gone
    assert value(found, "flagroll_guardrail_value", flag="cache", guardrail="errors", rule="max") == 0.001
    assert value(found, "flagroll_flag_percent", flag="cache") == 1.0


def test_a_flag_removed_from_the_flag_file_by_hand_leaves_the_exposition(
    two_judged: tuple[Environment, Telemetry],
) -> None:
    """Its policy stays (it will start the flag again on its next cycle); until then the flag is gone."""
    env, telemetry = two_judged
    _remove_flag(env, "search")
    telemetry.cycle_done(  # a cycle of cache alone: the flag file as it is now
        ok=True,
        policy_errors=0,
        prometheus_answered=True,
        duration_seconds=0.1,
        states={"cache": _state(1.0)},
    )
    assert names_of(samples(telemetry), "search") == set()


def test_a_flag_that_comes_back_starts_its_counters_again(
    two_judged: tuple[Environment, Telemetry],
) -> None:
    env, telemetry = two_judged
    (env.policies / "search.yaml").unlink()
    _remove_flag(env, "search")
    env.clock.now += timedelta(seconds=15)
    _run_once(env, telemetry)
    env.add_policy("search", "search")
    env.clock.now += timedelta(seconds=15)
    _run_once(env, telemetry)
    found = samples(telemetry)
    assert value(found, "flagroll_decisions_total", flag="search", action="advance") == 1.0
    assert ("flagroll_decisions_total", (("action", "hold"), ("flag", "search"))) not in found
    assert value(found, "flagroll_flag_percent", flag="search") == 1.0


def _state(percent: float, status: Status = Status.PROGRESSING) -> RolloutState:
    return RolloutState("p", "r", status, 0, 2, percent, True, T0, T0)


# --- leadership ------------------------------------------------------------------------------------


def test_a_replica_that_does_not_lead_shows_no_rollout_even_from_a_cycle_that_ends_late() -> None:
    leading = [True]
    telemetry = Telemetry(clock=lambda: T0.timestamp(), leading=lambda: leading[0])
    states = {"cache": _state(0.0, Status.ROLLED_BACK)}
    telemetry.cycle_done(
        ok=True, policy_errors=1, prometheus_answered=True, duration_seconds=0.1, states=states
    )
    found = samples(telemetry)
    assert value(found, "flagroll_rollout_status", flag="cache", status="rolled_back") == 1.0
    assert value(found, "flagroll_policy_errors") == 1.0
    assert value(found, "flagroll_leader") == 1.0
    leading[0] = False  # the Lease lapsed: the very next scrape says so, before the loop notices
    found = samples(telemetry)
    assert names_of(found) & ROLLOUT_METRICS == set()
    assert value(found, "flagroll_leader") == 0.0
    assert value(found, "flagroll_cycles_total", result="ok") == 1.0  # what this process did stays
    # a cycle that started while leading and ends now, and its records, put nothing back
    telemetry.recorded([{"flag": "cache", "action": "hold", "to_percent": 0, "status": "rolled_back"}])
    telemetry.cycle_done(
        ok=True, policy_errors=1, prometheus_answered=True, duration_seconds=0.1, states=states
    )
    found = samples(telemetry)
    assert names_of(found) & ROLLOUT_METRICS == set()
    assert value(found, "flagroll_decisions_total", flag="cache", action="hold") == 1.0
    leading[0] = True  # leading again: the next cycle describes every rollout again
    telemetry.cycle_done(
        ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states=states
    )
    found = samples(telemetry)
    assert value(found, "flagroll_rollout_status", flag="cache", status="rolled_back") == 1.0
    assert value(found, "flagroll_policy_errors") == 0.0
    assert value(found, "flagroll_leader") == 1.0


def test_the_loop_of_a_follower_clears_the_rollout_gauges() -> None:
    """Told by the loop that it follows (without a Lease to ask), the telemetry stops showing rollouts."""
    telemetry = Telemetry(clock=lambda: T0.timestamp())
    telemetry.cycle_done(
        ok=True, policy_errors=2, prometheus_answered=True, duration_seconds=0.1, states={"c": _state(5.0)}
    )
    assert names_of(samples(telemetry)) >= {"flagroll_flag_percent", "flagroll_policy_errors"}
    telemetry.follower()
    found = samples(telemetry)
    assert names_of(found) & ROLLOUT_METRICS == set()
    assert value(found, "flagroll_leader") == 0.0


class Replica:
    """One controller: its own Lease elector, reconciler and telemetry, on the shared fake API."""

    def __init__(self, fake: FakeKubeApi, root: Path, identity: str, clocks: Clocks, clock: Clock) -> None:
        policies = root / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "cache.yaml").write_text(POLICY.format(name="cache", key="cache"))
        self.elector = elector(fake, identity, clocks)
        self.metrics = FakeMetrics()
        self.telemetry = Telemetry(clock=lambda: clock().timestamp(), leading=self.elector.is_leader)
        self.reconciler = Reconciler(
            policies=policies,
            store=ConfigMapFlagStore(fake.client("team"), ObjectRef("team", "flags")),
            prometheus=self.metrics,
            decision_log=DecisionLog(root / f"{identity}.jsonl"),
            clock=clock,
            leader=self.elector,
            observer=self.telemetry,
            keep_records=False,
        )

    def loop_once(self) -> None:
        asyncio.run(self.reconciler.run(once=True))

    def shows_rollback(self) -> bool:
        found = samples(self.telemetry)
        return found.get(("flagroll_rollout_status", (("flag", "cache"), ("status", "rolled_back")))) == 1.0


def test_leadership_moves_and_only_the_new_leader_shows_the_rollback(tmp_path: Path) -> None:
    fake = FakeKubeApi(token="t")
    fake.add("configmaps", "team", "flags", {"data": {}})
    clocks, clock = Clocks(), Clock()
    a = Replica(fake, tmp_path, "pod-a", clocks, clock)
    b = Replica(fake, tmp_path, "pod-b", clocks, clock)
    assert a.elector.try_acquire_or_renew()
    assert not b.elector.try_acquire_or_renew()
    a.loop_once()  # starts cache at 1 %
    clock.now += timedelta(seconds=15)
    a.metrics.answer = failing
    a.loop_once()  # the treatment fails its guardrail: rolled back
    assert a.shows_rollback()
    found = samples(a.telemetry)
    assert value(found, "flagroll_guardrail_value", flag="cache", guardrail="errors", rule="max") == 0.5
    assert value(found, "flagroll_leader") == 1.0
    b.loop_once()  # a follower: nothing of the rollout
    assert names_of(samples(b.telemetry)) & ROLLOUT_METRICS == set()
    assert value(samples(b.telemetry), "flagroll_leader") == 0.0

    # a stops renewing (a partition, a stuck process); b takes over once the Lease expires
    clocks.seconds += 16
    assert not a.elector.is_leader()
    assert b.elector.try_acquire_or_renew()
    assert not a.shows_rollback()  # a's very next scrape, before a's loop even noticed
    assert names_of(samples(a.telemetry)) & ROLLOUT_METRICS == set()
    clock.now += timedelta(seconds=15)
    b.metrics.answer = failing
    b.loop_once()
    assert b.shows_rollback()
    a.loop_once()  # a's loop now sees it follows
    found = samples(a.telemetry)
    assert names_of(found) & ROLLOUT_METRICS == set()
    assert value(found, "flagroll_leader") == 0.0
    assert value(found, "flagroll_decisions_total", flag="cache", action="rollback") == 1.0

    # and back: b gives the Lease up, a leads and shows the rollout again, b no longer does
    b.elector.release()
    assert a.elector.try_acquire_or_renew()
    clock.now += timedelta(seconds=15)
    a.loop_once()
    assert a.shows_rollback()
    assert names_of(samples(b.telemetry)) & ROLLOUT_METRICS == set()
