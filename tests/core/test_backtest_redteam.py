"""``flagroll backtest`` broken the way production would: decision logs as ``flagroll run`` writes
them (every record through :func:`~controller.core.records.to_record`), sequences of rollbacks,
resumes and dry runs, and the per-interval counts' edges."""

from __future__ import annotations

import json
import math
import os
import tracemalloc
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import respx

from controller.adapters.decisionlog import read_records
from controller.adapters.policyfile import load_text
from controller.cli import backtest as backtest_cli
from controller.cli import main
from controller.cli.backtest import Request, _recorded
from controller.core.backtest import evaluation_times, replay, step_ms
from controller.core.backtestcounts import Counts, count_queries
from controller.core.backtesthtml import rollbacks
from controller.core.backtestlog import Recorded, recorded_flags
from controller.core.backtestranges import Failure, RangeAnswer, Series, readings_at, to_ms
from controller.core.commands import resume
from controller.core.decision import decide, initial_state, queries_for
from controller.core.errors import WriteError
from controller.core.policy import Policy
from controller.core.queries import BIN_PARTS, Arm, Part, PlannedQuery, ReadingKind, Source, plan
from controller.core.records import Context, Record, to_record
from controller.core.state import Action, RolloutState
from tests.cli.test_backtest_cli import PROM, UNUSED, _range_answer, _run
from tests.core.test_backtest import POLICY, START, _answers, load
from tests.core.test_backtest_counts import POLICY as STATISTICAL
from tests.core.test_backtest_counts import answers_for, healthy
from tests.core.test_backtest_html import markers, svgs


def _plain(
    queries: list[PlannedQuery], counts: Counts, answers: Mapping[str, RangeAnswer], index: int, at_ms: int
) -> dict[Any, Any]:
    return {**readings_at(queries, answers, at_ms), **counts.readings(queries, index)}


def controller_log(
    policy: Policy,
    times: list[datetime],
    answers: Mapping[str, RangeAnswer],
    *,
    dry_run: bool = False,
    resumed_at: datetime | None = None,
) -> list[Record]:
    """The records the controller writes running ``policy`` at ``times`` on ``answers`` (each record
    stamped with its cycle's time, as ``flagroll run`` stamps them); with ``resumed_at``, a human
    resumes the rolled-back rollout then."""
    counts = Counts(policy, [to_ms(t) for t in times], step_ms(policy), answers)
    stored: RolloutState | None = None
    records: list[Record] = []
    for index, at in enumerate(times):
        if resumed_at is not None and at == resumed_at and stored is not None:
            human = resume(stored, "fixed", at)
            records.append(to_record(human, Context(policy.flag_key, actor="human:on-call"), at))
            stored = human.after
        queries = queries_for(policy, stored or initial_state(policy, at), at)
        readings = _plain(queries, counts, answers, index, to_ms(at))
        decision = decide(policy, stored, queries, readings, at)
        records.append(to_record(decision, Context(policy.flag_key, policy=policy, dry_run=dry_run), at))
        stored = decision.after
    return records


def incident(times: list[datetime], begins: datetime, ends: datetime | None = None) -> RangeAnswer:
    bad = {to_ms(t): 0.3 if t >= begins and (ends is None or t < ends) else 0.01 for t in times}
    return RangeAnswer((Series({}, bad),))


def test_the_same_policy_judging_its_own_recorded_rollback_rolls_back_at_the_same_time() -> None:
    """A record is stamped with its cycle's time: the decision it records was taken on the exposure
    before it. Judging the controller's own log with its own policy on the same readings must say
    "at the same time", not that the policy would never have acted."""
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    answers = _answers(policy, times, incident(times, START + timedelta(minutes=42)))
    log = controller_log(policy, times, answers)
    assert [r["action"] for r in log if r["action"] != "hold"] == [
        "advance",
        "advance",
        "complete",
        "rollback",
    ]
    result = replay(policy, times, answers, {}, Recorded.of("cache", log))
    assert result.first_rollback is not None
    assert result.first_rollback.at == START + timedelta(minutes=45)
    assert result.verdict is not None
    assert result.verdict.startswith("this policy would have rolled back at the same time"), result.verdict


def test_a_dry_run_log_is_no_exposure() -> None:
    """``flagroll run --dry-run`` writes nothing to any flag: its records (``dry_run: true``) say what
    it would have done. Judged as if they had exposed users, a dry run reads as a real rollout."""
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    answers = _answers(policy, times, incident(times, START + timedelta(minutes=42)))
    dry = controller_log(policy, times, answers, dry_run=True)
    assert all(r["dry_run"] for r in dry)
    recorded = Recorded.of("cache", dry)
    assert recorded.moves == ()


def test_a_long_log_costs_the_memory_of_its_moves_not_of_its_records(tmp_path: Path) -> None:
    """A decision log is mostly holds (one a cycle per flag, for months): reading one for a backtest
    keeps the selected flags' moves, never every record of them."""
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(days=30), policy.spec.interval_seconds)
    answers = _answers(policy, times[:30], incident(times[:30], START + timedelta(days=99)))
    head = controller_log(policy, times[:30], answers)  # a ramp, then holds
    hold = next(r for r in reversed(head) if r["action"] == "hold")
    path = tmp_path / "decisions.jsonl"
    with path.open("w") as out:
        for r in head:
            out.write(json.dumps(r) + "\n")
        for at in times[30:]:
            out.write(json.dumps(hold | {"time": at.isoformat().replace("+00:00", "Z")}) + "\n")
    assert len(times) > 8000
    tracemalloc.start()
    try:
        found = recorded_flags(["cache"], read_records(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [m.action for m in found["cache"].moves] == [Action.ADVANCE, Action.ADVANCE, Action.COMPLETE]
    assert peak < 1_000_000, peak  # the records themselves: about 20 MB


STRICT = POLICY.replace("max: 0.05", "max: 0.03")


def test_a_rollout_rolled_back_then_resumed_is_judged_exposure_by_exposure() -> None:
    """The controller (max 0.03) rolls back a small regression (4 % errors); on-call fixes it and
    resumes; a bigger one later is rolled back again. A policy with max 0.05 lets the first
    exposure run and rolls the second back when the controller did: not "1h10m later"."""
    strict, loose = load(STRICT), load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), strict.spec.interval_seconds)
    bad = {
        to_ms(t): 0.04 if START + timedelta(minutes=20) <= t < START + timedelta(minutes=45) else 0.01
        for t in times
    }
    bad |= {to_ms(t): 0.3 for t in times if t >= START + timedelta(minutes=90)}
    errors = RangeAnswer((Series({}, bad),))
    log = controller_log(
        strict, times, _answers(strict, times, errors), resumed_at=START + timedelta(minutes=50)
    )
    downs = [r["time"] for r in log if r["action"] == "rollback"]
    assert downs == ["2026-12-01T00:20:00.000Z", "2026-12-01T01:30:00.000Z"]
    result = replay(loose, times, _answers(loose, times, errors), {}, Recorded.of("cache", log))
    assert result.first_rollback is not None
    assert result.first_rollback.at == START + timedelta(minutes=90)
    assert result.recorded_down is not None
    assert result.recorded_down.at == START + timedelta(minutes=90)
    assert result.verdict == (
        "this policy would not have rolled back before the rollout was rolled back by controller at "
        "2026-12-01T00:20:00Z; the rollout was exposed again from 2026-12-01T00:50:00Z, and then: this "
        "policy would have rolled back at the same time: the rollout was rolled back by controller at 2026-12-01T01:30:00Z"
    )
    assert [m.label for m in rollbacks(result)] == [
        "would-be rollback",
        *["recorded rollback by controller"] * 2,
    ]
    quiet = replay(loose, times[:-13], _answers(loose, times, errors), {}, Recorded.of("cache", log))
    assert quiet.first_rollback is None
    assert quiet.verdict == (
        "this policy would not have rolled back before the rollout was rolled back by controller at "
        "2026-12-01T00:20:00Z; the rollout was exposed again from 2026-12-01T00:50:00Z, and this policy "
        "would not have rolled that exposure back in the window either"
    )


def test_a_dry_run_only_log_is_named_as_such_and_its_policy_not_replayed(tmp_path: Path) -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=1), policy.spec.interval_seconds)
    answers = _answers(policy, times, incident(times, START + timedelta(days=1)))
    path = tmp_path / "decisions.jsonl"
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in controller_log(policy, times, answers, dry_run=True))
    )
    request = Request(tmp_path, "http://prometheus", START, times[-1], decision_log=path)
    problems: list[str] = []
    loaded = load_text(POLICY, "policy.yaml").policies
    found = _recorded(request, loaded, problems)
    assert found is not None
    assert found["cache"].moves == ()
    assert problems == [
        f"--decision-log {path} holds no decision of flag 'cache' (only 3 of a dry run, which exposed "
        "nobody): its exposure is unknown, so its policy is not replayed"
    ]


def test_a_failed_chunk_under_a_widened_bin_makes_the_sums_an_error() -> None:
    """A window of 1441 intervals gets bins two intervals wide: 721 of them reach one interval further
    back than the window. A failed chunk there is inside the sums, so they are an error, not a
    value with that interval silently counted as nothing."""
    policy = load(STATISTICAL.replace("interval: 5m", "interval: 30s").replace("hold: 10m", "hold: 1m"))
    times = [START + timedelta(seconds=30 * i) for i in range(1442)]
    answers = answers_for(policy, times, healthy())
    total = count_queries(policy, 30_000)[(Source.GUARDRAIL, "errors", Arm.TREATMENT, Part.TOTAL)]
    answers[total] = RangeAnswer(
        (Series({}, {to_ms(t): 1000.0 for t in times[1:]}),),
        (Failure(to_ms(times[0]), to_ms(times[0]), "HTTP 503: overloaded"),),
    )
    counts = Counts(policy, [to_ms(t) for t in times], 30_000, answers)
    window = 30 * 1441
    planned = [
        q
        for q in plan(policy, with_checkpoint=False, window_seconds=window)
        if q.key.source is Source.GUARDRAIL and q.key.arm is Arm.TREATMENT
    ]
    readings = counts.readings(planned, len(times) - 1)
    count = next(r for q, r in readings.items() if q.part is Part.TOTAL)
    assert count.kind is ReadingKind.VALUE  # the window itself is after the failure
    for q in planned:
        if q.key.part in BIN_PARTS:
            assert readings[q.key].kind is ReadingKind.ERROR, q.key.part


def test_an_interval_of_no_whole_seconds_gets_bins_one_interval_wide() -> None:
    """The controller's bins are the interval rounded up to a whole second (91 s at 90.5 s): the
    replay's bins, grouped from whole intervals, are one interval wide, not two."""
    policy = load(STATISTICAL.replace("interval: 5m", "interval: 90500ms"))
    times = [START + timedelta(milliseconds=90_500 * i) for i in range(40)]
    bad = [float(i % 7) for i in range(len(times))]
    answers = answers_for(policy, times, healthy())
    events = count_queries(policy, 90_500)[(Source.GUARDRAIL, "errors", Arm.TREATMENT, Part.EVENTS)]
    answers[events] = RangeAnswer((Series({}, {to_ms(t): b for t, b in zip(times, bad, strict=True)}),))
    counts = Counts(policy, [to_ms(t) for t in times], 90_500, answers)
    window = math.ceil(90.5 * 20)
    planned = [
        q
        for q in plan(policy, with_checkpoint=False, window_seconds=window)
        if q.key.part in BIN_PARTS and q.key.source is Source.GUARDRAIL and q.key.arm is Arm.TREATMENT
    ]
    readings = {q.key.part: counts.readings([q], len(times) - 1)[q.key].value for q in planned}
    assert readings[Part.BINS] == 20  # 20 bins of one interval, as the controller's 1810 s in 91 s bins
    assert readings[Part.BIN_SQUARES] == pytest.approx(sum(b * b / 1000 for b in bad[-20:]))


def test_a_page_that_cannot_be_written_keeps_the_report_and_the_previous_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay ran (minutes of queries): a page that cannot be written (a full disk, a read-only
    directory) is a problem like any other, named, exit 1; the report is printed as without
    ``--html``, and the previous page is kept whole."""
    (tmp_path / "p.yaml").write_text(POLICY)
    page = tmp_path / "page.html"
    page.write_text("the previous page")

    def refused(path: Path, text: str) -> None:
        raise WriteError(f"cannot write {path}: cannot create a file in {path.parent}: Read-only file system")

    monkeypatch.setattr(backtest_cli, "atomic_write", refused)
    code, out = _run(tmp_path, "--json", "--html", str(page), capsys=capsys)
    assert code == 1
    report = json.loads(out)
    assert report["policies"][0]["first_rollback"] == "2026-12-01T01:05:00Z"
    assert report["problems"] == [
        f"--html: cannot write {page}: cannot create a file in {tmp_path}: Read-only file system"
    ]
    assert page.read_text() == "the previous page"


def test_a_page_into_a_directory_that_cannot_be_written_is_refused_before_any_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    args = ["backtest", "--policies", str(tmp_path), "--prometheus", UNUSED, "--from", "1d"]
    assert main([*args, "--html", str(tmp_path / "page.html")]) == 2
    assert f"--html {tmp_path / 'page.html'}: cannot write in {tmp_path}" in capsys.readouterr().err


def test_a_window_of_one_evaluation_gets_a_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--to`` less than an interval after ``--from``: one evaluation, whose charts span one interval
    (a chart of no width would end the run with a traceback, the report unprinted)."""
    (tmp_path / "p.yaml").write_text(POLICY)
    page = tmp_path / "page.html"
    with respx.mock:
        respx.post(f"{PROM}/api/v1/query_range").mock(side_effect=_range_answer)
        code = main(
            [
                "backtest",
                *("--policies", str(tmp_path / "p.yaml"), "--prometheus", PROM),
                *("--from", "2026-12-01T00:00:00Z", "--to", "2026-12-01T00:01:00Z", "--html", str(page)),
            ]
        )
    assert code == 0
    assert "policy cache (flag cache): 1 evaluations" in capsys.readouterr().out
    charts = svgs(page.read_text(encoding="utf-8"))
    assert len(charts) == 2


def test_a_rollout_taken_down_before_the_window_is_said_to_expose_nobody_in_it() -> None:
    """Rolled back the day before ``--from``: "neither rolled back" would read as a rollout this
    policy watched and let run; nobody was exposed in the window."""
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=1), policy.spec.interval_seconds)
    before = [t - timedelta(days=1) for t in times]
    answers = _answers(policy, before + times, incident(before + times, before[2]))
    records = controller_log(policy, before, answers)
    assert records[-1]["status"] == "rolled_back"
    result = replay(policy, times, answers, {}, Recorded.of("cache", records))
    assert result.first_rollback is None
    assert result.verdict == (
        "nobody was exposed in the window, as the decision log recorded it: nothing for this policy to judge"
    )


def test_a_log_that_begins_with_the_flag_already_exposed_says_its_counts_are_short() -> None:
    """A rotated log: its first record of the flag is the advance from 5 to 20 %; the exposure began
    before it, and the statistical checks count from that record, not from the exposure's start
    (the controller's count since exposure began is longer, and more diluted)."""
    policy = load(STATISTICAL)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    answers = answers_for(policy, times, healthy())
    log = [r for r in controller_log(policy, times, answers) if r["action"] != "hold"]
    assert [(r["action"], r["to_percent"]) for r in log] == [
        ("advance", 5),
        ("advance", 20),
        ("complete", 20),
    ]
    rotated = log[1:]
    result = replay(policy, times[5:], answers, {}, Recorded.of("cache", rotated))
    assert result.notes == [
        "the decision log's first record of flag cache (advance at 2026-12-01T00:15:00Z) finds it "
        "already 5 % exposed: its exposure began before the log, so the statistical checks count from "
        "2026-12-01T00:15:00Z at the earliest, a shorter count than the controller's"
    ]
    whole = replay(policy, times[5:], answers, {}, Recorded.of("cache", log))
    assert not any("before the log" in n for n in whole.notes)


def test_a_policy_not_replayed_for_want_of_records_asks_prometheus_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    log = tmp_path / "decisions.jsonl"
    log.write_text(
        json.dumps(
            {
                "time": "2026-12-01T00:00:00Z",
                "flag": "other",
                "action": "advance",
                "from_percent": 0,
                "to_percent": 5,
                "status": "progressing",
            }
        )
        + "\n"
    )
    with respx.mock:
        route = respx.post(f"{PROM}/api/v1/query_range").mock(side_effect=_range_answer)
        code = main(
            [
                "backtest",
                *("--policies", str(tmp_path / "p.yaml"), "--prometheus", PROM, "--decision-log", str(log)),
                *("--from", "2026-12-01T00:00:00Z", "--to", "2026-12-01T02:00:00Z"),
            ]
        )
    assert code == 1
    assert "holds no decision of flag 'cache'" in capsys.readouterr().err
    assert route.call_count == 0


def test_a_stop_after_the_last_evaluation_but_before_to_is_in_the_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--to`` 01:04 at a 5m interval: the last evaluation is at 01:00, and on-call stopped the rollout
    at 01:02, inside the window: it was taken down, and the verdict says when."""
    (tmp_path / "p.yaml").write_text(POLICY)
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    answers = _answers(policy, times, incident(times, START + timedelta(days=1)))
    records = [r for r in controller_log(policy, times[:3], answers) if r["action"] != "hold"]
    stop = records[-1] | {
        "time": "2026-12-01T01:02:00Z",
        "action": "stop",
        "to_percent": 0.0,
        "status": "stopped",
        "actor": "human:on-call",
    }
    log = tmp_path / "decisions.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [*records, stop]))
    with respx.mock:
        respx.post(f"{PROM}/api/v1/query_range").mock(side_effect=_range_answer)
        code = main(
            [
                "backtest",
                *("--policies", str(tmp_path / "p.yaml"), "--prometheus", PROM, "--decision-log", str(log)),
                *("--from", "2026-12-01T00:00:00Z", "--to", "2026-12-01T01:04:00Z", "--json"),
                *("--html", str(tmp_path / "page.html")),
            ]
        )
    assert code == 0
    (replayed,) = json.loads(capsys.readouterr().out)["policies"]
    assert replayed["recorded_rollback"] == {
        "time": "2026-12-01T01:02:00Z",
        "action": "stop",
        "actor": "human:on-call",
    }
    assert "was stopped by human:on-call at 2026-12-01T01:02:00Z" in replayed["verdict"]
    for chart in svgs((tmp_path / "page.html").read_text(encoding="utf-8")):
        assert markers(chart) == ["2026-12-01T01:02:00Z"]


def test_a_statistical_policy_judging_its_own_log_rolls_back_at_the_same_time() -> None:
    """The same, through the counts since exposure began: the recorded exposure start, step and
    status (completed: the trailing day) give the counts the controller's decisions saw."""
    policy = load(STATISTICAL)
    times = evaluation_times(START, START + timedelta(hours=6), policy.spec.interval_seconds)
    growth = healthy()
    growth[(Part.EVENTS, Arm.TREATMENT)] = lambda t: 60 if t > START + timedelta(hours=2, minutes=2) else 10
    answers = answers_for(policy, times, growth)
    log = controller_log(policy, times, answers)
    moves = [(r["action"], r["to_percent"]) for r in log if r["action"] != "hold"]
    assert moves == [("advance", 5), ("advance", 20), ("complete", 20), ("rollback", 0)]
    result = replay(policy, times, answers, {}, Recorded.of("cache", log))
    assert result.verdict == (
        "this policy would have rolled back at the same time: the rollout was rolled back by controller "
        "at 2026-12-01T03:30:00Z"
    )


def test_a_torn_last_line_and_a_zoneless_time_are_named_and_the_rest_is_judged(tmp_path: Path) -> None:
    policy = load(POLICY)
    times = evaluation_times(START, START + timedelta(hours=1), policy.spec.interval_seconds)
    answers = _answers(policy, times, incident(times, START + timedelta(days=1)))
    records = [r for r in controller_log(policy, times, answers) if r["action"] != "hold"]
    zoneless = records[0] | {"time": "2026-12-01T00:40:00", "action": "stop", "to_percent": 0}
    path = tmp_path / "decisions.jsonl"
    lines = [json.dumps(r) for r in [*records, zoneless]]
    path.write_text("\n".join(lines) + "\n" + lines[0][:50])
    problems: list[str] = []
    request = Request(tmp_path, "http://prometheus", START, times[-1], decision_log=path)
    found = _recorded(request, load_text(POLICY, "policy.yaml").policies, problems)
    assert found is not None
    assert [m.action for m in found["cache"].moves] == [Action.ADVANCE, Action.ADVANCE, Action.COMPLETE]
    assert problems == [
        f"{path}:4: skipped a record: 'time' is '2026-12-01T00:40:00', not an ISO time with a timezone",
        f"{path}:5: skipped an unreadable record (torn last line: a write was interrupted)",
    ]
