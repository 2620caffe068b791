"""Which policy guards which flag (controller.core.ownership.assign): the pure rules, on plain data."""

from __future__ import annotations

from controller.core.ownership import (
    FLAG_KEY_FIELD,
    NAME_FIELD,
    Broken,
    Candidate,
    Managed,
    Unmanaged,
    Why,
    assign,
)


def policy(
    name: str, key: str, where: str | None = None, *, off: object = False, replace: bool = False
) -> Candidate:
    return Candidate(name, key, where or f"{name}.yaml:1", off=off, replace=replace)


def broken(
    problem: str = "bad.yaml:3:1: YAML syntax error",
    names: set[str] | None = None,
    keys: set[str] | None = None,
) -> Broken:
    if names is None and keys is None:
        return Broken(problem)
    return Broken(problem, frozenset(names or ()), frozenset(keys or ()))


# the owner keeps its flag ------------------------------------------------------------------------


def test_a_single_policy_judges_its_flag_new_or_owned() -> None:
    result = assign([policy("cache", "cache"), policy("new", "fresh")], [], [Managed("cache", "cache")])
    assert result.judged == {0: "cache", 1: "fresh"}
    assert result.rejected == []
    assert result.unjudged == {}
    assert result.adopt == {}


def test_a_newcomer_for_an_owned_flag_is_rejected_and_the_owner_keeps_judging() -> None:
    result = assign([policy("copy", "cache"), policy("cache", "cache")], [], [Managed("cache", "cache")])
    assert result.judged == {1: "cache"}
    (rejection,) = result.rejected
    assert (rejection.index, rejection.field, rejection.flag) == (0, FLAG_KEY_FIELD, "cache")
    assert "already rolled out by policy 'cache' at cache.yaml:1" in rejection.reason
    assert "flagroll adopt cache --policy copy" in rejection.reason


def test_a_newcomer_never_takes_over_while_the_owners_file_is_broken() -> None:
    """Issue: the owner's file is invalid for one cycle; the newcomer must not take the flag."""
    result = assign(
        [policy("copy", "cache")],
        [broken("cache.yaml:9:5: spec.steps: bad", names={"cache"}, keys={"cache"})],
        [Managed("cache", "cache")],
    )
    assert result.judged == {}
    assert [r.index for r in result.rejected] == [0]
    unjudged = result.unjudged["cache"]
    assert unjudged.why is Why.BLOCKED
    assert "cache.yaml:9:5" in unjudged.reason


def test_a_name_clash_with_the_owner_never_disarms_it() -> None:
    """Issue: a new file reusing a running policy's name (for another flag) rejected both."""
    result = assign(
        [policy("cache", "cache"), policy("cache", "other", "new.yaml:1")], [], [Managed("cache", "cache")]
    )
    assert result.judged == {0: "cache"}
    (rejection,) = result.rejected
    assert (rejection.index, rejection.field, rejection.flag) == (1, NAME_FIELD, "cache")
    assert "already used by the policy at cache.yaml:1" in rejection.reason


def test_a_copy_of_the_owner_in_another_file_keeps_the_first() -> None:
    result = assign(
        [policy("cache", "cache", "a.yaml:1"), policy("cache", "cache", "b.yaml:1")],
        [],
        [Managed("cache", "cache")],
    )
    assert result.judged == {0: "cache"}
    (rejection,) = result.rejected
    assert rejection.index == 1
    assert "a copy of the policy at a.yaml:1" in rejection.reason


def test_without_an_owner_every_policy_in_a_clash_is_rejected() -> None:
    by_key = assign([policy("a", "new"), policy("b", "new")], [], [])
    assert by_key.judged == {}
    assert [r.index for r in by_key.rejected] == [0, 1]
    by_name = assign([policy("a", "x"), policy("a", "y")], [], [])
    assert by_name.judged == {}
    assert {r.field for r in by_name.rejected} == {NAME_FIELD}


# flags nobody judges --------------------------------------------------------------------------------


def test_a_deleted_policys_flag_is_absent_when_every_file_was_read() -> None:
    result = assign([policy("other", "other")], [], [Managed("cache", "cache"), Managed("other", "other")])
    unjudged = result.unjudged["cache"]
    assert unjudged.why is Why.ABSENT
    assert unjudged.successor is None
    assert "its policy 'cache' was deleted or renamed" in unjudged.reason


def test_a_renamed_flag_key_leaves_the_old_flag_absent_and_says_where_the_policy_went() -> None:
    result = assign([policy("cache", "cache-v2")], [], [Managed("cache", "cache")])
    assert result.judged == {0: "cache-v2"}
    assert result.unjudged["cache"].why is Why.ABSENT
    assert "now rolls out flag 'cache-v2' (cache.yaml:1)" in result.unjudged["cache"].reason


def test_a_renamed_policy_waits_to_take_its_flag_over() -> None:
    result = assign([policy("cache-renamed", "cache")], [], [Managed("cache", "cache")])
    assert result.judged == {}
    assert result.rejected == []
    unjudged = result.unjudged["cache"]
    assert (unjudged.why, unjudged.successor) == (Why.ABSENT, 0)
    assert "takes it over after the grace period" in unjudged.reason


def test_several_would_be_successors_are_all_rejected() -> None:
    result = assign([policy("a", "cache"), policy("b", "cache")], [], [Managed("cache", "cache")])
    assert result.unjudged["cache"].successor is None
    assert [r.index for r in result.rejected] == [0, 1]


def test_a_file_that_cannot_be_read_blocks_every_flag_whose_owner_is_missing() -> None:
    result = assign(
        [policy("other", "other")], [broken()], [Managed("cache", "cache"), Managed("other", "other")]
    )
    assert result.judged == {0: "other"}  # a valid owner is not held back by someone else's file
    unjudged = result.unjudged["cache"]
    assert unjudged.why is Why.BLOCKED
    assert "it cannot be read, so it may hold the policy" in unjudged.reason


def test_a_broken_file_that_holds_other_policies_does_not_block() -> None:
    result = assign([], [broken(names={"search"}, keys={"search"})], [Managed("cache", "cache")])
    assert result.unjudged["cache"].why is Why.ABSENT


def test_no_policy_files_at_all_blocks_everything() -> None:
    result = assign([], [], [Managed("cache", "cache")], files=0)
    assert result.unjudged["cache"].why is Why.BLOCKED
    assert "no policy files were found" in result.unjudged["cache"].reason


# adoption --------------------------------------------------------------------------------------------


def test_a_flag_serving_the_policys_off_value_to_everyone_is_adopted() -> None:
    flag = Unmanaged("cache", True, False, "variant 'off' (false) to everyone")
    result = assign([policy("cache", "cache")], [], [], [flag])
    assert result.judged == {0: "cache"}
    assert result.adopt == {0: "cache"}


def test_a_disabled_flag_is_adopted() -> None:
    flag = Unmanaged("cache", True, None, "nothing: it is DISABLED", disabled=True)
    assert assign([policy("cache", "cache")], [], [], [flag]).adopt == {0: "cache"}


def test_a_flag_serving_anything_else_is_refused_with_what_it_serves() -> None:
    for flag in (
        Unmanaged("cache", True, True, "variant 'on' (true) to everyone"),
        Unmanaged("cache", True, 0, "variant 'zero' (0) to everyone"),  # 0 is not false
        Unmanaged("cache", False, None, 'its own targeting rule {"if": []}'),
    ):
        result = assign([policy("cache", "cache")], [], [], [flag])
        assert result.judged == {}
        assert result.adopt == {}
        (rejection,) = result.rejected
        assert rejection.field == FLAG_KEY_FIELD
        assert flag.description in rejection.reason
        assert "spec.flag.adopt: replace" in rejection.reason


def test_adopt_replace_takes_any_flag() -> None:
    flag = Unmanaged("cache", True, True, "variant 'on' (true) to everyone")
    result = assign([policy("cache", "cache", replace=True)], [], [], [flag])
    assert result.adopt == {0: "cache"}


def test_two_policies_for_an_unmanaged_flag_adopt_nothing() -> None:
    flag = Unmanaged("cache", True, False, "off")
    result = assign([policy("a", "cache"), policy("b", "cache")], [], [], [flag])
    assert result.adopt == {}
    assert len(result.rejected) == 2
