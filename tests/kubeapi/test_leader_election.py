"""Leader election against the real Kubernetes API server: two ``flagroll run`` processes on one
ConfigMap and one Lease. Exactly one writes; when the leader is killed (``kill -9``) the other takes
over within the lease duration plus a cycle, no step is taken twice and a ``flagroll stop`` typed
while nobody leads is never undone; a leader cut off from the API server by a network partition
stops writing before its Lease can be taken, and does not write over the new leader when the
partition heals."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.kube.lease import (
    LEASE_DURATION_SECONDS,
    RENEW_DEADLINE_SECONDS,
    RETRY_PERIOD_SECONDS,
)
from controller.adapters.promserver import PrometheusServer, free_port
from controller.core.state import Status
from tests.support.kubeapi import KubeApiServer
from tests.support.replicas import (
    FAILOVER_BOUND_SECONDS,
    INTERVAL_SECONDS,
    History,
    Replica,
    failover,
    ramp_policy,
)
from tests.support.tcpproxy import TcpProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

"""kill -9 → the new leader's first write: the lease duration, counted from when the follower saw the
last renewal (up to one retry period after it was made), plus one cycle."""


@pytest.fixture(scope="module")
def prometheus_url() -> Iterator[str]:
    """A real Prometheus of our own: the policy's queries are constants, so no scrape target is up."""
    with PrometheusServer([f"127.0.0.1:{free_port()}"]) as server:
        yield server.url


class Deployment:
    """A fresh namespace with the ConfigMap ``flags``, the ``ramp`` policy, and replicas on demand."""

    def __init__(self, api: KubeApiServer, root: Path, prometheus_url: str) -> None:
        self.api = api
        self.root = root
        self.namespace = api.namespace("leader")
        api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": self._meta(), "data": {}})
        self.kubeconfig = api.kubeconfig(root / "kubeconfig", namespace=self.namespace)
        self.policies = root / "policies"
        self.policies.mkdir()
        (self.policies / "ramp.yaml").write_text(ramp_policy())
        self.prometheus_url = prometheus_url
        self.replicas: list[Replica] = []

    def _meta(self) -> dict[str, str]:
        return {"name": "flags", "namespace": self.namespace}

    def replica(self, identity: str, kubeconfig: Path | None = None) -> Replica:
        replica = Replica(
            self.root,
            identity,
            kubeconfig=kubeconfig or self.kubeconfig,
            namespace=self.namespace,
            policies=self.policies,
            prometheus=self.prometheus_url,
        )
        self.replicas.append(replica)
        return replica.start()

    def through(self, proxy: TcpProxy) -> Path:
        """A kubeconfig that reaches the API server through ``proxy``."""
        config = json.loads(self.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        path = self.root / "kubeconfig-proxied"
        path.write_text(json.dumps(config))
        return path

    def stop_flag(self, reason: str) -> None:
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("flagroll")),
                "stop",
                "ramp",
                "--reason",
                reason,
                "--actor",
                "oncall",
                "--flag-store",
                "configmap",
                "--flag-object",
                f"{self.namespace}/flags",
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def close(self) -> None:
        for replica in self.replicas:
            replica.stop()


@pytest.fixture
def deployment(kube_api: KubeApiServer, tmp_path: Path, prometheus_url: str) -> Iterator[Deployment]:
    made = Deployment(kube_api, tmp_path, prometheus_url)
    try:
        yield made
    finally:
        made.close()


def moved_steps(replicas: list[Replica]) -> list[int]:
    """The step each advance record of all ``replicas`` reached, in the order they were decided."""
    records = sorted((r for replica in replicas for r in replica.writes()), key=lambda r: str(r["time"]))
    return [int(r["to_step"]) for r in records if r["action"] == "advance"]


def test_one_replica_writes_and_the_other_takes_over_when_it_is_killed(deployment: Deployment) -> None:
    with History(deployment.api, deployment.namespace) as history:
        a = deployment.replica("pod-a")
        wait_for(lambda: history.holder() == "pod-a", timeout_seconds=30, what="pod-a to hold the Lease")
        b = deployment.replica("pod-b")
        wait_for(lambda: len(a.writes()) >= 3, timeout_seconds=30, what="pod-a to advance")
        wait_for(lambda: b.events("not_leader"), timeout_seconds=30, what="pod-b to wait as a follower")
        assert history.holder() == "pod-a"
        assert b.records() == []  # exactly one writes

        lease_seconds, write_seconds = failover(history, leader=a, follower=b)
        print(f"failover: Lease after {lease_seconds:.1f} s, first write after {write_seconds:.1f} s")
        assert lease_seconds <= LEASE_DURATION_SECONDS + RETRY_PERIOD_SECONDS + 1
        assert write_seconds <= FAILOVER_BOUND_SECONDS

        a = deployment.replica("pod-a")  # restarted, as a kubelet restarts a killed container
        wait_for(lambda: len(b.writes()) >= 3, timeout_seconds=30, what="pod-b to advance")
        assert history.holder() == "pod-b"
        b.kill()
        deployment.stop_flag("stopped while nobody leads")  # the gap a failover leaves
        stopped = history.flags[-1]
        assert stopped.state().status is Status.STOPPED
        wait_for(
            lambda: history.holder() == "pod-a", timeout_seconds=FAILOVER_BOUND_SECONDS + 10, what="pod-a"
        )
        # the new leader runs cycles and sees the stop: it never writes again
        first = wait_for(a.cycles, timeout_seconds=10, what="pod-a's first cycle as the leader")
        wait_for(
            lambda: (a.cycles() or 0) >= first + 2,
            timeout_seconds=4 * INTERVAL_SECONDS,
            what="two more cycles",
        )

    after_stop = [v for v in history.flags if v.resource_version > stopped.resource_version]
    assert after_stop == [], [v.state() for v in after_stop]  # the stop was never undone
    steps = history.steps(upto=stopped.resource_version - 1)
    assert steps == list(range(len(steps)))  # each step once, in order, none skipped
    assert len(steps) >= 4
    assert moved_steps([a, b]) == steps  # and the union of the decision logs says the same


def test_a_partitioned_leader_stops_writing_before_its_lease_can_be_taken(deployment: Deployment) -> None:
    with TcpProxy(deployment.api.port) as proxy, History(deployment.api, deployment.namespace) as history:
        a = deployment.replica("pod-a", kubeconfig=deployment.through(proxy))
        wait_for(lambda: history.holder() == "pod-a", timeout_seconds=30, what="pod-a to hold the Lease")
        b = deployment.replica("pod-b")
        wait_for(lambda: len(a.writes()) >= 3, timeout_seconds=30, what="pod-a to advance")
        last_renewal = history.lease[-1]
        proxy.partition()
        partitioned_at = time.monotonic()
        wait_for(
            lambda: history.holder() == "pod-b",
            timeout_seconds=LEASE_DURATION_SECONDS + RENEW_DEADLINE_SECONDS + 10,
            what="pod-b to take the Lease over",
        )
        held = history.held_since("pod-b")
        assert held is not None
        assert held.monotonic - last_renewal.monotonic >= LEASE_DURATION_SECONDS
        wait_for(lambda: len(b.writes()) >= 2, timeout_seconds=30, what="pod-b to advance")
        proxy.heal()
        healed_at = time.monotonic()
        forwarded = proxy.forwarded_bytes
        wait_for(
            lambda: proxy.forwarded_bytes > forwarded + 10_000,
            timeout_seconds=30,
            what="pod-a to reach the API server again",
        )
        writes_at_heal = len(b.writes())
        wait_for(lambda: len(b.writes()) >= writes_at_heal + 2, timeout_seconds=30, what="pod-b to go on")
        assert history.holder() == "pod-b"

    assert proxy.dropped_bytes > 0  # pod-a kept trying during the partition
    # pod-a decided nothing after its leadership lapsed (the renew deadline after its last renewal),
    # and so nothing after pod-b took over; pod-b decided nothing before
    a_times = [r["time"] for r in a.writes() if r["action"] == "advance"]
    b_times = [r["time"] for r in b.writes() if r["action"] == "advance"]
    lapsed = last_renewal.wall.timestamp() + RENEW_DEADLINE_SECONDS
    assert all(datetime.fromisoformat(t).timestamp() < lapsed for t in a_times)
    assert all(datetime.fromisoformat(t) >= held.wall - timedelta(seconds=1) for t in b_times)
    assert a.events("leadership_lost")
    # every version of the ConfigMap written after the takeover, before and after the heal, is pod-b's
    b_steps = {int(r["to_step"]) for r in b.writes() if r["action"] == "advance"}
    after = [v for v in history.flags if v.monotonic > held.monotonic]
    assert after
    assert all(v.state().step in b_steps for v in after)
    assert [
        v for v in history.flags if partitioned_at + RENEW_DEADLINE_SECONDS < v.monotonic < held.monotonic
    ] == []
    assert any(v.monotonic > healed_at for v in after)
    steps = history.steps()
    assert steps == list(range(len(steps)))
    assert moved_steps([a, b]) == steps
