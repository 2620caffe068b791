"""The Helm chart in charts/flagroll rendered offline with the Helm SDK (helm-python-sdk, no helm binary
and no cluster): the values of every mode the tests render, finding objects and containers in what
was rendered, and the strict validation of every rendered object.

Every object of a built-in kind is validated with kubernetes-validate in strict mode (unknown fields
are errors) against the oldest and the newest Kubernetes version the chart supports. The
prometheus-operator kinds (ServiceMonitor, PrometheusRule) have no schema there: their metadata is
validated as Kubernetes ObjectMeta and their spec against the strict schemas below, written from the
operator's API reference for the fields the chart uses.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import helm_python
import jsonschema
import yaml
from kubernetes_validate import utils as kubernetes_validate

from tests.support.paths import EXAMPLES

RELEASE, NAMESPACE = "demo", "apps"
FULLNAME = "demo-flagroll"
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]


def example_policies() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.yaml"))}


def base(mode: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "mode": mode,
        "prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"},
        "policies": {"files": example_policies()},
    }
    if mode != "sidecar":
        values["flagStore"] = {"type": "configmap", "name": "flagd-flags"}
    return merge(values, overrides)


def merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(into)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


MODES: dict[str, dict[str, Any]] = {
    "sidecar": base("sidecar", serviceMonitor={"enabled": True}, prometheusRule={"enabled": True}),
    "sidecar-snippet": base("sidecar", sidecar={"flagd": {"enabled": False}}),
    "sidecar-pvc": base(
        "sidecar", sidecar={"flagVolume": {"persistentVolumeClaim": {"claimName": "flagroll-flags"}}}
    ),
    "deployment-configmap": base("deployment"),
    "deployment-featureflag-ha": base(
        "deployment",
        flagStore={"type": "featureflag", "name": "checkout-flags", "namespace": "shop"},
        deployment={"replicas": 2},
        leaderElection={"enabled": True},
        prometheus={"auth": {"existingSecret": "prom-creds", "bearerTokenKey": "token", "caKey": "ca.crt"}},
        serviceMonitor={"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        prometheusRule={"enabled": True},
        dashboard={"enabled": True},
    ),
    "cronjob-configmap": base(
        "cronjob",
        prometheus={
            "auth": {"existingSecret": "prom-creds", "username": "flagroll", "passwordKey": "password"}
        },
        cronjob={"timeZone": "Etc/UTC"},
    ),
    "cronjob-featureflag": base("cronjob", flagStore={"type": "featureflag", "name": "checkout-flags"}),
}


def render_files(
    chart: helm_python.Chart, values: dict[str, Any], namespace: str = NAMESPACE
) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=namespace)


def render(
    chart: helm_python.Chart, values: dict[str, Any], namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """The objects of a release named ``RELEASE`` in ``namespace``."""
    objects: list[dict[str, Any]] = []
    for name, text in sorted(render_files(chart, values, namespace).items()):
        if name.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = find(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    workloads = find(objects, "Deployment") + find(objects, "CronJob")
    assert len(workloads) == 1
    workload = workloads[0]
    if workload["kind"] == "CronJob":
        spec: dict[str, Any] = workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        spec = workload["spec"]["template"]["spec"]
    return spec


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name
    ]
    assert len(found) == 1, f"{name}: {len(found)} containers"
    return found[0]


def run_args(objects: list[dict[str, Any]]) -> list[str]:
    args: list[str] = container(pod_spec(objects), "flagroll")["args"]
    return args


def options(args: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            found[name] = value if value else None
    return found


# ---- validation of every rendered object ------------------------------------------------------------

OBJECT_META_ONLY = {"apiVersion": "v1", "kind": "ConfigMap"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
CRD_SPECS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": LABELS},
            },
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
            },
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object",
        "additionalProperties": False,
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["alert", "expr"],
                                "properties": {
                                    "alert": {"type": "string", "minLength": 1},
                                    "expr": {"type": "string", "minLength": 1},
                                    "for": DURATION,
                                    "labels": LABELS,
                                    "annotations": LABELS,
                                },
                            },
                        },
                    },
                },
            }
        },
    },
}


def validate(obj: dict[str, Any], kube_version: str) -> None:
    spec_schema = CRD_SPECS.get((obj["apiVersion"], obj["kind"]))
    if spec_schema is None:
        # Raises SchemaNotFoundError for a kind it does not know: no object goes unchecked.
        kubernetes_validate.validate(obj, kube_version, strict=True)
        return
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    kubernetes_validate.validate({**OBJECT_META_ONLY, "metadata": obj["metadata"]}, kube_version, strict=True)
    jsonschema.validate(obj["spec"], spec_schema)  # type: ignore[no-untyped-call]


def notes_snippet(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, Any]:
    notes = next(v for k, v in render_files(chart, values).items() if k.endswith("NOTES.txt"))
    match = re.search(r"# --- sidecar snippet begin ---\n(.*)# --- sidecar snippet end ---", notes, re.S)
    assert match, notes
    snippet = yaml.safe_load(match.group(1))
    assert isinstance(snippet, dict)
    return snippet
