"""What each mode of the Helm chart runs: the arguments of ``flagroll run`` (each an option the CLI
parses), the workload, the sidecar's shared flag file and flagd, the policies ConfigMap as the kubelet
mounts it, the Service, ServiceMonitor, PrometheusRule and dashboard, and one sidecar cycle played
outside Kubernetes with the rendered arguments."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import helm_python
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate
from openfeature.contrib.tools.flagd.core import FlagdCore

from controller.adapters.policyfile import load_paths
from controller.adapters.promserver import PrometheusServer, free_port
from controller.cli import build_parser, main
from controller.core.flagd import managed_keys
from tests.support.chart import (
    FULLNAME,
    KUBE_VERSIONS,
    MODES,
    NAMESPACE,
    container,
    example_policies,
    find,
    merge,
    notes_snippet,
    one,
    options,
    pod_spec,
    render,
    render_files,
    run_args,
)
from tests.support.paths import CHART, EXAMPLES

# Every rendered `flagroll run` option must be one the CLI parses (none is left for later).
CONTRACT_RUN_OPTIONS: set[str] = set()


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


def test_cronjob_notes_tell_on_call_how_to_stop_at_once_on_the_object_the_job_writes(
    chart: helm_python.Chart,
) -> None:
    objects = render(chart, MODES["cronjob-configmap"])
    job = options(container(pod_spec(objects), "flagroll")["args"])
    notes = next(
        v for k, v in render_files(chart, MODES["cronjob-configmap"]).items() if k.endswith("NOTES.txt")
    )
    line = next(text.strip() for text in notes.splitlines() if text.strip().startswith("flagroll stop"))
    argv = line.replace('"…"', "why").split()[1:]
    parsed = build_parser().parse_args(argv)  # a command the CLI takes as it is
    assert (parsed.flag_store, parsed.flag_object) == (job["--flag-store"], job["--flag-object"])


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
    assert volume == {"name": "flags", "emptyDir": {"sizeLimit": "512Mi"}}  # 64 Mi × (5 + 2) + 64 Mi
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


def test_sidecar_mode_can_verify_what_the_flagd_beside_it_serves(chart: helm_python.Chart) -> None:
    values = merge(MODES["sidecar"], {"verifyServing": {"ofrepUrl": "http://127.0.0.1:8016", "share": False}})
    spec = pod_spec(render(chart, values))
    flagd_ports = {p["name"]: p["containerPort"] for p in container(spec, "flagd")["ports"]}
    args = container(spec, "flagroll")["args"]
    opts = options(args)
    assert opts["--verify-ofrep"] == f"http://127.0.0.1:{flagd_ports['http-ofrep']}"
    assert (opts["--verify-timeout"], opts["--verify-sample"]) == ("30s", "1000")
    assert "--no-verify-share" in args
    parsed = build_parser().parse_args(args)
    assert (parsed.verify_ofrep, parsed.verify_timeout, parsed.verify_sample, parsed.verify_share) == (
        "http://127.0.0.1:8016",
        30.0,
        1000,
        False,
    )
    for mode in ("sidecar", "deployment-configmap"):
        rendered = options(run_args(render(chart, MODES[mode])))
        assert not {o for o in rendered if o.startswith(("--verify", "--no-verify"))}  # off by default


def test_flagroll_file_is_flagd_last_source_so_its_flags_win(chart: helm_python.Chart) -> None:
    extra = ["file:/etc/flagd/static.json", "core.openfeature.dev/apps/static-flags"]
    values = merge(MODES["sidecar"], {"sidecar": {"flagd": {"extraUris": extra}}})
    flagd = container(pod_spec(render(chart, values)), "flagd")
    uris = [a.removeprefix("--uri=") for a in flagd["args"] if a.startswith("--uri=")]
    assert uris == [*extra, "file:/var/lib/flagroll/flags.json"]


def test_the_decision_log_rotation_is_passed_on_and_bounds_the_flag_volume(chart: helm_python.Chart) -> None:
    values = merge(MODES["sidecar"], {"decisionLogRotation": {"maxMiB": 100, "keep": 3}})
    spec = pod_spec(render(chart, values))
    parsed = build_parser().parse_args(container(spec, "flagroll")["args"])
    assert (parsed.decision_log_max_bytes, parsed.decision_log_keep) == (100 * 1024 * 1024, 3)
    volume = {v["name"]: v for v in spec["volumes"]}["flags"]
    # Five files of 100 Mi at most (3 generations, the live file, one more), and the flag file.
    assert volume == {"name": "flags", "emptyDir": {"sizeLimit": "564Mi"}}
    # Budget check: the size limit holds what the rotation can leave, before any compression.
    max_bytes, keep = parsed.decision_log_max_bytes, parsed.decision_log_keep
    assert (keep + 1) * max_bytes + max_bytes + 64 * 1024 * 1024 <= 564 * 1024 * 1024


def test_a_log_that_never_rotates_leaves_the_flag_volume_unbounded(chart: helm_python.Chart) -> None:
    spec = pod_spec(render(chart, merge(MODES["sidecar"], {"decisionLogRotation": {"maxMiB": 0}})))
    assert {v["name"]: v for v in spec["volumes"]}["flags"] == {"name": "flags", "emptyDir": {}}
    assert "--decision-log-max-bytes=0Mi" in container(spec, "flagroll")["args"]


def test_the_defaults_rotate_at_64_mebibytes_keeping_5(chart: helm_python.Chart) -> None:
    for mode in ("sidecar", "deployment-configmap", "cronjob-featureflag"):
        parsed = build_parser().parse_args(run_args(render(chart, MODES[mode])))
        assert (parsed.decision_log_max_bytes, parsed.decision_log_keep) == (64 * 1024 * 1024, 5), mode


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


# ---- the sidecar's hand-off ---------------------------------------------------------------------------


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


def test_the_heartbeat_of_identical_holds_is_passed_on(chart: helm_python.Chart) -> None:
    args = container(pod_spec(render(chart, MODES["sidecar"])), "flagroll")["args"]
    assert build_parser().parse_args(args).decision_log_heartbeat == 30 * 60
    off = container(
        pod_spec(render(chart, merge(MODES["sidecar"], {"decisionLogHeartbeat": "0"}))), "flagroll"
    )
    assert build_parser().parse_args(off["args"]).decision_log_heartbeat == 0
