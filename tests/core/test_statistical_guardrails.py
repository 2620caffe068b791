"""errorRatio and latency guardrails, and the sample-ratio check: policy validation, query planning,
decisions and decision records."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from controller.adapters.policyfile import load_file, load_text
from controller.core import sequential, srm
from controller.core.checkrecord import Check
from controller.core.commands import resume, stop
from controller.core.decision import (
    COMPLETED_WINDOW_SECONDS,
    Decision,
    decide,
    initial_state,
    queries_for,
    rebase,
)
from controller.core.flagd import empty_document, read_state, write_flag
from controller.core.policy import Policy, json_schema
from controller.core.queries import (
    Arm,
    Part,
    PlannedQuery,
    QueryKey,
    Reading,
    Source,
    le_matcher,
    with_suffix,
)
from controller.core.records import Context, render, to_record
from controller.core.state import Action, Outcome, RolloutState, Status
from tests.support.paths import EXAMPLES, ROOT

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

SELECT = 'route="/pay",feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"'
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
    - {{percent: 20, hold: 10m}}
  guardrails:
    - name: errors
      errorRatio:
        errors: http_server_requests_total{{{SELECT},code=~"5.."}}
        requests: http_server_requests_total{{{SELECT}}}
      maxDelta: 0.001
      minSamples: 500
    - name: slow
      latency:
        histogram: http_server_request_duration_seconds{{{SELECT}}}
        slowerThan: 300ms
      maxIncrease: 0.1
      minSamples: 500
{{extra}}"""

STATISTICS = """\
  statistics:
    alpha: 0.01
    exposure: feature_flag_evaluations_total{feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"}
"""


def load(text: str) -> Policy:
    loaded = load_text(text, "pay.yaml")
    assert not loaded.errors, [str(e) for e in loaded.errors]
    return loaded.policies[0].policy


def policy(extra: str = STATISTICS) -> Policy:
    return load(POLICY.replace("{extra}", extra))


def issues(text: str) -> list[str]:
    return [str(i) for i in load_text(text, "pay.yaml").issues]


# Counts per (guardrail, arm, part): healthy, 10 minutes at 10 requests/s per arm.
HEALTHY: dict[tuple[str, Arm, Part], float] = {
    ("errors", Arm.TREATMENT, Part.EVENTS): 60,
    ("errors", Arm.TREATMENT, Part.TOTAL): 6000,
    ("errors", Arm.CONTROL, Part.EVENTS): 61,
    ("errors", Arm.CONTROL, Part.TOTAL): 6010,
    ("slow", Arm.TREATMENT, Part.FAST): 5700,
    ("slow", Arm.TREATMENT, Part.TOTAL): 6000,
    ("slow", Arm.CONTROL, Part.FAST): 5709,
    ("slow", Arm.CONTROL, Part.TOTAL): 6010,
    ("sample-ratio", Arm.TREATMENT, Part.WHOLE): 6000,
    ("sample-ratio", Arm.CONTROL, Part.WHOLE): 6010,
}


def readings(
    queries: list[PlannedQuery], changes: Mapping[tuple[str, Arm, Part], Reading | float] | None = None
) -> dict[QueryKey, Reading]:
    values = {**HEALTHY, **(changes or {})}
    result = {}
    for q in queries:
        value = values.get((q.key.name, q.key.arm, q.key.part), Reading.no_data("empty result"))
        result[q.key] = value if isinstance(value, Reading) else Reading.of(value)
    return result


def started(p: Policy, at: datetime = T0) -> RolloutState:
    queries = queries_for(p, rebase(p, None, at).state, at)
    decision = decide(p, None, queries, readings(queries), at)
    assert decision.action is Action.ADVANCE
    return decision.after


def look(
    p: Policy,
    stored: RolloutState,
    now: datetime,
    changes: Mapping[tuple[str, Arm, Part], Reading | float] | None = None,
) -> Decision:
    queries = queries_for(p, rebase(p, stored, now).state, now)
    return decide(p, stored, queries, readings(queries, changes), now)


def by_name(decision: Decision, name: str) -> Check:
    return next(c for c in decision.checks if c.name == name)


# Policy format ----------------------------------------------------------------------------------


def test_the_example_policy_is_valid_without_warnings() -> None:
    loaded = load_file(ROOT / "policies" / "checkout-http-client.yaml")
    assert not loaded.issues, [str(i) for i in loaded.issues]
    guardrails = loaded.policies[0].policy.spec.guardrails
    assert [g.kind for g in guardrails] == ["errorRatio", "latency"]


def test_existing_policies_keep_their_revision() -> None:
    # A policy that uses none of the new fields serialises exactly as before: running rollouts
    # are not restarted by the upgrade.
    # (flag files hold the revision computed the old way, the hash of the whole policy: it still
    # names the same revision)
    p = load_file(ROOT / "policies" / "price-quote-cache.yaml").policies[0].policy
    assert p.revision == "a5ae27d26a45"
    assert p.is_revision("fa8a31d8cea4")


def test_a_guardrail_needs_exactly_one_of_query_error_ratio_latency() -> None:
    bare = POLICY.replace("{extra}", "    - name: nothing\n      maxDelta: 0\n")
    assert any("guardrails[2]: give exactly one of query" in i for i in issues(bare))
    both = POLICY.replace("{extra}", "").replace(
        "      maxDelta: 0.001\n", '      maxDelta: 0.001\n      query: sum(x{v="{{variant}}"})\n'
    )
    found = issues(both)
    assert any(
        "guardrails[0].errorRatio: give exactly one of query" in i and "not query and errorRatio" in i
        for i in found
    )


def test_statistical_guardrails_take_delta_and_increase_only() -> None:
    text = POLICY.replace("{extra}", STATISTICS).replace("      maxIncrease: 0.1\n", "      max: 0.05\n")
    found = issues(text)
    assert any("guardrails[1].max: max does not apply to a latency guardrail" in i for i in found), found


def test_statistical_guardrails_need_a_control_arm() -> None:
    text = POLICY.replace("{extra}", "").replace("  interval: 30s\n", "  interval: 30s\n  control: false\n")
    assert any("errorRatio compares the treatment arm with the control arm" in i for i in issues(text))


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            'sum(rate(http_server_requests_total{route="/pay",feature_flag_result_variant="{{variant}}"}[1m]))',
            "must be a metric selector",
        ),
        ('http_server_requests_total{route="/pay"}', "must contain {{variant}}"),
        (
            'http_server_requests_total{feature_flag_result_variant="{{variants}}"}',
            "unknown placeholder {{variants}}",
        ),
    ],
)
def test_counter_selectors_are_checked(selector: str, message: str) -> None:
    text = POLICY.replace("{extra}", STATISTICS).replace(
        f"requests: http_server_requests_total{{{SELECT}}}", f"requests: '{selector}'"
    )
    found = issues(text)
    assert any("guardrails[0].errorRatio.requests" in i and message in i for i in found), found


# A label value with braces (a route template) and escaped quotes, as PromQL spells it.
ROUTE_TEMPLATE = 'route="/items/{id}/\\"x\\""'


def braced(extra: str = STATISTICS) -> str:
    return POLICY.replace("{extra}", extra).replace('route="/pay"', ROUTE_TEMPLATE)


def test_selectors_may_hold_braces_and_escaped_quotes_in_label_values() -> None:
    assert ROUTE_TEMPLATE == r'route="/items/{id}/\"x\""'
    exposure = 'exposure: feature_flag_evaluations_total{feature_flag_key="{{flag}}",'
    text = braced(STATISTICS.replace(exposure, exposure + ROUTE_TEMPLATE + ","))
    assert issues(text) == []
    p = load(text)
    queries = {(q.key.name, q.key.arm, q.key.part): q.promql for q in queries_for(p, started(p, T0), T0)}
    assert queries[("errors", Arm.TREATMENT, Part.EVENTS)] == (
        r'sum(increase(http_server_requests_total{route="/items/{id}/\"x\"",feature_flag_key="pay",'
        r'feature_flag_result_variant="on",code=~"5.."}[1s]))'
    )
    assert queries[("slow", Arm.CONTROL, Part.FAST)] == (
        r'sum(increase(http_server_request_duration_seconds_bucket{route="/items/{id}/\"x\"",'
        r'feature_flag_key="pay",feature_flag_result_variant="control", le=~"0\\.3"}[1s]))'
    )
    assert queries[("slow", Arm.TREATMENT, Part.TOTAL)] == (
        r'sum(increase(http_server_request_duration_seconds_count{route="/items/{id}/\"x\"",'
        r'feature_flag_key="pay",feature_flag_result_variant="on"}[1s]))'
    )
    assert queries[("sample-ratio", Arm.CONTROL, Part.WHOLE)] == (
        r'sum(increase(feature_flag_evaluations_total{feature_flag_key="pay",route="/items/{id}/\"x\"",'
        r'feature_flag_result_variant="control"}[1s]))'
    )


@pytest.mark.parametrize(
    "selector",
    [
        'http_server_requests_total{route="/items/{id}}',  # the string never ends
        'http_server_requests_total{route="/items/{id}"',  # the braces never close
        "http_server_requests_total{route=/items/{id}}",  # an unquoted value
        'http_server_requests_total{route}{v="{{variant}}"}',
        'http_server_requests_total{route="/a"} / http_server_requests_total{route="/b"}',
        'http_server_requests_total{route="/{id}"}[5m]',
        'http_server_requests_total{,v="{{variant}}"}',
        'http_server_requests_total{v="{{variant}}"} offset 5m',
        'http_server_requests_total{v="{{variant}}" route="/a"}',
        'http_server_requests_total{v="{{variant}}",route="a\\"}',  # the escape eats the quote
    ],
    ids=[
        "unterminated-string",
        "unclosed-braces",
        "unquoted-value",
        "bare-label",
        "two-selectors",
        "range",
        "leading-comma",
        "offset",
        "missing-comma",
        "escaped-closing-quote",
    ],
)
def test_what_is_not_one_selector_is_still_refused(selector: str) -> None:
    quoted = selector.replace("'", "''")
    text = POLICY.replace("{extra}", STATISTICS).replace(
        f"requests: http_server_requests_total{{{SELECT}}}", f"requests: '{quoted}'"
    )
    found = issues(text)
    assert any(
        "guardrails[0].errorRatio.requests" in i and "must be a metric selector" in i for i in found
    ), found


def test_a_histogram_is_named_without_its_suffix() -> None:
    text = POLICY.replace("{extra}", STATISTICS).replace(
        "http_server_request_duration_seconds{", "http_server_request_duration_seconds_bucket{"
    )
    found = issues(text)
    assert any(
        "latency.histogram: give the histogram's base name (http_server_request_duration_seconds)" in i
        for i in found
    ), found


def test_issues_point_at_the_line_of_the_field() -> None:
    text = POLICY.replace("{extra}", STATISTICS).replace("slowerThan: 300ms", "slowerThan: 300")
    found = issues(text)
    line = POLICY.splitlines().index("        slowerThan: 300ms") + 1
    assert any(i.startswith(f"pay.yaml:{line}:") and "needs a unit" in i for i in found), found


def test_a_checkpoint_cannot_reuse_a_statistical_guardrail() -> None:
    text = POLICY.replace(
        "{extra}", STATISTICS + "  checkpoint:\n    expect:\n      - name: slow\n        minDecrease: 0.2\n"
    )
    assert any("'slow' is a latency guardrail" in i and "its own query" in i for i in issues(text))


def test_min_samples_on_a_query_guardrail_is_an_error() -> None:
    guardrail = '    - name: q\n      query: sum(x{v="{{variant}}"})\n      max: 1\n      minSamples: 3\n'
    text = POLICY.replace("{extra}", guardrail + STATISTICS)
    assert any(
        "guardrails[2].minSamples: minSamples on a guardrail applies to errorRatio" in i for i in issues(text)
    )


def test_without_statistics_or_exposure_validation_warns() -> None:
    no_stats = load_text(POLICY.replace("{extra}", ""), "pay.yaml")
    assert not no_stats.errors
    assert any("alpha 0.01 is assumed" in str(w) for w in no_stats.warnings)
    no_exposure = load_text(POLICY.replace("{extra}", "  statistics:\n    alpha: 0.02\n"), "pay.yaml")
    assert any("the sample ratio is not checked" in str(w) for w in no_exposure.warnings)


@pytest.mark.parametrize(
    ("field", "value"),
    [("alpha", "0"), ("alpha", "0.5"), ("varianceInflation", "0.5"), ("expectedSamples", "0")],
)
def test_statistics_settings_are_bounded(field: str, value: str) -> None:
    text = POLICY.replace("{extra}", f"  statistics:\n    {field}: {value}\n")
    assert any(f"spec.statistics.{field}" in i for i in issues(text))


def test_the_json_schema_describes_the_new_fields() -> None:
    schema = json.dumps(json_schema())
    for name in ("errorRatio", "slowerThan", "expectedSamples", "varianceInflation", "sampleRatioAlpha"):
        assert name in schema


def test_the_budget_is_split_between_the_comparisons() -> None:
    p = policy()
    assert p.comparisons == 2
    assert all(p.comparison_alpha(g) == pytest.approx(0.005) for g in p.spec.guardrails if g.sequential)


# Query planning ---------------------------------------------------------------------------------


def test_counts_are_taken_since_exposure_began() -> None:
    p = policy()
    state = started(p)
    assert state.exposed_since == T0
    later = T0 + timedelta(minutes=12, seconds=0.2)
    advanced = look(p, state, T0 + timedelta(minutes=10))
    assert advanced.action is Action.ADVANCE
    assert advanced.after.exposed_since == T0  # a new step does not restart the count
    queries = {(q.key.name, q.key.arm, q.key.part): q for q in queries_for(p, advanced.after, later)}
    errors = queries[("errors", Arm.TREATMENT, Part.EVENTS)]
    assert errors.window_seconds == 721  # whole seconds, rounded up
    assert errors.promql == (
        'sum(increase(http_server_requests_total{route="/pay",feature_flag_key="pay",'
        'feature_flag_result_variant="on",code=~"5.."}[721s]))'
    )
    fast = queries[("slow", Arm.CONTROL, Part.FAST)].promql
    assert fast == (
        'sum(increase(http_server_request_duration_seconds_bucket{route="/pay",feature_flag_key="pay",'
        'feature_flag_result_variant="control", le=~"0\\\\.3"}[721s]))'
    )
    assert queries[("sample-ratio", Arm.TREATMENT, Part.WHOLE)].promql.startswith(
        'sum(increase(feature_flag_evaluations_total{feature_flag_key="pay",feature_flag_result_variant="on"}[721s'
    )


def test_a_completed_rollout_continued_by_a_new_revision_counts_from_its_last_day() -> None:
    """A completed rollout counts over a trailing day; when a new revision continues its ramp, the
    count starts again at the start of that day rather than weeks back at the first step."""
    p = policy()
    advanced = look(p, started(p), T0 + timedelta(minutes=10))
    completed = look(p, advanced.after, T0 + timedelta(minutes=20))
    assert completed.action is Action.COMPLETE
    longer = load(
        POLICY.replace("{extra}", STATISTICS).replace(
            "    - {percent: 20, hold: 10m}\n",
            "    - {percent: 20, hold: 10m}\n    - {percent: 40, hold: 10m}\n",
        )
    )
    now = T0 + timedelta(days=30)
    continued = look(longer, completed.after, now)
    assert (continued.action, continued.after.percent) == (Action.ADVANCE, 40)
    assert continued.after.exposed_since == now - timedelta(seconds=COMPLETED_WINDOW_SECONDS)
    later = now + timedelta(minutes=1)
    windows = {q.window_seconds for q in queries_for(longer, continued.after, later) if q.window_seconds}
    assert windows == {COMPLETED_WINDOW_SECONDS + 60}


def test_a_state_written_before_exposure_was_recorded_counts_from_its_step() -> None:
    p = policy()
    old = started(p).moved(exposed_since=None, step_started_at=T0 + timedelta(minutes=3))
    queries = queries_for(p, old, T0 + timedelta(minutes=5))
    assert {q.window_seconds for q in queries if q.key.source is Source.GUARDRAIL} == {120}


def test_before_exposure_the_counts_are_asked_only_to_see_that_prometheus_answers() -> None:
    p = policy()
    queries = queries_for(p, initial_state(p, T0), T0)
    counts = [q for q in queries if q.key.part is not Part.WHOLE or q.key.source is Source.EXPOSURE]
    assert len(counts) == 10
    assert all(q.window_seconds is None and q.promql.endswith("[30s]))") for q in counts)
    down = {
        key: Reading.error("cannot connect to http://prometheus:9090") for key in (q.key for q in queries)
    }
    decision = decide(p, None, queries, down, T0)
    assert decision.action is Action.HOLD
    assert decision.reason.startswith("not starting while a query fails")
    assert "cannot connect" in by_name(decision, "errors").detail


def test_bucket_edges_are_matched_as_both_client_libraries_spell_them() -> None:
    assert le_matcher(1.0) == 'le=~"1|1\\\\.0"'  # Go writes 1, Python 1.0
    assert le_matcher(0.25) == 'le=~"0\\\\.25"'
    assert with_suffix("m", "_count") == "m_count{}"
    assert with_suffix('m{a="b",}', "_bucket", 'le="1"') == 'm_bucket{a="b", le="1"}'


# Decisions --------------------------------------------------------------------------------------


def test_a_healthy_rollout_passes_with_its_evidence_on_record() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(minutes=5))
    assert decision.action is Action.HOLD
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.PASS
    assert errors.sequential is not None
    assert errors.sequential.treatment.samples == 6000
    assert errors.sequential.control.events == 61
    assert errors.sequential.alpha == pytest.approx(0.005)
    assert errors.sequential.excess_lower < 0
    record = errors.as_record()
    assert record["sequential"]["comparisons"] == 2
    assert record["sequential"]["window_seconds"] == 300
    assert record["samples"] == 6000
    assert record["control"]["samples"] == 6010


def test_a_doubled_error_ratio_rolls_back_and_says_by_how_much() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(minutes=10), {("errors", Arm.TREATMENT, Part.EVENTS): 125})
    assert decision.action is Action.ROLLBACK
    assert decision.after.exposed_since is None
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.FAIL
    assert errors.sequential is not None
    assert errors.sequential.excess_lower > 0
    assert "payment" not in decision.reason  # the reason is built from the check, not the policy text
    assert (
        "errors treatment 0.02083 vs control 0.01015 (maxDelta 0.001; n=6000/6010 over 10m)"
        in decision.reason
    )
    assert "exceeds the tolerated 0.01115 by ≥ +0.00" in decision.reason


def test_a_slower_treatment_rolls_back_on_the_latency_share() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(minutes=10), {("slow", Arm.TREATMENT, Part.FAST): 5550})
    assert decision.action is Action.ROLLBACK
    slow = by_name(decision, "slow")
    assert slow.value == pytest.approx(450 / 6000)
    assert "share slower than 300ms; maxIncrease 0.1" in slow.describe()


def test_too_few_samples_is_no_data_and_says_how_many_are_missing() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(seconds=30), {("errors", Arm.CONTROL, Part.TOTAL): 320})
    assert decision.action is Action.HOLD
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.NO_DATA
    assert errors.detail == "control has 320 of 500 samples (180 missing)"
    assert errors.describe() == (
        "errors treatment 0.01 vs control 0.1906 (maxDelta 0.001; n=6000/320): "
        "no_data: control has 320 of 500 samples (180 missing)"
    )
    assert errors.as_record()["metric"] == "errorRatio"


def test_too_few_samples_holds_even_a_bad_looking_treatment() -> None:
    p = policy()
    decision = look(
        p,
        started(p),
        T0 + timedelta(seconds=30),
        {("errors", Arm.TREATMENT, Part.TOTAL): 300, ("errors", Arm.TREATMENT, Part.EVENTS): 60},
    )
    assert decision.action is Action.HOLD
    assert by_name(decision, "errors").verdict is Outcome.NO_DATA


def test_a_failed_count_query_is_an_error() -> None:
    p = policy()
    decision = look(
        p,
        started(p),
        T0 + timedelta(minutes=5),
        {("errors", Arm.CONTROL, Part.TOTAL): Reading.error("HTTP 503")},
    )
    assert decision.action is Action.HOLD
    assert by_name(decision, "errors").verdict is Outcome.ERROR
    assert "control requests: HTTP 503" in by_name(decision, "errors").detail


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=str)
@pytest.mark.parametrize(
    ("name", "arm", "part", "what"),
    [
        ("errors", Arm.TREATMENT, Part.EVENTS, "treatment errors"),
        ("errors", Arm.CONTROL, Part.TOTAL, "control requests"),
        ("slow", Arm.CONTROL, Part.FAST, "control fast requests"),
        ("sample-ratio", Arm.TREATMENT, Part.WHOLE, "treatment exposures"),
    ],
)
def test_a_count_that_is_not_a_number_is_an_error_never_a_pass(
    value: float, name: str, arm: Arm, part: Part, what: str
) -> None:
    p = policy()
    now = T0 + timedelta(minutes=10)
    # Treatment's errors doubled where the errors guardrail's other count is broken: were that
    # count ignored or taken as a number, the guardrail would fail (or pass), not be an error.
    doubled = {("errors", Arm.TREATMENT, Part.EVENTS): 125.0} if name == "errors" else {}
    changes = {**doubled, (name, arm, part): value}
    decision = look(p, started(p), now, changes)
    check = by_name(decision, name)
    assert check.verdict is Outcome.ERROR
    assert f"{what}: not a finite count ({value})" in check.detail
    assert check.sequential is None
    assert check.sample_ratio is None
    assert decision.action is Action.HOLD
    record = json.loads(json.dumps(to_record(decision, Context("pay", policy=p), now), allow_nan=False))
    assert "not a finite count" in render(record)


def test_a_comparison_that_refuses_its_counts_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pure functions refuse what is not a count; whatever the reason, the check is an error
    # with the reason, never a pass and never a traceback.
    def refuse(*_: object, **__: object) -> None:
        raise ValueError("control events must be a finite count ≥ 0, got -1")

    monkeypatch.setattr(sequential, "compare", refuse)
    monkeypatch.setattr(srm, "check", refuse)
    p = policy()
    decision = look(p, started(p), T0 + timedelta(minutes=10))
    for name in ("errors", "slow", "sample-ratio"):
        check = by_name(decision, name)
        assert check.verdict is Outcome.ERROR, name
        assert check.detail == "not judged: control events must be a finite count ≥ 0, got -1", name
    assert decision.action is Action.HOLD


def test_a_latency_bound_that_is_not_a_bucket_edge_is_an_error() -> None:
    p = policy()
    decision = look(
        p,
        started(p),
        T0 + timedelta(minutes=5),
        {("slow", Arm.TREATMENT, Part.FAST): Reading.no_data("empty result: no series matched")},
    )
    slow = by_name(decision, "slow")
    assert slow.verdict is Outcome.ERROR
    assert "slowerThan 300ms is not one of the histogram's bucket edges" in slow.detail


def test_a_sample_ratio_mismatch_holds_and_says_why() -> None:
    p = policy(STATISTICS + "  onError: rollback\n  onNoData: rollback\n")
    decision = look(
        p,
        started(p),
        T0 + timedelta(minutes=10),
        {
            ("sample-ratio", Arm.TREATMENT, Part.WHOLE): 6600,
            ("errors", Arm.TREATMENT, Part.EVENTS): 125,  # would fail, but cannot be trusted
        },
    )
    assert decision.action is Action.HOLD  # not onError's rollback: the data cannot be trusted
    assert decision.reason.startswith("hold: sample-ratio treatment 52.34 % of exposures, designed 50 %")
    assert by_name(decision, "errors").verdict is Outcome.ERROR
    assert "(it would be fail)" in by_name(decision, "errors").detail
    ratio = by_name(decision, "sample-ratio")
    assert ratio.sample_ratio is not None
    assert ratio.sample_ratio.mismatch


def test_an_absolute_guardrail_still_rolls_back_during_a_mismatch() -> None:
    guardrail = '    - name: crash-rate\n      query: sum(crashes{v="{{variant}}"})\n      max: 0.1\n'
    p = policy(guardrail + STATISTICS)
    decision = look(
        p,
        started(p),
        T0 + timedelta(minutes=10),
        {("sample-ratio", Arm.TREATMENT, Part.WHOLE): 6600, ("crash-rate", Arm.TREATMENT, Part.WHOLE): 0.5},
    )
    assert decision.action is Action.ROLLBACK
    assert "crash-rate treatment 0.5 > 0.1" in decision.reason


def test_chance_departures_from_the_split_pass() -> None:
    p = policy()
    decision = look(
        p, started(p), T0 + timedelta(minutes=10), {("sample-ratio", Arm.TREATMENT, Part.WHOLE): 6100}
    )
    assert by_name(decision, "sample-ratio").verdict is Outcome.PASS


def test_stop_and_resume_restart_the_count() -> None:
    p = policy()
    stopped = stop(started(p), "incident", T0 + timedelta(minutes=3))
    assert stopped.after.exposed_since is None
    resumed = resume(stopped.after, "", T0 + timedelta(minutes=4)).after
    again = look(p, resumed, T0 + timedelta(minutes=5))
    assert again.action is Action.ADVANCE
    assert again.after.exposed_since == T0 + timedelta(minutes=5)


def test_the_exposure_start_survives_the_flag_file() -> None:
    p = policy()
    state = started(p)
    document = write_flag(empty_document(), "pay", state)
    assert document["flags"]["pay"]["metadata"]["flagroll.exposedSince"] == "2026-11-21T12:00:00Z"
    assert read_state(document, "pay") == state
    older = write_flag(empty_document(), "pay", state.moved(exposed_since=None))
    assert "flagroll.exposedSince" not in older["flags"]["pay"]["metadata"]
    restored = read_state(older, "pay")
    assert restored is not None
    assert restored.exposed_since is None


# Decision records -------------------------------------------------------------------------------


def test_the_log_renders_the_estimate_the_bound_and_every_count_query() -> None:
    p = policy()
    now = T0 + timedelta(minutes=10)
    decision = look(p, started(p), now, {("errors", Arm.TREATMENT, Part.EVENTS): 125})
    record = json.loads(json.dumps(to_record(decision, Context("pay", policy=p), now)))
    text = render(record)
    assert "FAIL    errors treatment 0.02083 vs control 0.01015" in text
    assert "99.5 % confidence sequence; ln LR" in text
    assert "PASS    sample-ratio treatment 49.96 % of exposures, designed 50 %" in text
    for arm, variant in (("treatment", "on"), ("control", "control")):
        assert f'feature_flag_result_variant="{variant}",code=~"5.."}}[600s]))' in text, arm
        assert (
            f'query: sum(increase(http_server_requests_total{{route="/pay",feature_flag_key="pay",feature_flag_result_variant="{variant}"}}[600s]))'
            in text
        )
    assert record["checks"][1]["sequential"]["method"].startswith("confidence sequence")
    assert math.isfinite(record["checks"][1]["sequential"]["log_likelihood_ratio"])


def test_a_rollback_before_anyone_is_exposed_is_impossible() -> None:
    p = policy()
    queries = queries_for(p, initial_state(p, T0), T0)
    nothing = {q.key: Reading.no_data("empty result: no series matched") for q in queries}
    decision = decide(p, None, queries, nothing, T0)
    assert decision.action is Action.ADVANCE
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.NO_DATA
    assert errors.detail == "nobody is exposed yet"
    assert decision.after.status is Status.PROGRESSING


def test_alpha_weights_split_the_budget_in_proportion() -> None:
    from controller.adapters.policyfile import load_text

    text = (EXAMPLES / "checkout-http-client.yaml").read_text()
    assert "alphaWeight" not in text
    first = True
    lines = []
    for line in text.splitlines():
        lines.append(line)
        if line.strip().startswith(("errorRatio:", "latency:")):
            indent = line[: len(line) - len(line.lstrip())]
            lines.insert(len(lines) - 1, f"{indent}alphaWeight: {3 if first else 1}")
            first = False
    loaded = load_text("\n".join(lines) + "\n", "p.yaml")
    assert not loaded.errors, loaded.errors
    p = loaded.policies[0].policy
    shares = [p.comparison_alpha(g) for g in p.spec.guardrails if g.sequential]
    assert shares == pytest.approx([0.0075, 0.0025])
    assert sum(shares) == pytest.approx(p.statistics.alpha)


def test_alpha_weight_on_a_query_guardrail_is_an_error() -> None:
    from controller.adapters.policyfile import load_text

    text = (EXAMPLES / "price-quote-cache.yaml").read_text()
    broken = text.replace("      max: ", "      alphaWeight: 2\n      max: ", 1)
    issues = load_text(broken, "p.yaml").errors
    assert any(i.field.endswith("alphaWeight") and "no false-rollback budget" in i.message for i in issues)
