"""The ``flagroll`` command with a Kubernetes store: a kubeconfig pointing at the fake API served over
HTTP on 127.0.0.1, the in-cluster service account, and the Lease."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.decisionlog import read_records
from controller.adapters.kube.client import connect
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore
from controller.adapters.promserver import PrometheusServer
from controller.cli import main
from controller.cli.kubernetes import open_store
from controller.core.flagd import read_state
from controller.core.state import Status
from tests.support.environment import POLICY
from tests.support.kubefake import FakeKubeApi

KEY = "flags.flagd.json"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeKubeApi, Path]]:
    fake = FakeKubeApi(token="cli-token")
    fake.add("configmaps", "team", "flags", {"data": {"README": "kept"}})
    with fake.serve() as url:
        yield fake, fake.kubeconfig(tmp_path / "kubeconfig", url, namespace="team")


def kube_args(kubeconfig: Path, *extra: str) -> list[str]:
    return ["--flag-store", "configmap", "--flag-object", "flags", "--kubeconfig", str(kubeconfig), *extra]


def document(fake: FakeKubeApi) -> dict[str, Any]:
    return dict(json.loads(fake.get("configmaps", "team", "flags")["data"][KEY]))


def run_once(tmp_path: Path, kubeconfig: Path, prometheus: PrometheusServer, *extra: str) -> int:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "cache.yaml").write_text(POLICY.format(name="cache", key="cache"))
    return main(
        [
            "--log-format",
            "json",
            "run",
            "--once",
            "--policies",
            str(policies),
            "--prometheus",
            prometheus.url,
            *kube_args(kubeconfig, *extra),
        ]
    )


def test_run_once_rolls_out_into_the_configmap_and_logs_to_stdout_only(
    api: tuple[FakeKubeApi, Path],
    tmp_path: Path,
    prometheus: PrometheusServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, kubeconfig = api
    assert run_once(tmp_path, kubeconfig, prometheus) == 0
    state = read_state(document(fake), "cache")
    assert state is not None
    assert state.percent == 1  # nobody exposed yet: no data does not stop the start
    assert fake.get("configmaps", "team", "flags")["data"]["README"] == "kept"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    decisions = [line for line in lines if line["event"] == "decision"]
    assert [d["action"] for d in decisions] == ["advance"]
    assert [line["flags"] for line in lines if line["event"] == "started"] == [
        "configmap team/flags key " + KEY
    ]
    assert list(tmp_path.rglob("*.jsonl")) == []  # no decision log file without --decision-log


def test_run_once_with_a_lease_leads_then_gives_the_lease_up(
    api: tuple[FakeKubeApi, Path],
    tmp_path: Path,
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, kubeconfig = api
    monkeypatch.setenv("POD_NAME", "flagroll-7d9f-abcde")
    assert run_once(tmp_path, kubeconfig, prometheus, "--leader-election-lease", "team/flagroll") == 0
    lease = fake.get("leases", "team", "flagroll")["spec"]
    assert lease.get("holderIdentity") is None  # given up on the way out
    holders = [r.body["spec"].get("holderIdentity") for r in fake.writes("leases") if r.body]
    assert holders == ["flagroll-7d9f-abcde", None]
    assert read_state(document(fake), "cache") is not None
    assert "leadership_acquired" in capsys.readouterr().out


def test_run_once_as_a_follower_writes_nothing_and_exits_0(
    api: tuple[FakeKubeApi, Path],
    tmp_path: Path,
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, kubeconfig = api
    fake.add(
        "leases", "team", "flagroll", {"spec": {"holderIdentity": "other-pod", "leaseDurationSeconds": 15}}
    )
    monkeypatch.setenv("POD_NAME", "me")
    assert run_once(tmp_path, kubeconfig, prometheus, "--leader-election-lease", "team/flagroll") == 0
    assert fake.writes("configmaps") == []
    assert "not_leader" in capsys.readouterr().out


def test_stop_status_and_resume_work_on_the_configmap(
    api: tuple[FakeKubeApi, Path],
    tmp_path: Path,
    prometheus: PrometheusServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, kubeconfig = api
    assert run_once(tmp_path, kubeconfig, prometheus) == 0
    capsys.readouterr()
    log = tmp_path / "decisions.jsonl"
    assert main(["stop", "cache", "--reason", "pager", "--actor", "oncall", *kube_args(kubeconfig)]) == 0
    assert "STOP" in capsys.readouterr().out
    state = read_state(document(fake), "cache")
    assert state is not None
    assert (state.status, state.percent) == (Status.STOPPED, 0)
    assert main(["status", "--json", *kube_args(kubeconfig)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["flag"], r["status"], r["percent"], r["last_action"]) for r in rows] == [
        ("cache", "stopped", 0, None)
    ]
    assert main(["resume", "cache", "--decision-log", str(log), *kube_args(kubeconfig)]) == 0
    state = read_state(document(fake), "cache")
    assert state is not None
    assert state.status == Status.PROGRESSING
    assert [r["action"] for r in read_records(log)] == ["resume"]
    assert main(["pause", "cache", "--decision-log", str(log), *kube_args(kubeconfig)]) == 0
    assert main(["status", "--decision-log", str(log), *kube_args(kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert "paused" in out


def test_forbidden_exits_1_naming_the_object_and_permission(
    api: tuple[FakeKubeApi, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, kubeconfig = api
    fake.fail("GET", "configmaps", 403)
    assert main(["status", *kube_args(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert "cannot get configmaps 'flags' in namespace 'team'" in err
    assert "verb 'get' on resource 'configmaps'" in err


def test_a_kubernetes_store_needs_its_object(
    api: tuple[FakeKubeApi, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = api
    code = main(["status", "--flag-store", "featureflag", "--kubeconfig", str(kubeconfig)])
    assert code == 2
    assert "--flag-object" in capsys.readouterr().err


def test_a_missing_kubeconfig_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", *kube_args(tmp_path / "nowhere")])
    assert code == 1
    assert "no Kubernetes configuration" in capsys.readouterr().err


def test_in_a_pod_the_service_account_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-cluster auth: the token, CA and namespace files of the service account, the API server from
    the environment. (TLS itself is not exercised: the fake answers through the client's transport.)"""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token\n")
    (account / "namespace").write_text("team")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", account / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    fake = FakeKubeApi(token="pod-token")
    fake.add("configmaps", "team", "flags", {"data": {}})
    client = connect(None, service_account=account, transport=fake.transport)
    store = ConfigMapFlagStore(client, ObjectRef("team", "flags"))
    assert store.read().document["flags"] == {}
    assert fake.requests[-1].path == "/api/v1/namespaces/team/configmaps/flags"
    args = argparse.Namespace(flag_store="configmap", flag_object="flags", configmap_key=KEY)
    # NAME alone: the pod's namespace
    assert open_store(args, client).location == "configmap team/flags key " + KEY
