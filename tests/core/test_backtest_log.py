"""``flagroll backtest --decision-log``: a real past rollout's recorded exposure, judged by another
policy (controller/core/backtestlog.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from controller.core.backtest import evaluation_times, replay
from controller.core.backtesthtml import PolicySet, render_html
from controller.core.backtestlog import Recorded, verdict
from controller.core.backtestranges import RangeAnswer, Series, to_ms
from controller.core.backtestreport import as_dict, render_text
from controller.core.state import Action, Status
from tests.core.test_backtest import POLICY, START, _answers, constant, load
from tests.core.test_backtest_counts import POLICY as STATISTICAL
from tests.core.test_backtest_counts import answers_for, healthy
from tests.core.test_backtest_html import markers, svgs


def record(
    at: datetime, action: str, before: float, after: float, status: str, **more: Any
) -> dict[str, Any]:
    return {
        "time": at.isoformat().replace("+00:00", "Z"),
        "flag": "cache",
        "policy": "cache",
        "action": action,
        "from_percent": before,
        "to_percent": after,
        "status": status,
        "reason": f"{action} for the test",
        "actor": None,
    } | more


def history(
    rollback_at: datetime | None, *, by: str = "rollback", actor: str | None = None
) -> list[dict[str, Any]]:
    """A real rollout that started an hour before START (before the window), reached 20 %, and was
    taken down at ``rollback_at``; holds, verifications and other flags' records around it."""
    t = START - timedelta(hours=1)
    records = [
        record(t, "advance", 0, 5, "progressing"),
        record(t + timedelta(minutes=5), "hold", 5, 5, "progressing"),
        record(t + timedelta(minutes=6), "verify", 5, 5, "progressing"),
        record(t + timedelta(minutes=30), "advance", 5, 20, "progressing"),
        record(t + timedelta(minutes=31), "advance", 0, 50, "progressing", flag="other"),
    ]
    if rollback_at is not None:
        status = "rolled_back" if by == "rollback" else "stopped"
        records.append(record(rollback_at, by, 20, 0, status, actor=actor))
    return records


def test_the_recorded_exposure_in_the_replayed_policys_terms() -> None:
    policy = load(POLICY)
    recorded = Recorded.of("cache", history(START + timedelta(hours=2)))
    assert [m.action for m in recorded.moves] == [Action.ADVANCE, Action.ADVANCE, Action.ROLLBACK]
    before = recorded.state_at(policy, START - timedelta(hours=2))
    assert before.percent == 0.0
    assert before.step == -1
    at_20 = recorded.state_at(policy, START)
    assert at_20.percent == 20.0
    assert at_20.step == 1  # the replayed policy's step at 20 %
    assert at_20.exposed_since == START - timedelta(hours=1)  # counting from the first step
    assert at_20.step_started_at == START - timedelta(minutes=30)
    after = recorded.state_at(policy, START + timedelta(hours=3))
    assert after.percent == 0.0
    assert after.status is Status.ROLLED_BACK


def test_this_policy_would_have_rolled_back_earlier_than_what_happened() -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    incident = START + timedelta(minutes=22)
    errors = RangeAnswer((Series({}, {to_ms(t): 0.3 if t >= incident else 0.01 for t in times}),))
    recorded = Recorded.of("cache", history(START + timedelta(minutes=70)))
    result = replay(policy, times, _answers(policy, times, errors), {}, recorded)
    assert result.moves == []  # the recorded exposure is judged, not moved
    assert result.first_rollback is not None
    assert result.first_rollback.at == START + timedelta(minutes=25)
    assert result.verdict == (
        "this policy would have rolled back 45m earlier than what happened: this policy at "
        "2026-12-01T00:25:00Z; the rollout was rolled back at 2026-12-01T01:10:00Z"
    )
    # the exposure judged: 20 % at --from (set before the window), 0 % from the recorded rollback
    assert result.exposure == [(START, 20.0), (START + timedelta(minutes=70), 0.0)]
    report = as_dict(result, points=100)
    assert report["exposure"] == "decision_log"
    assert [d["action"] for d in report["recorded_decisions"]] == ["rollback"]
    assert report["recorded_rollback"]["time"] == "2026-12-01T01:10:00Z"
    text = "\n".join(render_text(result, points=100))
    assert "recorded decisions (the exposure judged, from the decision log):" in text
    assert "45m earlier than what happened" in text


def test_a_rollout_stopped_by_a_human_before_this_policy_would_have_acted() -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    incident = START + timedelta(minutes=62)
    errors = RangeAnswer((Series({}, {to_ms(t): 0.3 if t >= incident else 0.01 for t in times}),))
    recorded = Recorded.of("cache", history(START + timedelta(minutes=40), by="stop", actor="on-call"))
    result = replay(policy, times, _answers(policy, times, errors), {}, recorded)
    assert result.first_rollback is None  # nobody was exposed any more when the incident began
    assert result.verdict == (
        "this policy would not have rolled back before the rollout was stopped by on-call at "
        "2026-12-01T00:40:00Z (it judges the recorded exposure, which ended there)"
    )


def test_a_rollout_never_taken_down_and_a_quiet_window() -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=1), policy.spec.interval_seconds)
    failing = _answers(policy, times, constant(times, 0.3))
    result = replay(policy, times, failing, {}, Recorded.of("cache", history(None)))
    assert result.first_rollback is not None
    assert result.first_rollback.at == START
    assert result.verdict == (
        "this policy would have rolled back at 2026-12-01T00:00:00Z; the recorded rollout was not taken down"
    )
    quiet = replay(
        policy, times, _answers(policy, times, constant(times, 0.01)), {}, Recorded.of("cache", history(None))
    )
    assert quiet.verdict == "neither this policy nor the recorded rollout rolled back in the window"
    assert verdict(START, Recorded.of("cache", history(START)).moves[-1]).startswith(
        "this policy would have rolled back at the same time"
    )


def test_statistical_counts_reach_back_to_from_at_most_and_the_report_says_so() -> None:
    policy = load(STATISTICAL)
    times = evaluation_times(START, START + timedelta(hours=1), policy.spec.interval_seconds)
    recorded = Recorded.of("cache", history(None))  # exposed since START - 1h
    result = replay(policy, times, answers_for(policy, times, healthy()), {}, recorded)
    (errors,) = [c for c in result.evaluations[-1].checks if c.name == "errors"]
    # the 12 intervals of the window and the one ending at --from: not the hour before it
    assert errors.samples == 13 * 1000
    assert result.notes == [
        "the recorded exposure began at 2026-11-30T23:00:00Z, before --from: the statistical checks "
        "count from --from (give --from 2026-11-30T23:00:00Z to count from the exposure's start)"
    ]
    assert result.notes[0] in "\n".join(render_text(result, points=1))
    assert as_dict(result, points=1)["notes"] == result.notes


def test_the_page_charts_the_recorded_exposure_and_marks_both_rollbacks() -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    incident = START + timedelta(minutes=22)
    errors = RangeAnswer((Series({}, {to_ms(t): 0.3 if t >= incident else 0.01 for t in times}),))
    recorded = Recorded.of("cache", history(START + timedelta(minutes=70), by="stop", actor="<on-call>"))
    result = replay(policy, times, _answers(policy, times, errors), {}, recorded)
    page = render_html(START, times[-1], [PolicySet("--policies", "p", [result])])
    assert "recorded exposure" in page
    assert "simulated exposure" not in page
    assert "Recorded decisions (the exposure judged, from the decision log)" in page
    assert "recorded stop by &lt;on-call&gt;" in page
    assert "<on-call>" not in page
    assert '<li class="verdict">this policy would have rolled back 45m earlier than what happened' in page
    for chart in svgs(page):
        assert markers(chart) == ["2026-12-01T00:25:00Z", "2026-12-01T01:10:00Z"]
