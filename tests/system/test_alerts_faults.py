"""``spec.alerts`` when Prometheus answers every query but the one for ``ALERTS``: a real Prometheus
behind a fault proxy that breaks only the alert query (HTTP 5xx, a timeout, truncated JSON, a matrix,
labels that are not strings). Each is an ``error`` check that follows ``onError``: a rollout with
``onError: hold`` holds where it is, one with ``onError: rollback`` sharing the selector rolls back;
the other checks are still answered, and the alert is never a pass."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.decisionlog import read_records
from controller.adapters.policyfile import load_paths
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer
from controller.core.decision import initial_state, queries_for
from controller.core.queries import QueryKey, Reading, ReadingKind, Source
from tests.support.faultproxy import Body, Delay, Fault, FaultProxy, Status
from tests.support.synthetic import SyntheticService
from tests.support.waiting import wait_for
from tests.system.test_alerts_prometheus import RULES, initialised
from tests.system.test_init_rollout import flagroll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def _vector(result: list[Any], kind: str = "vector") -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": kind, "result": result}}).encode()


FAULTS: list[tuple[Fault, str]] = [
    (Status(503, b"overloaded"), "HTTP 503: overloaded"),
    (Body(_vector([])[:-7]), "not JSON"),
    (Body(_vector([], kind="matrix")), "the firing alerts are a vector of series, not a matrix"),
    (
        Body(_vector([{"metric": {"alertname": "X", "n": 1}, "value": [1, "1"]}])),
        "vector element has no 'metric' object of label values",
    ),
    (Delay(12.0), "timed out after 10s"),
]


def _alerts_only(body: bytes) -> bool:
    return body.startswith(b"query=ALERTS")


def test_only_the_alert_query_failing_follows_on_error_for_each_rollout_sharing_it(
    synthetic: SyntheticService, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    for name in ("held", "rolled"):
        route = f"/alerts/faults/{name}"
        for variant in ("on", "control"):
            synthetic.set(
                route, f"alerts-faults-{name}", variant, rps=40, error_ratio=0.01, latency_seconds=0.04
            )
        initialised(policies, name, f"alerts-faults-{name}", route)
    loaded = load_paths([policies])
    assert not loaded.errors, [str(e) for e in loaded.errors]
    flags, log = tmp_path / "flags.json", tmp_path / "decisions.jsonl"
    with PrometheusServer([synthetic.target], rules=RULES) as server, FaultProxy(server.url) as proxy:

        def answered() -> bool:
            now = datetime.now(UTC)
            planned = [
                q
                for entry in loaded.policies
                for q in queries_for(entry.policy, initial_state(entry.policy, now), now, entry.templates)
            ]
            answers = asyncio.run(_ask(server.url, planned))
            return all(
                answers[q.key].kind is ReadingKind.VALUE
                and (answers[q.key].value or q.key.source is Source.ALERT)
                for q in planned
            )

        wait_for(answered, timeout_seconds=60, interval_seconds=0.5, what="every query answered")
        common = ("--policies", str(policies), "--flags", str(flags), "--prometheus", proxy.url)
        # A timeout that a loaded machine's guardrail queries stay well within: only the alert
        # query, delayed past it, may time out.
        run = ("run", "--once", "--query-timeout", "10s", *common)
        ran = flagroll(*run)
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
        started = {r["flag"]: r for r in read_records(log)}
        assert {f: r["to_percent"] for f, r in started.items()} == {
            "alerts-faults-held": 1,
            "alerts-faults-rolled": 1,
        }, [r["reason"] for r in started.values()]

        def settled() -> bool:  # the guardrails measure the new exposure: no error but the alert's
            before = len(list(read_records(log)))
            assert flagroll(*run).returncode == 0
            latest = list(read_records(log))[before:]
            return len(latest) == 2 and all(
                c["verdict"] != "error" for r in latest for c in r["checks"] if c["kind"] != "alert"
            )

        wait_for(settled, timeout_seconds=60, interval_seconds=1, what="the guardrails answer at 1 %")
        rolled = policies / "rolled.yaml"
        rolled.write_text(rolled.read_text().replace("onError: hold", "onError: rollback"))
        for n, (fault, detail) in enumerate(FAULTS):
            proxy.inject(fault, only=_alerts_only)
            before = len(list(read_records(log)))
            ran = flagroll(*run)
            assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
            latest = {r["flag"]: r for r in list(read_records(log))[before:]}
            held = latest["alerts-faults-held"]
            assert held["action"] == "hold", held["reason"]
            assert held["to_percent"] == 1
            (alert,) = [c for c in held["checks"] if c["kind"] == "alert"]
            assert alert["verdict"] == "error", alert
            assert detail in alert["detail"], alert
            assert all(c["verdict"] != "error" for c in held["checks"] if c["kind"] != "alert"), held
            if n > 0:  # rolled back: it stays at 0 and says nothing new
                assert (
                    "alerts-faults-rolled" not in latest or latest["alerts-faults-rolled"]["to_percent"] == 0
                )
                continue
            gone = latest["alerts-faults-rolled"]
            assert gone["action"] == "rollback", gone["reason"]
            assert gone["reason"].startswith("error: alert checkout-pages: error (HTTP 503"), gone["reason"]
            assert gone["reason"].endswith("onError: rollback"), gone["reason"]
            assert gone["to_percent"] == 0
        proxy.inject(None)


async def _ask(url: str, planned: list[Any]) -> dict[QueryKey, Reading]:
    async with PrometheusClient(url, timeout_seconds=5) as client:
        return await client.query_all(planned)
