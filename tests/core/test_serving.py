"""Verified serving, the pure part (controller.core.serving): what a change asks to verify, how a
round of answers is judged (every key off at 0 %; shares plausible, not key by key, otherwise), and
the record of the outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from scipy.stats import binom

from controller.core.commands import stop
from controller.core.flagd import empty_document, write_flag
from controller.core.records import record_problem, render
from controller.core.serving import (
    DISABLED,
    NO_VARIANT,
    Answer,
    Check,
    Expectation,
    Outcome,
    Verification,
    against_file,
    binomial_range,
    expectation,
    judge,
    sample_keys,
    tally,
    unverified,
    verification_record,
)
from controller.core.state import NOT_STARTED, RolloutState, Status

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def state(percent: float = 5.0, *, at: datetime = T0, status: Status = Status.PROGRESSING) -> RolloutState:
    return RolloutState(
        policy="cache",
        revision="abc123def456",
        status=status,
        step=0 if percent else NOT_STARTED,
        steps=2,
        percent=percent,
        control=True,
        step_started_at=at,
        updated_at=at,
        owner="sre-lead",
    )


def answers(**counts: int) -> list[Answer]:
    found: list[Answer] = []
    for variant, count in counts.items():
        if variant == "disabled":
            found += [Answer.flag_disabled()] * count
        elif variant == "none":
            found += [Answer.served(None)] * count
        else:
            found += [Answer.served(variant)] * count
    return found


# What a change asks to verify -------------------------------------------------------------------


def test_the_sample_is_fixed_and_the_same_for_every_flag() -> None:
    keys = sample_keys(1000)
    assert keys[:2] == ["flagroll-verify-0", "flagroll-verify-1"]
    assert len(set(keys)) == 1000
    assert sample_keys(1000) == keys


def test_a_rollback_and_a_stop_to_zero_ask_every_key_off() -> None:
    exposed = state(5)
    rolled_back = state(0, at=T0 + timedelta(seconds=10), status=Status.ROLLED_BACK)
    wanted = expectation("cache", exposed, rolled_back, share=False)
    assert wanted is not None
    assert (wanted.check, wanted.before_percent, wanted.written_at) == (
        Check.OFF,
        5,
        T0 + timedelta(seconds=10),
    )
    stopped = stop(exposed, "pager", T0 + timedelta(minutes=1)).after
    assert expectation("cache", exposed, stopped, share=True) == Expectation("cache", Check.OFF, stopped, 5)


def test_nothing_is_verified_without_a_change_of_what_is_served() -> None:
    exposed = state(5)
    assert expectation("cache", None, state(0), share=True) is None  # a new flag, at 0 %
    marked = exposed.moved(updated_at=T0 + timedelta(seconds=5), unguarded_reason="no policy")
    assert expectation("cache", exposed, marked, share=True) is None  # flagroll's marks only
    not_started = state(0)
    stopped = state(0, at=T0 + timedelta(seconds=5), status=Status.STOPPED)
    assert expectation("cache", not_started, stopped, share=True) is None  # nobody was exposed
    older = state(0, at=T0 - timedelta(seconds=5), status=Status.ROLLED_BACK)
    assert expectation("cache", exposed, older, share=True) is None  # an earlier read, seen late


def test_a_change_of_shares_asks_for_plausible_shares_only_when_asked_to() -> None:
    advanced = state(20, at=T0 + timedelta(minutes=1))
    wanted = expectation("cache", state(5), advanced, share=True)
    assert wanted is not None
    assert wanted.check is Check.SHARE
    assert expectation("cache", state(5), advanced, share=False) is None
    new = expectation("cache", None, state(1), share=True)  # a new flag's first step
    assert new == Expectation("cache", Check.SHARE, state(1), 0.0)


def test_the_flag_file_as_it_stands_decides_what_is_verified() -> None:
    exposed = state(5)
    rolled_back = state(0, at=T0 + timedelta(seconds=10), status=Status.ROLLED_BACK)
    wanted = expectation("cache", exposed, rolled_back, share=True)
    assert wanted is not None
    document = write_flag(empty_document(), "cache", rolled_back)
    assert against_file(wanted, document) == (wanted, "")
    moved_on = write_flag(empty_document(), "cache", state(1, at=T0 + timedelta(seconds=20)))
    assert against_file(wanted, moved_on) == (None, "it moved again meanwhile")
    assert against_file(wanted, empty_document()) == (None, "it left the flag file")
    disabled = write_flag(empty_document(), "cache", rolled_back)
    disabled["flags"]["cache"]["state"] = "DISABLED"
    prepared, _ = against_file(wanted, disabled)
    assert prepared is not None
    assert prepared.disabled
    advanced = state(20, at=T0 + timedelta(minutes=1))
    share = expectation("cache", exposed, advanced, share=True)
    assert share is not None
    segmented = write_flag(empty_document(), "cache", advanced, segment={"==": [{"var": "tier"}, "gold"]})
    found, why = against_file(share, segmented)
    assert found is None
    assert "segment" in why


# Judging a round --------------------------------------------------------------------------------


def off(percent_before: float = 5.0, *, disabled: bool = False) -> Expectation:
    return Expectation("cache", Check.OFF, state(0, status=Status.ROLLED_BACK), percent_before, disabled)


def test_at_zero_every_key_must_be_off() -> None:
    verdict = judge(off(), tally(answers(off=1000), 1000))
    assert verdict.ok
    assert verdict.found == "serves off to all 1000 sampled keys"
    still = judge(off(), tally(answers(on=12, off=980, control=8), 1000))
    assert not still.ok
    assert still.found == "serves on to 12 of 1000 sampled keys, control to 8"
    # The control arm serves the off value, but a server serving it still serves the old layout.
    assert not judge(off(), tally(answers(off=990, control=10), 1000)).ok
    assert not judge(off(), tally(answers(off=999, none=1), 1000)).ok


def test_a_disabled_answer_is_off_only_where_the_flag_file_disables_the_flag() -> None:
    served = tally(answers(disabled=1000), 1000)
    assert served.served == {DISABLED: 1000}
    assert not judge(off(), served).ok  # the file serves off; a caller's own default may be anything
    verdict = judge(off(disabled=True), served)
    assert verdict.ok
    assert "DISABLED" in verdict.found


def test_a_round_with_a_failed_answer_shows_nothing() -> None:
    round_ = tally([*answers(off=10), Answer.failed("HTTP 503: overloaded")], 1000)
    assert (round_.errors, round_.first_error, round_.answered) == (1, "HTTP 503: overloaded", 10)
    verdict = judge(off(), round_)
    assert not verdict.ok
    assert "HTTP 503: overloaded" in verdict.found


def test_the_plausible_range_is_the_exact_binomial_one() -> None:
    for trials, share in ((1000, 0.01), (1000, 0.05), (1000, 0.5), (200, 0.2), (100, 0.01)):
        low, high = binomial_range(trials, share, 1e-4)
        assert binom.cdf(low - 1, trials, share) <= 0.5e-4 < binom.cdf(low, trials, share)
        assert binom.sf(high, trials, share) <= 0.5e-4 < binom.sf(high - 1, trials, share)
    assert binomial_range(1000, 0.0) == (0, 0)
    assert binomial_range(1000, 1.0) == (1000, 1000)


def test_shares_are_judged_as_shares_and_catch_a_server_still_at_the_old_step() -> None:
    advanced = Expectation("cache", Check.SHARE, state(5), 1.0)
    fair = judge(advanced, tally(answers(on=47, control=55, off=898), 1000))
    assert fair.ok
    assert fair.found == (
        "serves on to 47 (plausible 25–79), control to 55 (plausible 25–79) among 1000 sampled keys"
    )
    assert fair.plausible == {"on": (25, 79), "control": (25, 79)}
    # Still at 1 %: about 10 keys each; far outside what 5 % gives.
    assert not judge(advanced, tally(answers(on=11, control=9, off=980), 1000)).ok
    assert not judge(advanced, tally(answers(on=50, control=50, off=899, beta=1), 1000)).ok
    # The first step from 0 %: a server that never loaded it serves nobody the treatment.
    started = Expectation("cache", Check.SHARE, state(1), 0.0)
    assert not judge(started, tally(answers(off=1000), 1000)).ok


# The record -------------------------------------------------------------------------------------


def verification(outcome: Outcome, **fields: Any) -> Verification:
    wanted = off()
    round_ = tally(answers(off=1000) if outcome is Outcome.CONFIRMED else answers(on=12, off=988), 1000)
    return Verification(
        wanted=wanted,
        outcome=outcome,
        url="http://127.0.0.1:8016",
        keys=1000,
        rounds=3,
        waited_seconds=1.25,
        deadline_seconds=30.0,
        last=round_,
        verdict=judge(wanted, round_),
        seconds=1.5 if outcome is Outcome.CONFIRMED else None,
        **fields,
    )


def test_a_confirmation_is_recorded_with_the_seconds_from_the_write() -> None:
    record = verification_record(verification(Outcome.CONFIRMED), T0 + timedelta(seconds=2))
    assert record_problem(record) is None
    assert (record["action"], record["flag"], record["to_percent"], record["status"]) == (
        "verify",
        "cache",
        0.0,
        "rolled_back",
    )
    serving = record["serving"]
    assert (serving["check"], serving["outcome"], serving["seconds"], serving["served"]) == (
        "off",
        "confirmed",
        1.5,
        {"off": 1000},
    )
    assert serving["written_at"] == "2026-11-21T12:00:00.000Z"
    assert record["reason"].startswith("serving verified: the flag server (http://127.0.0.1:8016) serves off")
    assert not unverified(record)


def test_a_server_still_serving_the_treatment_is_a_loud_record() -> None:
    record = verification_record(verification(Outcome.UNVERIFIED), T0 + timedelta(seconds=31))
    assert record_problem(record) is None
    assert unverified(record)
    assert record["reason"].startswith("SERVING NOT VERIFIED after the write at 2026-11-21T12:00:00.000Z")
    assert "still serves on to 12 of 1000 sampled keys" in record["reason"]
    assert "the flag was not moved" in record["reason"]
    assert "SERVING NOT VERIFIED" in render(record)
    no_answer = verification(Outcome.UNVERIFIED, error="cannot connect to http://127.0.0.1:8016: refused")
    bare = Verification(**{**no_answer.__dict__, "last": None, "verdict": None, "rounds": 0})
    record = verification_record(bare, T0)
    assert "gave no complete answer within 30s: cannot connect" in record["reason"]
    assert record["serving"]["served"] is None


@pytest.mark.parametrize(
    ("serving", "problem"),
    [
        ("yes", "'serving' is 'yes', not an object"),
        ({"seconds": "fast"}, "'serving.seconds' is 'fast', not a number"),
        ({"keys": 1.5}, "'serving.keys' is 1.5, not a whole number"),
        ({"served": {"off": "all"}}, "'serving.served.off' is 'all', not a whole number"),
        ({"served": [1]}, "'serving.served' is [1], not an object"),
        ({"outcome": 1}, "'serving.outcome' is 1, not text"),
        (
            {"plausible": {"on": [1]}},
            "'serving.plausible' is {'on': [1]}, not an object of [low, high] ranges",
        ),
    ],
)
def test_a_verification_record_of_the_wrong_shape_is_named_by_its_field(serving: Any, problem: str) -> None:
    record = verification_record(verification(Outcome.CONFIRMED), T0)
    assert record_problem({**record, "serving": serving}) == problem


def test_no_variant_is_counted_apart() -> None:
    assert tally(answers(none=3, off=7), 10).served == {NO_VARIANT: 3, "off": 7}
