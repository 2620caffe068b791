"""Which policy guards which flag (controller.core.ownership): the pure rules, on plain data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.errors import Issue
from controller.core.flagd import empty_document, write_flag
from controller.core.ownership import (
    FLAG_KEY_FIELD,
    NAME_FIELD,
    Claim,
    Clash,
    clashes,
    orphans,
    unguarded,
)
from controller.core.records import POLICY_REJECTED_PREFIX
from controller.core.state import NOT_STARTED, RolloutState, Status

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def state(
    policy: str = "cache",
    *,
    percent: float = 5.0,
    status: Status = Status.PROGRESSING,
    rollback_on_delete: bool = False,
) -> RolloutState:
    return RolloutState(
        policy=policy,
        revision="abc123def456",
        status=status,
        step=0 if percent else NOT_STARTED,
        steps=2,
        percent=percent,
        control=percent <= 50,
        step_started_at=NOW,
        updated_at=NOW,
        owner="sre-lead",
        rollback_on_delete=rollback_on_delete,
    )


def document(**flags: RolloutState) -> dict[str, Any]:
    doc = empty_document()
    for key, flag_state in flags.items():
        doc = write_flag(doc, key, flag_state)
    return doc


def issue(flag: str | None, message: str = "spec.guardrails[0].max: not a number") -> Issue:
    return Issue(f"{flag or 'broken'}.yaml", 12, 7, "spec.guardrails[0].max", message, flag=flag)


# clashes ------------------------------------------------------------------------------------------


def test_policies_that_share_nothing_do_not_clash() -> None:
    assert clashes([Claim("cache", "cache"), Claim("search", "search")], {"cache": "cache"}) == []


def test_two_newcomers_for_one_flag_are_both_rejected() -> None:
    found = clashes([Claim("a", "cache"), Claim("b", "cache")], {})
    assert found == [
        Clash(0, "flag key", FLAG_KEY_FIELD, "cache", (1,)),
        Clash(1, "flag key", FLAG_KEY_FIELD, "cache", (0,)),
    ]
    assert found[0].reason("b.yaml:3") == (
        "flag key 'cache' is also used by the policy at b.yaml:3; each flag must have exactly one policy"
    )


def test_the_recorded_owner_keeps_its_flag_and_the_newcomer_is_rejected() -> None:
    claims = [Claim("cache-copy", "cache"), Claim("cache", "cache")]  # the newcomer comes first
    found = clashes(claims, {"cache": "cache"})
    assert found == [Clash(0, "flag key", FLAG_KEY_FIELD, "cache", (1,), keeper="cache")]
    assert found[0].reason("cache.yaml:9") == (
        "flag 'cache' is already rolled out by policy 'cache' at cache.yaml:9; this policy is ignored"
    )


def test_an_owner_recorded_for_another_policy_keeps_nothing() -> None:
    found = clashes([Claim("a", "cache"), Claim("b", "cache")], {"cache": "someone-else"})
    assert [(c.index, c.keeper) for c in found] == [(0, None), (1, None)]


def test_with_three_policies_for_an_owned_flag_both_newcomers_are_rejected() -> None:
    found = clashes(
        [Claim("new-1", "cache"), Claim("cache", "cache"), Claim("new-2", "cache")], {"cache": "cache"}
    )
    assert [(c.index, c.others, c.keeper) for c in found] == [(0, (1, 2), "cache"), (2, (0, 1), "cache")]


def test_policies_sharing_a_name_are_all_rejected_even_when_one_owns_its_flag() -> None:
    found = clashes([Claim("cache", "cache"), Claim("cache", "search")], {"cache": "cache"})
    assert found == [
        Clash(0, "name", NAME_FIELD, "cache", (1,)),
        Clash(1, "name", NAME_FIELD, "cache", (0,)),
    ]
    assert (
        found[1].reason("cache.yaml:4").startswith("name 'cache' is also used by the policy at cache.yaml:4;")
    )


def test_name_clashes_come_before_flag_key_clashes() -> None:
    claims = [Claim("a", "cache"), Claim("b", "cache"), Claim("c", "search"), Claim("c", "other")]
    assert [(c.label, c.index) for c in clashes(claims, {})] == [
        ("name", 2),
        ("name", 3),
        ("flag key", 0),
        ("flag key", 1),
    ]


# unguarded ----------------------------------------------------------------------------------------


def test_a_managed_flag_whose_policy_was_rejected_is_unguarded_with_the_reason() -> None:
    rejected = issue("cache")
    notices = unguarded(["cache", "search"], {"search"}, [rejected])
    assert list(notices) == ["cache"]
    assert notices["cache"] == (
        f"{POLICY_REJECTED_PREFIX}, guardrails NOT evaluated until it is fixed; the flag stays as it is: "
        f"{rejected}"
    )


def test_a_flag_still_guarded_by_a_valid_policy_is_not_unguarded() -> None:
    """A rejected newcomer names the flag, but its owner still judges it."""
    assert unguarded(["cache"], {"cache"}, [issue("cache")]) == {}


@pytest.mark.parametrize("flag", [None, "new-flag"], ids=["flag-unreadable", "flag-not-managed-yet"])
def test_only_managed_flags_named_by_an_error_are_unguarded(flag: str | None) -> None:
    assert unguarded(["cache"], set(), [issue(flag)]) == {}


def test_the_reason_quotes_three_issues_and_counts_the_rest() -> None:
    issues = [issue("cache", f"problem {n}") for n in range(5)]
    reason = unguarded(["cache"], set(), issues)["cache"]
    assert reason.endswith(f"{issues[0]}; {issues[1]}; {issues[2]}; and 2 more")
    assert "problem 3" not in reason
    assert unguarded(["cache"], set(), issues[:3])["cache"].endswith(f"; {issues[2]}")


# orphans ------------------------------------------------------------------------------------------


def test_an_exposed_orphan_with_on_delete_rollback_is_rolled_back() -> None:
    flags = document(cache=state(rollback_on_delete=True), kept=state("kept"))
    found = orphans(flags, {"kept"}, errors=[], files=["kept.yaml"], now=NOW)
    assert (found.roll_back, found.left) == (["cache"], [])


@pytest.mark.parametrize(
    "orphan",
    [
        pytest.param(state(), id="default-leave"),
        pytest.param(state(percent=0.0, rollback_on_delete=True), id="nobody-exposed"),
        pytest.param(state(percent=100.0, status=Status.PROMOTED, rollback_on_delete=True), id="promoted"),
    ],
)
def test_other_orphans_are_left_as_they_are(orphan: RolloutState) -> None:
    found = orphans(document(cache=orphan), set(), errors=[], files=["other.yaml"], now=NOW)
    assert (found.roll_back, found.left) == ([], ["cache"])


def test_an_orphan_with_unreadable_state_is_left_as_it_is() -> None:
    flags = document(cache=state(rollback_on_delete=True))
    flags["flags"]["cache"]["metadata"]["flagroll.percent"] = "lots"
    found = orphans(flags, set(), errors=[], files=["other.yaml"], now=NOW)
    assert (found.roll_back, found.left) == ([], ["cache"])


def test_flags_not_managed_by_flagroll_are_never_orphans() -> None:
    flags = document()
    flags["flags"]["theirs"] = {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}
    found = orphans(flags, set(), errors=[], files=["other.yaml"], now=NOW)
    assert (found.roll_back, found.left) == ([], [])


@pytest.mark.parametrize(
    ("errors", "files"),
    [
        pytest.param([issue(None)], ["other.yaml", "broken.yaml"], id="a-broken-file-may-be-the-policy"),
        pytest.param([], [], id="no-file-at-all-may-be-a-bad-mount"),
    ],
)
def test_nothing_is_an_orphan_unless_every_policy_file_is_valid(
    errors: list[Issue], files: list[str]
) -> None:
    found = orphans(
        document(cache=state(rollback_on_delete=True)), set(), errors=errors, files=files, now=NOW
    )
    assert (found.roll_back, found.left) == ([], [])
