"""End to end against a real Prometheus scraping a synthetic service, with ``flagroll run`` as a child
process and the real OpenFeature flagd provider reading the flag file it writes; every scenario also
against VictoriaMetrics single-node (test id ``vm``), which answers the same queries."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext

from controller.adapters.promserver import PrometheusServer
from controller.core.queries import Arm, render
from controller.core.state import Status
from tests.support.controller import ControllerProcess
from tests.support.synthetic import SyntheticService
from tests.support.victoriametrics import VictoriaMetricsServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.victoriametrics]

ERROR_RATE = (
    'sum(rate(http_server_requests_total{{route="{route}",code="500",feature_flag_key="{{{{flag}}}}",'
    'feature_flag_result_variant="{{{{variant}}}}"}}[5s])) / sum(rate(http_server_requests_total{{'
    'route="{route}",feature_flag_key="{{{{flag}}}}",feature_flag_result_variant="{{{{variant}}}}"}}[5s]))'
)


def policy(
    route: str, flag: str, *, holds: tuple[str, ...] = ("3s", "3s", "3s"), interval: str = "1s"
) -> str:
    steps = "\n".join(f"    - {{percent: {p}, hold: {h}}}" for p, h in zip((1, 5, 10), holds, strict=False))
    error_rate = ERROR_RATE.format(route=route)
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {flag}}}
spec:
  owner: sre-lead
  aim: "Cut p95 of {route} from 450ms to 250ms."
  mechanism: "A read-through cache removes repeated I/O."
  flag: {{key: {flag}}}
  maxPercent: 10
  interval: {interval}
  steps:
{steps}
  traffic:
    query: sum(increase(http_server_requests_total{{route="{route}",feature_flag_key="{{{{flag}}}}",feature_flag_result_variant="{{{{variant}}}}"}}[10s]))
    minSamples: 20
  guardrails:
    - name: error-rate
      query: '{error_rate}'
      max: 0.05
    - name: p95-latency
      query: histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{{route="{route}",feature_flag_key="{{{{flag}}}}",feature_flag_result_variant="{{{{variant}}}}"}}[5s])))
      max: 0.25
      maxIncrease: 0.5
"""


def serve(synthetic: SyntheticService, route: str, flag: str, **treatment: float) -> None:
    synthetic.set(route, flag, "control", rps=40, error_ratio=0.01, latency_seconds=0.04)
    synthetic.set(
        route, flag, "on", rps=40, error_ratio=treatment.get("error_ratio", 0.01), latency_seconds=0.04
    )


def actions(controller: ControllerProcess, flag: str) -> list[str]:
    return [str(r["action"]) for r in controller.records(flag)]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_healthy_ramp_climbs_every_step_and_flagd_clients_see_it(
    prometheus: PrometheusServer, synthetic: SyntheticService, tmp_path: Path
) -> None:
    route, flag = "/ramp", "ramp-cache"
    serve(synthetic, route, flag)
    with ControllerProcess(tmp_path, prometheus.url) as controller:
        controller.add_policy(flag, policy(route, flag))
        wait_for(lambda: "complete" in actions(controller, flag), timeout_seconds=90, what="completion")
    moves = [a for a in actions(controller, flag) if a != "hold"]
    assert moves == ["advance", "advance", "advance", "complete"]
    records = controller.records(flag)
    assert [r["to_percent"] for r in records if r["action"] == "advance"] == [1, 5, 10]
    for record in records:
        if record["action"] in {"advance", "complete"} and record["from_percent"] > 0:
            assert {c["verdict"] for c in record["checks"]} == {"pass"}
            assert all(c["samples"] >= 20 for c in record["checks"])

    api.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(controller.flags))
    )
    try:
        client = api.get_client()
        served = Counter(
            client.get_boolean_details(flag, False, EvaluationContext(targeting_key=f"u{i}")).variant
            for i in range(4000)
        )
    finally:
        api.shutdown()
    assert abs(served["on"] / 4000 - 0.10) < 0.02
    assert abs(served["control"] / 4000 - 0.10) < 0.02


def test_a_regression_is_rolled_back_within_two_intervals_of_prometheus_seeing_it(
    prometheus: PrometheusServer, synthetic: SyntheticService, tmp_path: Path
) -> None:
    route, flag = "/regress", "regress-cache"
    serve(synthetic, route, flag)
    interval_seconds = 2.0
    with ControllerProcess(tmp_path, prometheus.url) as controller:
        controller.add_policy(flag, policy(route, flag, holds=("4s", "10m", "10m"), interval="2s"))
        wait_for(
            lambda: [r for r in controller.records(flag) if r["to_percent"] == 5 and r["action"] == "hold"],
            timeout_seconds=90,
            what="the second step",
        )
        serve(synthetic, route, flag, error_ratio=0.3)
        query = render(ERROR_RATE.format(route=route), flag=flag, arm=Arm.TREATMENT)

        def breached() -> datetime | None:
            answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": query}).json()
            result = answer["data"]["result"]
            if result and float(result[0]["value"][1]) > 0.05:
                return datetime.now(UTC)
            return None

        seen = wait_for(breached, timeout_seconds=30, interval_seconds=0.02, what="Prometheus to see it")
        rollback = wait_for(
            lambda: next((r for r in controller.records(flag) if r["action"] == "rollback"), None),
            timeout_seconds=30,
            what="the rollback",
        )
    delay = (parse_time(rollback["time"]) - seen).total_seconds()
    assert delay <= 2 * interval_seconds, f"rolled back {delay:.1f}s after Prometheus saw the regression"
    assert rollback["from_percent"] == 5
    assert rollback["to_percent"] == 0
    failed = [c for c in rollback["checks"] if c["verdict"] == "fail"]
    assert [c["name"] for c in failed] == ["error-rate"]
    assert failed[0]["value"] > 0.05
    assert failed[0]["bound"] == 0.05
    assert failed[0]["samples"] >= 20
    assert 'feature_flag_result_variant="on"' in failed[0]["query"]
    assert "error-rate" in rollback["reason"]
    state = controller.state(flag)
    assert state is not None
    assert (state.status, state.percent) == (Status.ROLLED_BACK, 0)


@pytest.mark.parametrize("server", [PrometheusServer, VictoriaMetricsServer], ids=["prom2", "vm"])
def test_with_prometheus_stopped_the_controller_only_holds(
    synthetic: SyntheticService, tmp_path: Path, server: type[PrometheusServer]
) -> None:
    route, flag = "/outage", "outage-cache"
    serve(synthetic, route, flag)
    own = server([synthetic.target]).start()
    try:
        with ControllerProcess(tmp_path, own.url) as controller:
            controller.add_policy(flag, policy(route, flag, holds=("3s", "3s", "3s")))
            wait_for(
                lambda: any("checks pass" in str(r["reason"]) for r in controller.records(flag)),
                timeout_seconds=60,
                what="a first passing check",
            )
            own.stop()
            stopped_at = len(controller.records(flag))
            wait_for(
                lambda: len(controller.records(flag)) >= stopped_at + 8,
                timeout_seconds=60,
                what="eight cycles during the outage",
            )
            during = controller.records(flag)[stopped_at:]
            percent = controller.state(flag)
    finally:
        own.stop()
    assert percent is not None
    assert {r["action"] for r in during} == {"hold"}
    assert all(r["from_percent"] == r["to_percent"] == percent.percent for r in during)
    assert all("cannot connect" in str(r["reason"]) or "timed out" in str(r["reason"]) for r in during)
    assert all(c["verdict"] == "error" for r in during for c in r["checks"] if c["kind"] != "traffic")


def test_stop_takes_effect_at_once_and_lasts(
    prometheus: PrometheusServer, synthetic: SyntheticService, tmp_path: Path
) -> None:
    route, flag, witness = "/stop", "stop-cache", "stop-witness"
    serve(synthetic, route, flag)
    serve(synthetic, "/witness", witness)
    with ControllerProcess(tmp_path, prometheus.url) as controller:
        controller.add_policy(flag, policy(route, flag, holds=("3s", "10m", "10m")))
        controller.add_policy(witness, policy("/witness", witness, holds=("10m", "10m", "10m")))
        wait_for(lambda: (s := controller.state(flag)) and s.percent == 5, timeout_seconds=90, what="5 %")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "controller",
                "stop",
                flag,
                "--flags",
                str(controller.flags),
                "--reason",
                "checkout alarms",
                "--actor",
                "oncall",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        state = controller.state(flag)
        assert state is not None
        assert (state.percent, state.status) == (0, Status.STOPPED)
        witnessed = len(controller.records(witness))
        wait_for(
            lambda: len(controller.records(witness)) >= witnessed + 4,
            timeout_seconds=30,
            what="four more cycles",
        )
        state = controller.state(flag)
    assert state is not None
    assert (state.percent, state.status, state.reason) == (0, Status.STOPPED, "checkout alarms")
    after_stop = actions(controller, flag)[actions(controller, flag).index("stop") :]
    assert after_stop == ["stop"]
