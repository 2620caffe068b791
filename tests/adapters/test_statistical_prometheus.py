"""errorRatio and latency guardrails against a real Prometheus: the count queries flagroll writes
(``increase`` over the exposure window, the ``le`` matcher, ``_bucket``/``_count`` suffixes) return
what the synthetic service exported, and ``flagroll run`` rolls back a regression with the
statistical evidence on record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.policyfile import load_text
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer
from controller.core.decision import decide, initial_state, queries_for
from controller.core.policy import Policy
from controller.core.queries import BIN_PARTS, Arm, Part, PlannedQuery, QueryKey, Reading, ReadingKind
from controller.core.state import Action, Outcome, RolloutState
from tests.support.controller import ControllerProcess
from tests.support.synthetic import SyntheticService
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.victoriametrics]


def policy(
    route: str, flag: str, *, slower_than: str = "250ms", hold: str = "1h", interval: str = "1s"
) -> str:
    select = f'route="{route}",feature_flag_key="{{{{flag}}}}",feature_flag_result_variant="{{{{variant}}}}"'
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {flag}}}
spec:
  owner: sre-lead
  aim: "Cut p95 of {route} from 450ms to 250ms."
  mechanism: "A read-through cache removes repeated I/O."
  flag: {{key: {flag}}}
  interval: {interval}
  steps:
    - {{percent: 5, hold: {hold}}}
  guardrails:
    - name: errors
      errorRatio:
        errors: http_server_requests_total{{{select},code="500"}}
        requests: http_server_requests_total{{{select}}}
      maxDelta: 0.01
      minSamples: 40
    - name: slow
      latency:
        histogram: http_server_request_duration_seconds{{{select}}}
        slowerThan: {slower_than}
      maxIncrease: 0.1
      minSamples: 40
  statistics:
    alpha: 0.01
    expectedSamples: 200
    exposure: http_server_request_duration_seconds_count{{{select}}}
"""


def load(text: str) -> Policy:
    loaded = load_text(text, "stat.yaml")
    assert not loaded.errors, [str(e) for e in loaded.errors]
    return loaded.policies[0].policy


def exposed(p: Policy, since: datetime) -> RolloutState:
    return initial_state(p, since).moved(step=0, percent=5.0, step_started_at=since, exposed_since=since)


def ask(prometheus: PrometheusServer, queries: list[PlannedQuery]) -> dict[QueryKey, Reading]:
    async def run() -> dict[QueryKey, Reading]:
        async with PrometheusClient(prometheus.url, timeout_seconds=5) as client:
            return await client.query_all(queries)

    return asyncio.run(run())


def counts(answers: dict[QueryKey, Reading]) -> dict[tuple[str, Arm, Part], float]:
    return {(k.name, k.arm, k.part): r.value for k, r in answers.items() if r.value is not None}


def test_the_count_queries_read_what_the_service_exported(
    synthetic: SyntheticService, prometheus: PrometheusServer
) -> None:
    route, flag = "/stat-direct", "stat-direct"
    synthetic.set(route, flag, "control", rps=40, error_ratio=0.01, latency_seconds=0.04)
    synthetic.set(route, flag, "on", rps=40, error_ratio=0.2, latency_seconds=0.4)
    since = datetime.now(UTC)
    p = load(policy(route, flag))
    state = exposed(p, since)

    def enough() -> dict[tuple[str, Arm, Part], float] | None:
        queries = queries_for(p, state, datetime.now(UTC))
        found = counts(ask(prometheus, queries))
        # 5 s of traffic: enough one-second bins to measure the dispersion (fewer is no_data).
        return found if min(found.get(("errors", arm, Part.TOTAL), 0) for arm in Arm) >= 200 else None

    found = wait_for(
        enough, timeout_seconds=30, interval_seconds=0.5, what="200 requests per arm in Prometheus"
    )
    for arm, error_ratio in ((Arm.TREATMENT, 0.2), (Arm.CONTROL, 0.01)):
        total = found[("errors", arm, Part.TOTAL)]
        assert found[("errors", arm, Part.EVENTS)] / total == pytest.approx(error_ratio, abs=0.01)
        assert found[("slow", arm, Part.TOTAL)] == pytest.approx(total, rel=0.05)  # _count
        assert found[("sample-ratio", arm, Part.WHOLE)] == pytest.approx(total, rel=0.05)
    # le="0.25": every control request (40 ms) is in the bucket, no treatment request (400 ms) is.
    assert found[("slow", Arm.CONTROL, Part.FAST)] == pytest.approx(
        found[("slow", Arm.CONTROL, Part.TOTAL)], rel=0.01
    )
    assert found[("slow", Arm.TREATMENT, Part.FAST)] == 0

    now = datetime.now(UTC)
    queries = queries_for(p, state, now)
    decision = decide(p, state, queries, ask(prometheus, queries), now)
    assert decision.action is Action.ROLLBACK
    verdicts = {c.name: c.verdict for c in decision.checks}
    assert verdicts == {"sample-ratio": Outcome.PASS, "errors": Outcome.FAIL, "slow": Outcome.FAIL}


def test_a_route_template_with_braces_and_quotes_is_matched_by_prometheus(
    synthetic: SyntheticService, prometheus: PrometheusServer
) -> None:
    route, flag = '/stat-braces/{id}/say "hi"', "stat-braces"
    for variant in ("on", "control"):
        synthetic.set(route, flag, variant, rps=40, error_ratio=0.1, latency_seconds=0.04)
    in_promql = route.replace('"', '\\"')  # as the policy writes it: route="/stat-braces/{id}/say \"hi\""
    p = load(policy(in_promql, flag))
    state = exposed(p, datetime.now(UTC))
    planned = queries_for(p, state, datetime.now(UTC))
    assert all(f'route="{in_promql}"' in q.promql for q in planned)

    def enough() -> dict[QueryKey, Reading] | None:
        answers = ask(prometheus, queries_for(p, state, datetime.now(UTC)))
        errors = [r.detail for r in answers.values() if r.kind is ReadingKind.ERROR]
        assert errors == []  # Prometheus parses every query flagroll rendered
        # The counts (the sums over bins for the dispersion are answered too: no error above).
        values = [r.value or 0 for k, r in answers.items() if k.part not in BIN_PARTS]
        expected = [q for q in planned if q.key.part not in BIN_PARTS]
        return answers if len(values) == len(expected) and min(values) >= 4 else None

    answers = wait_for(enough, timeout_seconds=30, interval_seconds=0.5, what="counts for the route")
    found = counts(answers)
    for arm in Arm:  # every count is the route's: 10 % errors, every request under 250 ms
        total = found[("errors", arm, Part.TOTAL)]
        assert found[("errors", arm, Part.EVENTS)] / total == pytest.approx(0.1, abs=0.02)
        assert found[("slow", arm, Part.FAST)] == pytest.approx(found[("slow", arm, Part.TOTAL)], rel=0.01)


def test_a_bound_spelled_1_0_by_the_python_client_is_found(
    synthetic: SyntheticService, prometheus: PrometheusServer
) -> None:
    route, flag = "/stat-edge", "stat-edge"
    for variant in ("on", "control"):
        synthetic.set(route, flag, variant, rps=40, error_ratio=0.0, latency_seconds=0.4)
    since = datetime.now(UTC)
    one_second = load(policy(route, flag, slower_than="1s"))  # exported as le="1.0"
    not_an_edge = load(policy(route, flag, slower_than="300ms"))  # the service has no 0.3 bucket

    def fast_share() -> float | None:
        found = counts(
            ask(prometheus, queries_for(one_second, exposed(one_second, since), datetime.now(UTC)))
        )
        total = found.get(("slow", Arm.TREATMENT, Part.TOTAL), 0)
        return found[("slow", Arm.TREATMENT, Part.FAST)] / total if total >= 80 else None

    assert wait_for(fast_share, timeout_seconds=30, interval_seconds=0.5, what="requests") == pytest.approx(
        1.0, rel=0.01
    )
    now = datetime.now(UTC)
    state = exposed(not_an_edge, since)
    queries = queries_for(not_an_edge, state, now)
    decision = decide(not_an_edge, state, queries, ask(prometheus, queries), now)
    slow = next(c for c in decision.checks if c.name == "slow")
    assert slow.verdict is Outcome.ERROR
    assert "slowerThan 300ms is not one of the histogram's bucket edges" in slow.detail
    assert decision.action is Action.HOLD


def test_flagroll_run_rolls_back_a_regression_with_the_evidence_on_record(
    tmp_path: Path, synthetic: SyntheticService, prometheus: PrometheusServer
) -> None:
    route, flag = "/stat-run", "stat-run"
    synthetic.set(route, flag, "control", rps=40, error_ratio=0.01, latency_seconds=0.04)
    synthetic.set(route, flag, "on", rps=40, error_ratio=0.3, latency_seconds=0.04)
    with ControllerProcess(tmp_path, prometheus.url) as controller:
        controller.add_policy(flag, policy(route, flag))
        rollback = wait_for(
            lambda: next((r for r in controller.records(flag) if r["action"] == "rollback"), None),
            timeout_seconds=60,
            interval_seconds=0.2,
            what=f"a rollback record; output: {controller.output()[-1500:]}",
        )
    errors = next(c for c in rollback["checks"] if c["name"] == "errors")
    assert errors["verdict"] == "fail"
    evidence = errors["sequential"]
    assert evidence["excess_lower"] > 0
    assert evidence["treatment"]["samples"] >= 40
    assert evidence["control"]["samples"] >= 40
    assert evidence["log_likelihood_ratio"] >= evidence["threshold"]
    started = datetime.fromisoformat(
        next(r for r in controller.records(flag) if r["action"] == "advance")["time"]
    )
    rolled_back = datetime.fromisoformat(rollback["time"])
    assert evidence["window_seconds"] <= (rolled_back - started + timedelta(seconds=2)).total_seconds()
