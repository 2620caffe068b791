"""Several ``flagroll run`` processes on one ConfigMap and one Lease of a real Kubernetes API server
(:mod:`tests.support.kubeapi`), as replicas of a Deployment are, and a record of every version of
both objects as the API server stored them.

- :class:`Replica`: one ``flagroll run --leader-election-lease`` child process with its own
  ``POD_NAME``, decision log and output; ``kill()`` is ``kill -9``.
- :class:`History`: watches the ConfigMap and the Lease from the test (as the administrator) and
  keeps each version with the time it arrived, so a test can tell who held the Lease when each
  version of the flags was written.
- :data:`RAMP_POLICY`: a policy whose checks pass on any Prometheus (constant queries), with many
  short steps, so that every cycle of the leader moves the flag one step on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.decisionlog import read_records
from controller.adapters.kube.lease import LEASE_DURATION_SECONDS, RETRY_PERIOD_SECONDS
from controller.adapters.promserver import free_port
from controller.core.flagd import read_state
from tests.support.kubeapi import KubeApiServer
from tests.support.waiting import wait_for

KEY = "flags.flagd.json"
LEASE_NAME = "flagroll"
INTERVAL_SECONDS = 3


def ramp_policy(steps: int = 60, interval_seconds: int = INTERVAL_SECONDS) -> str:
    """``ramp``: steps of 0.5, 1, 1.5 … % held one interval each; traffic and errors are constants (100
    requests, no errors), so every check passes on any Prometheus and each cycle of the leader
    advances one step."""
    listed = "\n".join(
        f"    - {{percent: {p / 2:g}, hold: {interval_seconds}s}}" for p in range(1, steps + 1)
    )
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: ramp}}
spec:
  owner: sre-lead
  aim: Ramp a flag half a percent per cycle.
  mechanism: Nobody is exposed to anything new; the ramp shows which replica writes.
  flag: {{key: ramp}}
  interval: {interval_seconds}s
  steps:
{listed}
  traffic:
    query: label_replace(vector(100), "v", "{{{{variant}}}}", "", "")
    minSamples: 10
  guardrails:
    - name: errors
      query: label_replace(vector(0), "v", "{{{{variant}}}}", "", "")
      max: 0.01
"""


class Replica:
    """One ``flagroll run`` process holding (or waiting for) the Lease ``NAMESPACE/flagroll``."""

    def __init__(
        self, root: Path, identity: str, *, kubeconfig: Path, namespace: str, policies: Path, prometheus: str
    ) -> None:
        self.identity = identity
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.policies = policies
        self.prometheus = prometheus
        self.log = root / f"{identity}.jsonl"
        self.out = root / f"{identity}.out"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> Replica:
        self.port = free_port()
        command = [
            *(str(Path(sys.executable).with_name("flagroll")),),
            "--log-format",
            "json",
            "run",
            "--policies",
            str(self.policies),
            "--prometheus",
            self.prometheus,
            "--flag-store",
            "configmap",
            "--flag-object",
            f"{self.namespace}/flags",
            "--kubeconfig",
            str(self.kubeconfig),
            "--leader-election-lease",
            f"{self.namespace}/{LEASE_NAME}",
            "--decision-log",
            str(self.log),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        with self.out.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "POD_NAME": self.identity},
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: no Lease given up, nothing flushed."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self, timeout_seconds: float = 30.0) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def records(self) -> list[dict[str, Any]]:
        return list(read_records(self.log)) if self.log.exists() else []

    def writes(self) -> list[dict[str, Any]]:
        """Its records of moves it wrote (not holds)."""
        return [r for r in self.records() if r.get("action") not in ("hold", None)]

    def cycles(self) -> int | None:
        """``flagroll_cycles_total`` from its /metrics (cycles it ran as the leader); None while it
        does not answer."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        total = 0.0
        for family in text_string_to_metric_families(text):
            if family.name == "flagroll_cycles":
                total += sum(s.value for s in family.samples if s.name == "flagroll_cycles_total")
        return int(total)

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == name:
                    found.append(event)
        return found


@dataclass(frozen=True)
class Version:
    """One version of a watched object, with when the watch delivered it."""

    monotonic: float
    wall: datetime
    resource_version: int
    obj: dict[str, Any]

    @property
    def holder(self) -> str | None:
        return (self.obj.get("spec") or {}).get("holderIdentity")

    def state(self, flag: str = "ramp") -> Any:
        text = (self.obj.get("data") or {}).get(KEY)
        return read_state(json.loads(text), flag) if text else None


class History:
    """Every version of ``NAMESPACE/flags`` (ConfigMap) and ``NAMESPACE/flagroll`` (Lease), watched."""

    def __init__(self, api: KubeApiServer, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.flags: list[Version] = []
        self.lease: list[Version] = []
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._watch,
                args=(f"/api/v1/namespaces/{namespace}/configmaps", "flags", self.flags),
                daemon=True,
            ),
            threading.Thread(
                target=self._watch,
                args=(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases", LEASE_NAME, self.lease),
                daemon=True,
            ),
        ]

    def __enter__(self) -> History:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)

    def _watch(self, collection: str, name: str, into: list[Version]) -> None:
        version = "0"
        with httpx.Client(
            base_url=self.api.url,
            headers={"Authorization": f"Bearer {self.api.admin_token}"},
            verify=self.api._tls(),
            timeout=httpx.Timeout(10.0),
        ) as client:
            while not self._stopping.is_set():
                params = {
                    "watch": "1",
                    "fieldSelector": f"metadata.name={name}",
                    "resourceVersion": version,
                    "timeoutSeconds": "1",
                    "allowWatchBookmarks": "false",
                }
                try:
                    with client.stream("GET", collection, params=params) as answer:
                        for line in answer.iter_lines():
                            event = json.loads(line)
                            obj = event["object"]
                            if event["type"] in ("ADDED", "MODIFIED"):
                                version = obj["metadata"]["resourceVersion"]
                                into.append(Version(time.monotonic(), datetime.now(UTC), int(version), obj))
                except httpx.HTTPError:
                    time.sleep(0.05)

    def holder(self) -> str | None:
        return self.lease[-1].holder if self.lease else None

    def held_since(self, identity: str) -> Version | None:
        """The Lease version in which ``identity`` last became the holder."""
        found = None
        previous = None
        for version in list(self.lease):
            if version.holder == identity and previous != identity:
                found = version
            previous = version.holder
        return found

    def steps(self, upto: int | None = None) -> list[int]:
        """The step index of each ConfigMap version that changed it (repeats removed), up to resource
        version ``upto``."""
        seen: list[int] = []
        for version in list(self.flags):
            if upto is not None and version.resource_version > upto:
                break
            state = version.state()
            if state is not None and state.step is not None and (not seen or seen[-1] != state.step):
                seen.append(state.step)
        return seen


FAILOVER_BOUND_SECONDS = LEASE_DURATION_SECONDS + RETRY_PERIOD_SECONDS + INTERVAL_SECONDS
"""kill -9 of the leader to the follower's first write, at most: the lease duration, plus the retry
period (the follower sees the last renewal up to one retry period after it was made), plus one cycle."""


def failover(history: History, leader: Replica, follower: Replica) -> tuple[float, float]:
    """kill -9 ``leader``; wait for ``follower`` to hold the Lease and write. Returns the seconds from
    the kill to the Lease naming the follower and to the follower's first ConfigMap write."""
    writes_before = len(follower.writes())
    versions_before = len(history.flags)
    killed_at = time.monotonic()
    leader.kill()
    wait_for(
        lambda: len(follower.writes()) > writes_before,
        timeout_seconds=FAILOVER_BOUND_SECONDS + 10,
        interval_seconds=0.1,
        what=f"{follower.identity} to take over and write",
    )
    held = history.held_since(follower.identity)
    assert held is not None
    assert held.monotonic > killed_at
    written = next(v for v in history.flags[versions_before:] if v.monotonic > held.monotonic)
    return held.monotonic - killed_at, written.monotonic - killed_at
