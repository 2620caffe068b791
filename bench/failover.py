"""Failover benchmark: how long a Deployment of two ``flagroll run`` replicas is without a writer
after its leader is killed (``kill -9``), against a real Kubernetes API server.

What it does, in one run:

1. starts etcd and kube-apiserver (``tests/support/kubeapi.KubeApiServer``, built by
   ``scripts/peer``) and a Prometheus of its own, creates a namespace with the ConfigMap ``flags``
   and a policy that advances one step per cycle (``tests/support/replicas.ramp_policy``);
2. starts two replicas with ``--leader-election-lease``; then ``--failovers`` times: waits for the
   leader to write, kills it with SIGKILL, waits for the other replica to hold the Lease and to write
   the ConfigMap, and starts the killed one again (it waits as a follower);
3. prints each failover's time (kill to the Lease naming the new holder, and kill to the new leader's
   first ConfigMap write, as a watch on both objects saw them), their median and maximum, and the
   bound: lease duration + retry period (the follower sees the last renewal up to one retry period
   after it was made) + one cycle. It also checks that no step was written twice.

Run: ``python -m bench.failover`` (default 10 failovers, about 4 minutes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from controller.adapters.kube.lease import LEASE_DURATION_SECONDS, RETRY_PERIOD_SECONDS
from controller.adapters.promserver import PrometheusServer, free_port
from tests.support.kubeapi import KubeApiServer
from tests.support.replicas import (
    FAILOVER_BOUND_SECONDS,
    INTERVAL_SECONDS,
    History,
    Replica,
    failover,
    ramp_policy,
)
from tests.support.waiting import wait_for

BOUND_SECONDS = FAILOVER_BOUND_SECONDS


def run(failovers: int, root: Path) -> int:
    with (
        KubeApiServer() as api,
        PrometheusServer([f"127.0.0.1:{free_port()}"]) as prometheus,
    ):
        namespace = api.namespace("failover")
        api.apply(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flags", "namespace": namespace}}
        )
        kubeconfig = api.kubeconfig(root / "kubeconfig", namespace=namespace)
        policies = root / "policies"
        policies.mkdir()
        (policies / "ramp.yaml").write_text(ramp_policy(steps=100))
        replicas = {
            name: Replica(
                root,
                name,
                kubeconfig=kubeconfig,
                namespace=namespace,
                policies=policies,
                prometheus=prometheus.url,
            )
            for name in ("pod-a", "pod-b")
        }
        times: list[tuple[float, float]] = []
        with History(api, namespace) as history:
            try:
                replicas["pod-a"].start()
                wait_for(lambda: history.holder() == "pod-a", timeout_seconds=30, what="pod-a to lead")
                replicas["pod-b"].start()
                for n in range(1, failovers + 1):
                    holder = history.holder()
                    assert holder is not None
                    leader = replicas[holder]
                    follower = replicas["pod-b" if holder == "pod-a" else "pod-a"]
                    times.append(failover(history, leader, follower))
                    lease_s, write_s = times[-1]
                    print(
                        f"failover {n:2}: {leader.identity} killed; {follower.identity} holds the Lease "
                        f"after {lease_s:5.2f} s, writes after {write_s:5.2f} s",
                        flush=True,
                    )
                    leader.start()  # restarted, as a kubelet restarts a killed container
            finally:
                for replica in replicas.values():
                    replica.stop()
        steps = history.steps()
    leases = [t[0] for t in times]
    writes = [t[1] for t in times]
    print(f"Lease taken over: median {statistics.median(leases):.2f} s, max {max(leases):.2f} s")
    print(f"first write:      median {statistics.median(writes):.2f} s, max {max(writes):.2f} s")
    print(
        f"bound: lease duration {LEASE_DURATION_SECONDS} s + retry period {RETRY_PERIOD_SECONDS:g} s "
        f"+ one cycle {INTERVAL_SECONDS} s = {BOUND_SECONDS:g} s; "
        f"{'within' if max(writes) <= BOUND_SECONDS else 'EXCEEDED'}"
    )
    doubled = steps != list(range(len(steps)))
    print(f"steps written: {len(steps)}, each once: {'no' if doubled else 'yes'}")
    return 1 if doubled or max(writes) > BOUND_SECONDS else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--failovers", type=int, default=10, help="how many failovers (default 10)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flagroll-failover-") as root:
        return run(args.failovers, Path(root))


if __name__ == "__main__":
    sys.exit(main())
