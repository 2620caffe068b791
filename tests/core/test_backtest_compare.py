"""``flagroll backtest --compare``, the pure side-by-side: per flag, which set rolled back earlier or
later (both times), that only one did, or neither."""

from __future__ import annotations

from datetime import timedelta

from controller.core.backtest import Move, Replay
from controller.core.backtestcompare import as_dict, compare, render_text
from controller.core.state import Action
from tests.core.test_backtest import START


def _replay(flag: str, policy: str, rollback_minutes: float | None) -> Replay:
    result = Replay(policy, flag, 300, START, START + timedelta(days=1))
    result.moves.append(Move(START, Action.ADVANCE, 0, 5, "rollout starts"))
    if rollback_minutes is not None:
        at = START + timedelta(minutes=rollback_minutes)
        result.moves.append(Move(at, Action.ROLLBACK, 5, 0, "guardrail failed"))
    return result


def test_the_earlier_and_the_later_rollback_are_named_with_both_times() -> None:
    (c,) = compare([_replay("cache", "tight", 10)], [_replay("cache", "loose", 25)])
    assert c.verdict == (
        "--policies rolled back 15m earlier than --compare: "
        "--policies at 2026-12-01T00:10:00Z, --compare at 2026-12-01T00:25:00Z"
    )
    (swapped,) = compare([_replay("cache", "loose", 25)], [_replay("cache", "tight", 10)])
    assert swapped.verdict.startswith("--compare rolled back 15m earlier than --policies: ")


def test_only_one_set_rolling_back_and_neither_are_said() -> None:
    (c,) = compare([_replay("cache", "tight", 10)], [_replay("cache", "loose", None)])
    assert c.verdict == "only --policies rolled back, at 2026-12-01T00:10:00Z"
    (other,) = compare([_replay("cache", "loose", None)], [_replay("cache", "tight", 10)])
    assert other.verdict == "only --compare rolled back, at 2026-12-01T00:10:00Z"
    (neither,) = compare([_replay("cache", "a", None)], [_replay("cache", "b", None)])
    assert neither.verdict == "neither set rolled back"
    (same,) = compare([_replay("cache", "a", 10)], [_replay("cache", "b", 10)])
    assert same.verdict == "both rolled back at 2026-12-01T00:10:00Z"


def test_a_flag_in_one_set_only_and_the_report_in_both_forms() -> None:
    comparisons = compare(
        [_replay("cache", "tight", 10), _replay("search", "s", None)], [_replay("cache", "loose", None)]
    )
    assert [c.flag for c in comparisons] == ["cache", "search"]
    assert comparisons[1].verdict == "only --policies has a policy for this flag"
    data = as_dict(comparisons)
    assert data[0]["policies"]["first_rollback"] == "2026-12-01T00:10:00Z"
    assert data[0]["compare"]["first_rollback"] is None
    assert [d["action"] for d in data[0]["policies"]["decisions"]] == ["advance", "rollback"]
    assert data[1]["compare"] is None
    text = "\n".join(render_text(comparisons))
    assert "--policies (tight): first would-be rollback 2026-12-01T00:10:00Z" in text
    assert "--compare (loose): first would-be rollback none" in text
    assert "only --policies rolled back, at 2026-12-01T00:10:00Z" in text
    assert "--compare: no policy" in text
    for verdict in (c.verdict for c in comparisons):
        assert verdict in text
