"""A namespace of the real Kubernetes API server (tests/support/kubeapi.py) holding one flags object (a
ConfigMap or a FeatureFlag), a policy directory, and the reconcilers and human commands that work on
it, with the fake clock and metrics at the project's own seam (tests/support/environment.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightkube import Client
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.kube.client import connect
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore, FeatureFlagStore
from controller.cli import main
from controller.core.flagd import read_state
from controller.reconciler import Reconciler
from tests.support.environment import RAMP, Clock, FakeMetrics
from tests.support.kubeapi import KubeApiServer

KEY = "flags.flagd.json"
USERS = [f"user-{i}" for i in range(2000)]
HAND_MADE = {
    "state": "ENABLED",
    "variants": {"a": 0.5, "b": 100},
    "defaultVariant": "a",
    "metadata": {"team": "web"},
}


class Cluster:
    """A fresh namespace on the real API server holding the flags object, a policy directory, and as
    many reconcilers (replicas) as a test wants, each with its own client."""

    def __init__(self, api: KubeApiServer, root: Path, kind: str, policy: str = RAMP) -> None:
        self.api = api
        self.kind = kind
        self.namespace = api.namespace(kind)
        self.ref = ObjectRef(self.namespace, "flags")
        if kind == "configmap":
            api.apply(self._object({"data": {"unrelated": "x"}}))
        else:
            api.apply(self._object({"spec": {"flagSpec": {"flags": {"hand-made": HAND_MADE}}}}))
        self.kubeconfig = api.kubeconfig(root / "kubeconfig", namespace=self.namespace)
        self.policies = root / "policies"
        self.policies.mkdir()
        (self.policies / "cache.yaml").write_text(policy)
        self.clock = Clock()
        self.metrics = FakeMetrics()
        self.log = root / "decisions.jsonl"
        self.clients: list[Client] = []

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def _object(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "configmap":
            return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self._meta(), **body}
        return {
            "apiVersion": "core.openfeature.dev/v1beta1",
            "kind": "FeatureFlag",
            "metadata": self._meta(),
            **body,
        }

    def _meta(self) -> dict[str, str]:
        return {"name": "flags", "namespace": self.namespace}

    @property
    def path(self) -> str:
        if self.kind == "configmap":
            return f"/api/v1/namespaces/{self.namespace}/configmaps/flags"
        return f"/apis/core.openfeature.dev/v1beta1/namespaces/{self.namespace}/featureflags/flags"

    def client(self) -> Client:
        self.clients.append(connect(self.kubeconfig))
        return self.clients[-1]

    def store(self) -> ConfigMapFlagStore | FeatureFlagStore:
        client = self.client()
        if self.kind == "configmap":
            return ConfigMapFlagStore(client, self.ref)
        return FeatureFlagStore(client, self.ref)

    def reconciler(self) -> Reconciler:
        return Reconciler(
            policies=self.policies,
            store=self.store(),
            prometheus=self.metrics,
            decision_log=DecisionLog(self.log),
            clock=self.clock,
        )

    def cycle(self, reconciler: Reconciler | None = None) -> Any:
        return asyncio.run((reconciler or self.reconciler()).cycle())

    def raw(self) -> dict[str, Any]:
        return self.api.get(self.path)

    def served(self) -> str:
        """The flag document as flagd would be given it: the ConfigMap key's text, or the FeatureFlag's
        flagSpec as the API server stored it."""
        obj = self.raw()
        if self.kind == "configmap":
            return str(obj["data"][KEY])
        return json.dumps(obj["spec"]["flagSpec"])

    def document(self) -> dict[str, Any]:
        return self.store().read().document

    def state(self, key: str = "cache") -> Any:
        return read_state(self.document(), key)

    def actions(self) -> list[str]:
        return [str(r["action"]) for r in read_records(self.log)]

    def cli(self, *arguments: str) -> int:
        return main(
            [
                *arguments,
                "--flag-store",
                self.kind,
                "--flag-object",
                f"{self.namespace}/flags",
                "--kubeconfig",
                str(self.kubeconfig),
                "--decision-log",
                str(self.log),
            ]
        )


def exposure(served: str, key: str = "cache", users: Sequence[str] = USERS) -> dict[str, float]:
    """Share of ``users`` per variant, as the real flagd evaluator serves ``served``."""
    core = FlagdCore()
    core.set_flags(served)
    counts: dict[str, int] = {}
    for user in users:
        variant = core.resolve_boolean_value(key, False, EvaluationContext(targeting_key=user)).variant
        assert variant is not None
        counts[variant] = counts.get(variant, 0) + 1
    return {variant: 100 * n / len(users) for variant, n in counts.items()}
