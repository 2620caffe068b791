"""Shared metric templates: loading and validation, the split of one answer per flag and arm, and a
real Prometheus asked once per template for every rollout that uses it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.policyfile import load_paths
from controller.adapters.prometheus import PrometheusClient, parse_response, pick, split_response
from controller.adapters.promserver import PrometheusServer
from controller.core.decision import queries_for, rebase
from controller.core.flagd import read_state
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading, ReadingKind, Source, Split
from controller.reconciler import Reconciler
from tests.support.environment import POLICY, Environment, FakeMetrics, healthy
from tests.support.synthetic import SyntheticService
from tests.support.waiting import wait_for

ROUTE = "/templates"
LABELS = "feature_flag_key, feature_flag_result_variant"

TEMPLATES = f"""\
apiVersion: flagroll/v1
kind: MetricTemplate
metadata: {{name: http-error-ratio}}
spec:
  description: Share of requests answered 5xx, per flag and variant.
  query: >-
    sum by ({LABELS}) (rate(http_server_requests_total{{route="{ROUTE}",code="500"}}[5s]))
    / sum by ({LABELS}) (rate(http_server_requests_total{{route="{ROUTE}"}}[5s]))
---
apiVersion: flagroll/v1
kind: MetricTemplate
metadata: {{name: http-requests}}
spec:
  query: sum by ({LABELS}) (increase(http_server_requests_total{{route="{ROUTE}"}}[10s]))
"""


def policy(flag: str, *, error_template: str = "http-error-ratio", traffic: str = "http-requests") -> str:
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {flag}}}
spec:
  owner: sre-lead
  aim: Cut p95 from 450ms to 250ms.
  mechanism: A cache removes repeated I/O.
  flag: {{key: {flag}}}
  interval: 2s
  steps:
    - {{percent: 1, hold: 1m}}
    - {{percent: 5, hold: 1m}}
  traffic:
    template: {traffic}
    minSamples: 20
  guardrails:
    - name: error-rate
      template: {error_template}
      max: 0.05
      maxDelta: 0.02
  checkpoint:
    expect:
      - name: error-rate
        max: 0.05
"""


def write(directory: Path, flags: Sequence[str], templates: str = TEMPLATES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "templates.yaml").write_text(templates)
    for flag in flags:
        (directory / f"{flag}.yaml").write_text(policy(flag))
    return directory


# --- loading and validation -------------------------------------------------------------------------


def test_policies_get_the_templates_they_name(tmp_path: Path) -> None:
    loaded = load_paths([write(tmp_path, ["alpha", "beta"])])
    assert loaded.errors == []
    assert [t.template.name for t in loaded.templates] == ["http-error-ratio", "http-requests"]
    for p in loaded.policies:
        assert sorted(p.templates) == ["http-error-ratio", "http-requests"]


def test_an_unknown_template_rejects_the_policy_at_the_line_that_names_it(tmp_path: Path) -> None:
    write(tmp_path, ["alpha"])
    (tmp_path / "beta.yaml").write_text(policy("beta", error_template="http-error-ratios"))
    loaded = load_paths([tmp_path])
    assert [p.policy.name for p in loaded.policies] == ["alpha"]
    (issue,) = loaded.errors
    assert (issue.file, issue.line, issue.field, issue.flag) == (
        str(tmp_path / "beta.yaml"),
        18,
        "spec.guardrails[0].template",
        "beta",
    )
    assert "template 'http-error-ratios' is not defined" in issue.message
    assert "did you mean 'http-error-ratio'?" in issue.message


def test_a_template_with_a_placeholder_is_invalid_and_so_are_the_policies_that_name_it(
    tmp_path: Path,
) -> None:
    broken = TEMPLATES.replace('code="500"', 'code="500",feature_flag_key="{{flag}}"')
    loaded = load_paths([write(tmp_path, ["alpha"], templates=broken)])
    assert loaded.policies == []
    messages = {f"{i.field}: {i.message}" for i in loaded.errors}
    assert any(m.startswith("spec.query: a template is asked once for every flag") for m in messages)
    assert any(
        m.startswith("spec.guardrails[0].template: template 'http-error-ratio' is invalid (see ")
        and "templates.yaml:1)" in m
        for m in messages
    )


def test_a_template_defined_twice_is_an_error_naming_the_first(tmp_path: Path) -> None:
    write(tmp_path, ["alpha"])
    (tmp_path / "zz-more.yaml").write_text(TEMPLATES.split("---\n")[1])
    loaded = load_paths([tmp_path])
    (issue,) = loaded.errors
    assert issue.file.endswith("zz-more.yaml")
    assert issue.field == "metadata.name"
    assert f"also defined at {tmp_path / 'templates.yaml'}:" in issue.message


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ("    template: http-requests\n", "spec.traffic", "give exactly one of query and template"),
        (
            "      template: http-error-ratio\n",
            "spec.guardrails[0]",
            "give exactly one of query or template (judged against its bounds), errorRatio or latency",
        ),
    ],
    ids=["traffic-without-either", "guardrail-without-either"],
)
def test_traffic_and_guardrails_need_a_query_or_a_template(
    tmp_path: Path, change: str, field: str, message: str
) -> None:
    write(tmp_path, [])
    (tmp_path / "alpha.yaml").write_text(policy("alpha").replace(change, ""))
    (issue,) = load_paths([tmp_path]).errors
    assert issue.field == field
    assert message in issue.message


def test_a_guardrail_with_both_a_query_and_a_template_is_refused(tmp_path: Path) -> None:
    write(tmp_path, [])
    text = policy("alpha").replace(
        "      template: http-error-ratio\n", "      template: http-error-ratio\n      query: sum(x)\n"
    )
    (tmp_path / "alpha.yaml").write_text(text)
    (issue,) = load_paths([tmp_path]).errors
    assert "not query and template" in issue.message


def test_a_template_field_is_checked_with_its_own_schema(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TEMPLATES.replace("  description:", "  descripton:"))
    (issue,) = load_paths([tmp_path]).errors
    assert (issue.line, issue.field) == (5, "spec.descripton")
    assert "did you mean 'description'?" in issue.message


# --- planning and splitting (pure) ------------------------------------------------------------------


def _plans(directory: Path) -> dict[str, list[PlannedQuery]]:
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    plans = {}
    for p in load_paths([directory]).policies:
        state = rebase(p.policy, None, now).state.moved(
            step=1, percent=5.0, step_started_at=now, exposed_since=now
        )  # at the last step: the checkpoint is planned too
        plans[p.policy.flag_key] = queries_for(p.policy, state, now + timedelta(seconds=90), p.templates)
    return plans


def test_every_rollout_plans_the_same_template_query_with_its_own_series(tmp_path: Path) -> None:
    plans = _plans(write(tmp_path, ["alpha", "beta"]))
    alpha, beta = plans["alpha"], plans["beta"]
    assert [q.promql for q in alpha] == [q.promql for q in beta]
    assert len({q.promql for q in alpha}) == 2  # traffic and error ratio; the checkpoint reuses one
    assert {(q.split.flag, q.split.variant) for q in alpha if q.split} == {
        ("alpha", "on"),
        ("alpha", "control"),
    }
    shown = next(q.shown for q in beta if q.key.source is Source.GUARDRAIL and q.key.arm is Arm.CONTROL)
    assert shown.splitlines()[0] == (
        '# template http-error-ratio, series {feature_flag_key="beta", feature_flag_result_variant="control"}'
    )


def _answer(*series: tuple[dict[str, str], str]) -> bytes:
    result = [{"metric": metric, "value": [1.7e9, value]} for metric, value in series]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def _split(flag: str, variant: str = "on") -> Split:
    return Split("t", "feature_flag_key", "feature_flag_result_variant", flag, variant)


def _labels(flag: str, variant: str, **more: str) -> dict[str, str]:
    return {"feature_flag_key": flag, "feature_flag_result_variant": variant, **more}


def _pick(body: bytes, split: Split) -> Reading:
    index = split_response(200, body, flag_label=split.flag_label, variant_label=split.variant_label)
    if isinstance(index, Reading):
        return index
    return pick(index, split)


def test_each_arm_gets_its_own_series_of_the_answer() -> None:
    body = _answer((_labels("a", "on"), "0.5"), (_labels("a", "control"), "0.25"), ({"route": "/"}, "9"))
    assert _pick(body, _split("a")) == Reading.of(0.5)
    assert _pick(body, _split("a", "control")) == Reading.of(0.25)


def test_an_arm_without_a_series_has_no_data() -> None:
    reading = _pick(_answer((_labels("a", "on"), "0.5")), _split("b"))
    assert reading.kind is ReadingKind.NO_DATA
    assert 'no series {feature_flag_key="b", feature_flag_result_variant="on"} among the 1' in reading.detail


def test_two_series_for_one_arm_are_an_error_naming_them() -> None:
    body = _answer((_labels("a", "on", pod="p1"), "0.5"), (_labels("a", "on", pod="p2"), "0.7"))
    reading = _pick(body, _split("a"))
    assert reading.kind is ReadingKind.ERROR
    assert "2 series where one is expected" in reading.detail
    assert 'pod="p2"' in reading.detail


def test_an_answer_not_grouped_by_the_labels_is_an_error_for_every_arm() -> None:
    reading = _pick(_answer(({"route": "/"}, "0.5")), _split("a"))
    assert reading.kind is ReadingKind.ERROR
    assert "none of the 1 series has both labels" in reading.detail


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        (_answer((_labels("a", "on"), "NaN")), ReadingKind.NO_DATA, "NaN"),
        (_answer((_labels("a", "on"), "+Inf")), ReadingKind.NO_DATA, "Inf"),
        (_answer((_labels("a", "on"), "fast")), ReadingKind.ERROR, "not a number"),
        (
            b'{"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}}',
            ReadingKind.ERROR,
            "scalar",
        ),
        (b"<html>bad gateway</html>", ReadingKind.ERROR, "not JSON"),
        (_answer()[:-5], ReadingKind.ERROR, "not JSON"),
    ],
    ids=["nan", "inf", "not-a-number", "scalar", "html", "truncated"],
)
def test_a_bad_template_answer_is_never_a_value(body: bytes, kind: ReadingKind, fragment: str) -> None:
    reading = _pick(body, _split("a"))
    assert reading.kind is kind
    assert fragment in reading.detail


def test_an_undefined_template_is_an_error_reading_not_a_request() -> None:
    key = QueryKey(Source.GUARDRAIL, "g", Arm.TREATMENT, flag="a")

    async def go() -> dict[QueryKey, Reading]:
        async with PrometheusClient("http://127.0.0.1:9") as client:
            return await client.query_all([PlannedQuery(key, "", split=_split("a"))])

    assert asyncio.run(go())[key] == Reading.error("template 't' is not defined")


# --- against a real Prometheus ----------------------------------------------------------------------


class CountingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, remembering the PromQL of every request."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.asked: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(parse_qs((await request.aread()).decode())["query"][0])
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


FLAGS = ("tpl-alpha", "tpl-beta", "tpl-gamma")


@pytest.fixture(scope="module")
def serving(synthetic: SyntheticService, prometheus: PrometheusServer) -> PrometheusServer:
    for flag in FLAGS:
        for variant in ("on", "control"):
            synthetic.set(ROUTE, flag, variant, rps=40, error_ratio=0.01, latency_seconds=0.02)

    def seen() -> bool:
        query = f'count(rate(http_server_requests_total{{route="{ROUTE}",code="500"}}[5s]) > 0)'
        reading = parse_response(*_get(prometheus.url, query))
        return reading.value == 2 * len(FLAGS)

    wait_for(seen, timeout_seconds=30, what="Prometheus to see every arm's requests")
    return prometheus


def _get(url: str, promql: str) -> tuple[int, bytes]:
    response = httpx.post(f"{url}/api/v1/query", data={"query": promql}, timeout=5)
    return response.status_code, response.content


@pytest.mark.victoriametrics
def test_one_request_per_template_gives_every_rollout_the_same_numbers_as_its_own_query(
    serving: PrometheusServer, synthetic: SyntheticService, tmp_path: Path
) -> None:
    synthetic.set(ROUTE, "tpl-beta", "on", rps=40, error_ratio=0.3, latency_seconds=0.02)
    plans = _plans(write(tmp_path, FLAGS))
    queries = [q for planned in plans.values() for q in planned]

    def beta_seen() -> bool:
        query = (
            f'sum(rate(http_server_requests_total{{route="{ROUTE}",code="500",feature_flag_key="tpl-beta",'
            f'feature_flag_result_variant="on"}}[5s])) / sum(rate(http_server_requests_total{{route="{ROUTE}",'
            'feature_flag_key="tpl-beta",feature_flag_result_variant="on"}[5s]))'
        )
        return parse_response(*_get(serving.url, query)).value == pytest.approx(0.3)

    wait_for(beta_seen, timeout_seconds=30, what="the regression to fill the rate window")
    transport = CountingTransport()

    async def go() -> dict[QueryKey, Reading]:
        async with PrometheusClient(serving.url, transport=transport) as client:
            return await client.query_all(queries)

    readings = asyncio.run(go())
    assert len(queries) == 3 * 2 * 2  # three rollouts × (traffic, error rate) × two arms
    assert sorted(transport.asked) == sorted({q.promql for q in queries})
    assert len(transport.asked) == 2
    for q in queries:
        reading = readings[q.key]
        assert reading.kind is ReadingKind.VALUE, (q.key, reading)
        if q.key.source is Source.TRAFFIC:
            assert 20 < (reading.value or 0) <= 40 * 10 * 1.25  # at most 40 requests/s over 10 s
        else:
            bad = q.key.flag == "tpl-beta" and q.key.arm is Arm.TREATMENT
            assert reading.value == pytest.approx(0.3 if bad else 0.01), q.key
    synthetic.set(ROUTE, "tpl-beta", "on", rps=40, error_ratio=0.01, latency_seconds=0.02)


@pytest.mark.victoriametrics
def test_the_reconciler_rolls_back_only_the_failing_rollout_and_asks_once_per_template(
    serving: PrometheusServer, synthetic: SyntheticService, tmp_path: Path
) -> None:
    flags = ["tpl-alpha", "tpl-gamma"]
    policies = write(tmp_path / "policies", flags)
    transport = CountingTransport()
    log = DecisionLog(tmp_path / "decisions.jsonl")
    store = FileFlagStore(tmp_path / "flags.json")

    async def cycle() -> list[str]:
        async with PrometheusClient(serving.url, transport=transport) as client:
            reconciler = Reconciler(policies=policies, store=store, prometheus=client, decision_log=log)
            before = len(transport.asked)
            records = (await reconciler.cycle()).records
            assert len(transport.asked) - before == 2  # one request per template, for both rollouts
            return [f"{r['flag']}:{r['action']}" for r in records]

    assert sorted(asyncio.run(cycle())) == ["tpl-alpha:advance", "tpl-gamma:advance"]
    synthetic.set(ROUTE, "tpl-gamma", "on", rps=40, error_ratio=0.4, latency_seconds=0.02)
    try:

        def rolled_back() -> list[str] | None:
            actions = asyncio.run(cycle())
            return actions if "tpl-gamma:rollback" in actions else None

        actions = wait_for(rolled_back, timeout_seconds=30, interval_seconds=1, what="the rollback")
    finally:
        synthetic.set(ROUTE, "tpl-gamma", "on", rps=40, error_ratio=0.01, latency_seconds=0.02)
    assert "tpl-alpha:hold" in actions
    document = json.loads((tmp_path / "flags.json").read_text())
    gamma, alpha = read_state(document, "tpl-gamma"), read_state(document, "tpl-alpha")
    assert gamma is not None
    assert gamma.percent == 0
    assert alpha is not None
    assert alpha.percent == 1
    rollback = next(r for r in read_records(log.path) if r["action"] == "rollback")
    failed = next(c for c in rollback["checks"] if c["verdict"] == "fail")
    assert failed["query"].startswith(
        '# template http-error-ratio, series {feature_flag_key="tpl-gamma", feature_flag_result_variant="on"}\n'
    )


# --- a checkpoint expectation with its own template ---------------------------------------------------

CONVERSION_TEMPLATE = f"""\
apiVersion: flagroll/v1
kind: MetricTemplate
metadata: {{name: orders-per-visit}}
spec:
  query: sum by ({LABELS}) (rate(orders_total[5m])) / sum by ({LABELS}) (rate(visits_total[5m]))
"""


@pytest.mark.parametrize(
    ("name", "conversion", "action"),
    [
        ("conversion", 0.08, "complete"),
        ("conversion", 0.02, "rollback"),
        # Under a guardrail's name (warned), it is still judged on its own template, not the guardrail's
        # query (0.001 would fail min 0.05 and roll a healthy rollout back).
        ("errors", 0.08, "complete"),
    ],
    ids=["new-name-passes", "new-name-fails", "guardrail-name-passes"],
)
def test_a_checkpoint_expectation_is_judged_on_its_own_template(
    tmp_path: Path, name: str, conversion: float, action: str
) -> None:
    env = Environment(tmp_path)
    (env.policies / "templates.yaml").write_text(CONVERSION_TEMPLATE)
    checkpoint = (
        f"  checkpoint:\n    expect:\n      - name: {name}\n        template: orders-per-visit\n"
        "        min: 0.05\n"
    )
    env.add_policy("cache", "cache", POLICY.format(name="cache", key="cache") + checkpoint)
    env.metrics = FakeMetrics(lambda q: Reading.of(conversion) if q.startswith("sum by") else healthy(q))
    env.cycle()  # starts at 1 %
    env.clock.now += timedelta(seconds=61)
    env.cycle()  # 5 %, the last step
    env.clock.now += timedelta(seconds=61)
    (record,) = env.cycle()
    assert record["action"] == action, record["reason"]
    checks = record["checks"]
    assert isinstance(checks, list)
    (judged,) = [c for c in checks if c["kind"] == "checkpoint"]
    assert (judged["name"], judged["value"], judged["rule"]) == (name, conversion, "min")
    assert judged["query"].startswith(
        '# template orders-per-visit, series {feature_flag_key="cache", feature_flag_result_variant="on"}\n'
    )
