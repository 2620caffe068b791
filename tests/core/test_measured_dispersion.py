"""The variance inflation measured from per-interval counts: planned as one query per guardrail (and
one for the sample-ratio check), used as ``max(floor, upper bound)`` by the comparison and the
sample-ratio check, shown in the record, ``flagroll log`` and ``explain``, and never weakened by a
missing reading."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from scipy import stats

from controller.core import dispersion as dsp
from controller.core.checkrecord import describe
from controller.core.decision import COMPLETED_WINDOW_SECONDS, queries_for, rebase
from controller.core.explain import explain
from controller.core.policy import Policy
from controller.core.queries import (
    ARM_LABEL,
    BIN_PARTS,
    SUM_LABEL,
    Arm,
    Part,
    Reading,
    Source,
    bin_seconds,
)
from controller.core.records import record_problem, render
from controller.core.state import Action, Outcome, RolloutState
from tests.core.test_statistical_guardrails import STATISTICS, T0, by_name, look, policy, started

Changes = dict[tuple[str, Arm, Part], Reading | float]


def bin_sums(
    name: str, arm: Arm, bins: float, events: float, total: float, phi: float, variance: float | None = None
) -> Changes:
    """Readings of the sums over ``bins`` bins whose Pearson dispersion factor is ``phi`` (about the
    observed share, scaled by its binomial variance or by ``variance``)."""
    share = events / total
    scale = share * (1 - share) if variance is None else variance
    squares = events * events / total + phi * (bins - 1) * scale
    values = {Part.BINS: bins, Part.BIN_EVENTS: events, Part.BIN_TOTAL: total, Part.BIN_SQUARES: squares}
    return {(name, arm, part): value for part, value in values.items()}


def errors_dispersion(phi: float, bins: float = 20, treatment_events: float = 125) -> Changes:
    return {
        ("errors", Arm.TREATMENT, Part.EVENTS): treatment_events,
        **bin_sums("errors", Arm.TREATMENT, bins, treatment_events, 6000, phi),
        **bin_sums("errors", Arm.CONTROL, bins, 61, 6010, phi),
    }


def expected_used(phi: float, df: float, floor: float = 1.0) -> float:
    return max(floor, phi * df / float(stats.chi2.ppf(dsp.CONFIDENCE_LOWER_TAIL, df)))


# Planning --------------------------------------------------------------------------------------


def test_each_guardrail_and_the_sample_ratio_check_ask_one_query_for_their_sums() -> None:
    p = policy()
    now = T0 + timedelta(minutes=10)
    queries = queries_for(p, rebase(p, started(p), now).state, now)
    sums = [q for q in queries if q.key.part in BIN_PARTS]
    by_source = {(q.key.source, q.key.name) for q in sums}
    assert by_source == {
        (Source.GUARDRAIL, "errors"),
        (Source.GUARDRAIL, "slow"),
        (Source.EXPOSURE, "sample-ratio"),
    }
    for source, name in by_source:
        mine = [q for q in sums if (q.key.source, q.key.name) == (source, name)]
        assert len({q.promql for q in mine}) == 1  # one query, one evaluation time: the same bins
        sides = 1 if source is Source.EXPOSURE else 2
        assert len(mine) == 4 * sides
        assert {(q.split.flag_label, q.split.variant_label) for q in mine if q.split} == {
            (ARM_LABEL, SUM_LABEL)
        }
    # Three more queries per cycle: one per errorRatio/latency guardrail, one for the exposure split.
    plain = [q for q in queries if q.key.part not in BIN_PARTS]
    assert len({q.promql for q in queries}) == len({q.promql for q in plain}) + 3


def test_the_sums_are_taken_over_bins_of_the_interval_within_the_exposure_window() -> None:
    p = policy()
    now = T0 + timedelta(minutes=10)
    queries = queries_for(p, rebase(p, started(p), now).state, now)
    errors = next(q for q in queries if q.key.name == "errors" and q.key.part is Part.BINS)
    assert "[600s:30s]" in errors.promql
    assert "offset 30s" in errors.promql
    assert "increase(" not in errors.promql  # per-bin differences: nothing is extrapolated
    for part in BIN_PARTS:
        for arm in Arm:
            assert f'"{SUM_LABEL}", "{part.value}"' in errors.promql
            assert f'"{ARM_LABEL}", "{arm.value}"' in errors.promql
    slow = next(q for q in queries if q.key.name == "slow" and q.key.part is Part.BINS)
    # The rare side of the latency check: requests slower than the bound, count − bucket.
    assert "http_server_request_duration_seconds_count{" in slow.promql
    assert "http_server_request_duration_seconds_bucket{" in slow.promql


def test_before_exposure_no_sums_are_asked() -> None:
    p = policy()
    queries = queries_for(p, rebase(p, None, T0).state, T0)
    assert not [q for q in queries if q.key.part in BIN_PARTS]


def test_a_long_window_gets_wider_bins_so_a_query_has_at_most_a_day_of_minutes() -> None:
    assert bin_seconds(30, 600) == 30
    assert bin_seconds(0.5, 60) == 1
    assert bin_seconds(30, COMPLETED_WINDOW_SECONDS) == 60


# Using it ---------------------------------------------------------------------------------------


def test_clustered_errors_widen_the_comparison_by_the_measured_dispersion() -> None:
    """125 errors in 6,000 requests against 61 in 6,010 rolls back at an inflation of 1 (see
    test_a_doubled_error_ratio_rolls_back_and_says_by_how_much); measured in bursts (φ = 9 over 20
    bins per arm), it is no longer credible evidence."""
    p = policy()
    decision = look(p, started(p), T0 + timedelta(minutes=5), errors_dispersion(phi=9))
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.PASS
    assert decision.action is Action.HOLD  # the step's 10-minute hold is not over
    assert errors.sequential is not None
    measured = errors.sequential.dispersion
    assert measured is not None
    assert measured.estimate == pytest.approx(9)
    assert measured.degrees_of_freedom == 38
    assert measured.used == pytest.approx(expected_used(9, 38))
    assert errors.sequential.variance_inflation == measured.used
    assert measured.floor == 1
    assert measured.bin_seconds == 30
    assert measured.note == ""


def test_independent_errors_measured_leave_a_regression_caught() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(minutes=10), errors_dispersion(phi=1, bins=40))
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.FAIL
    assert decision.action is Action.ROLLBACK
    assert errors.sequential is not None
    assert errors.sequential.variance_inflation == pytest.approx(expected_used(1, 78))


def test_the_policy_value_is_a_floor() -> None:
    extra = "  statistics:\n    varianceInflation: 20\n"
    p = policy(extra)
    decision = look(p, started(p), T0 + timedelta(minutes=10), errors_dispersion(phi=9))
    errors = by_name(decision, "errors")
    assert errors.sequential is not None
    assert errors.sequential.variance_inflation == 20
    assert errors.sequential.dispersion is not None
    assert errors.sequential.dispersion.estimate == pytest.approx(9)


@pytest.mark.parametrize(
    ("reading", "said"),
    [
        (Reading.error("timed out after 10s (http://prometheus:9090)"), "timed out after 10s"),
        (Reading.no_data("empty result"), "no interval with requests"),
    ],
)
def test_a_missing_or_failing_dispersion_reading_falls_back_to_the_floor_and_says_so(
    reading: Reading, said: str
) -> None:
    p = policy()
    changes: Changes = {("errors", Arm.TREATMENT, Part.EVENTS): 125}
    changes |= {("errors", arm, part): reading for arm in Arm for part in BIN_PARTS}
    decision = look(p, started(p), T0 + timedelta(minutes=10), changes)
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.FAIL  # judged as strictly as the policy says: not an error
    assert decision.action is Action.ROLLBACK
    assert errors.sequential is not None
    assert errors.sequential.variance_inflation == 1
    assert errors.sequential.dispersion is not None
    assert errors.sequential.dispersion.estimate is None
    assert said in errors.sequential.dispersion.note
    assert "inflation 1 (the floor: dispersion not measured" in errors.describe()


def test_one_arm_failing_is_not_half_a_measurement() -> None:
    p = policy()
    changes = errors_dispersion(phi=9)
    changes |= {("errors", Arm.CONTROL, part): Reading.error("HTTP 503") for part in BIN_PARTS}
    decision = look(p, started(p), T0 + timedelta(minutes=10), changes)
    errors = by_name(decision, "errors")
    assert errors.sequential is not None
    assert errors.sequential.variance_inflation == 1
    assert errors.sequential.dispersion is not None
    assert "control bins: HTTP 503" in errors.sequential.dispersion.note


def test_too_few_intervals_to_measure_is_no_data_not_a_judgement_at_the_floor() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(seconds=60), errors_dispersion(phi=9, bins=1))
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.NO_DATA
    assert decision.action is Action.HOLD
    assert "needs 2 degrees of freedom" in errors.detail
    assert "has 0" in errors.detail


def test_without_any_error_there_is_nothing_to_measure_and_the_check_is_judged() -> None:
    p = policy()
    changes: Changes = {("errors", arm, Part.EVENTS): 0 for arm in Arm}
    for arm in Arm:
        changes |= {
            ("errors", arm, Part.BINS): 20,
            ("errors", arm, Part.BIN_TOTAL): 6000,
        }  # no series of bad requests: their sums are empty answers
    decision = look(p, started(p), T0 + timedelta(minutes=10), changes)
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.PASS
    assert errors.sequential is not None
    assert errors.sequential.dispersion is not None
    assert "no arm has both bad and good requests" in errors.sequential.dispersion.note


def exposure_dispersion(phi: float, bins: float = 40) -> Changes:
    """10,400 treatment exposures among 20,000, over ``bins`` bins dispersed by ``phi`` (about the
    observed share, in units of the designed share's variance ¼)."""
    return {
        ("sample-ratio", Arm.TREATMENT, Part.WHOLE): 10_400,
        ("sample-ratio", Arm.CONTROL, Part.WHOLE): 9_600,
        **bin_sums("sample-ratio", Arm.TREATMENT, bins, 10_400, 20_000, phi, variance=0.25),
    }


def test_repeated_evaluations_measured_keep_the_sample_ratio_check_from_crying_wolf() -> None:
    """10,400 against 9,600 exposures is a mismatch for independent evaluations; with each user
    evaluated E[K²]/E[K] = 5 times over, as measured per bin, it is well within chance."""
    p = policy()
    stored = started(p)
    at_floor = look(p, stored, T0 + timedelta(minutes=10), exposure_dispersion(phi=1)).checks
    ratio_at_floor = next(c for c in at_floor if c.name == "sample-ratio")
    assert ratio_at_floor.sample_ratio is not None
    assert ratio_at_floor.sample_ratio.mismatch

    decision = look(p, stored, T0 + timedelta(minutes=10), exposure_dispersion(phi=5))
    ratio = by_name(decision, "sample-ratio")
    assert ratio.verdict is Outcome.PASS
    assert ratio.sample_ratio is not None
    assert ratio.sample_ratio.dispersion is not None
    assert ratio.sample_ratio.dispersion.estimate == pytest.approx(5)
    assert ratio.sample_ratio.variance_inflation == pytest.approx(expected_used(5, 39))
    assert "inflation " in ratio.describe()


def test_the_sample_ratio_check_falls_back_to_the_floor_without_its_sums() -> None:
    p = policy()
    decision = look(
        p,
        started(p),
        T0 + timedelta(minutes=10),
        exposure_dispersion(phi=1)
        | {("sample-ratio", Arm.TREATMENT, part): Reading.error("HTTP 422 bad_data") for part in BIN_PARTS},
    )
    ratio = by_name(decision, "sample-ratio")
    assert ratio.verdict is Outcome.ERROR  # the mismatch, judged at the floor
    assert ratio.sample_ratio is not None
    assert ratio.sample_ratio.variance_inflation == 1
    assert ratio.sample_ratio.dispersion is not None
    assert "HTTP 422 bad_data" in ratio.sample_ratio.dispersion.note


# Shown --------------------------------------------------------------------------------------------


def test_the_record_shows_the_estimate_and_survives_the_log() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(minutes=10), errors_dispersion(phi=9))
    record = json.loads(json.dumps(by_name(decision, "errors").as_record()))
    measured = record["sequential"]["dispersion"]
    assert measured["estimate"] == pytest.approx(9)
    assert measured["used"] == record["sequential"]["variance_inflation"]
    assert measured["upper_bound"] == pytest.approx(measured["used"])
    full = {"time": "2026-11-21T12:10:00Z", "flag": "pay", "action": "hold", "checks": [record]}
    assert record_problem(full) is None  # flagroll log reads it back
    text = describe(record)
    assert f"inflation {measured['used']:.4g} (dispersion 9 over 38 df; floor 1)" in text


def test_flagroll_log_lists_the_dispersion_query_of_a_check_that_did_not_pass() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(minutes=10), errors_dispersion(phi=1, bins=40))
    record = by_name(decision, "errors").as_record()
    shown = render({"time": "2026-11-21T12:10:00Z", "flag": "pay", "action": "rollback", "checks": [record]})
    assert "inflation " in shown
    assert f"query: {record['sequential']['dispersion']['query']}" in shown


def test_explain_shows_the_inflation_of_the_last_decision() -> None:
    p = policy()
    stored = started(p)
    now = T0 + timedelta(minutes=5)
    decision = look(p, stored, now, errors_dispersion(phi=9))
    record = {
        "time": "2026-11-21T12:05:00Z",
        "action": "hold",
        "checks": [c.as_record() for c in decision.checks],
    }
    text = explain("pay", decision.after, [record], p, now)
    assert "(dispersion 9 over 38 df; floor 1)" in text


def test_a_passing_check_keeps_its_record_small_without_the_dispersion_query() -> None:
    """The query of the sums is long (eight subqueries); written with every passing check of every
    cycle it would multiply the decision log's size. It is kept where someone will look for it: a
    check that did not pass, or a measurement that failed."""
    p = policy()
    passing = by_name(look(p, started(p), T0 + timedelta(minutes=5), errors_dispersion(phi=9)), "errors")
    assert passing.verdict is Outcome.PASS
    record = passing.as_record()
    assert record["sequential"]["dispersion"]["query"] == ""
    assert len(json.dumps(record)) < 3000
    failing = by_name(
        look(p, started(p), T0 + timedelta(minutes=10), errors_dispersion(phi=1, bins=40)), "errors"
    )
    assert failing.verdict is Outcome.FAIL
    assert failing.as_record()["sequential"]["dispersion"]["query"].startswith("# template dispersion")
    changes: Changes = {("errors", arm, part): Reading.error("HTTP 503") for arm in Arm for part in BIN_PARTS}
    unmeasured = by_name(look(p, started(p), T0 + timedelta(minutes=5), changes), "errors")
    assert unmeasured.verdict is Outcome.PASS
    assert unmeasured.as_record()["sequential"]["dispersion"]["query"].startswith("# template dispersion")


def test_the_first_intervals_of_measuring_hold_even_where_no_data_would_roll_back() -> None:
    """The dispersion needs two intervals with requests to be measured: until then the check holds
    (it is not judged at a floor real bursts may far exceed), but it is no metrics outage, so
    ``onNoData: rollback`` must not roll back a rollout at its first look."""
    p = policy(STATISTICS + "  onNoData: rollback\n")
    decision = look(p, started(p), T0 + timedelta(seconds=60), errors_dispersion(phi=9, bins=1))
    errors = by_name(decision, "errors")
    assert errors.verdict is Outcome.NO_DATA
    assert errors.settling
    assert errors.as_record()["settling"] is True
    assert decision.action is Action.HOLD
    assert decision.reason.endswith("still measuring (onNoData does not apply): hold")


def test_a_settling_check_beside_a_real_outage_still_follows_on_no_data() -> None:
    p = policy(STATISTICS + "  onNoData: rollback\n")
    changes = errors_dispersion(phi=9, bins=1) | {
        ("slow", Arm.TREATMENT, Part.TOTAL): Reading.no_data("empty result"),
    }
    decision = look(p, started(p), T0 + timedelta(seconds=60), changes)
    assert decision.action is Action.ROLLBACK
    assert "onNoData: rollback" in decision.reason


def test_the_sample_ratio_check_settles_too() -> None:
    p = policy(STATISTICS + "  onNoData: rollback\n")
    changes = exposure_dispersion(phi=1, bins=1)
    decision = look(p, started(p), T0 + timedelta(seconds=60), changes)
    ratio = by_name(decision, "sample-ratio")
    assert ratio.verdict is Outcome.NO_DATA
    assert ratio.settling
    assert decision.action is Action.HOLD


def test_a_record_with_a_settling_flag_of_the_wrong_type_is_a_problem() -> None:
    p = policy()
    decision = look(p, started(p), T0 + timedelta(seconds=60), errors_dispersion(phi=9, bins=1))
    check = json.loads(json.dumps(by_name(decision, "errors").as_record()))
    record = {"time": "2026-11-21T12:01:00Z", "flag": "pay", "action": "hold", "checks": [check]}
    assert record_problem(record) is None
    check["settling"] = "yes"
    problem = record_problem(record)
    assert problem is not None
    assert "settling" in problem


def completed(p: Policy) -> RolloutState:
    advanced = look(p, started(p), T0 + timedelta(minutes=10))
    done = look(p, advanced.after, T0 + timedelta(minutes=20))
    assert done.action is Action.COMPLETE
    return done.after


def test_a_completed_rollout_whose_traffic_comes_in_one_interval_a_day_is_still_judged() -> None:
    """A nightly batch sends its requests within one interval: every trailing day holds one bin per
    arm, never the two degrees of freedom the estimate needs. Settling is the first intervals of a
    rollout, not a state a rollout can stay in: a doubled error ratio must not hold as "still
    measuring" forever, it is judged at the floor, and the record says why."""
    p = policy(STATISTICS + "  onNoData: rollback\n")
    decision = look(p, completed(p), T0 + timedelta(days=30), errors_dispersion(phi=9, bins=1))
    errors = by_name(decision, "errors")
    assert not errors.settling
    assert errors.verdict is Outcome.FAIL
    assert decision.action is Action.ROLLBACK
    assert errors.sequential is not None
    assert errors.sequential.variance_inflation == 1
    measured = errors.sequential.dispersion
    assert measured is not None
    assert measured.estimate is None
    assert "too few intervals with requests" in measured.note
    assert "inflation 1 (the floor: dispersion not measured" in errors.describe()


def test_a_progressing_rollout_with_sparse_traffic_stops_settling_after_its_first_intervals() -> None:
    p = policy()
    stored = started(p)
    settling = look(p, stored, T0 + timedelta(minutes=2), errors_dispersion(phi=9, bins=1))
    assert by_name(settling, "errors").settling  # 4 intervals into the rollout: still measuring
    later = look(p, stored, T0 + timedelta(minutes=9), errors_dispersion(phi=9, bins=1))
    errors = by_name(later, "errors")
    assert not errors.settling
    assert errors.verdict is Outcome.FAIL
    assert later.action is Action.ROLLBACK


def test_the_sample_ratio_check_stops_settling_too() -> None:
    p = policy(STATISTICS + "  onNoData: rollback\n")
    decision = look(p, completed(p), T0 + timedelta(days=30), exposure_dispersion(phi=1, bins=1))
    ratio = by_name(decision, "sample-ratio")
    assert not ratio.settling
    assert ratio.verdict is Outcome.ERROR  # 10,400 against 9,600 at the floor: a mismatch
    assert ratio.sample_ratio is not None
    assert ratio.sample_ratio.dispersion is not None
    assert "too few intervals with requests" in ratio.sample_ratio.dispersion.note
