"""``flagroll run --once`` through an authenticating gateway of a multi-tenant store: a real HTTP server
on 127.0.0.1 in front of the real test Prometheus that answers 401 without ``X-Scope-OrgID`` and
``X-Api-Key``, 403 with a wrong value, and passes the query on with the right ones.

With the headers the rollout ramps; without them (or with a wrong tenant) every check is ``error``,
the rollout holds where it is, and the record says why. The tenant id and the key never appear in
stdout, stderr, the decision log, the flag file, ``explain``, ``log`` or ``status``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.decisionlog import read_records
from controller.adapters.promserver import PrometheusServer
from controller.cli import main
from controller.core.flagd import read_state
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.prometheus

TENANT = "tenant-4e2b9d71c0"
API_KEY = "key-a83f10c6d25e"
SECRETS = (TENANT, API_KEY)

POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {name: tenant-cache}
spec:
  owner: sre-lead
  aim: "Serve quotes from a cache, measured in a tenant's store."
  mechanism: "The store answers only with the tenant header."
  flag: {key: tenant-cache}
  maxPercent: 10
  interval: 1s
  steps:
    - {percent: 1, hold: 1m}
    - {percent: 5, hold: 1m}
  guardrails:
    - name: errors
      query: vector(0.001)
      max: 0.05
"""


@pytest.fixture
def gateway(prometheus: PrometheusServer) -> Iterator[FaultProxy]:
    with FaultProxy(prometheus.url, require_headers={"X-Scope-OrgID": TENANT, "X-Api-Key": API_KEY}) as proxy:
        yield proxy


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "tenant-cache.yaml").write_text(POLICY)
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    monkeypatch.setenv("TENANT_ID", TENANT)
    return tmp_path


def _flagroll(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["--log-format", "json", "--log-level", "debug", *argv])
    out, err = capsys.readouterr()
    return code, out + err


def _run_once(world: Path, url: str, capsys: pytest.CaptureFixture[str], *headers: str) -> tuple[int, str]:
    argv = ["run", "--once", "--policies", str(world / "policies"), "--flags", str(world / "flags.json")]
    return _flagroll(capsys, *argv, "--prometheus", url, *headers)


def _records(world: Path) -> list[dict[str, Any]]:
    return list(read_records(world / "decisions.jsonl"))


def _percent(world: Path) -> float | None:
    state = read_state(json.loads((world / "flags.json").read_text()), "tenant-cache")
    return None if state is None else state.percent


def _shown_everywhere(world: Path, capsys: pytest.CaptureFixture[str], *outputs: str) -> str:
    """Everything flagroll wrote or shows about the rollout, for the search of a secret."""
    texts = [*outputs, (world / "decisions.jsonl").read_text(), (world / "flags.json").read_text()]
    flags = ["--flags", str(world / "flags.json")]
    for argv in (
        ["explain", "tenant-cache", *flags, "--policies", str(world / "policies")],
        ["log", "--decision-log", str(world / "decisions.jsonl"), "--json"],
        ["log", "--decision-log", str(world / "decisions.jsonl")],
        ["status", *flags, "--json"],
    ):
        code, shown = _flagroll(capsys, *argv)
        assert code == 0, shown
        texts.append(shown)
    return "\n".join(texts)


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_with_the_tenant_headers_the_rollout_ramps(
    gateway: FaultProxy, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = ["--prometheus-header", "X-Scope-OrgID=env:TENANT_ID"]
    headers += ["--prometheus-header", f"X-Api-Key=@{world / 'api-key'}"]
    code, out = _run_once(world, gateway.url, capsys, *headers)
    assert code == 0, out
    (record,) = _records(world)
    assert (record["action"], record["from_percent"], record["to_percent"]) == ("advance", 0, 1)
    assert {c["verdict"] for c in record["checks"]} == {"pass"}
    assert _percent(world) == 1
    queries = [r for r in gateway.requests if r.path == "/api/v1/query"]
    assert queries
    assert all(r.headers["X-Scope-OrgID"] == TENANT and r.headers["X-Api-Key"] == API_KEY for r in queries)
    started = next(json.loads(line) for line in out.splitlines() if '"event": "started"' in line)
    assert started["prometheus_auth"] == "headers X-Scope-OrgID, X-Api-Key"
    _assert_no_secret(_shown_everywhere(world, capsys, out))


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ((), "HTTP 401"),
        (("--prometheus-header", "X-Scope-OrgID=env:TENANT_ID"), "HTTP 401"),  # the key is missing
        (
            ("--prometheus-header", "X-Scope-OrgID=tenant-other", "--prometheus-header", "X-Api-Key=x"),
            "HTTP 403",
        ),
    ],
    ids=["no-headers", "no-key", "wrong-tenant"],
)
def test_without_the_right_headers_every_check_is_an_error_and_nothing_moves(
    gateway: FaultProxy,
    world: Path,
    capsys: pytest.CaptureFixture[str],
    headers: tuple[str, ...],
    status: str,
) -> None:
    code, out = _run_once(world, gateway.url, capsys, *headers)
    assert code == 0, out  # an unanswered query is no failure of the cycle: the rollout waits
    (record,) = _records(world)
    assert (record["action"], record["from_percent"], record["to_percent"]) == ("hold", 0, 0)
    assert record["checks"]
    assert {c["verdict"] for c in record["checks"]} == {"error"}
    assert status in record["reason"], record["reason"]
    assert _percent(world) in (None, 0)
    _assert_no_secret(_shown_everywhere(world, capsys, out))


def test_headers_lost_after_a_ramp_neither_roll_back_nor_advance(
    gateway: FaultProxy, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ["--prometheus-header", f"X-Api-Key=@{world / 'api-key'}"]
    tenant = ["--prometheus-header", "X-Scope-OrgID=env:TENANT_ID"]
    assert _run_once(world, gateway.url, capsys, *tenant, *key)[0] == 0
    assert _percent(world) == 1
    code, out = _run_once(world, gateway.url, capsys, *key)
    assert code == 0, out
    last = _records(world)[-1]
    assert (last["action"], last["from_percent"], last["to_percent"]) == ("hold", 1, 1)
    assert {c["verdict"] for c in last["checks"]} == {"error"}  # an error is not a fail: no rollback
    assert "HTTP 401" in last["reason"], last["reason"]
    assert _percent(world) == 1
    _assert_no_secret(_shown_everywhere(world, capsys, out))


def test_a_missing_header_file_stops_flagroll_before_any_query(
    gateway: FaultProxy, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = world / "no-such-key"
    code, out = _run_once(world, gateway.url, capsys, "--prometheus-header", f"X-Api-Key=@{missing}")
    assert code == 2
    assert f"flagroll run: --prometheus-header #1 X-Api-Key: file {missing}: cannot read" in out
    assert gateway.requests == []
    assert not (world / "decisions.jsonl").exists()
