"""Prometheus 3's UTF-8 names against the real servers. The synthetic service exports some arms as an
OpenTelemetry SDK does (``http.server.request.duration`` with ``feature_flag.key`` and the other
attributes as labels, bucket edges spelled as Go writes them, ``le="1"``), and a policy names them
quoted, as Prometheus 3's PromQL allows. Prometheus 3 reads the counts flagroll derives from it (the
``_bucket`` and ``_count`` series, the ``le`` edge it normalised to ``1.0``), and a template grouped by
UTF-8 labels is split per flag and arm. Prometheus 2 knows no such names: every query is an error, and
the rollout holds. VictoriaMetrics parses them but stores what its scraper asked for, the escaped names:
every quoted query matches nothing (no data), and the rollout holds too."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.adapters.policyfile import load_paths, load_text
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer
from controller.core.decision import decide, initial_state, queries_for
from controller.core.policy import Policy
from controller.core.queries import Arm, Part, PlannedQuery, QueryKey, Reading, ReadingKind, Source
from controller.core.state import Action, RolloutState
from tests.support.synthetic import SyntheticService
from tests.support.victoriametrics import VictoriaMetricsServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def policy(route: str, flag: str, *, utf8: bool = True) -> str:
    """A policy on the OpenTelemetry histogram: named as Prometheus 3 stores it (``utf8``), or as the
    service escapes its names for a scraper without UTF-8 support (Prometheus 2)."""
    if utf8:
        select = f'"http.route"="{route}","feature_flag.key"="{{{{flag}}}}","feature_flag.result.variant"="{{{{variant}}}}"'
        histogram, count = (
            f'{{"http.server.request.duration", {select}}}',
            f'{{"http.server.request.duration_count", {select}',
        )
        status = '"http.response.status_code"'
    else:
        select = f'http_route="{route}",feature_flag_key="{{{{flag}}}}",feature_flag_result_variant="{{{{variant}}}}"'
        histogram, count = (
            f"http_server_request_duration{{{select}}}",
            f"http_server_request_duration_count{{{select}",
        )
        status = "http_response_status_code"
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {flag}}}
spec:
  owner: sre-lead
  aim: "Cut p95 of {route} from 2s to 500ms."
  mechanism: "A read-through cache removes repeated I/O."
  flag: {{key: {flag}}}
  interval: 1s
  steps:
    - {{percent: 5, hold: 1h}}
  guardrails:
    - name: errors
      errorRatio:
        errors: '{count}, {status}=~"5.."}}'
        requests: '{count}}}'
      maxDelta: 0.01
      minSamples: 40
    - name: slow
      latency:
        histogram: '{histogram}'
        slowerThan: 1s
      maxIncrease: 0.1
      minSamples: 40
  statistics:
    alpha: 0.01
    expectedSamples: 200
    exposure: '{count}}}'
"""


def template_files(directory: Path, route: str, flag: str) -> Path:
    labels = '"feature_flag.key", "feature_flag.result.variant"'
    count = f'{{"http.server.request.duration_count", "http.route"="{route}"'
    (directory / "template.yaml").write_text(f"""\
apiVersion: flagroll/v1
kind: MetricTemplate
metadata: {{name: otel-error-ratio}}
spec:
  query: >-
    sum by ({labels}) (rate({count}, "http.response.status_code"="500"}}[5s]))
    / sum by ({labels}) (rate({count}}}[5s]))
  flagLabel: feature_flag.key
  variantLabel: feature_flag.result.variant
""")
    (directory / "policy.yaml").write_text(f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {flag}}}
spec:
  owner: sre-lead
  aim: Fewer errors.
  mechanism: A retry.
  flag: {{key: {flag}}}
  interval: 1s
  steps:
    - {{percent: 5, hold: 1h}}
  guardrails:
    - name: error-rate
      template: otel-error-ratio
      max: 0.05
""")
    return directory


def load(text: str) -> Policy:
    loaded = load_text(text, "otel.yaml")
    assert not loaded.issues, [str(i) for i in loaded.issues]
    return loaded.policies[0].policy


def exposed(p: Policy, since: datetime) -> RolloutState:
    return initial_state(p, since).moved(step=0, percent=5.0, step_started_at=since, exposed_since=since)


def ask(prometheus: PrometheusServer, queries: list[PlannedQuery]) -> dict[QueryKey, Reading]:
    async def run() -> dict[QueryKey, Reading]:
        async with PrometheusClient(prometheus.url, timeout_seconds=5) as client:
            return await client.query_all(queries)

    return asyncio.run(run())


def reads_the_regression(prometheus: PrometheusServer, p: Policy) -> None:
    """Every count ``p`` asks for is what the service exported, and the regression is rolled back."""
    state = exposed(p, datetime.now(UTC))

    def enough() -> dict[tuple[str, Arm, Part], float] | None:
        answers = ask(prometheus, queries_for(p, state, datetime.now(UTC)))
        found = {(k.name, k.arm, k.part): r.value for k, r in answers.items() if r.value is not None}
        return found if min(found.get(("errors", arm, Part.TOTAL), 0) for arm in Arm) >= 200 else None

    found = wait_for(enough, timeout_seconds=30, interval_seconds=0.5, what="200 requests per arm")
    for arm, error_ratio in ((Arm.TREATMENT, 0.2), (Arm.CONTROL, 0.01)):
        total = found[("errors", arm, Part.TOTAL)]
        assert found[("errors", arm, Part.EVENTS)] / total == pytest.approx(error_ratio, abs=0.01)
        assert found[("slow", arm, Part.TOTAL)] == pytest.approx(total, rel=0.05)
    # Exported as le="1" (as Go writes it): Prometheus 2 keeps "1", Prometheus 3 stores "1.0"; the
    # 1s edge is found either way. Control (500 ms) is all below it, the treatment (2 s) all above.
    assert found[("slow", Arm.CONTROL, Part.FAST)] == pytest.approx(
        found[("slow", Arm.CONTROL, Part.TOTAL)], rel=0.01
    )
    assert found[("slow", Arm.TREATMENT, Part.FAST)] == 0
    now = datetime.now(UTC)
    queries = queries_for(p, state, now)
    assert decide(p, state, queries, ask(prometheus, queries), now).action is Action.ROLLBACK


@pytest.mark.victoriametrics
def test_quoted_names_read_the_opentelemetry_histogram_on_3_and_hold_on_2(
    synthetic: SyntheticService, prometheus: PrometheusServer
) -> None:
    route, flag = "/otel-direct", "otel-direct"
    synthetic.set(route, flag, "control", rps=40, error_ratio=0.01, latency_seconds=0.5, otel_names=True)
    synthetic.set(route, flag, "on", rps=40, error_ratio=0.2, latency_seconds=2.0, otel_names=True)
    quoted = load(policy(route, flag))

    if prometheus.version().startswith("3."):
        reads_the_regression(prometheus, quoted)
        return
    # Prometheus 2 and VictoriaMetrics got the same histogram under escaped names, edges spelled le="1"
    # (read first: the series are there when the quoted names are asked below).
    reads_the_regression(prometheus, load(policy(route, flag, utf8=False)))
    now = datetime.now(UTC)
    state = exposed(quoted, now)
    queries = queries_for(quoted, state, now)
    answers = ask(prometheus, queries)
    assert len(answers) == len(queries) > 0
    for key, answer in answers.items():
        if isinstance(prometheus, VictoriaMetricsServer):
            # MetricsQL parses the quoted names, but its scraper asks for the classic text format, so
            # the service sent (and it stored) the escaped names: every query matches nothing.
            assert answer.kind is ReadingKind.NO_DATA, (key, answer)
            assert "empty result" in answer.detail or "among the 0" in answer.detail, answer
        else:  # every query names the metric as only Prometheus 3 can
            assert answer.kind is ReadingKind.ERROR, (key, answer)
            assert "parse error" in answer.detail, answer
    decision = decide(quoted, state, queries, answers, now)
    assert decision.action is Action.HOLD
    assert decision.after.percent == 5.0


def test_a_template_grouped_by_utf8_labels_is_split_per_flag_and_arm(
    synthetic: SyntheticService, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    route, flag = "/otel-template", "otel-template"
    synthetic.set(route, flag, "control", rps=40, error_ratio=0.01, otel_names=True)
    synthetic.set(route, flag, "on", rps=40, error_ratio=0.2, otel_names=True)
    loaded = load_paths([template_files(tmp_path, route, flag)])
    assert not loaded.errors, [str(i) for i in loaded.errors]
    (entry,) = loaded.policies
    now = datetime.now(UTC)
    queries = [
        q
        for q in queries_for(entry.policy, exposed(entry.policy, now), now, entry.templates)
        if q.key.source is Source.GUARDRAIL
    ]
    assert sorted(q.key.arm for q in queries) == sorted(Arm)

    if prometheus.version().startswith("2."):
        answers = ask(prometheus, queries)
        assert all(answers[q.key].kind is ReadingKind.ERROR for q in queries), answers
        return

    def ratios() -> dict[Arm, float] | None:
        answers = ask(prometheus, queries)
        values = {q.key.arm: answers[q.key].value for q in queries}
        if values[Arm.TREATMENT] != pytest.approx(0.2, abs=0.01):
            return None
        return {arm: value for arm, value in values.items() if value is not None}

    found = wait_for(ratios, timeout_seconds=30, interval_seconds=0.5, what="the 5s rate of both arms")
    assert found == {Arm.TREATMENT: pytest.approx(0.2, abs=0.01), Arm.CONTROL: pytest.approx(0.01, abs=0.005)}
