"""Which ``kind: Freeze`` documents cover which rollout, and until when: pure functions of the policy,
the freezes and an injected ``now``. Dates without a time are whole UTC days."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import pytest

from controller.adapters.policyfile import load_text
from controller.core.freezedoc import FreezeDocument, semantic_issues
from controller.core.freezes import (
    FreezeWaiting,
    StandingFreeze,
    active,
    covering,
    gate,
    invalid,
    standing,
    waiting_read,
)
from controller.core.policy import Policy
from tests.core.test_decision import POLICY

CHRISTMAS = datetime(2026, 12, 24, 10, 0, tzinfo=UTC)


def labelled(labels: str = "{team: checkout}", extra: str = "") -> Policy:
    text = POLICY.replace("metadata: {name: cache}", f"metadata: {{name: cache, labels: {labels}}}")
    loaded = load_text(text.replace("{extra}", extra), "cache.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.policies[0].policy


def freeze(spec: Mapping[str, object], name: str = "holiday-freeze") -> StandingFreeze:
    document = FreezeDocument.model_validate(
        {"apiVersion": "flagroll/v1", "kind": "Freeze", "metadata": {"name": name}, "spec": spec}
    )
    assert [i for i in semantic_issues(document) if i[2] == "error"] == []
    return standing(document, "freezes.yaml:1")


HOLIDAYS: dict[str, object] = {
    "from": "2026-12-24T00:00:00Z",
    "to": "2027-01-02T00:00:00Z",
    "reason": "holiday freeze",
    "selector": {"matchLabels": {"team": "checkout"}},
}


def test_a_freeze_covers_a_policy_whose_labels_hold_its_selector_while_in_force() -> None:
    holidays = freeze(HOLIDAYS)
    assert covering(labelled(), [holidays], CHRISTMAS) == (holidays,)
    assert covering(labelled("{team: search}"), [holidays], CHRISTMAS) == ()
    assert covering(labelled("{team: checkout, tier: web}"), [holidays], CHRISTMAS) == (holidays,)
    assert covering(labelled("{}"), [holidays], CHRISTMAS) == ()


def test_from_is_in_the_freeze_and_an_instant_to_is_not() -> None:
    holidays = freeze(HOLIDAYS)
    start, end = datetime(2026, 12, 24, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC)
    policy = labelled()
    assert covering(policy, [holidays], start - timedelta(seconds=1)) == ()
    assert covering(policy, [holidays], start) == (holidays,)
    assert covering(policy, [holidays], end - timedelta(seconds=1)) == (holidays,)
    assert covering(policy, [holidays], end) == ()


def test_a_freeze_without_a_selector_covers_every_rollout() -> None:
    everyone = freeze({"from": "2026-12-24T00:00:00Z", "reason": "incident 42"}, "incident-42")
    assert covering(labelled("{team: search}"), [everyone], CHRISTMAS) == (everyone,)
    assert covering(labelled("{}"), [everyone], CHRISTMAS) == (everyone,)


def test_a_freeze_without_to_lasts_until_removed() -> None:
    open_ended = freeze({"from": "2026-12-24T00:00:00Z", "reason": "incident 42"}, "incident-42")
    assert open_ended.ends is None
    assert covering(labelled(), [open_ended], datetime(2036, 1, 1, tzinfo=UTC)) == (open_ended,)
    waits = gate(labelled(), [open_ended], CHRISTMAS)
    assert isinstance(waits, FreezeWaiting)
    assert waits.opens_at is None
    assert waits.describe(CHRISTMAS) == (
        "frozen by Freeze incident-42 (incident 42), until removed: wait until Freeze incident-42 is removed, "
        "then it advances at the next evaluation"
    )
    assert waits.as_record(CHRISTMAS)["until_removed"] is True


def test_dates_are_whole_utc_days_both_included() -> None:
    days = freeze({"from": date(2026, 12, 24), "to": date(2027, 1, 2), "reason": "holiday freeze"})
    assert days.begins == datetime(2026, 12, 24, tzinfo=UTC)
    assert days.ends == datetime(2027, 1, 3, tzinfo=UTC)
    policy = labelled()
    assert covering(policy, [days], datetime(2026, 12, 23, 23, 59, 59, tzinfo=UTC)) == ()
    assert covering(policy, [days], datetime(2027, 1, 2, 23, 59, 59, tzinfo=UTC)) == (days,)
    assert covering(policy, [days], datetime(2027, 1, 3, tzinfo=UTC)) == ()


def test_an_offset_is_kept_as_the_same_instant_in_utc() -> None:
    berlin = freeze({"from": "2026-12-24T00:00:00+01:00", "to": "2026-12-25T00:00:00+01:00"})
    assert berlin.begins == datetime(2026, 12, 23, 23, 0, tzinfo=UTC)


def test_an_invalid_freeze_covers_every_rollout_always() -> None:
    broken = invalid("freezes.yaml:1", "line 5: spec.form: unknown field 'form'", "holiday-freeze")
    for when in (datetime(2000, 1, 1, tzinfo=UTC), CHRISTMAS, datetime(2100, 1, 1, tzinfo=UTC)):
        assert covering(labelled("{team: search}"), [broken], when) == (broken,)
    waits = gate(labelled(), [broken], CHRISTMAS)
    assert waits is not None
    assert waits.reason == "freeze"
    assert waits.opens_at is None
    assert "Freeze holiday-freeze at freezes.yaml:1 does not validate" in waits.describe(CHRISTMAS)
    assert active([freeze(HOLIDAYS), broken], CHRISTMAS)[0] is broken


def test_the_wait_ends_when_the_last_covering_freeze_ends() -> None:
    first = freeze({**HOLIDAYS, "to": "2026-12-27T00:00:00Z"}, "first")
    second = freeze({**HOLIDAYS, "from": "2026-12-26T00:00:00Z", "to": "2026-12-30T06:00:00Z"}, "second")
    waits = gate(labelled(), [first, second], CHRISTMAS)
    assert waits is not None
    assert waits.opens_at == datetime(2026, 12, 30, 6, 0, tzinfo=UTC)
    assert waits.describe(CHRISTMAS).startswith(
        "frozen by Freeze first (holiday freeze), until 2026-12-27 00:00 UTC: wait for the end of the "
        "freeze Wed 06:00 UTC, in 5d20h"
    )


def test_after_the_freeze_the_wait_runs_on_to_the_policys_next_window() -> None:
    office = labelled(
        extra="  schedule:\n    timezone: Europe/Berlin\n    windows:\n"
        '      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}\n'
    )
    waits = gate(office, [freeze(HOLIDAYS)], CHRISTMAS)
    assert waits is not None
    assert waits.reason == "freeze"
    assert waits.opens_at == datetime(2027, 1, 4, 8, 0, tzinfo=UTC)  # Monday 09:00 in Berlin
    assert "wait for the window Mon 2027-01-04 09:00 Europe/Berlin (08:00 UTC)" in waits.describe(CHRISTMAS)


def test_no_covering_freeze_leaves_the_policys_own_schedule() -> None:
    assert gate(labelled(), [freeze(HOLIDAYS)], CHRISTMAS - timedelta(days=30)) is None
    assert gate(labelled("{team: search}"), [freeze(HOLIDAYS)], CHRISTMAS) is None


def test_the_record_reads_back_with_the_documents_it_names() -> None:
    waits = gate(labelled(), [freeze(HOLIDAYS)], CHRISTMAS)
    assert waits is not None
    record = waits.as_record(CHRISTMAS)
    assert record["reason"] == "freeze"
    assert record["opens_at"] == "2027-01-02T00:00:00Z"
    assert record["documents"] == [
        {
            "name": "holiday-freeze",
            "reason": "holiday freeze",
            "from": "2026-12-24T00:00:00Z",
            "to": "2027-01-02T00:00:00Z",
            "where": "freezes.yaml:1",
            "valid": True,
            "selector": {"matchLabels": {"team": "checkout"}},
        }
    ]
    later = CHRISTMAS + timedelta(days=1)
    back = waiting_read(record)
    assert isinstance(back, FreezeWaiting)
    assert back.describe(later) == waits.describe(later)
    assert waiting_read({"reason": "window", "opens_at": "2026-11-23T08:00:00Z"}) is not None
    assert waiting_read({"reason": "freeze", "documents": [{"name": 3}]}) is not None
    assert waiting_read(None) is None


@pytest.mark.parametrize(
    "spec",
    [
        {"from": "2026-12-24", "to": "2026-12-23"},
        {"from": "2026-12-24T10:00:00Z", "to": "2026-12-24T10:00:00Z"},
    ],
)
def test_from_after_to_is_an_error_at_to(spec: dict[str, object]) -> None:
    document = FreezeDocument.model_validate(
        {"apiVersion": "flagroll/v1", "kind": "Freeze", "metadata": {"name": "x"}, "spec": spec}
    )
    (problem,) = [i for i in semantic_issues(document) if i[2] == "error"]
    assert problem[0] == ("spec", "to")
    assert "is not after 'from'" in problem[1]


def test_a_freeze_that_ends_inside_a_window_waits_for_its_end_not_a_window() -> None:
    office = labelled(
        extra="  schedule:\n    timezone: Europe/Berlin\n    windows:\n"
        '      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}\n'
    )
    short = freeze({**HOLIDAYS, "to": "2026-12-29T10:00:00Z"})  # Tuesday 11:00 in Berlin
    waits = gate(office, [short], CHRISTMAS)
    assert waits is not None
    assert waits.opens_at == datetime(2026, 12, 29, 10, 0, tzinfo=UTC)
    assert "wait for the end of the freeze Tue 11:00 Europe/Berlin (10:00 UTC), in 5d" in waits.describe(
        CHRISTMAS
    )


@pytest.mark.parametrize("to", ["9999-12-31", "9999-12-31T23:00:00Z"])
@pytest.mark.parametrize("windows", [False, True], ids=["no-windows", "office-windows"])
def test_a_freeze_to_the_end_of_the_calendar_holds_without_overflowing(to: str, windows: bool) -> None:
    """``to: 9999-12-31`` ("until further notice") has no next midnight; with change windows, no
    window opens after it either: the move waits, with or without an opening named, never a crash."""
    extra = (
        "  schedule:\n    timezone: Europe/Berlin\n    windows:\n"
        '      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}\n'
        if windows
        else ""
    )
    far = freeze({"from": "2026-12-24", "to": to, "reason": "until further notice"}, "far")
    waits = gate(labelled(extra=extra), [far], CHRISTMAS)
    assert waits is not None
    assert waits.reason == "freeze"
    assert "frozen by Freeze far (until further notice)" in waits.describe(CHRISTMAS)
    assert waiting_read(waits.as_record(CHRISTMAS)) is not None
