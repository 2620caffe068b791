"""What the Helm chart allows: every container locked down, probes on the listen port, Prometheus
credentials read from files of a Secret, and RBAC that grants only the objects flagroll writes."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from tests.support.chart import (
    FULLNAME,
    MODES,
    NAMESPACE,
    container,
    find,
    merge,
    notes_snippet,
    options,
    pod_spec,
    render,
)

# ---- security ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_container_is_locked_down(chart: helm_python.Chart, mode: str) -> None:
    objects = render(chart, MODES[mode])
    spec = pod_spec(objects) if mode != "sidecar-snippet" else notes_snippet(chart, MODES[mode])
    pod_security = spec.get("securityContext", {})
    if mode != "sidecar-snippet":
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert isinstance(sc["runAsUser"], int), c["name"]
        assert sc["runAsUser"] > 0, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert c["resources"]["limits"]["memory"], c["name"]
    flagroll = container(spec, "flagroll")
    writable = {m["mountPath"] for m in flagroll["volumeMounts"] if not m.get("readOnly")}
    assert writable <= {"/tmp", "/var/lib/flagroll"}, writable


def test_probes_check_the_listen_port(chart: helm_python.Chart) -> None:
    for mode in ("deployment-configmap", "sidecar"):
        flagroll = container(pod_spec(render(chart, MODES[mode])), "flagroll")
        port = int(options(flagroll["args"])["--listen"].rpartition(":")[2])  # type: ignore[union-attr]
        (named,) = flagroll["ports"]
        assert named == {"name": "http-metrics", "containerPort": port, "protocol": "TCP"}
        assert flagroll["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
        assert flagroll["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    values = merge(MODES["deployment-configmap"], {"listen": {"port": 9464}})
    flagroll = container(pod_spec(render(chart, values)), "flagroll")
    assert options(flagroll["args"])["--listen"] == "0.0.0.0:9464"
    assert flagroll["ports"][0]["containerPort"] == 9464


def test_prometheus_credentials_come_from_files_of_a_secret(chart: helm_python.Chart) -> None:
    for mode, expected in (
        (
            "deployment-featureflag-ha",
            {
                "--prometheus-bearer-token-file": "/etc/flagroll/prometheus/token",
                "--prometheus-ca-file": "/etc/flagroll/prometheus/ca.crt",
            },
        ),
        (
            "cronjob-configmap",
            {
                "--prometheus-username": "flagroll",
                "--prometheus-password-file": "/etc/flagroll/prometheus/password",
            },
        ),
    ):
        objects = render(chart, MODES[mode])
        spec = pod_spec(objects)
        opts = options(container(spec, "flagroll")["args"])
        auth = {k: v for k, v in opts.items() if k.startswith("--prometheus-") and k != "--prometheus"}
        assert auth == expected
        (volume,) = [v for v in spec["volumes"] if v["name"] == "prometheus-auth"]
        assert volume["secret"]["secretName"] == "prom-creds"
        mounts = {m["name"]: m for m in container(spec, "flagroll")["volumeMounts"]}
        assert mounts["prometheus-auth"] == {
            "name": "prometheus-auth",
            "mountPath": "/etc/flagroll/prometheus",
            "readOnly": True,
        }
        assert not find(objects, "Secret")  # the chart never holds a credential itself
    plain = pod_spec(render(chart, MODES["deployment-configmap"]))
    assert "prometheus-auth" not in {v["name"] for v in plain["volumes"]}


# ---- RBAC ----------------------------------------------------------------------------------------------


def rules(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    assert not find(objects, "ClusterRole")
    assert not find(objects, "ClusterRoleBinding")
    return {r["metadata"]["namespace"]: r["rules"] for r in find(objects, "Role")}


def test_rbac_grants_only_the_configmap_it_writes(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["deployment-configmap"])
    assert rules(objects) == {
        NAMESPACE: [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["flagd-flags"],
                "verbs": ["get", "update"],
            }
        ]
    }
    (binding,) = find(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == FULLNAME
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def test_rbac_for_a_featureflag_elsewhere_and_a_lease(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["deployment-featureflag-ha"])
    assert rules(objects) == {
        NAMESPACE: [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [FULLNAME],
                "verbs": ["get", "update"],
            },
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ],
        "shop": [
            {
                "apiGroups": ["core.openfeature.dev"],
                "resources": ["featureflags"],
                "resourceNames": ["checkout-flags"],
                "verbs": ["get", "update"],
            }
        ],
    }
    bindings = {b["metadata"]["namespace"]: b for b in find(objects, "RoleBinding")}
    assert set(bindings) == {NAMESPACE, "shop"}
    for binding in bindings.values():
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def test_cronjob_needs_no_lease(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["cronjob-featureflag"])
    (only,) = rules(objects)[NAMESPACE]
    assert only["resources"] == ["featureflags"]
    assert only["resourceNames"] == ["checkout-flags"]


def test_no_rule_lists_watches_or_deletes(chart: helm_python.Chart) -> None:
    for mode, values in MODES.items():
        for role_rules in rules(render(chart, values)).values():
            for rule in role_rules:
                assert set(rule["verbs"]) <= {"get", "update", "create"}, mode
                assert "*" not in rule["resources"], mode


def test_rbac_can_be_left_to_the_user(chart: helm_python.Chart) -> None:
    values = merge(MODES["deployment-featureflag-ha"], {"rbac": {"create": False}})
    assert rules(render(chart, values)) == {}
