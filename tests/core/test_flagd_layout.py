"""The mirrored flag layout, checked with the real flagd evaluator (openfeature-flagd-core)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from controller.core import flagd
from controller.core.errors import FlagFileError, FlagNotManagedError
from controller.core.flagd import (
    TOTAL_WEIGHT,
    empty_document,
    managed_keys,
    parse_document,
    parse_targeting,
    read_state,
    render_document,
    write_flag,
)
from controller.core.state import NOT_STARTED, RolloutState, Status

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
USERS = [f"user-{i}" for i in range(20_000)]
VARIANTS = {"on": True, "off": False}


def state(percent: float, *, control: bool = True, status: Status = Status.PROGRESSING) -> RolloutState:
    return RolloutState(
        policy="cache",
        revision="abc123def456",
        status=status,
        step=0 if percent else NOT_STARTED,
        steps=5,
        percent=percent,
        control=control,
        step_started_at=NOW,
        updated_at=NOW,
        owner="sre-lead",
    )


def evaluate(document: dict[str, Any], key: str, users: list[str], **attributes: Any) -> dict[str, str]:
    core = FlagdCore()
    core.set_flags(json.dumps(document))
    result = {}
    for user in users:
        details = core.resolve_boolean_value(
            key, False, EvaluationContext(targeting_key=user, attributes=attributes)
        )
        assert details.variant is not None
        result[user] = details.variant
    return result


@pytest.mark.parametrize("percent", [1, 5, 10, 25, 50])
def test_exposure_is_within_one_point_of_the_target(percent: float) -> None:
    document = write_flag(empty_document(), "cache", state(percent), variants=VARIANTS)
    counts = Counter(evaluate(document, "cache", USERS).values())
    assert abs(100 * counts["on"] / len(USERS) - percent) <= 1
    assert abs(100 * counts["control"] / len(USERS) - percent) <= 1
    assert counts["on"] + counts["control"] + counts["off"] == len(USERS)


def test_no_user_switches_arms_across_a_ramp_a_rollback_and_a_re_ramp() -> None:
    ramp = [1, 5, 10, 25, 50]
    seen: dict[str, str] = {}  # the arm each user was first exposed in
    crossings = 0
    served_off_at_zero = 0
    for percent in [*ramp, 0, *ramp]:
        document = write_flag(empty_document(), "cache", state(percent), variants=VARIANTS)
        for user, variant in evaluate(document, "cache", USERS).items():
            if percent == 0:
                served_off_at_zero += variant == "off"
                continue
            if variant == "off":
                continue
            if seen.setdefault(user, variant) != variant:
                crossings += 1
    assert crossings == 0
    assert served_off_at_zero == len(USERS)
    # The re-ramp exposes exactly the users of the first ramp.
    final = write_flag(empty_document(), "cache", state(50), variants=VARIANTS)
    exposed = {u for u, v in evaluate(final, "cache", USERS).items() if v != "off"}
    assert exposed == set(seen)


def test_users_outside_the_segment_always_get_off() -> None:
    segment = {"==": [{"var": "segment"}, "S"]}
    document = write_flag(empty_document(), "cache", state(50), variants=VARIANTS, segment=segment)
    outside = Counter(evaluate(document, "cache", USERS[:2000], segment="T").values())
    inside = Counter(evaluate(document, "cache", USERS[:2000], segment="S").values())
    assert outside == {"off": 2000}
    assert inside["on"] > 800
    assert inside["control"] > 800


def test_the_control_variant_serves_the_off_value() -> None:
    variants = {"on": "new-checkout", "off": "old-checkout"}
    document = write_flag(empty_document(), "checkout", state(10), variants=variants)
    flag = document["flags"]["checkout"]
    assert flag["variants"] == {"on": "new-checkout", "off": "old-checkout", "control": "old-checkout"}
    assert flag["defaultVariant"] == "off"


def test_without_control_there_is_no_control_bucket() -> None:
    document = write_flag(empty_document(), "f", state(80, control=False), variants=VARIANTS)
    rule = document["flags"]["f"]["targeting"]
    assert rule == {"fractional": [["on", 8000], ["off", 2000]]}
    counts = Counter(evaluate(document, "f", USERS[:5000]).values())
    assert abs(counts["on"] / 5000 - 0.8) < 0.02


def test_a_promoted_flag_serves_everyone_on() -> None:
    document = write_flag(empty_document(), "f", state(100, status=Status.PROMOTED), variants=VARIANTS)
    assert set(evaluate(document, "f", USERS[:2000]).values()) == {"on"}


def test_state_round_trips_through_the_flag_metadata() -> None:
    original = state(25).moved(review=datetime(2026, 12, 19, tzinfo=UTC).date(), reason="why not")
    document = write_flag(empty_document(), "f", original, variants=VARIANTS)
    assert read_state(document, "f") == original
    metadata = document["flags"]["f"]["metadata"]
    assert all(isinstance(v, str | int | float | bool) for v in metadata.values())


def test_other_flags_are_left_exactly_as_they_were() -> None:
    others = {
        "banner": {
            "state": "ENABLED",
            "variants": {"a": 1, "b": 2},
            "defaultVariant": "a",
            "targeting": {"if": [{"in": ["@x.com", {"var": "email"}]}, "b", None]},
            "metadata": {"team": "web"},
        },
        "legacy": {"state": "DISABLED", "variants": {"x": {"nested": [1, 2.5, None]}}, "defaultVariant": "x"},
    }
    document = {"$schema": "x", "$evaluators": {"e": {"==": [1, 1]}}, "flags": json.loads(json.dumps(others))}
    updated = write_flag(document, "cache", state(5), variants=VARIANTS)
    assert {k: v for k, v in updated["flags"].items() if k != "cache"} == others
    assert updated["$evaluators"] == document["$evaluators"]
    assert list(managed_keys(updated)) == ["cache"]
    assert "cache" not in document["flags"]  # the input document is not mutated


def test_a_flag_flagroll_did_not_create_is_never_taken_over() -> None:
    document = {"flags": {"cache": {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}}}
    with pytest.raises(FlagNotManagedError, match="not managed by flagroll"):
        read_state(document, "cache")
    with pytest.raises(FlagNotManagedError):
        write_flag(document, "cache", state(5), variants=VARIANTS)


def test_a_hand_edited_targeting_is_reported_not_overwritten() -> None:
    document = write_flag(empty_document(), "f", state(5), variants=VARIANTS)
    document["flags"]["f"]["targeting"]["fractional"][0][1] = 700
    document["flags"]["f"]["targeting"]["fractional"][1][1] = TOTAL_WEIGHT - 700 - 500
    with pytest.raises(FlagFileError, match="edited outside flagroll"):
        read_state(document, "f")
    relaxed = read_state(document, "f", check_layout=False)
    assert relaxed is not None
    assert relaxed.percent == 5


@pytest.mark.parametrize(
    "rule",
    [
        {"fractional": [["on", 5000], ["off", 4000]]},
        {"fractional": [["off", 5000], ["on", 5000]]},
        {"fractional": [["on", "5"], ["off", 9995]]},
        {"fractional": "x"},
        {"if": [{"==": [1, 1]}, {"fractional": [["on", 1], ["off", 9999]]}, "on"]},
        {"in": ["a", "b"]},
        None,
    ],
)
def test_a_foreign_targeting_rule_is_an_error(rule: Any) -> None:
    with pytest.raises(FlagFileError):
        parse_targeting(rule, "f")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("flagroll.status", "sideways", "is unknown"),
        ("flagroll.percent", 10**400, "too large"),
        ("flagroll.stepStartedAt", "0001-01-01T00:00:00+01:00", "out of range"),
        ("flagroll.exposedSince", "9999-12-31T23:59:59-01:00", "out of range"),
        ("flagroll.review", "someday", "not an ISO date"),
        ("flagroll.percent", 140, "outside"),
        ("flagroll.percent", "5", "wrong type"),
        ("flagroll.step", 9, "outside"),
        ("flagroll.control", "yes", "wrong type"),
        ("flagroll.updatedAt", "yesterday", "not an ISO time"),
        ("flagroll.updatedAt", "2026-11-21T12:00:00", "no timezone"),
    ],
)
def test_corrupt_state_metadata_is_an_error_naming_the_field(key: str, value: Any, message: str) -> None:
    document = write_flag(empty_document(), "f", state(5), variants=VARIANTS)
    document["flags"]["f"]["metadata"][key] = value
    with pytest.raises(FlagFileError, match=message) as raised:
        read_state(document, "f", check_layout=False)
    assert f"'{key}'" in str(raised.value)


def test_an_integer_too_long_to_read_is_a_flag_file_error() -> None:
    with pytest.raises(FlagFileError, match=r"flags\.json: not valid JSON"):
        parse_document('{"flags": {}, "n": ' + "1" * 5000 + "}", "flags.json")


def test_a_step_without_its_start_time_is_an_error() -> None:
    document = write_flag(empty_document(), "f", state(5), variants=VARIANTS)
    del document["flags"]["f"]["metadata"]["flagroll.stepStartedAt"]
    with pytest.raises(FlagFileError, match="stepStartedAt"):
        read_state(document, "f")


def test_the_flag_file_text_is_the_same_whatever_the_size_of_the_pieces_it_is_built_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {
            f"f{i}": {"variants": {"on": True, "off": False}, "note": "é ✓", "n": [i, 1.5]} for i in range(50)
        },
    }
    expected = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    assert render_document(document) == expected
    monkeypatch.setattr(flagd, "RENDER_PIECE_CHARS", 7)
    assert render_document(document) == expected
    with pytest.raises(ValueError, match="not JSON compliant"):
        render_document({"flags": {"x": {"n": float("nan")}}})
