"""The Helm chart in charts/flagroll, rendered offline with the Helm SDK (helm-python-sdk, no helm binary
and no cluster) in every mode.

Every rendered object of a built-in kind is validated with kubernetes-validate in strict mode (unknown
fields are errors) against the oldest and the newest Kubernetes version the chart supports. The
prometheus-operator kinds (ServiceMonitor, PrometheusRule) have no schema there: their metadata is
validated as Kubernetes ObjectMeta and their spec against the strict schemas below, written from the
operator's API reference for the fields the chart uses; the PrometheusRule's rules also go through
``promtool check rules`` (tests/deploy/test_monitoring.py). The chart never renders a FeatureFlag: flagroll
manages one that exists already; the Role naming it is validated like any other object.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate
from openfeature.contrib.tools.flagd.core import FlagdCore

from controller.adapters.policyfile import load_paths
from controller.adapters.promserver import PrometheusServer, free_port
from controller.cli import build_parser, main
from controller.core.flagd import managed_keys
from tests.support.paths import CHART, EXAMPLES, ROOT

RELEASE, NAMESPACE = "demo", "apps"
FULLNAME = "demo-flagroll"
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]

# Every rendered `flagroll run` option must be one the CLI parses (none is left for later).
CONTRACT_RUN_OPTIONS: set[str] = set()


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


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render_files(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for name, text in sorted(render_files(chart, values).items()):
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


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_rendered_object_is_valid(chart: helm_python.Chart, mode: str, kube_version: str) -> None:
    objects = render(chart, MODES[mode])
    assert objects
    for obj in objects:
        try:
            validate(obj, kube_version)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{mode}: {obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        assert obj["metadata"].get("namespace") in {NAMESPACE, "shop"}, obj["metadata"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_helm_lint_strict_finds_no_warning(mode: str) -> None:
    report = helm_python.lint(CHART, MODES[mode], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_validation_catches_an_unknown_field_and_an_unknown_kind(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["deployment-configmap"])
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readonlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBE_VERSIONS[-1])
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, KUBE_VERSIONS[-1]
        )
    monitor = copy.deepcopy(one(render(chart, MODES["sidecar"]), "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, KUBE_VERSIONS[-1])


# ---- what each mode runs -------------------------------------------------------------------------------


def test_rendered_options_are_flagroll_run_options(chart: helm_python.Chart) -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    run_parser = commands.choices["run"]
    known = {s for action in run_parser._actions for s in action.option_strings}
    for mode, values in MODES.items():
        if mode == "sidecar-snippet":
            args = container(notes_snippet(chart, values), "flagroll")["args"]
        else:
            args = run_args(render(chart, values))
        global_args, run = args[: args.index("run")], args[args.index("run") :]
        names = set(options(run))
        assert names <= known | CONTRACT_RUN_OPTIONS, (
            f"{mode}: unknown options {names - known - CONTRACT_RUN_OPTIONS}"
        )
        # What this branch's CLI knows must parse, with the rendered values.
        parsed = parser.parse_args(
            global_args + [a for a in run if a.partition("=")[0] not in CONTRACT_RUN_OPTIONS - known]
        )
        assert parsed.command == "run"
        assert parsed.policies == Path("/etc/flagroll/policies")
        assert parsed.prometheus == "http://prometheus-operated.monitoring.svc:9090"
        assert parsed.query_timeout == 10.0
        assert parsed.max_concurrent_queries == 8
        assert parsed.log_format == "json"


def test_deployment_mode_runs_a_loop_on_a_configmap(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["deployment-configmap"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two writers during an update
    opts = options(run_args(objects))
    assert opts["--flag-store"] == "configmap"
    assert opts["--flag-object"] == f"{NAMESPACE}/flagd-flags"
    assert opts["--configmap-key"] == "flags.flagd.json"
    assert opts["--listen"] == "0.0.0.0:8080"
    assert opts["--shutdown-timeout"] == "10s"
    for absent in ("--once", "--flags", "--leader-election-lease", "--decision-log"):
        assert absent not in opts
    assert pod_spec(objects)["automountServiceAccountToken"] is True
    assert not find(objects, "CronJob")


def test_deployment_with_several_replicas_elects_a_leader(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["deployment-featureflag-ha"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    flagroll = container(pod_spec(objects), "flagroll")
    opts = options(flagroll["args"])
    assert opts["--leader-election-lease"] == f"{NAMESPACE}/{FULLNAME}"
    assert opts["--flag-store"] == "featureflag"
    assert opts["--flag-object"] == "shop/checkout-flags"
    assert "--configmap-key" not in opts
    (pod_name,) = [e for e in flagroll["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_cronjob_mode_runs_one_cycle_and_never_overlaps(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["cronjob-configmap"])
    cronjob = one(objects, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["schedule"] == "*/5 * * * *"
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    flagroll = container(pod_spec(objects), "flagroll")
    opts = options(flagroll["args"])
    assert "--once" in opts
    assert opts["--flag-store"] == "configmap"
    # A Job's pod lives for one cycle: no listener, no probes, nothing to scrape.
    for absent in ("--listen", "--leader-election-lease"):
        assert absent not in opts
    assert "livenessProbe" not in flagroll
    assert "readinessProbe" not in flagroll
    assert not find(objects, "Service")
    assert not find(objects, "Deployment")


def test_sidecar_mode_shares_the_flag_file_with_flagd(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["sidecar"])
    spec = pod_spec(objects)
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    flag_file = "/var/lib/flagroll/flags.json"
    flagroll, flagd, seed = (
        container(spec, "flagroll"),
        container(spec, "flagd"),
        container(spec, "flagroll-seed-flags"),
    )
    opts = options(flagroll["args"])
    assert opts["--flags"] == flag_file
    assert "--flag-store" not in opts
    assert "--flag-object" not in opts
    assert f"--uri=file:{flag_file}" in flagd["args"]
    volume = {v["name"]: v for v in spec["volumes"]}["flags"]
    assert volume == {"name": "flags", "emptyDir": {}}
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]}["flags"] for c in (flagroll, flagd, seed)}
    assert {m["mountPath"] for m in mounts.values()} == {"/var/lib/flagroll"}
    assert mounts["flagd"]["readOnly"] is True
    assert not mounts["flagroll"].get("readOnly", False)
    assert {e["name"]: e["value"] for e in seed["env"]} == {"FLAG_FILE": flag_file}
    # The file store needs no Kubernetes API: no token, no Role.
    assert spec["automountServiceAccountToken"] is False
    assert not find(objects, "Role")
    assert not find(objects, "RoleBinding")
    service_ports = {p["name"] for p in one(objects, "Service")["spec"]["ports"]}
    assert service_ports == {"http-metrics", "grpc-flagd", "http-ofrep"}


def test_flagroll_file_is_flagd_last_source_so_its_flags_win(chart: helm_python.Chart) -> None:
    extra = ["file:/etc/flagd/static.json", "core.openfeature.dev/apps/static-flags"]
    values = merge(MODES["sidecar"], {"sidecar": {"flagd": {"extraUris": extra}}})
    flagd = container(pod_spec(render(chart, values)), "flagd")
    uris = [a.removeprefix("--uri=") for a in flagd["args"] if a.startswith("--uri=")]
    assert uris == [*extra, "file:/var/lib/flagroll/flags.json"]


def test_sidecar_volume_can_be_a_persistent_volume_claim(chart: helm_python.Chart) -> None:
    spec = pod_spec(render(chart, MODES["sidecar-pvc"]))
    volume = {v["name"]: v for v in spec["volumes"]}["flags"]
    assert volume == {"name": "flags", "persistentVolumeClaim": {"claimName": "flagroll-flags"}}


def test_the_seed_container_creates_an_empty_flag_document_only_when_missing(
    chart: helm_python.Chart, tmp_path: Path
) -> None:
    seed = container(pod_spec(render(chart, MODES["sidecar"])), "flagroll-seed-flags")
    flag_file = tmp_path / "flags.json"
    env = {"PATH": os.environ["PATH"], "FLAG_FILE": str(flag_file)}
    subprocess.run(seed["command"], env=env, check=True)
    assert yaml.safe_load(flag_file.read_text()) == {"flags": {}}
    flag_file.write_text('{"flags": {"kept": {}}}')
    subprocess.run(seed["command"], env=env, check=True)
    assert flag_file.read_text() == '{"flags": {"kept": {}}}'


def notes_snippet(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, Any]:
    notes = next(v for k, v in render_files(chart, values).items() if k.endswith("NOTES.txt"))
    match = re.search(r"# --- sidecar snippet begin ---\n(.*)# --- sidecar snippet end ---", notes, re.S)
    assert match, notes
    snippet = yaml.safe_load(match.group(1))
    assert isinstance(snippet, dict)
    return snippet


def test_sidecar_snippet_in_the_notes_makes_a_valid_pod_with_flagd(chart: helm_python.Chart) -> None:
    values = MODES["sidecar-snippet"]
    objects = render(chart, values)
    assert not find(objects, "Deployment")
    assert not find(objects, "Service")  # the user's pod is not ours to select
    snippet = notes_snippet(chart, values)
    # The user's own pod: their app and flagd, plus what the notes say to add.
    flagd = {
        "name": "flagd",
        "image": "ghcr.io/open-feature/flagd:v0.11.1",
        "args": ["start", *snippet["flagdContainer"]["args"]],
        "volumeMounts": snippet["flagdContainer"]["volumeMounts"],
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": NAMESPACE},
        "spec": {
            "securityContext": {"fsGroup": 10001},
            "initContainers": snippet["initContainers"],
            "containers": [{"name": "app", "image": "example/app:1"}, flagd, *snippet["containers"]],
            "volumes": snippet["volumes"],
        },
    }
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    # The snippet is the very container the chart runs in its own flagd + flagroll Deployment.
    full = pod_spec(render(chart, MODES["sidecar"]))
    assert snippet["containers"] == [container(full, "flagroll")]
    assert snippet["initContainers"] == [container(full, "flagroll-seed-flags")]
    assert snippet["volumes"] == full["volumes"]


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


# ---- policies ------------------------------------------------------------------------------------------


def test_policies_mounted_from_the_configmap_load_once_with_their_line_numbers(
    chart: helm_python.Chart, tmp_path: Path
) -> None:
    """The kubelet mounts a ConfigMap as symlinks into a hidden, timestamped directory; flagroll must
    read each policy once (twice would reject both as a clash) and report the same lines."""
    configmap = find(render(chart, MODES["deployment-configmap"]), "ConfigMap", f"{FULLNAME}-policies")[0]
    assert configmap["data"].keys() == example_policies().keys()
    data_dir = tmp_path / "..2026_11_21_20_00_00.000000001"
    data_dir.mkdir()
    for name, text in configmap["data"].items():
        (data_dir / name).write_text(text, encoding="utf-8")
        (tmp_path / name).symlink_to(Path("..data") / name)
    (tmp_path / "..data").symlink_to(data_dir.name)
    loaded = load_paths([tmp_path])
    assert [i for i in loaded.issues if i.severity == "error"] == []
    assert sorted(p.policy.name for p in loaded.policies) == sorted(
        p.policy.name for p in load_paths([EXAMPLES]).policies
    )
    direct = load_paths([EXAMPLES])
    assert [p.position(("spec", "owner")) for p in loaded.policies] == [
        p.position(("spec", "owner")) for p in direct.policies
    ]


def test_an_existing_policies_configmap_is_used_as_it_is(chart: helm_python.Chart) -> None:
    values = {**MODES["deployment-configmap"], "policies": {"existingConfigMap": "team-policies"}}
    objects = render(chart, values)
    assert not find(objects, "ConfigMap")
    (volume,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == "policies"]
    assert volume["configMap"]["name"] == "team-policies"


# ---- monitoring objects --------------------------------------------------------------------------------


def test_service_and_servicemonitor_find_the_metrics_port(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["deployment-featureflag-ha"])
    service, monitor = one(objects, "Service"), one(objects, "ServiceMonitor")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert not find(
        render(chart, MODES["deployment-configmap"]), "ServiceMonitor"
    )  # optional, off by default


def test_prometheus_rule_and_dashboard_ship_the_files(chart: helm_python.Chart) -> None:
    objects = render(chart, MODES["deployment-featureflag-ha"])
    rule = one(objects, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    dashboard = find(objects, "ConfigMap", f"{FULLNAME}-dashboard")[0]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["flagroll.json"] == (CHART / "files" / "dashboard.json").read_text().rstrip("\n")
    default = render(chart, MODES["deployment-configmap"])
    assert not find(default, "PrometheusRule")
    assert not find(default, "ConfigMap", f"{FULLNAME}-dashboard")


# ---- the values schema ---------------------------------------------------------------------------------

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown mode": ({**base("deployment"), "mode": "daemonset"}, "/mode"),
    "several replicas without leader election": (
        base("deployment", deployment={"replicas": 3}),
        "/leaderElection/enabled",
    ),
    "a Kubernetes store in sidecar mode": (
        base("sidecar", flagStore={"type": "configmap", "name": "x"}),
        "/flagStore/type",
    ),
    "the file store in deployment mode": (base("deployment", flagStore={"type": "file"}), "/flagStore/type"),
    "no flag object in cronjob mode": (base("cronjob", flagStore={"name": ""}), "/flagStore/name"),
    "no Prometheus URL": (base("deployment", prometheus={"url": ""}), "/prometheus/url"),
    "no policies": ({**base("deployment"), "policies": {"files": {}}}, "/policies"),
    "a policy file without .yaml": ({**base("deployment"), "policies": {"files": {"p.txt": "x"}}}, "'p.txt'"),
    "a password without a user": (
        base("deployment", prometheus={"auth": {"existingSecret": "s", "passwordKey": "pw"}}),
        "/prometheus/auth/username",
    ),
    "a credential key without a Secret": (
        base("deployment", prometheus={"auth": {"bearerTokenKey": "token"}}),
        "/prometheus/auth/existingSecret",
    ),
    "an unknown value": (base("deployment", replicas=2), "replicas"),
    "a bad duration": (base("deployment", shutdownTimeout="10 seconds"), "/shutdownTimeout"),
    "no query in flight": (
        base("deployment", prometheus={"maxConcurrentQueries": 0}),
        "/prometheus/maxConcurrentQueries",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_the_schema_rejects_bad_values(chart: helm_python.Chart, case: str) -> None:
    values, where = BAD_VALUES[case]
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render(chart, values)
    assert where in str(caught.value), str(caught.value)


def test_the_schema_accepts_every_mode_of_these_tests(chart: helm_python.Chart) -> None:
    for values in MODES.values():
        chart.validate_schema(values)
    # The chart's defaults alone are incomplete on purpose: the URL, the policies and the flag object
    # have no sensible default, and the error names each of them.
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.validate_schema({})
    for where in ("/prometheus/url", "/flagStore/name", "/policies"):
        assert where in str(caught.value)


def test_readme_lists_every_value(chart: helm_python.Chart) -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme.partition("\n## Values\n")[2], re.M))

    def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for key, value in values.items():
            path = f"{prefix}{key}"
            if (
                isinstance(value, dict)
                and value
                and path
                not in {
                    "resources",
                    "podSecurityContext",
                    "securityContext",
                    "sidecar.flagVolume",
                    "sidecar.flagd.resources",
                    "dashboard.labels",
                }
            ):
                yield from leaves(value, path + ".")
            else:
                yield path

    assert set(leaves(chart.values)) == listed


def readme_install_lines() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.partition("\n## Deploy on Kubernetes\n")[2].partition("\n## ")[0]
    blocks = re.findall(r"```\n(helm install .*?)```", section, re.S)
    return [shlex.split(block.replace("\\\n", " ")) for block in blocks]


def test_the_readme_install_lines_render_valid_objects(
    chart: helm_python.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # --set-file paths are relative to the checkout
    lines = readme_install_lines()
    modes = set()
    for argv in lines:
        assert argv[:4] == ["helm", "install", "flagroll", "charts/flagroll"], argv
        values: dict[str, Any] = {}
        namespace = "default"
        pairs = list(zip(argv[4::2], argv[5::2], strict=True))
        for option, value in pairs:
            if option == "--set":
                values = merge(values, helm_python.parse_set_string(value))
            elif option == "--set-file":
                values = merge(values, helm_python.parse_set_file(value))
            else:
                assert option == "--namespace", option
                namespace = value
        modes.add(values["mode"])
        objects = [
            doc
            for name, text in chart.render(values, name="flagroll", namespace=namespace).items()
            if not name.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]
        for obj in objects:
            validate(obj, KUBE_VERSIONS[-1])
        if values.get("policies", {}).get("files"):
            (policies,) = find(objects, "ConfigMap", "flagroll-policies")
            assert policies["data"]["price-quote-cache.yaml"].rstrip("\n") == (
                (EXAMPLES / "price-quote-cache.yaml").read_text(encoding="utf-8").rstrip("\n")
            )
    assert modes == {"sidecar", "deployment", "cronjob"}
    assert len(lines) == 4


def test_a_sidecar_cycle_with_the_rendered_arguments_writes_the_seeded_file(
    chart: helm_python.Chart, tmp_path: Path, prometheus: PrometheusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sidecar pod's hand-off, outside Kubernetes: the seed container's document, the policies
    ConfigMap laid out as the kubelet mounts it, and flagroll run with the rendered arguments (paths
    moved under tmp_path, the real Prometheus of the test session, options this branch's CLI lacks
    left out) for one cycle. The file it writes is what flagd's evaluator then loads."""
    objects = render(chart, merge(MODES["sidecar"], {"prometheus": {"url": prometheus.url}}))
    spec = pod_spec(objects)
    mounts = {"/var/lib/flagroll": tmp_path / "flags", "/etc/flagroll/policies": tmp_path / "policies"}
    for directory in mounts.values():
        directory.mkdir()
    policies = find(objects, "ConfigMap", f"{FULLNAME}-policies")[0]
    for name, text in policies["data"].items():
        (mounts["/etc/flagroll/policies"] / name).write_text(text, encoding="utf-8")

    def local(arg: str) -> str:
        for mounted, here in mounts.items():
            arg = arg.replace(mounted, str(here))
        return arg

    seed = container(spec, "flagroll-seed-flags")
    env = {"PATH": os.environ["PATH"], **{e["name"]: local(e["value"]) for e in seed["env"]}}
    subprocess.run(seed["command"], env=env, check=True)

    args = [local(a) for a in container(spec, "flagroll")["args"]]
    # In a pod it serves probes on every interface; a test listens on 127.0.0.1 only, at a free port.
    listen = [a for a in args if a.startswith("--listen=")]
    assert listen == ["--listen=0.0.0.0:8080"]
    args[args.index(listen[0])] = f"--listen=127.0.0.1:{free_port()}"
    assert main([*args, "--once"]) == 0, capsys.readouterr()
    document = json.loads((mounts["/var/lib/flagroll"] / "flags.json").read_text(encoding="utf-8"))
    assert sorted(managed_keys(document)) == sorted(
        p.policy.flag_key for p in load_paths([EXAMPLES]).policies
    )
    FlagdCore().set_flags(json.dumps(document))  # flagd's evaluator accepts what flagroll wrote
    records = (mounts["/var/lib/flagroll"] / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == len(
        load_paths([EXAMPLES]).policies
    )  # the decision log lands beside the flag file, on the shared volume
