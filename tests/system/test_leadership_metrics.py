"""Two ``flagroll run`` processes on one ConfigMap and one Lease (the fake Kubernetes API served on
127.0.0.1), each serving /metrics: when leadership moves, the demoted replica stops showing the
rollback it saw, and the new leader shows it. A demoted replica must not keep an alert firing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore
from controller.adapters.promserver import free_port
from controller.core.flagd import read_state
from controller.core.state import Status
from controller.reconciler import Reconciler
from tests.support.environment import POLICY, Clock, FakeMetrics, failing
from tests.support.kubefake import FakeKubeApi
from tests.support.waiting import wait_for

ROLLED_BACK = ("flagroll_rollout_status", (("flag", "cache"), ("status", "rolled_back")))
LEADER = ("flagroll_leader", ())


def _rolled_back_configmap(fake: FakeKubeApi, policies: Path, root: Path) -> None:
    """``cache`` started and then rolled back, in the ConfigMap, by an in-process cycle."""
    clock = Clock()
    metrics = FakeMetrics()
    reconciler = Reconciler(
        policies=policies,
        store=ConfigMapFlagStore(fake.client("team"), ObjectRef("team", "flags")),
        prometheus=metrics,
        decision_log=DecisionLog(root / "seed.jsonl"),
        clock=clock,
    )
    asyncio.run(reconciler.cycle())
    clock.now += timedelta(seconds=15)
    metrics.answer = failing
    asyncio.run(reconciler.cycle())
    store = ConfigMapFlagStore(fake.client("team"), ObjectRef("team", "flags"))
    state = read_state(store.read().document, "cache")
    assert state is not None
    assert state.status is Status.ROLLED_BACK


class Replica:
    def __init__(self, root: Path, identity: str, kubeconfig: Path, policies: Path) -> None:
        self.port = free_port()
        self.out = root / f"{identity}.out"
        with self.out.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "controller",
                    "--log-format",
                    "json",
                    "run",
                    "--policies",
                    str(policies),
                    "--prometheus",
                    "http://127.0.0.1:9",  # never asked: a rolled-back rollout needs no query
                    "--flag-store",
                    "configmap",
                    "--flag-object",
                    "flags",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--leader-election-lease",
                    "team/flagroll",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "POD_NAME": identity},
            )

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        assert self.process.poll() is None, self.out.read_text(errors="replace")[-2000:]
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None  # not listening yet
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def shows_the_rollback(self) -> bool:
        found = self.scrape()
        return found is not None and found.get(ROLLED_BACK) == 1.0

    def shows_no_rollout(self) -> bool:
        found = self.scrape()
        return found is not None and not any(
            name.startswith(("flagroll_rollout_", "flagroll_flag_", "flagroll_guardrail_"))
            for name, _ in found
        )

    def leader_gauge(self) -> float | None:
        found = self.scrape()
        assert found is not None
        return found.get(LEADER)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeKubeApi, Path]]:
    fake = FakeKubeApi(token="t")
    fake.add("configmaps", "team", "flags", {"data": {}})
    with fake.serve() as url:
        yield fake, fake.kubeconfig(tmp_path / "kubeconfig", url, namespace="team")


@pytest.mark.slow
def test_when_leadership_moves_only_the_new_leader_shows_the_rollback(
    api: tuple[FakeKubeApi, Path], tmp_path: Path
) -> None:
    fake, kubeconfig = api
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "cache.yaml").write_text(POLICY.format(name="cache", key="cache"))
    _rolled_back_configmap(fake, policies, tmp_path)
    a = Replica(tmp_path, "pod-a", kubeconfig, policies)
    replicas = [a]
    try:
        wait_for(a.shows_the_rollback, timeout_seconds=30, what="pod-a to lead and show the rollback")
        b = Replica(tmp_path, "pod-b", kubeconfig, policies)
        replicas.append(b)
        wait_for(b.scrape, timeout_seconds=30, what="pod-b to serve /metrics")
        assert b.shows_no_rollout()  # a follower from the start
        # leadership moves to pod-b: pod-a sees another holder (and loses at once), pod-b renews
        fake.edit("leases", "team", "flagroll", lambda lease: lease["spec"].update(holderIdentity="pod-b"))
        wait_for(b.shows_the_rollback, timeout_seconds=30, what="pod-b to lead and show the rollback")
        wait_for(a.shows_no_rollout, timeout_seconds=30, what="pod-a to stop showing the rollout")
        assert (a.leader_gauge(), b.leader_gauge()) == (0.0, 1.0)
        assert a.shows_no_rollout()  # and it stays that way while pod-b leads
        assert b.shows_the_rollback()
    finally:
        for replica in replicas:
            replica.stop()
