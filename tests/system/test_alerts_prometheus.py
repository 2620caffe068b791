"""``spec.alerts`` against a real Prometheus (2.x from Debian and the built 3.x) evaluating a real
alerting rule on the synthetic service's metrics: while the rule fires, ``flagroll run --once`` does
not start the rollout and names the alert in its record and ``status``; once it resolves, the
rollout starts. Two policies sharing the selector make one request for it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.adapters.decisionlog import read_records
from controller.adapters.policyfile import load_paths
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer
from controller.core.decision import initial_state, queries_for
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading, ReadingKind, Source, alerts_query
from tests.conftest import prometheus_binary
from tests.support.synthetic import SyntheticService
from tests.support.waiting import wait_for
from tests.system.test_init_rollout import flagroll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

BACKEND = ("/alerts/checkout", "checkout-backend", "off")  # the service whose errors page
RULES = """\
groups:
  - name: checkout
    interval: 1s
    rules:
      - alert: CheckoutErrors
        expr: sum by (route) (rate(http_server_requests_total{route="/alerts/checkout", code="500"}[5s])) > 1
        labels: {service: checkout, severity: page}
"""
ALERTS = """\
  alerts:
    - name: checkout-pages
      selector: '{severity="page", service="checkout"}'
      onFiring: hold
"""
FIRING = 'CheckoutErrors{route="/alerts/checkout", service="checkout", severity="page"}'


def firing_alerts(server: PrometheusServer) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/api/v1/query", params={"query": 'ALERTS{alertstate="firing"}'})
    payload = response.json()
    assert payload["status"] == "success", payload
    result: list[dict[str, Any]] = payload["data"]["result"]
    return [s["metric"] for s in result if s["metric"].get("route") == BACKEND[0]]


def initialised(policies: Path, name: str, flag: str, route: str) -> None:
    made = flagroll(
        "init",
        *("--flag", flag, "--route", route, "--owner", "sre"),
        *("--mechanism", "Paged while it ramps.", "--output", str(policies / f"{name}.yaml")),
    )
    assert made.returncode == 0, made.stderr
    text = (policies / f"{name}.yaml").read_text()
    (policies / f"{name}.yaml").write_text(text.rstrip("\n") + "\n" + ALERTS)


@pytest.mark.parametrize("version", ["prom2", "prom3"])
def test_a_firing_rule_holds_the_start_and_its_end_lets_the_rollout_start(
    synthetic: SyntheticService, tmp_path: Path, version: str
) -> None:
    route, flag = f"/alerts/pay/{version}", f"alerts-pay-{version}"
    for variant in ("on", "control"):
        synthetic.set(route, flag, variant, rps=40, error_ratio=0.01, latency_seconds=0.04)
    synthetic.set(*BACKEND, rps=40, error_ratio=0.5)
    policies = tmp_path / "policies"
    policies.mkdir()
    initialised(policies, "pay", flag, route)
    with PrometheusServer([synthetic.target], rules=RULES, binary=prometheus_binary(version)) as server:
        wait_for(
            lambda: firing_alerts(server), timeout_seconds=60, interval_seconds=0.5, what="the rule fires"
        )
        (entry,) = load_paths([policies]).policies

        def answered() -> bool:
            now = datetime.now(UTC)
            planned = queries_for(entry.policy, initial_state(entry.policy, now), now, entry.templates)
            answers = asyncio.run(_ask(server.url, planned))
            return all(
                r.kind is ReadingKind.VALUE and (r.value or q.key.source is Source.ALERT)
                for q, r in ((q, answers[q.key]) for q in planned)
            )

        wait_for(answered, timeout_seconds=60, interval_seconds=0.5, what="every query answered")
        flags = tmp_path / "flags.json"
        log = tmp_path / "decisions.jsonl"
        common = ("--policies", str(policies), "--flags", str(flags), "--prometheus", server.url)
        ran = flagroll("run", "--once", *common)
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
        (record,) = read_records(log)
        assert record["action"] == "hold", record["reason"]
        assert record["to_percent"] == 0
        assert record["reason"].startswith(f"not starting: alert firing: checkout-pages ({FIRING})")
        assert record["waiting"]["reason"] == "alert"
        assert record["waiting"]["alerts"] == [{"name": "checkout-pages", "firing": [FIRING]}]
        (check,) = [c for c in record["checks"] if c["kind"] == "alert"]
        assert check["query"] == 'ALERTS{alertstate="firing", service="checkout", severity="page"}'
        assert (check["verdict"], check["value"], check["firing"]) == ("fail", 1, [FIRING])
        shown = flagroll("status", "--json", "--flags", str(flags), "--decision-log", str(log))
        assert shown.returncode == 0, shown.stderr
        (row,) = json.loads(shown.stdout)
        assert row["waiting"]["reason"] == "alert"

        synthetic.set(*BACKEND, rps=40, error_ratio=0.0)
        wait_for(lambda: not firing_alerts(server), timeout_seconds=60, interval_seconds=0.5, what="resolved")
        ran = flagroll("run", "--once", *common)
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
        second = list(read_records(log))[-1]
        assert second["action"] == "advance", second["reason"]
        assert second["to_percent"] == 1
        assert second["waiting"] is None
        (check,) = [c for c in second["checks"] if c["kind"] == "alert"]
        assert (check["verdict"], check["value"], check["firing"]) == ("pass", 0, [])


async def _ask(url: str, planned: list[Any]) -> dict[QueryKey, Reading]:
    async with PrometheusClient(url, timeout_seconds=5) as client:
        return await client.query_all(planned)


def test_rollouts_sharing_a_selector_make_one_request_for_it(
    synthetic: SyntheticService, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    for name in ("one", "two", "three"):
        initialised(policies, name, f"alerts-shared-{name}", f"/alerts/shared/{name}")
    loaded = load_paths([policies])
    assert not loaded.errors, [str(e) for e in loaded.errors]
    now = datetime.now(UTC)
    planned = [
        q
        for entry in loaded.policies
        for q in queries_for(entry.policy, initial_state(entry.policy, now), now, entry.templates)
    ]
    asked: list[str] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            asked.append(httpx.QueryParams((await request.aread()).decode())["query"])
            return await super().handle_async_request(request)

    with PrometheusServer([synthetic.target], rules=RULES) as server:

        async def run() -> dict[QueryKey, Reading]:
            async with PrometheusClient(server.url, timeout_seconds=5, transport=Recording()) as client:
                return await client.query_all(planned)

        answers = asyncio.run(run())
    alert_queries = [q for q in asked if q.startswith("ALERTS")]
    assert alert_queries == ['ALERTS{alertstate="firing", service="checkout", severity="page"}']
    alert_readings = [r for k, r in answers.items() if k.source is Source.ALERT]
    assert len(alert_readings) == 3
    assert all(r.kind is ReadingKind.VALUE for r in alert_readings)


PENDING_RULES = """\
groups:
  - name: checkout-pending
    interval: 1s
    rules:
      - alert: CheckoutSlowBurn
        expr: sum by (route) (rate(http_server_requests_total{route="/alerts/checkout"}[5s])) > 1
        for: 1h
        labels: {service: checkout, severity: page}
"""


@pytest.mark.parametrize("version", ["prom2", "prom3"])
def test_a_pending_alert_is_not_firing_and_holds_nothing(synthetic: SyntheticService, version: str) -> None:
    """A rule with ``for: 1h`` whose condition holds is pending for an hour: ALERTS has its series
    with ``alertstate="pending"``, and the selector's query finds nothing firing."""
    synthetic.set(*BACKEND, rps=40, error_ratio=0.0)
    selector = '{service="checkout", severity="page"}'
    planned = [
        PlannedQuery(
            QueryKey(Source.ALERT, "pages", Arm.TREATMENT, flag="f"), alerts_query(selector), listing=True
        )
    ]
    with PrometheusServer(
        [synthetic.target], rules=PENDING_RULES, binary=prometheus_binary(version)
    ) as server:

        def pending() -> list[dict[str, Any]]:
            response = httpx.get(
                f"{server.url}/api/v1/query", params={"query": 'ALERTS{alertstate="pending"}'}
            )
            return [s["metric"] for s in response.json()["data"]["result"]]

        (metric,) = wait_for(pending, timeout_seconds=60, interval_seconds=0.5, what="the rule is pending")
        assert metric["alertname"] == "CheckoutSlowBurn"
        (reading,) = asyncio.run(_ask(server.url, planned)).values()
    assert reading == Reading.listed([])
