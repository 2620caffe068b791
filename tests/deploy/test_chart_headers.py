"""The chart's ``prometheus.headers``: each header reaches flagroll as ``--prometheus-header NAME=env:VAR``
with its value in the container's environment, a plain value for what is no secret and a
``secretKeyRef`` for the rest, so that no value is ever an argument and the chart never holds a
secret. The rendered pod, played outside Kubernetes (its arguments, its environment with the Secret's
key filled in), sends the headers through an authenticating gateway in front of the real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python
import pytest

from controller.adapters.decisionlog import read_records
from controller.adapters.promauth import load_auth
from controller.adapters.promserver import PrometheusServer, free_port
from controller.cli import build_parser, main
from tests.support.chart import (
    FULLNAME,
    KUBE_VERSIONS,
    MODES,
    NAMESPACE,
    container,
    find,
    merge,
    notes_snippet,
    pod_spec,
    render,
    validate,
)
from tests.support.faultproxy import FaultProxy
from tests.support.paths import CHART

TENANT = "team-payments"
API_KEY = "key-5b0e9c2d7a41"  # what the Secret holds: never in the values, so never in the chart
SECRET = {"name": "metrics-gateway", "key": "api-key"}
HEADERS = [
    {"name": "X-Scope-OrgID", "value": TENANT},
    {"name": "X-Api-Key", "secretKeyRef": SECRET},
]
WITH_HEADERS = {"prometheus": {"headers": HEADERS}}


def _flagroll(chart: helm_python.Chart, mode: str, values: dict[str, Any] = WITH_HEADERS) -> dict[str, Any]:
    merged = merge(MODES[mode], values)
    if mode == "sidecar-snippet":
        return container(notes_snippet(chart, merged), "flagroll")
    return container(pod_spec(render(chart, merged)), "flagroll")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_headers_are_arguments_naming_variables_of_the_container_s_environment(
    chart: helm_python.Chart, mode: str
) -> None:
    flagroll = _flagroll(chart, mode)
    assert [a for a in flagroll["args"] if a.startswith("--prometheus-header")] == [
        "--prometheus-header=X-Scope-OrgID=env:PROMETHEUS_HEADER_0",
        "--prometheus-header=X-Api-Key=env:PROMETHEUS_HEADER_1",
    ]
    env = {e["name"]: e for e in flagroll["env"]}
    assert env["PROMETHEUS_HEADER_0"] == {"name": "PROMETHEUS_HEADER_0", "value": TENANT}
    assert env["PROMETHEUS_HEADER_1"] == {
        "name": "PROMETHEUS_HEADER_1",
        "valueFrom": {"secretKeyRef": SECRET},
    }
    assert all(TENANT not in arg for arg in flagroll["args"])


def test_no_headers_render_nothing(chart: helm_python.Chart) -> None:
    flagroll = _flagroll(chart, "deployment-configmap", {})
    assert not [a for a in flagroll["args"] if a.startswith("--prometheus-header")]
    assert [e["name"] for e in flagroll["env"]] == ["POD_NAME"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("mode", ["deployment-featureflag-ha", "cronjob-configmap", "sidecar"])
def test_with_headers_every_object_is_valid_and_the_chart_holds_no_secret(
    chart: helm_python.Chart, mode: str, kube_version: str
) -> None:
    objects = render(chart, merge(MODES[mode], WITH_HEADERS))
    for obj in objects:
        validate(obj, kube_version)
    assert not find(objects, "Secret")
    assert API_KEY not in json.dumps(objects)


def test_helm_lint_strict_passes_with_headers() -> None:
    values = merge(MODES["deployment-featureflag-ha"], WITH_HEADERS)
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_rendered_arguments_and_environment_give_flagroll_the_headers(chart: helm_python.Chart) -> None:
    """What the container starts with, read by flagroll's own parser and loader, with the kubelet's
    part played: each ``secretKeyRef`` filled in from the Secret."""
    flagroll = _flagroll(chart, "cronjob-configmap")
    args = flagroll["args"]
    parsed = build_parser().parse_args(args)
    environ = {e["name"]: e.get("value") or _from_secret(e["valueFrom"]) for e in flagroll["env"]}
    auth = load_auth(
        bearer_token_file=None,
        username=None,
        password_file=None,
        ca_file=None,
        insecure_skip_verify=False,
        environ=environ,
        headers=parsed.prometheus_header,
    )
    assert auth.headers() == {"X-Scope-OrgID": TENANT, "X-Api-Key": API_KEY}


def _from_secret(source: dict[str, Any]) -> str:
    if "secretKeyRef" in source:
        assert source["secretKeyRef"] == SECRET
        return API_KEY
    return f"<{next(iter(source))}>"  # the pod's name and other fields of the downward API


@pytest.mark.prometheus
def test_a_sidecar_cycle_with_the_rendered_pod_passes_the_tenant_gateway(
    chart: helm_python.Chart,
    tmp_path: Path,
    prometheus: PrometheusServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    required = {"X-Scope-OrgID": TENANT, "X-Api-Key": API_KEY}
    with FaultProxy(prometheus.url, require_headers=required) as gateway:
        objects = render(
            chart, merge(MODES["sidecar"], {"prometheus": {"url": gateway.url, "headers": HEADERS}})
        )
        flagroll = container(pod_spec(objects), "flagroll")
        mounts = {"/var/lib/flagroll": tmp_path / "flags", "/etc/flagroll/policies": tmp_path / "policies"}
        for directory in mounts.values():
            directory.mkdir()
        (policies,) = find(objects, "ConfigMap", f"{FULLNAME}-policies")
        for name, text in policies["data"].items():
            (mounts["/etc/flagroll/policies"] / name).write_text(text, encoding="utf-8")
        args = flagroll["args"]
        for mounted, here in mounts.items():
            args = [a.replace(mounted, str(here)) for a in args]
        args = [f"--listen=127.0.0.1:{free_port()}" if a.startswith("--listen=") else a for a in args]
        for variable in flagroll["env"]:
            monkeypatch.setenv(variable["name"], variable.get("value") or _from_secret(variable["valueFrom"]))
        code = main([*args, "--once"])
        out = capsys.readouterr().out
    assert code == 0, out
    queries = [r for r in gateway.requests if r.path == "/api/v1/query"]
    assert queries
    assert all(
        r.headers.get("X-Scope-OrgID") == TENANT and r.headers.get("X-Api-Key") == API_KEY for r in queries
    )
    records = list(read_records(mounts["/var/lib/flagroll"] / "decisions.jsonl"))
    assert records
    details = json.dumps(records)
    assert "HTTP 401" not in details
    assert "HTTP 403" not in details
    assert API_KEY not in out + details
