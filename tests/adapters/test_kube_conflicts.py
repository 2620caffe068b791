"""Optimistic concurrency end to end: the reconciler and the human commands against a Kubernetes store
whose object changes between their read and their write (the fake answers 409 to the stale write)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import METADATA_ANNOTATION, ConfigMapFlagStore, FeatureFlagStore
from controller.cli import main
from controller.core.errors import WriteConflictError
from controller.core.flagd import managed_keys, read_state, render_document, write_flag
from controller.core.state import Status
from controller.reconciler import CONFLICT_ATTEMPTS, Reconciler
from tests.support.environment import POLICY, Clock, FakeMetrics
from tests.support.kubefake import FakeKubeApi

REF = ObjectRef("team", "flags")
KEY = "flags.flagd.json"


class Cluster:
    """One fake API, a policy directory, and as many reconcilers (replicas) as a test wants."""

    def __init__(self, root: Path, kind: str = "configmap") -> None:
        self.root = root
        self.fake = FakeKubeApi(token="t")
        self.kind = kind
        self.plural = "configmaps" if kind == "configmap" else "featureflags"
        if kind == "configmap":
            self.fake.add("configmaps", "team", "flags", {"data": {"unrelated": "x"}})
        else:
            self.fake.add("featureflags", "team", "flags", {"spec": {"flagSpec": {"flags": {}}}})
        self.policies = root / "policies"
        self.policies.mkdir()
        (self.policies / "cache.yaml").write_text(POLICY.format(name="cache", key="cache"))
        self.clock = Clock()
        self.metrics = FakeMetrics()
        self.log = root / "decisions.jsonl"

    def store(self) -> ConfigMapFlagStore | FeatureFlagStore:
        client = self.fake.client("team")
        return ConfigMapFlagStore(client, REF) if self.kind == "configmap" else FeatureFlagStore(client, REF)

    def reconciler(self) -> Reconciler:
        return Reconciler(
            policies=self.policies,
            store=self.store(),
            prometheus=self.metrics,
            decision_log=DecisionLog(self.log),
            clock=self.clock,
        )

    def document(self) -> dict[str, Any]:
        """What a fresh reader finds (for a FeatureFlag: the flags with the state its annotation keeps)."""
        return self.store().read().document

    def state(self, key: str = "cache") -> Any:
        return read_state(self.document(), key)

    def actions(self) -> list[str]:
        return [str(r["action"]) for r in read_records(self.log)]

    def set_document(self, document: dict[str, Any]) -> None:
        def change(obj: dict[str, Any]) -> None:
            if self.kind == "configmap":
                obj["data"][KEY] = render_document(document)
            else:  # as another flagroll would: the flags, and their state in the annotation
                obj["spec"]["flagSpec"] = document
                kept = {key: document["flags"][key]["metadata"] for key in managed_keys(document)}
                obj["metadata"].setdefault("annotations", {})[METADATA_ANNOTATION] = json.dumps(kept)

        self.fake.edit(self.plural, "team", "flags", change)


def run_cycle(reconciler: Reconciler) -> None:
    asyncio.run(reconciler.cycle())


@pytest.fixture(params=["configmap", "featureflag"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Cluster:
    return Cluster(tmp_path, request.param)


def human_stop_through_the_cli(cluster: Cluster, kubeconfig: Path, reason: str) -> None:
    code = main(
        [
            "stop",
            "cache",
            "--flag-store",
            cluster.kind,
            "--flag-object",
            "team/flags",
            "--kubeconfig",
            str(kubeconfig),
            "--decision-log",
            str(cluster.log),
            "--reason",
            reason,
            "--actor",
            "oncall",
        ]
    )
    assert code == 0


def test_a_stop_landing_between_the_controllers_read_and_write_is_never_lost(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(cluster.reconciler().cycle())
    assert cluster.state().percent == 1
    cluster.clock.now += timedelta(minutes=2)  # the hold is over: this cycle would advance to 5 %
    with cluster.fake.serve() as url:
        kubeconfig = cluster.fake.kubeconfig(tmp_path / "kubeconfig", url, namespace="team")
        cluster.fake.before(
            "PUT", cluster.plural, lambda: human_stop_through_the_cli(cluster, kubeconfig, "checkout errors")
        )
        result = asyncio.run(cluster.reconciler().cycle())
    state = cluster.state()
    assert state.status == Status.STOPPED
    assert state.percent == 0
    assert state.reason == "checkout errors"
    assert result.records == []  # the retry saw the stop and decided nothing for this rollout
    assert cluster.actions() == ["advance", "stop"]
    assert len(cluster.fake.conflicts(cluster.plural)) == 1  # the controller's stale write
    assert "stop" in capsys.readouterr().out.lower()


def test_a_conflict_is_decided_again_from_the_fresh_state_and_advances_once(cluster: Cluster) -> None:
    asyncio.run(cluster.reconciler().cycle())
    cluster.clock.now += timedelta(minutes=2)

    def unrelated_edit() -> None:
        document = cluster.document()
        document["flags"]["banner"] = {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}
        cluster.set_document(document)

    cluster.fake.before("PUT", cluster.plural, unrelated_edit)
    result = asyncio.run(cluster.reconciler().cycle())
    assert [r["action"] for r in result.records] == ["advance"]
    state = cluster.state()
    assert (state.step, state.percent) == (1, 5)
    assert cluster.document()["flags"]["banner"]["defaultVariant"] == "a"  # the other edit survives
    assert cluster.actions() == ["advance", "advance"]


def test_two_replicas_deciding_at_once_advance_once(cluster: Cluster) -> None:
    asyncio.run(cluster.reconciler().cycle())
    cluster.clock.now += timedelta(minutes=2)
    first, second = cluster.reconciler(), cluster.reconciler()
    # The second replica's write arrives after the first replica's whole cycle: its stale write is
    # refused, it reads again, sees the step already taken, and holds.
    cluster.fake.before("PUT", cluster.plural, lambda: run_cycle(first))
    result = asyncio.run(second.cycle())
    assert result.records == []
    state = cluster.state()
    assert (state.step, state.percent) == (1, 5)
    assert cluster.actions() == ["advance", "advance"]


def test_conflicts_without_end_give_up_for_this_cycle_and_overwrite_nothing(cluster: Cluster) -> None:
    asyncio.run(cluster.reconciler().cycle())
    cluster.clock.now += timedelta(minutes=2)
    edits = 0

    def someone_else_edits() -> None:
        nonlocal edits
        edits += 1
        document = cluster.document()
        document["flags"]["other"] = {"state": "ENABLED", "variants": {"a": edits}, "defaultVariant": "a"}
        cluster.set_document(document)

    cluster.fake.before("PUT", cluster.plural, someone_else_edits, times=CONFLICT_ATTEMPTS)
    with pytest.raises(WriteConflictError):
        asyncio.run(cluster.reconciler().cycle())
    assert cluster.state().percent == 1
    assert cluster.document()["flags"]["other"]["variants"]["a"] == CONFLICT_ATTEMPTS
    assert cluster.actions() == ["advance"]
    asyncio.run(cluster.reconciler().cycle())  # the next cycle goes through
    assert cluster.state().percent == 5


def test_a_human_stop_conflicting_with_the_controller_is_applied_to_the_fresh_state(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(cluster.reconciler().cycle())
    cluster.clock.now += timedelta(minutes=2)
    advancing = cluster.reconciler()
    with cluster.fake.serve() as url:
        kubeconfig = cluster.fake.kubeconfig(tmp_path / "kubeconfig", url, namespace="team")
        # the controller advances to 5 % after the human read the flag at 1 % and before their write
        cluster.fake.before("PUT", cluster.plural, lambda: run_cycle(advancing))
        human_stop_through_the_cli(cluster, kubeconfig, "bad reviews")
    state = cluster.state()
    assert (state.status, state.percent, state.reason) == (Status.STOPPED, 0, "bad reviews")
    records = list(read_records(cluster.log))
    assert [r["action"] for r in records] == ["advance", "advance", "stop"]
    assert records[-1]["from_percent"] == 5  # decided from what was there, not from the stale read
    capsys.readouterr()


def test_the_stale_documents_flags_are_not_written_back(cluster: Cluster) -> None:
    """A write replaces the object as read at its resourceVersion: a flag somebody added meanwhile is
    never dropped by a write that started before it appeared."""
    asyncio.run(cluster.reconciler().cycle())
    store = cluster.store()
    snapshot = store.read()
    theirs = cluster.document()
    theirs["flags"]["new-flag"] = {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}
    cluster.set_document(theirs)
    state = read_state(snapshot.document, "cache")
    assert state is not None
    with pytest.raises(WriteConflictError):
        store.write(write_flag(snapshot.document, "cache", state.moved(percent=5.0)), snapshot, ["cache"])
    assert "new-flag" in cluster.document()["flags"]
