"""The controller's own endpoints: /healthz, /readyz and /metrics, scraped by a real Prometheus."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.endpoints import Endpoints, parse_listen
from controller.adapters.promserver import PrometheusServer, free_port
from controller.adapters.telemetry import Telemetry
from controller.core.errors import UsageError
from tests.support.waiting import wait_for


def _samples(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


RECORD: dict[str, Any] = {
    "flag": "cache",
    "action": "hold",
    "to_percent": 5.0,
    "status": "progressing",
    "stale": True,
    "checks": [
        {
            "name": "traffic",
            "kind": "traffic",
            "rule": "minSamples",
            "value": 100.0,
            "bound": 10,
            "verdict": "pass",
        },
        {
            "name": "errors",
            "kind": "guardrail",
            "rule": "max",
            "value": 0.004,
            "bound": 0.01,
            "verdict": "pass",
        },
        {"name": "p95", "kind": "guardrail", "rule": "max", "value": None, "bound": 0.3, "verdict": "error"},
    ],
}


def test_a_cycle_sets_every_metric_of_the_contract() -> None:
    telemetry = Telemetry(clock=lambda: 1_800_000_000.0)
    telemetry.recorded([RECORD])
    telemetry.cycle_done(ok=True, policy_errors=2, prometheus_answered=True, duration_seconds=0.2)
    samples = _samples(telemetry)
    assert samples[("flagroll_flag_percent", (("flag", "cache"),))] == 5.0
    assert samples[("flagroll_rollout_status", (("flag", "cache"), ("status", "progressing")))] == 1.0
    assert samples[("flagroll_rollout_status", (("flag", "cache"), ("status", "rolled_back")))] == 0.0
    assert samples[("flagroll_rollout_stale", (("flag", "cache"),))] == 1.0
    assert samples[("flagroll_decisions_total", (("action", "hold"), ("flag", "cache")))] == 1.0
    errors = (("flag", "cache"), ("guardrail", "errors"), ("rule", "max"))
    assert samples[("flagroll_guardrail_value", errors)] == 0.004
    assert samples[("flagroll_guardrail_bound", errors)] == 0.01
    p95 = (("flag", "cache"), ("guardrail", "p95"), ("rule", "max"))
    assert ("flagroll_guardrail_value", p95) not in samples  # no value: no made-up number
    assert samples[("flagroll_guardrail_bound", p95)] == 0.3
    assert samples[("flagroll_query_errors_total", (("flag", "cache"),))] == 1.0
    assert samples[("flagroll_cycles_total", (("result", "ok"),))] == 1.0
    assert samples[("flagroll_cycles_total", (("result", "failed"),))] == 0.0
    assert samples[("flagroll_last_cycle_success_timestamp_seconds", ())] == 1_800_000_000.0
    assert samples[("flagroll_policy_errors", ())] == 2.0
    assert samples[("flagroll_cycle_duration_seconds_count", ())] == 1.0


def test_a_failed_cycle_counts_but_leaves_the_last_success_alone() -> None:
    telemetry = Telemetry(clock=lambda: 1_800_000_000.0)
    telemetry.cycle_failed(1.5)
    telemetry.cycle_done(ok=False, policy_errors=0, prometheus_answered=False, duration_seconds=0.1)
    samples = _samples(telemetry)
    assert samples[("flagroll_cycles_total", (("result", "failed"),))] == 2.0
    assert samples[("flagroll_last_cycle_success_timestamp_seconds", ())] == 0.0
    assert not telemetry.ready  # Prometheus never answered


def test_alive_until_the_loop_goes_quiet() -> None:
    now = [1000.0]
    telemetry = Telemetry(clock=lambda: now[0])
    assert telemetry.alive
    now[0] += 119
    assert telemetry.alive
    now[0] += 2
    assert not telemetry.alive
    telemetry.beat()
    assert telemetry.alive


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), (":9", ("0.0.0.0", 9)), ("[::1]:80", ("::1", 80))],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:http", "host:70000"])
def test_bad_listen_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="HOST:PORT"):
        parse_listen(text)


def test_endpoints_answer_health_readiness_metrics_and_404() -> None:
    telemetry = Telemetry()
    with Endpoints(telemetry, "127.0.0.1", 0) as endpoints:
        base = f"http://127.0.0.1:{endpoints.address[1]}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503
        telemetry.recorded([RECORD])
        telemetry.cycle_done(ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1)
        assert httpx.get(f"{base}/readyz").status_code == 200
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'flagroll_flag_percent{flag="cache"} 5.0' in metrics.text
        assert httpx.get(f"{base}/nope").status_code == 404


def test_a_port_in_use_is_a_usage_error() -> None:
    with Endpoints(Telemetry(), "127.0.0.1", 0) as first, pytest.raises(UsageError, match="cannot listen"):
        Endpoints(Telemetry(), "127.0.0.1", first.address[1])


# --------------------------------------------------------------------------- end to end

POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {name: scraped}
spec:
  owner: sre-lead
  aim: "Be observable."
  mechanism: "The controller exports its own metrics."
  flag: {key: scraped}
  maxPercent: 10
  interval: 1s
  steps:
    - {percent: 5, hold: 1h}
  guardrails:
    - name: errors
      query: sum(label_replace(vector(0.002), "arm", "{{variant}}", "", ""))
      max: 0.01
"""


@contextlib.contextmanager
def _listening(tmp_path: Path, prometheus_url: str) -> Iterator[str]:
    """`flagroll run --listen` as a child process; yields the address it serves."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    port = free_port()
    command = [sys.executable, "-m", "controller", "--log-format", "json", "run"]
    command += ["--policies", str(tmp_path / "policies"), "--flags", str(tmp_path / "flags.json")]
    command += ["--prometheus", prometheus_url, "--listen", f"127.0.0.1:{port}"]
    with (tmp_path / "out").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def controller(tmp_path: Path, prometheus: PrometheusServer) -> Iterator[str]:
    with _listening(tmp_path, prometheus.url) as address:
        yield address


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


@pytest.mark.prometheus
@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_controller(controller: str) -> None:
    address = controller

    def ready_answer() -> httpx.Response | None:
        response = _get(f"http://{address}/readyz")
        return response if response is not None and response.status_code == 200 else None

    ready = wait_for(ready_answer, timeout_seconds=30, what="/readyz to answer 200")
    assert ready.text == "ready\n"
    healthz = _get(f"http://{address}/healthz")
    assert healthz is not None
    assert healthz.status_code == 200
    with PrometheusServer([address], job="flagroll-controller") as scraper:

        def percent() -> float | None:
            answer = httpx.get(
                f"{scraper.url}/api/v1/query", params={"query": 'flagroll_flag_percent{flag="scraped"}'}
            ).json()
            result = answer["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        assert wait_for(percent, timeout_seconds=30, what="Prometheus to scrape the controller") == 5.0
        answer = httpx.get(
            f"{scraper.url}/api/v1/query",
            params={"query": 'flagroll_guardrail_value{flag="scraped",guardrail="errors"}'},
        ).json()
        assert float(answer["data"]["result"][0]["value"][1]) == 0.002
        up = httpx.get(f"{scraper.url}/api/v1/query", params={"query": "up"}).json()
        assert up["data"]["result"][0]["value"][1] == "1"


@pytest.mark.slow
def test_not_ready_while_prometheus_is_unreachable(tmp_path: Path) -> None:
    with _listening(tmp_path, f"http://127.0.0.1:{free_port()}") as address:
        port = address.rsplit(":", 1)[1]

        def erred() -> httpx.Response | None:
            response = _get(f"http://127.0.0.1:{port}/metrics")
            return (
                response if response is not None and "flagroll_query_errors_total{" in response.text else None
            )

        metrics = wait_for(erred, timeout_seconds=30, what="a cycle with query errors")
        assert 'flagroll_decisions_total{action="hold",flag="scraped"}' in metrics.text
        readyz = _get(f"http://127.0.0.1:{port}/readyz")
        assert readyz is not None
        assert readyz.status_code == 503
        healthz = _get(f"http://127.0.0.1:{port}/healthz")
        assert healthz is not None
        assert healthz.status_code == 200


def test_gauges_follow_the_flag_file_even_without_records_and_forget_removed_flags() -> None:
    from datetime import UTC, date, datetime

    from controller.core.state import RolloutState, Status

    def state(status: Status, percent: float, review: date | None = None) -> RolloutState:
        moment = datetime(2026, 11, 21, tzinfo=UTC)
        return RolloutState("p", "r", status, 0, 2, percent, True, moment, moment, review=review)

    telemetry = Telemetry(clock=lambda: datetime(2026, 11, 21, 12, tzinfo=UTC).timestamp())
    states = {
        "rolled": state(Status.ROLLED_BACK, 0.0),
        "partial": state(Status.PROGRESSING, 5.0, review=date(2026, 11, 1)),
    }
    telemetry.cycle_done(
        ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states=states
    )
    samples = _samples(telemetry)
    assert samples[("flagroll_rollout_status", (("flag", "rolled"), ("status", "rolled_back")))] == 1.0
    assert samples[("flagroll_flag_percent", (("flag", "partial"),))] == 5.0
    assert samples[("flagroll_rollout_stale", (("flag", "partial"),))] == 1.0
    del states["partial"]
    telemetry.cycle_done(
        ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states=states
    )
    assert not any(labels == (("flag", "partial"),) for _, labels in _samples(telemetry))


def test_a_record_of_the_cycle_has_the_last_word_on_its_flag_gauges() -> None:
    from datetime import UTC, datetime

    from controller.core.state import RolloutState, Status

    moment = datetime(2026, 11, 21, tzinfo=UTC)
    on_file = {"cache": RolloutState("p", "r", Status.PROGRESSING, 0, 2, 1.0, True, moment, moment)}
    telemetry = Telemetry(clock=lambda: moment.timestamp())
    percent = ("flagroll_flag_percent", (("flag", "cache"),))
    telemetry.recorded([RECORD])  # a --dry-run decision: 5 %, while the file still says 1 %
    telemetry.cycle_done(
        ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states=on_file
    )
    assert _samples(telemetry)[percent] == 5.0
    telemetry.cycle_done(
        ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states=on_file
    )
    assert _samples(telemetry)[percent] == 1.0  # a cycle without a record for it: the file's word


def test_the_unguarded_gauge_follows_every_cycle_not_only_its_records() -> None:
    """Unguarded records come on change and every ten minutes; the gauge says so every cycle."""
    from datetime import UTC, datetime

    from controller.core.state import RolloutState, Status

    moment = datetime(2026, 11, 21, tzinfo=UTC)
    states = {
        key: RolloutState("p", "r", Status.PROGRESSING, 0, 2, 5.0, True, moment, moment)
        for key in ("cache", "search")
    }
    telemetry = Telemetry(clock=lambda: moment.timestamp())
    gauge = "flagroll_rollout_unguarded"

    def done(unguarded: tuple[str, ...]) -> dict[str, float]:
        telemetry.cycle_done(
            ok=True,
            policy_errors=1,
            prometheus_answered=True,
            duration_seconds=0.1,
            states=states,
            unguarded=unguarded,
        )
        return {dict(labels)["flag"]: v for (name, labels), v in _samples(telemetry).items() if name == gauge}

    assert done(("cache",)) == {"cache": 1.0, "search": 0.0}
    assert done(("cache",)) == {"cache": 1.0, "search": 0.0}  # no record this cycle: still 1
    assert done(()) == {"cache": 0.0, "search": 0.0}
    del states["search"]
    assert done(()) == {"cache": 0.0}
