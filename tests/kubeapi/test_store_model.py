"""A model-based test of the Kubernetes stores against the real API server: random sequences of
controller cycles (healthy or failing treatment), restarts, human ``stop`` and ``resume`` through the
``flagroll`` command, time passing, and another client editing the object (adding, changing or
removing a hand-made flag), sometimes between the controller's read and its write, on a ConfigMap and
on a FeatureFlag (whose CRD prunes flag metadata: the state lives in an annotation).

After every step, from a fresh client:

- S1: the document holds exactly the hand-made flags the other client last wrote (nothing of theirs
  overwritten, nothing resurrected), with the fields the object kind keeps;
- S2: the rollout's state is the last decision record's: its percent and status are those the
  record moved it to, and the real flagd evaluator serves that percent (within sampling error) and
  nobody ``on`` when it is 0;
- S3: a stop is never undone but by ``resume``; a rollback never by a cycle (the policy does not
  change here);
- S4: no step is taken twice: the advances between two human actions or rollbacks go 0, 1, … one
  step at a time.

Bounded for ``make test`` (12 sequences of up to 12 steps, about 15 s on two cores); a soak:
``FLAGROLL_SOAK_EXAMPLES=200 FLAGROLL_SOAK_STEPS=25 .venv/bin/pytest tests/kubeapi/test_store_model.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from controller.adapters.decisionlog import read_records
from controller.core.state import Status
from tests.support.environment import failing, healthy
from tests.support.kubeapi import KubeApiServer
from tests.support.kubecluster import HAND_MADE, KEY, Cluster, exposure

HAND_KEYS = ("banner", "theme")
FLAG_KEPT = ("state", "variants", "defaultVariant", "targeting")


class KubeStoreModel(RuleBasedStateMachine):
    api: KubeApiServer  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self._workdir = TemporaryDirectory(prefix="flagroll-kube-model-")
        self.cluster: Cluster | None = None
        self.hand: dict[str, dict[str, Any]] = {}
        self.reconciler: Any = None
        self.stopped = False
        self.rolled_back = False
        self._now_patch = mock.patch("controller.cli.common.utc_now", self._now)
        self._now_patch.start()

    def _now(self) -> Any:
        assert self.cluster is not None
        self.cluster.clock.now += timedelta(milliseconds=1)
        return self.cluster.clock.now

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    @initialize(kind=st.sampled_from(["configmap", "featureflag"]))
    def start(self, kind: str) -> None:
        self.cluster = Cluster(self.api, Path(self._workdir.name), kind)
        if kind == "featureflag":
            self.hand = {"hand-made": {k: v for k, v in HAND_MADE.items() if k in FLAG_KEPT}}
        self.reconciler = self.c.reconciler()

    # --- the other client -------------------------------------------------------------------------

    def _edit(self, key: str, value: int | None) -> None:
        obj = self.c.raw()
        if self.c.kind == "configmap":
            text = obj["data"].get(KEY)
            document = json.loads(text) if text else {"flags": {}}
        else:
            document = obj["spec"]["flagSpec"]
        if value is None:
            document["flags"].pop(key, None)
        else:
            document["flags"][key] = {"state": "ENABLED", "variants": {"a": value}, "defaultVariant": "a"}
        if self.c.kind == "configmap":
            obj["data"][KEY] = json.dumps(document)
        answer = self.c.api.request("PUT", self.c.path, obj)
        assert answer.status_code == 200, answer.text
        if value is None:
            self.hand.pop(key, None)
        else:
            self.hand[key] = document["flags"][key]

    @rule(key=st.sampled_from(HAND_KEYS), value=st.none() | st.integers(0, 9))
    def other_client_edits(self, key: str, value: int | None) -> None:
        self._edit(key, value)

    # --- the controller ---------------------------------------------------------------------------

    @rule(
        treatment_fails=st.booleans(),
        edit_meanwhile=st.none() | st.tuples(st.sampled_from(HAND_KEYS), st.none() | st.integers(0, 9)),
        restart=st.booleans(),
    )
    def cycle(
        self, treatment_fails: bool, edit_meanwhile: tuple[str, int | None] | None, restart: bool
    ) -> None:
        if restart:
            self.reconciler = self.c.reconciler()
        self.c.metrics.answer = failing if treatment_fails else healthy
        before = self.c.state()
        edited: list[bool] = []

        def meanwhile() -> None:
            if edit_meanwhile is not None and not edited:
                edited.append(True)
                self._edit(*edit_meanwhile)

        self.c.metrics.during = meanwhile
        try:
            self.c.cycle(self.reconciler)
        finally:
            self.c.metrics.during = None
        after = self.c.state()
        if before is not None and before.exposed and treatment_fails and not self.stopped:
            assert after.status == Status.ROLLED_BACK, "a failing guardrail rolls back in the cycle"
        if after is not None and after.status == Status.ROLLED_BACK:
            self.rolled_back = True

    @rule(seconds=st.sampled_from([10, 45, 70, 130]))
    def time_passes(self, seconds: int) -> None:
        self.c.clock.now += timedelta(seconds=seconds)

    # --- on-call ----------------------------------------------------------------------------------

    @rule()
    def human_stop(self) -> None:
        code = self.c.cli("stop", "cache", "--reason", "on-call", "--actor", "oncall")
        if self.c.state() is not None:
            assert code == 0
            self.stopped = True

    @rule()
    def human_resume(self) -> None:
        state = self.c.state()
        code = self.c.cli("resume", "cache", "--reason", "fixed", "--actor", "oncall")
        if state is not None and state.status in (Status.STOPPED, Status.ROLLED_BACK):
            assert code == 0
            self.stopped = self.rolled_back = False

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def hand_made_flags_are_the_other_clients(self) -> None:  # S1
        if self.cluster is None:
            return
        flags = self.c.document()["flags"]
        assert {k: v for k, v in flags.items() if k != "cache"} == self.hand

    @invariant()
    def the_state_is_the_last_records_and_is_served(self) -> None:  # S2, S3
        if self.cluster is None:
            return
        state = self.c.state()
        records = [r for r in read_records(self.c.log) if r.get("flag") == "cache"]
        if state is None:
            assert [r for r in records if r["action"] != "hold"] == []
            return
        last = records[-1]
        assert state.percent == last["to_percent"]
        assert state.status.value == last["status"]
        if self.stopped:
            assert state.status == Status.STOPPED
        elif self.rolled_back:
            assert state.status == Status.ROLLED_BACK
        served = exposure(self.c.served())
        if state.percent == 0:
            assert served.get("on", 0) == 0
        else:
            assert served.get("on", 0) == pytest.approx(state.percent, abs=4)

    @invariant()
    def no_step_is_taken_twice(self) -> None:  # S4
        if self.cluster is None:
            return
        expected = 0
        for record in read_records(self.c.log):
            if record.get("flag") != "cache":
                continue
            if record["action"] == "advance":
                assert record["to_step"] == expected, (
                    f"advance to step {record['to_step']}, expected {expected}"
                )
                expected += 1
            elif record["action"] in ("rollback", "stop", "resume", "pause"):
                expected = 0 if record["action"] != "pause" else expected

    def teardown(self) -> None:
        self._now_patch.stop()
        if self.cluster is not None:
            self.cluster.close()
        with contextlib.suppress(OSError):
            self._workdir.cleanup()


def test_the_kubernetes_stores_keep_their_promises_under_random_operations(kube_api: KubeApiServer) -> None:
    KubeStoreModel.api = kube_api
    runner = KubeStoreModel.TestCase
    runner.settings = settings(
        max_examples=int(os.environ.get("FLAGROLL_SOAK_EXAMPLES", "12")),
        stateful_step_count=int(os.environ.get("FLAGROLL_SOAK_STEPS", "12")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    runner().runTest()
