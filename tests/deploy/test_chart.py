"""The Helm chart in charts/flagroll, rendered offline with the Helm SDK in every mode: every rendered
object is valid (tests/support/chart.py says how each kind is validated) and passes ``helm lint
--strict``, the values schema rejects bad values, the chart's README lists every value, and the
``helm install`` lines of docs/kubernetes.md render valid objects.

The PrometheusRule's rules also go through ``promtool check rules`` (tests/deploy/test_monitoring.py).
The chart never renders a FeatureFlag: flagroll manages one that exists already; the Role naming it is
validated like any other object. What each mode runs is in test_chart_modes.py; the security settings
and RBAC in test_chart_security.py.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from tests.support.chart import (
    KUBE_VERSIONS,
    MODES,
    NAMESPACE,
    base,
    find,
    merge,
    one,
    render,
    validate,
)
from tests.support.paths import CHART, EXAMPLES, ROOT

# ---- validation of every rendered object ------------------------------------------------------------


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


# ---- the values schema ---------------------------------------------------------------------------------

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown mode": ({**base("deployment"), "mode": "daemonset"}, "/mode"),
    "a heartbeat that is no duration": (
        {**base("sidecar"), "decisionLogHeartbeat": "soon"},
        "/decisionLogHeartbeat",
    ),
    "several replicas without leader election": (
        base("deployment", deployment={"replicas": 3}),
        "/leaderElection/enabled",
    ),
    "leader election in cronjob mode (it would be ignored)": (
        base("cronjob", leaderElection={"enabled": True}),
        "/leaderElection/enabled",
    ),
    "leader election in sidecar mode": (
        base("sidecar", leaderElection={"enabled": True}),
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
    "a header with a value and a Secret": (
        base(
            "deployment",
            prometheus={
                "headers": [{"name": "X-A", "value": "a", "secretKeyRef": {"name": "s", "key": "k"}}]
            },
        ),
        "/prometheus/headers/0",
    ),
    "a header without a value": (
        base("deployment", prometheus={"headers": [{"name": "X-A"}]}),
        "/prometheus/headers/0",
    ),
    "a header name that is no token": (
        base("deployment", prometheus={"headers": [{"name": "X-Scope OrgID", "value": "a"}]}),
        "/prometheus/headers/0/name",
    ),
    "a header flagroll sets itself": (
        base("deployment", prometheus={"headers": [{"name": "content-type", "value": "text/plain"}]}),
        "/prometheus/headers/0/name",
    ),
    "a header value on two lines": (
        base("deployment", prometheus={"headers": [{"name": "X-A", "value": "a\nX-B: b"}]}),
        "/prometheus/headers/0/value",
    ),
    "a header value ending in a space": (
        base("deployment", prometheus={"headers": [{"name": "X-A", "value": "a "}]}),
        "/prometheus/headers/0/value",
    ),
    "an Authorization header beside a bearer token": (
        base(
            "deployment",
            prometheus={
                "auth": {"existingSecret": "s", "bearerTokenKey": "token"},
                "headers": [{"name": "authorization", "secretKeyRef": {"name": "s", "key": "k"}}],
            },
        ),
        "/prometheus/headers/0/name",
    ),
    "an OFREP URL without a scheme": (
        base("sidecar", verifyServing={"ofrepUrl": "127.0.0.1:8016"}),
        "/verifyServing/ofrepUrl",
    ),
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


def documented_install_lines() -> list[list[str]]:
    page = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```\n(helm install .*?)```", page, re.S)
    return [shlex.split(block.replace("\\\n", " ")) for block in blocks]


def test_the_documented_install_lines_render_valid_objects(
    chart: helm_python.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # --set-file paths are relative to the checkout
    lines = documented_install_lines()
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
