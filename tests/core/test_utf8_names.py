"""Prometheus 3 names: metric and label names that are not PromQL identifiers (OpenTelemetry's
``http.server.request.duration``, ``feature_flag.key``), written quoted as Prometheus 3 spells them:
``{"http.server.request.duration", "feature_flag.key"="{{flag}}"}``. A counter or histogram selector so
written is accepted, and the queries flagroll derives from it (``_bucket``, ``_count``, the ``le``
matcher) keep the quoted name a name; what is not one selector is still refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.adapters.policyfile import load_text
from controller.core.decision import initial_state, queries_for
from controller.core.metrictemplate import MetricTemplate, semantic_issues
from controller.core.policy import Policy
from controller.core.queries import Arm, Part, Split, with_suffix
from controller.core.selectors import metric_name

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

OTEL = '"feature_flag.key"="{{flag}}","feature_flag.result.variant"="{{variant}}"'
POLICY = f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: pay}}
spec:
  owner: payments-sre
  aim: Cut p95 of /pay from 800ms to 500ms.
  mechanism: Pooled connections avoid TLS handshakes.
  flag: {{key: pay}}
  interval: 30s
  steps:
    - {{percent: 5, hold: 10m}}
  guardrails:
    - name: errors
      errorRatio:
        errors: '{{"http.server.request.count", {OTEL}, "http.response.status_code"=~"5.."}}'
        requests: '{{"http.server.request.count", {OTEL}}}'
      maxDelta: 0.001
      minSamples: 500
    - name: slow
      latency:
        histogram: '{{"http.server.request.duration", {OTEL}}}'
        slowerThan: 1s
      maxIncrease: 0.1
      minSamples: 500
  statistics:
    alpha: 0.01
    exposure: 'feature_flag_evaluations_total{{{OTEL}}}'
"""


def issues(text: str) -> list[str]:
    return [str(i) for i in load_text(text, "pay.yaml").issues]


def load(text: str) -> Policy:
    loaded = load_text(text, "pay.yaml")
    assert not loaded.issues, [str(i) for i in loaded.issues]
    return loaded.policies[0].policy


def test_quoted_metric_and_label_names_are_valid_selectors() -> None:
    assert issues(POLICY) == []


def test_the_histogram_suffixes_go_inside_the_quoted_name() -> None:
    p = load(POLICY)
    started = initial_state(p, T0).moved(step=0, percent=5.0, step_started_at=T0, exposed_since=T0)
    queries = {(q.key.name, q.key.arm, q.key.part): q.promql for q in queries_for(p, started, T0)}

    assert queries[("slow", Arm.TREATMENT, Part.FAST)] == (
        'sum(increase({"http.server.request.duration_bucket", "feature_flag.key"="pay", '
        '"feature_flag.result.variant"="on", le=~"1|1\\\\.0"}[1s]))'
    )
    assert queries[("slow", Arm.CONTROL, Part.TOTAL)] == (
        'sum(increase({"http.server.request.duration_count", "feature_flag.key"="pay", '
        '"feature_flag.result.variant"="control"}[1s]))'
    )
    assert queries[("errors", Arm.TREATMENT, Part.EVENTS)] == (
        'sum(increase({"http.server.request.count", "feature_flag.key"="pay",'
        '"feature_flag.result.variant"="on", "http.response.status_code"=~"5.."}[1s]))'  # as written
    )


@pytest.mark.parametrize(
    ("selector", "suffixed"),
    [
        ('{"a.b"}', '{"a.b_count"}'),
        ('{ "a.b" , x="y", }', '{"a.b_count", x="y"}'),
        ("{'a.b',x=\"y\"}", "{'a.b_count', x=\"y\"}"),
        ('{`a.b`,x="y"}', '{`a.b_count`, x="y"}'),
        ('{x="y", "a.b"}', '{"a.b_count", x="y"}'),  # the name need not come first
        ('{"a\\"b", x="{"}', '{"a\\"b_count", x="{"}'),  # an escaped quote, a brace in a value
        ('m{"x.y"="z"}', 'm_count{"x.y"="z"}'),  # a plain name with a quoted label name
        ('{"m"}', '{"m_count"}'),
    ],
)
def test_a_suffix_is_added_to_the_name_however_it_is_quoted(selector: str, suffixed: str) -> None:
    assert with_suffix(selector, "_count") == suffixed


def test_plain_selectors_keep_their_exact_text() -> None:
    assert with_suffix("m", "_count") == "m_count{}"
    assert with_suffix('m{a="b",}', "_bucket", 'le="1"') == 'm_bucket{a="b", le="1"}'
    assert with_suffix('m{a="{x}"}', "_bucket") == 'm_bucket{a="{x}"}'


def test_a_quoted_histogram_name_with_its_suffix_is_refused_with_the_base_name() -> None:
    text = POLICY.replace('"http.server.request.duration",', '"http.server.request.duration_bucket",')
    found = issues(text)
    assert any(
        "latency.histogram: give the histogram's base name (http.server.request.duration)" in i for i in found
    ), found


@pytest.mark.parametrize(
    "selector",
    [
        '{"feature_flag.result.variant"="{{variant}}"}',  # no metric name at all
        '{"a.b", "c.d", "feature_flag.result.variant"="{{variant}}"}',  # two names
        'm{"a.b", "feature_flag.result.variant"="{{variant}}"}',  # a name outside and inside
        '{"a.b" "feature_flag.result.variant"="{{variant}}"}',  # a missing comma
        '{"a.b, "feature_flag.result.variant"="{{variant}}"}',  # a string that never ends
        '{"a.b"="", "feature_flag.result.variant"="{{variant}}"} offset 5m',
        '{"a.b", "feature_flag.result.variant"="{{variant}}"}[5m]',
        '{"", "feature_flag.result.variant"="{{variant}}"}',  # an empty name
        '{"a.b", ""="x", "feature_flag.result.variant"="{{variant}}"}',  # an empty label name
    ],
    ids=[
        "no-name",
        "two-names",
        "name-twice",
        "missing-comma",
        "unterminated",
        "offset",
        "range",
        "empty-name",
        "empty-label",
    ],
)
def test_what_is_not_one_selector_is_still_refused(selector: str) -> None:
    quoted = selector.replace("'", "''")
    text = POLICY.replace(f"requests: '{{\"http.server.request.count\", {OTEL}}}'", f"requests: '{quoted}'")
    assert text != POLICY
    found = issues(text)
    assert any(
        "guardrails[0].errorRatio.requests" in i and "must be a metric selector" in i for i in found
    ), found


def test_the_metric_name_of_a_selector() -> None:
    assert metric_name('http_requests_total{a="b"}') == "http_requests_total"
    assert metric_name('{"http.server.request.duration", a="b"}') == "http.server.request.duration"
    assert metric_name("{'a.b'}") == "a.b"
    assert metric_name('{a="b"}') is None
    assert metric_name("sum(x)") is None


def template(flag_label: str, variant_label: str) -> MetricTemplate:
    return MetricTemplate.model_validate(
        {
            "apiVersion": "flagroll/v1",
            "kind": "MetricTemplate",
            "metadata": {"name": "otel-errors"},
            "spec": {
                "query": 'sum by ("feature_flag.key", "feature_flag.result.variant") (rate({"a.b"}[1m]))',
                "flagLabel": flag_label,
                "variantLabel": variant_label,
            },
        }
    )


def test_a_template_may_group_by_utf8_label_names() -> None:
    assert semantic_issues(template("feature_flag.key", "feature_flag.result.variant")) == []


@pytest.mark.parametrize("label", ["bad\nname", "bad\x00name", "tab\tname"])
def test_a_template_label_must_still_be_a_label_name(label: str) -> None:
    found = semantic_issues(template(label, "feature_flag.result.variant"))
    assert found == [(("spec", "flagLabel"), f"{label!r} is not a Prometheus label name", "error")]


def test_the_hint_for_a_placeholder_in_a_template_quotes_utf8_labels() -> None:
    spec = template("feature_flag.key", "feature_flag.result.variant").model_dump(by_alias=True)
    spec["spec"]["query"] = 'sum(rate({"a.b", "feature_flag.key"="{{flag}}"}[1m]))'
    found = semantic_issues(MetricTemplate.model_validate(spec))
    assert len(found) == 1
    assert 'group it by ("feature_flag.key", "feature_flag.result.variant") instead' in found[0][1]


def test_the_series_a_template_arm_reads_is_shown_as_promql_with_quoted_utf8_labels() -> None:
    split = Split("otel-errors", "feature_flag.key", "feature_flag.result.variant", "pay", "on")
    assert split.selector() == '{"feature_flag.key"="pay", "feature_flag.result.variant"="on"}'
    classic = Split("http-errors", "feature_flag_key", "feature_flag_result_variant", "pay", "on")
    assert classic.selector() == '{feature_flag_key="pay", feature_flag_result_variant="on"}'
