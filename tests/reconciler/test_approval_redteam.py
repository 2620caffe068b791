"""Red-team of approval gates (docs/policy-reference.md "Approval gates") through the reconciler and
the stores: crashes between a state write and its record, `flagroll approve` racing a cycle, restarts
while a rollout awaits approval, and policy edits during the wait. The promises: a rollout awaiting
approval never moves without one; an approval is never lost nor applied to another step; on-call is
told once per wait (notification ``awaiting_approval``), and the gauge says it waits."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
from collections.abc import Collection, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from controller import cli
from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.flagstore import FileFlagStore, Snapshot
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore
from controller.adapters.notify import events_from
from controller.adapters.telemetry import Telemetry
from controller.cli import common
from controller.core.flagd import read_state
from controller.core.queries import Reading
from controller.core.state import RolloutState, Status
from controller.reconciler import Reconciler
from tests.support.environment import POLICY, Environment, failing, healthy
from tests.support.gated import GATED, gated_environment
from tests.support.kubefake import FakeKubeApi


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    return gated_environment(tmp_path, monkeypatch)


def _told(records: Sequence[dict[str, Any]]) -> list[str]:
    return [e.kind for e in events_from(records) if e.flag == "cache"]


def _state(env: Environment) -> RolloutState:
    state = read_state(json.loads(env.flags.read_text()), "cache")
    assert state is not None
    return state


def _approve(env: Environment, reason: str = "looks fine") -> int:
    return cli.main(
        ["approve", "cache", "--flags", str(env.flags), "--decision-log", str(env.log), "--reason", reason]
    )


def _due(env: Environment) -> list[dict[str, Any]]:
    """Start the rollout and let its first step's hold pass: the second cycle begins the wait."""
    records = env.cycle()
    env.clock.now += timedelta(minutes=2)
    return records + env.cycle()


def _gauge(telemetry: Telemetry) -> str:
    return telemetry.exposition().decode()


WAITS = 'flagroll_rollout_waiting{flag="cache",reason="approval"} 1.0'


# --- crashes between a state write and its record ---------------------------------------------------


def test_a_wait_whose_record_was_lost_in_a_crash_is_still_told_once(env: Environment) -> None:
    """The process writes the state that begins the wait, then dies before appending its record (so
    before the notifier heard of it). The next process recovers the record: on-call must still be told
    that the rollout awaits approval, once, and the gauge must say so."""
    env.cycle()  # 1 %
    env.clock.now += timedelta(minutes=2)
    kept = env.log.read_bytes()
    assert _told(env.cycle()) == ["awaiting_approval"]
    assert _state(env).awaiting_approval
    env.log.write_bytes(kept)  # the record (and so the notification) never happened
    telemetry = Telemetry(clock=lambda: env.clock.now.timestamp())
    told: list[str] = []
    for _ in range(3):  # a new process, then its next cycles
        env.clock.now += timedelta(seconds=10)
        records = asyncio.run(env.reconciler(observer=telemetry).cycle()).records
        told += _told(records)
    assert told == ["awaiting_approval"]
    assert WAITS in _gauge(telemetry)
    assert env.percent() == 1
    recovered = [r for r in read_records(env.log) if r["action"] == "recover"]
    assert len(recovered) == 1
    assert recovered[0]["waiting"]["reason"] == "approval"


def test_a_wait_whose_record_an_exception_cut_off_is_told_by_the_same_process(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception between the write that begins the wait and its record (a bug, say) ends the
    cycle; the process goes on. Its next cycle must record the wait, and tell it, once."""
    telemetry = Telemetry(clock=lambda: env.clock.now.timestamp())
    reconciler = env.reconciler(observer=telemetry)
    asyncio.run(reconciler.cycle())
    env.clock.now += timedelta(minutes=2)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected between the write and the record")

    monkeypatch.setattr(DecisionLog, "append", crash)
    with pytest.raises(RuntimeError):
        asyncio.run(reconciler.cycle())
    monkeypatch.undo()
    assert _state(env).awaiting_approval  # written, not recorded
    told = []
    for _ in range(3):
        env.clock.now += timedelta(seconds=10)
        told += _told(asyncio.run(reconciler.cycle()).records)
    assert told == ["awaiting_approval"]
    assert WAITS in _gauge(telemetry)
    assert [r["action"] for r in read_records(env.log)][-4:] == ["recover", "hold", "hold", "hold"]


def test_an_advance_after_an_approval_whose_record_was_lost_says_it_was_approved(env: Environment) -> None:
    """`approve` writes the approval and dies before its record, while the controller keeps running
    (its recovery ran at its start, so it records no `recover`). The advance it allows is the only
    record of the move: it must say that a human approved the step, and the approval is for that step
    only (the next gate waits again)."""
    two_gates = GATED.replace("- {percent: 5, hold: 1m}", "- {percent: 5, hold: 1m, approval: required}")
    env.add_policy("cache", "cache", two_gates)
    reconciler = env.reconciler()
    asyncio.run(reconciler.cycle())
    env.clock.now += timedelta(minutes=2)
    asyncio.run(reconciler.cycle())  # the wait begins
    env.clock.now += timedelta(seconds=5)
    kept = env.log.read_bytes()
    assert _approve(env) == 0
    env.log.write_bytes(kept)  # the approve record is lost
    env.clock.now += timedelta(seconds=5)
    [advance] = asyncio.run(reconciler.cycle()).records
    assert advance["action"] == "advance"
    assert "step 1/2 approved by a human" in str(advance["reason"])
    assert env.percent() == 5
    assert _state(env).approved_step is None  # used up by the move it allowed
    env.clock.now += timedelta(minutes=2)
    [held] = asyncio.run(reconciler.cycle()).records
    assert held["waiting"]["reason"] == "approval"
    assert "approved" not in str(held["reason"])
    assert _state(env).awaiting_approval  # the last step's gate waits for its own approval


# --- approve racing a cycle ------------------------------------------------------------------------


def test_an_approval_between_a_cycles_read_and_its_commit_is_not_lost(env: Environment) -> None:
    """`approve` lands while the cycle waits for Prometheus: the commit reads the approval and, as
    nothing it asked about changed, makes the move it allows at once."""
    _due(env)
    env.clock.now += timedelta(seconds=10)
    env.metrics.during = lambda: _approve_or_fail(env)
    [advance] = env.cycle()
    env.metrics.during = None
    assert advance["action"] == "advance"
    assert "step 1/2 approved by a human" in str(advance["reason"])
    assert env.percent() == 5
    assert [r["action"] for r in read_records(env.log)][-2:] == ["approve", "advance"]


def test_an_approval_during_a_cycle_does_not_put_off_a_rollback(env: Environment) -> None:
    """The guardrail fails while a human approves during the cycle (between its read and its commit):
    an approval changes nothing the cycle asked about, so the rollback must not wait a cycle."""
    _due(env)
    env.clock.now += timedelta(seconds=10)
    env.metrics.answer = failing
    env.metrics.during = lambda: _approve_or_fail(env)
    [rollback] = env.cycle()
    assert (rollback["action"], env.percent()) == ("rollback", 0)
    assert _state(env).approved_step is None  # a rollback clears it
    assert [r["action"] for r in read_records(env.log)][-2:] == ["approve", "rollback"]


def _approve_or_fail(env: Environment) -> None:
    assert _approve(env) == 0


class _SlowStore(FileFlagStore):
    """A flag file whose write lets `flagroll approve` start while the commit holds the lock."""

    def __init__(self, env: Environment) -> None:
        super().__init__(env.flags)
        self.env = env
        self.approver: threading.Thread | None = None
        self.code: list[int] = []

    def write(self, document: Any, snapshot: Snapshot, changed: Collection[str]) -> None:
        if self.approver is None:
            self.approver = threading.Thread(target=lambda: self.code.append(_approve(self.env)))
            self.approver.start()
        super().write(document, snapshot, changed)


def test_an_approval_waiting_for_the_lock_approves_the_wait_the_commit_began(env: Environment) -> None:
    env.cycle()
    env.clock.now += timedelta(minutes=2)
    store = _SlowStore(env)
    asyncio.run(env.reconciler(store=store).cycle())  # begins the wait; approve waits for the lock
    assert store.approver is not None
    store.approver.join(timeout=60)
    assert store.code == [0]
    state = _state(env)
    assert (state.approved_step, state.awaiting_approval_since) == (0, None)
    assert [r["action"] for r in read_records(env.log)][-2:] == ["hold", "approve"]


def test_a_rollback_between_approves_read_and_write_on_a_configmap_refuses_the_approval(
    env: Environment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a ConfigMap (no lock: optimistic concurrency) the controller rolls the rollout back between
    `approve`'s read and its write: the approval must not land on the rolled-back rollout."""
    fake = FakeKubeApi(token="t")
    fake.add("configmaps", "team", "flags", {"data": {}})

    def reconciler() -> Reconciler:
        store = ConfigMapFlagStore(fake.client("team"), ObjectRef("team", "flags"))
        return Reconciler(
            policies=env.policies,
            store=store,
            prometheus=env.metrics,
            decision_log=DecisionLog(env.log),
            clock=env.clock,
        )

    asyncio.run(reconciler().cycle())
    env.clock.now += timedelta(minutes=2)
    asyncio.run(reconciler().cycle())

    def controller_rolls_back() -> None:
        env.metrics.answer = failing
        asyncio.run(reconciler().cycle())

    fake.before("put", "configmaps", controller_rolls_back)
    with fake.serve() as url:
        kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig", url, namespace="team")
        code = cli.main(
            [
                "approve",
                "cache",
                "--reason",
                "go",
                "--decision-log",
                str(env.log),
                "--flag-store",
                "configmap",
                "--flag-object",
                "flags",
                "--kubeconfig",
                str(kubeconfig),
            ]
        )
    assert code == 1
    assert fake.conflicts("configmaps")  # approve's first write was refused, and it read again
    assert "rolled_back" in capsys.readouterr().err
    seen = ConfigMapFlagStore(fake.client("team"), ObjectRef("team", "flags")).read().document
    state = read_state(seen, "cache")
    assert state is not None
    assert (state.status, state.approved_step, state.percent) == (Status.ROLLED_BACK, None, 0)
    assert "approve" not in [r["action"] for r in read_records(env.log)]
    env.metrics.answer = healthy


# --- restarts and leadership changes -------------------------------------------------------------


def test_restarts_while_awaiting_approval_neither_tell_again_nor_advance(env: Environment) -> None:
    told = _told(_due(env))
    for _ in range(5):  # five new processes, each with its own metrics, a cycle each
        env.clock.now += timedelta(minutes=1)
        telemetry = Telemetry(clock=lambda: env.clock.now.timestamp())
        told += _told(asyncio.run(env.reconciler(observer=telemetry).cycle()).records)
        assert WAITS in _gauge(telemetry)
        assert env.percent() == 1
    assert told == ["awaiting_approval"]


def test_failovers_while_awaiting_approval_tell_at_most_once_each_and_never_advance(
    env: Environment, tmp_path: Path
) -> None:
    """Two replicas on one ConfigMap, each with its own decision log (as the chart runs them with
    one), take turns leading while the rollout awaits approval. A new leader has no record of the
    wait in its own log: it may tell it once when it takes over (it cannot know that the other one
    did), never on its following cycles; nothing advances; each leader's gauge says it waits."""
    fake = FakeKubeApi()
    fake.add("configmaps", "team", "flags", {"data": {}})

    def replica(name: str) -> tuple[Reconciler, Telemetry]:
        telemetry = Telemetry(clock=lambda: env.clock.now.timestamp())
        store = ConfigMapFlagStore(fake.client("team"), ObjectRef("team", "flags"))
        log = DecisionLog(tmp_path / f"{name}.jsonl")
        reconciler = Reconciler(
            policies=env.policies,
            store=store,
            prometheus=env.metrics,
            decision_log=log,
            clock=env.clock,
            observer=telemetry,
        )
        return reconciler, telemetry

    leader, _ = replica("pod-a")
    asyncio.run(leader.cycle())
    env.clock.now += timedelta(minutes=2)
    assert _told(asyncio.run(leader.cycle()).records) == ["awaiting_approval"]
    for turn in range(4):
        leader, telemetry = replica("pod-b" if turn % 2 == 0 else "pod-a")
        told = []
        for _ in range(3):
            env.clock.now += timedelta(seconds=10)
            told += _told(asyncio.run(leader.cycle()).records)
            assert WAITS in _gauge(telemetry)
        assert told in ([], ["awaiting_approval"])
        state = read_state(leader.store.read().document, "cache")
        assert state is not None
        assert (state.percent, state.awaiting_approval) == (1, True)


def test_a_dry_run_tells_a_wait_once_not_every_cycle(env: Environment) -> None:
    """`flagroll run --dry-run` writes no state, so each of its cycles begins the wait anew in its
    record; its notifier (one per process) must still tell it once per wait."""
    env.cycle()
    env.clock.now += timedelta(minutes=2)
    dry_waits: set[str] = set()
    told = []
    for _ in range(4):
        env.clock.now += timedelta(seconds=10)
        told += [e.kind for e in events_from(env.cycle(dry_run=True), set(), dry_waits)]
    assert told == ["awaiting_approval"]
    env.metrics.answer = lambda promql: Reading.error("down")  # the wait is interrupted: no data
    assert events_from(env.cycle(dry_run=True), set(), dry_waits) == []
    env.metrics.answer = healthy
    assert [e.kind for e in events_from(env.cycle(dry_run=True), set(), dry_waits)] == ["awaiting_approval"]


# --- policy edits during the wait -------------------------------------------------------------------


def test_removing_the_gate_mid_wait_lets_the_move_through_and_adding_it_back_waits_again(
    env: Environment,
) -> None:
    _due(env)
    env.add_policy("cache", "cache", POLICY.format(name="cache", key="cache"))
    env.clock.now += timedelta(seconds=10)
    assert [r["action"] for r in env.cycle()] == ["advance"]
    assert _state(env).awaiting_approval_since is None


def test_a_new_revision_mid_wait_clears_an_approval_and_asks_again(env: Environment) -> None:
    _due(env)
    assert _approve(env) == 0
    revised = GATED.replace("max: 0.01", "max: 0.02")  # a new revision: the approval is not for it
    env.add_policy("cache", "cache", revised)
    env.clock.now += timedelta(seconds=10)
    records = env.cycle()
    assert [r["action"] for r in records] == ["hold"]
    assert _told(records) == ["awaiting_approval"]
    assert env.percent() == 1
    assert _state(env).approved_step is None


# --- a sequence of everything that can happen to a gated rollout -----------------------------------

GATES = POLICY.format(name="cache", key="cache").replace(
    "    - {percent: 1, hold: 1m}\n    - {percent: 5, hold: 1m}\n",
    "    - {percent: 1, hold: 30s, approval: required}\n    - {percent: 5, hold: 30s, approval: GATE}\n"
    "    - {percent: 20, hold: 30s}\n",
)
CLEARING = {"advance", "rollback", "stop", "resume", "pause", "complete", "promote"}


class GatedRollout(RuleBasedStateMachine):
    """Cycles (healthy or failing), approvals, pauses, stops, resumes, gate and revision edits,
    restarts and lost records, in any order. Invariants: a move after a gated step is taken only after
    an approval of that step since the last move, rollback, stop, restart of the ramp or new
    revision; a wait is told once (again only after a lost record or a change that ends it); the
    gauge says a wait while the last record waits for approval."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp())
        self.env = Environment(self.root)
        self.saved_now = common.utc_now
        common.utc_now = lambda: self.env.clock.now
        self.gate = "required"
        self.max = "0.01"
        self.write_policy()
        self.approved: set[int] = set()  # steps approved since the last clearing event
        self.revision: object = None  # the revision of the last record
        self.told = False  # the current wait was told
        self.seen = 0  # records of the decision log looked at
        self.restart()

    def teardown(self) -> None:
        common.utc_now = self.saved_now
        shutil.rmtree(self.root, ignore_errors=True)

    def write_policy(self) -> None:
        self.env.add_policy("cache", "cache", GATES.replace("GATE", self.gate).replace("0.01", self.max))

    def gated(self, step: int) -> bool:
        return step == 0 or (step == 1 and self.gate == "required")

    def state(self) -> RolloutState | None:
        if not self.env.flags.exists():
            return None
        return read_state(json.loads(self.env.flags.read_text()), "cache")

    def new_records(self) -> list[dict[str, Any]]:
        records = (
            [r for r in read_records(self.env.log) if r["flag"] == "cache"] if self.env.log.exists() else []
        )
        fresh, self.seen = records[self.seen :], len(records)
        return fresh

    def judge(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.judge_one(record)

    def judge_one(self, record: dict[str, Any]) -> None:
        """A new revision (as the controller sees it: an edit reverted before any cycle is none) needs
        a new approval, and its wait is a new one."""
        if record["revision"] != self.revision:
            if self.revision is not None:
                self.approved.clear()
                self.told = False
            self.revision = record["revision"]
        action = record["action"]
        if action in {"advance", "complete", "promote"} and record["from_step"] is not None:
            step = int(record["from_step"])
            if step >= 0 and record["from_percent"] > 0 and self.gated(step):
                assert step in self.approved, record["reason"]
        if action in CLEARING:
            self.approved.clear()
            self.told = False
        if action == "approve":
            self.told = False
        for event in events_from([record]):
            if event.kind == "awaiting_approval":
                assert not self.told, event.summary
                self.told = True

    # processes -------------------------------------------------------------------------------------

    @rule()
    def restart(self) -> None:
        self.telemetry = Telemetry(clock=lambda: self.env.clock.now.timestamp())
        self.reconciler = self.env.reconciler(observer=self.telemetry)

    @rule()
    def lose_the_last_record(self) -> None:
        """The process that wrote the last change died before appending its record."""
        if not self.env.log.exists():
            return
        lines = self.env.log.read_bytes().splitlines(keepends=True)
        if lines:
            self.env.log.write_bytes(b"".join(lines[:-1]))
        self.seen = min(self.seen, max(0, len(lines) - 1))
        self.told = False  # the record that told it may be the one lost
        self.restart()

    @rule(count=st.integers(1, 4))
    def cycles(self, count: int) -> None:
        for _ in range(count):
            self.run_cycle(fails=False)

    @rule()
    def failing_cycle(self) -> None:
        self.run_cycle(fails=True)

    def run_cycle(self, *, fails: bool) -> None:
        self.env.clock.now += timedelta(seconds=40)
        self.env.metrics.answer = failing if fails else healthy
        asyncio.run(self.reconciler.run(once=True))
        records = self.new_records()
        self.judge(records)
        mine = [r for r in records if r["action"] != "recover"]
        if mine:
            waiting = mine[-1].get("waiting")
            waits = isinstance(waiting, dict) and waiting.get("reason") == "approval"
            assert (WAITS in _gauge(self.telemetry)) == waits

    # humans ----------------------------------------------------------------------------------------

    @rule()
    def approve(self) -> None:
        before = self.state()
        code = _approve(self.env)
        if code == 0:
            assert before is not None
            assert before.awaiting_approval
            self.approved.add(before.step)
        else:
            assert before is None or not before.awaiting_approval
        self.judge(self.new_records())

    @rule(command=st.sampled_from(["pause", "resume", "stop"]))
    def human(self, command: str) -> None:
        cli.main(
            [
                command,
                "cache",
                "--flags",
                str(self.env.flags),
                "--decision-log",
                str(self.env.log),
                "--reason",
                "a human",
            ]
        )
        self.judge(self.new_records())

    # edits -----------------------------------------------------------------------------------------

    @rule()
    def toggle_the_second_gate(self) -> None:
        self.gate = "none" if self.gate == "required" else "required"
        self.write_policy()
        self.told = False  # a wait it ends, or one it begins

    @rule()
    def new_revision(self) -> None:
        self.max = "0.02" if self.max == "0.01" else "0.01"
        self.write_policy()


TestGatedRollout = GatedRollout.TestCase
TestGatedRollout.settings = settings(
    max_examples=100, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_steps_changed_mid_wait_ask_again_for_the_step_as_it_is_now(env: Environment) -> None:
    """An approval given for step 1/2 at 1 %; a step is then inserted before it (a new revision):
    1 % is now step 2/3. The approval is not carried over to the renumbered step."""
    _due(env)
    assert _approve(env) == 0
    env.add_policy(
        "cache", "cache", GATED.replace("  steps:\n", "  steps:\n    - {percent: 0.5, hold: 1m}\n")
    )
    env.clock.now += timedelta(seconds=10)
    [held] = env.cycle()
    assert held["action"] == "hold"
    assert str(held["reason"]).startswith("awaiting approval of step 2/3 at 1 %")
    assert _told([held]) == ["awaiting_approval"]
    state = _state(env)
    assert (state.step, state.approved_step, env.percent()) == (1, None, 1)
    assert _approve(env) == 0
    env.clock.now += timedelta(seconds=10)
    assert [r["action"] for r in env.cycle()] == ["advance"]
    assert env.percent() == 5
