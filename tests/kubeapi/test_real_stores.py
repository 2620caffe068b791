"""The ConfigMap and FeatureFlag stores against a real Kubernetes API server (etcd + kube-apiserver
v1.37, the OpenFeature Operator's FeatureFlag CRD of API v0.2.45): a ramp, a rollback, a human stop
and resume, and edits by another client between flagroll's read and write, with every served
document loaded into the real flagd evaluator."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from controller.adapters.kube.errors import KubeNotFoundError, KubeRejectedError
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import METADATA_ANNOTATION, FeatureFlagStore
from controller.core.errors import PermanentError
from controller.core.flagd import render_document
from controller.core.state import Status
from tests.support.environment import POLICY, failing, healthy
from tests.support.kubeapi import KubeApiServer
from tests.support.kubecluster import HAND_MADE, KEY, Cluster, exposure


@pytest.fixture(params=["configmap", "featureflag"])
def cluster(request: pytest.FixtureRequest, kube_api: KubeApiServer, tmp_path: Path) -> Iterator[Cluster]:
    with contextlib.closing(Cluster(kube_api, tmp_path, request.param)) as made:
        yield made


@pytest.fixture
def featureflag(kube_api: KubeApiServer, tmp_path: Path) -> Iterator[Cluster]:
    with contextlib.closing(Cluster(kube_api, tmp_path, "featureflag")) as made:
        yield made


def test_a_ramp_rollback_stop_and_resume_are_served_as_written(cluster: Cluster) -> None:
    cluster.cycle()
    assert cluster.state().percent == 20
    assert exposure(cluster.served())["on"] == pytest.approx(20, abs=3)
    cluster.clock.now += timedelta(minutes=2)
    cluster.cycle()
    assert cluster.state().percent == 50
    assert exposure(cluster.served())["on"] == pytest.approx(50, abs=3)

    cluster.metrics.answer = failing
    cluster.clock.now += timedelta(seconds=10)
    cluster.cycle()
    assert cluster.state().status == Status.ROLLED_BACK
    assert "on" not in exposure(cluster.served())

    cluster.metrics.answer = healthy
    assert cluster.cli("resume", "cache", "--reason", "fixed", "--actor", "oncall") == 0
    cluster.clock.now += timedelta(seconds=10)
    cluster.cycle()
    assert cluster.state().percent == 20
    assert cluster.cli("stop", "cache", "--reason", "checkout 5xx", "--actor", "oncall") == 0
    assert cluster.state().status == Status.STOPPED
    assert "on" not in exposure(cluster.served())
    assert cluster.actions() == ["advance", "advance", "rollback", "resume", "advance", "stop"]
    # Nobody else's content was touched.
    if cluster.kind == "configmap":
        assert cluster.raw()["data"]["unrelated"] == "x"
    else:
        assert cluster.raw()["spec"]["flagSpec"]["flags"]["hand-made"] == {
            k: v
            for k, v in HAND_MADE.items()
            if k != "metadata"  # the CRD has no field for it
        }


def test_the_crds_schema_prunes_flag_metadata_so_the_state_is_kept_in_an_annotation(
    featureflag: Cluster,
) -> None:
    cluster = featureflag
    cluster.cycle()
    obj = cluster.raw()
    served = obj["spec"]["flagSpec"]["flags"]["cache"]
    assert "metadata" not in served  # pruned by the CRD of API v0.2.45
    kept = json.loads(obj["metadata"]["annotations"][METADATA_ANNOTATION])
    assert set(kept) == {"cache"}  # only the managed flag's
    assert kept["cache"]["flagroll.policy"] == "cache"
    state = cluster.state()
    assert (state.percent, state.step, state.policy) == (20, 0, "cache")
    # A restarted controller (a new client, a new store) reads the same state and goes on.
    cluster.clock.now += timedelta(minutes=2)
    cluster.cycle()
    assert cluster.state().percent == 50
    assert cluster.actions() == ["advance", "advance"]


def test_a_flag_the_crd_would_refuse_is_a_clear_error_and_nothing_is_written(featureflag: Cluster) -> None:
    cluster = featureflag
    store = cluster.store()
    snapshot = store.read()
    before = cluster.raw()["metadata"]["resourceVersion"]
    document = json.loads(json.dumps(snapshot.document))
    # flagd serves a flag without a default variant (the caller's default); the CRD requires one.
    del document["flags"]["hand-made"]["defaultVariant"]
    with pytest.raises(KubeRejectedError) as raised:
        store.write(document, snapshot, ["hand-made"])
    assert isinstance(raised.value, PermanentError)
    assert f"'flags' in namespace '{cluster.namespace}'" in str(raised.value)
    assert "defaultVariant" in str(raised.value)
    assert cluster.raw()["metadata"]["resourceVersion"] == before


def test_a_missing_object_is_a_permanent_error_naming_it(featureflag: Cluster) -> None:
    store = FeatureFlagStore(featureflag.client(), ObjectRef(featureflag.namespace, "absent"))
    with pytest.raises(KubeNotFoundError) as raised:
        store.read()
    assert isinstance(raised.value, PermanentError)
    assert "'absent'" in str(raised.value)
    assert featureflag.namespace in str(raised.value)


def test_a_stop_landing_between_the_controllers_read_and_write_is_never_lost(cluster: Cluster) -> None:
    cluster.cycle()
    cluster.clock.now += timedelta(minutes=2)  # the hold is over: this cycle would advance to 50 %
    stopped: list[int] = []

    def human_stop() -> None:
        if not stopped:
            stopped.append(cluster.cli("stop", "cache", "--reason", "checkout errors", "--actor", "oncall"))

    cluster.metrics.during = human_stop  # after the controller's read, before its write
    result = cluster.cycle()
    assert stopped == [0]
    state = cluster.state()
    assert (state.status, state.percent, state.reason) == (Status.STOPPED, 0, "checkout errors")
    assert result.records == []  # the retry saw the stop and decided nothing for this rollout
    assert cluster.actions() == ["advance", "stop"]


def test_another_clients_unrelated_edit_is_kept_and_the_step_is_taken_once(cluster: Cluster) -> None:
    cluster.cycle()
    cluster.clock.now += timedelta(minutes=2)
    edited: list[bool] = []

    def someone_else_edits() -> None:
        if edited:
            return
        edited.append(True)
        obj = cluster.raw()  # a plain client: GET, change, PUT with the resourceVersion it read
        if cluster.kind == "configmap":
            obj["data"]["unrelated"] = "edited"
        else:
            obj["spec"]["flagSpec"]["flags"]["hand-made"]["defaultVariant"] = "b"
        answer = cluster.api.request("PUT", cluster.path, obj)
        assert answer.status_code == 200, answer.text

    cluster.metrics.during = someone_else_edits
    cluster.cycle()
    assert edited == [True]
    assert cluster.state().percent == 50
    assert cluster.actions() == ["advance", "advance"]
    obj = cluster.raw()
    if cluster.kind == "configmap":
        assert obj["data"]["unrelated"] == "edited"
    else:
        assert obj["spec"]["flagSpec"]["flags"]["hand-made"]["defaultVariant"] == "b"


def test_two_replicas_deciding_from_the_same_read_advance_once(cluster: Cluster) -> None:
    cluster.cycle()
    cluster.clock.now += timedelta(minutes=2)
    second = cluster.reconciler()
    ran: list[bool] = []

    def the_other_replica_decides_first() -> None:
        if not ran:  # in a thread of its own: this one's event loop is running
            ran.append(True)
            cluster.metrics.during = None
            other = threading.Thread(target=cluster.cycle, args=(second,))
            other.start()
            other.join(timeout=30)

    cluster.metrics.during = the_other_replica_decides_first
    cluster.cycle()
    assert ran == [True]
    assert cluster.state().percent == 50
    assert cluster.actions() == ["advance", "advance"]


def test_a_configmap_keeps_every_flags_metadata(kube_api: KubeApiServer, tmp_path: Path) -> None:
    with contextlib.closing(
        Cluster(kube_api, tmp_path, "configmap", POLICY.format(name="cache", key="cache"))
    ) as cluster:
        obj = cluster.raw()
        obj["data"][KEY] = render_document({"flags": {"hand-made": HAND_MADE}})
        assert cluster.api.request("PUT", cluster.path, obj).status_code == 200
        cluster.cycle()
        served = json.loads(cluster.served())
    assert served["flags"]["hand-made"] == HAND_MADE  # a ConfigMap keeps everything, metadata included
    assert served["flags"]["cache"]["metadata"]["flagroll.percent"] == 1


def test_an_existing_flag_serving_off_is_adopted_then_ramped_and_handed_over(featureflag: Cluster) -> None:
    cluster = featureflag
    obj = cluster.raw()
    obj["spec"]["flagSpec"]["flags"]["cache"] = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
    }
    assert cluster.api.request("PUT", cluster.path, obj).status_code == 200
    cluster.cycle()
    assert cluster.actions() == ["adopt"]
    assert cluster.state().policy == "cache"
    assert "on" not in exposure(cluster.served())  # adopting changes nobody's exposure
    cluster.clock.now += timedelta(seconds=10)
    cluster.cycle()
    assert cluster.state().percent == 20
    assert exposure(cluster.served())["on"] == pytest.approx(20, abs=3)
    kept = json.loads(cluster.raw()["metadata"]["annotations"][METADATA_ANNOTATION])
    assert kept["cache"]["flagroll.percent"] == 20

    # The policy is renamed in Git; on-call hands the flag over at once instead of waiting out the grace.
    (cluster.policies / "cache.yaml").rename(cluster.policies / "cache-v2.yaml")
    text = (cluster.policies / "cache-v2.yaml").read_text().replace("name: cache}", "name: cache-v2}")
    (cluster.policies / "cache-v2.yaml").write_text(text)
    code = cluster.cli(
        "adopt", "cache", "--policy", "cache-v2", "--policies", str(cluster.policies), "--actor", "oncall"
    )
    assert code == 0
    assert cluster.state().policy == "cache-v2"
    assert cluster.state().percent == 20  # the hand-over keeps the exposure
    cluster.clock.now += timedelta(minutes=2)
    cluster.cycle()
    assert cluster.state().percent == 50
    assert cluster.actions()[-1] == "advance"
