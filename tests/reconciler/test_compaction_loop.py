"""The loop compacts runs of identical holds (``heartbeat_seconds``): the decision log gets the run's
first record in full and a heartbeat at most every ``heartbeat_seconds``; a change (a guardrail
failing after a long hold) is a full record; the metrics follow every cycle; a restarted controller
writes a full record first, and its crash recovery takes a heartbeat for the flag's record."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from controller import cli
from controller.adapters.decisionlog import read_records
from controller.adapters.telemetry import Telemetry
from controller.core.queries import Reading
from controller.core.records import Record, record_problem
from controller.reconciler import Reconciler
from tests.support.environment import POLICY, Environment, healthy

HEARTBEAT_SECONDS = 600.0
LONG_HOLD = POLICY.format(name="cache", key="cache").replace("hold: 1m", "hold: 3h")


class Errors:
    """The error ratio the fake Prometheus answers, changed by the test (always under the bound)."""

    def __init__(self) -> None:
        self.ratio = 0.001

    def __call__(self, promql: str) -> Reading:
        if promql.startswith("sum(errors") and 'v="on"' in promql:
            return Reading.of(self.ratio)
        return healthy(promql)


class Recorded(Telemetry):
    """The real metrics, and every record the observer was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Mapping[str, Any]] = []

    def recorded(self, records: Iterable[Mapping[str, Any]]) -> None:
        records = list(records)
        self.seen.extend(records)
        super().recorded(records)


def guardrail_value(telemetry: Telemetry) -> float:
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            if sample.name == "flagroll_guardrail_value" and sample.labels.get("guardrail") == "errors":
                return float(sample.value)
    raise AssertionError("no flagroll_guardrail_value")


def _env(root: Path) -> tuple[Environment, Errors]:
    env = Environment(root)
    env.add_policy("cache", "cache", LONG_HOLD)
    errors = Errors()
    env.metrics.answer = errors
    return env, errors


def _cycles(env: Environment, reconciler: Reconciler, count: int, every: timedelta) -> list[Record]:
    seen: list[Record] = []
    for _ in range(count):
        env.clock.now += every
        seen += asyncio.run(reconciler.cycle()).records
    return seen


def _time(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))


def test_a_long_identical_hold_is_one_full_record_and_spaced_heartbeats(tmp_path: Path) -> None:
    env, errors = _env(tmp_path)
    telemetry = Recorded()
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS, observer=telemetry)
    asyncio.run(reconciler.cycle())  # starts at 1 %
    for n in range(360):  # an hour of 10 s cycles, the hold's text counting down, the value moving
        errors.ratio = 0.001 + n * 0.00001
        env.clock.now += timedelta(seconds=10)
        asyncio.run(reconciler.cycle())
        assert guardrail_value(telemetry) == errors.ratio  # the gauge follows every cycle
    records = list(read_records(env.log))
    full = [r for r in records if "heartbeat" not in r]
    beats = [r for r in records if "heartbeat" in r]
    assert [r["action"] for r in full] == ["advance", "hold"]
    assert len(beats) == 5  # one every 10 minutes of the hour after the first hold
    assert all(record_problem(r) is None for r in records)
    times = [_time(r) for r in (full[-1], *beats)]
    assert all((b - a).total_seconds() >= HEARTBEAT_SECONDS for a, b in itertools.pairwise(times))
    assert [b["heartbeat"]["since"] for b in beats] == [full[1]["time"]] * 5
    assert [b["heartbeat"]["cycles"] for b in beats] == [60, 120, 180, 240, 300]
    assert "query" not in str(beats[-1]["checks"])
    assert len(telemetry.seen) == 361
    assert not any("heartbeat" in r for r in telemetry.seen)

    errors.ratio = 0.5  # a guardrail fails after the long hold: a full rollback record, at once
    env.clock.now += timedelta(seconds=10)
    asyncio.run(reconciler.cycle())
    last = list(read_records(env.log))[-1]
    assert last["action"] == "rollback"
    assert "heartbeat" not in last
    assert any(c["verdict"] == "fail" and c["query"] for c in last["checks"])


def test_a_restarted_controller_writes_a_full_record_first(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    first = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    _cycles(env, first, 100, timedelta(seconds=10))
    assert "heartbeat" in list(read_records(env.log))[-1]
    second = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    written = _cycles(env, second, 1, timedelta(seconds=10))
    assert [("heartbeat" in r, r["action"]) for r in written] == [(False, "hold")]
    assert "recover" not in env.actions()  # a heartbeat is the flag's last record: nothing was lost


def test_a_crash_after_a_move_whose_record_was_lost_is_recovered_behind_heartbeats(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    env.add_policy(
        "cache", "cache", POLICY.format(name="cache", key="cache").replace("hold: 1m", "hold: 30m")
    )
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    _cycles(env, reconciler, 200, timedelta(seconds=10))  # 1 %, heartbeats, then 5 % after 30 minutes
    records = list(read_records(env.log))
    moved = max(i for i, r in enumerate(records) if r["action"] == "advance")
    assert any("heartbeat" in r for r in records[:moved])
    with env.log.open("w") as kept:  # as if the process died before appending the move's record
        kept.writelines(line + "\n" for line in env.log.read_text().splitlines()[:moved])
    written = _cycles(env, env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS), 1, timedelta(seconds=10))
    assert [r["action"] for r in written] == ["recover", "hold"]
    assert written[0]["to_percent"] == 5.0


def test_a_replica_that_stood_by_writes_a_full_record_first(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    _cycles(env, reconciler, 70, timedelta(seconds=10))
    assert "heartbeat" in list(read_records(env.log))[-1]
    reconciler.forget_runs()  # the scheduler's word when another replica leads: it may write meanwhile
    written = _cycles(env, reconciler, 1, timedelta(seconds=10))
    assert [("heartbeat" in r, r["action"]) for r in written] == [(False, "hold")]


class _Breaks:
    """A logger whose next ``decision`` line fails (stdout closed), once armed."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.armed = False

    def info(self, event: str, **fields: Any) -> Any:
        if self.armed and event == "decision":
            self.armed = False
            raise BrokenPipeError("stdout is closed")
        return self.real.info(event, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_hold_whose_recording_was_cut_off_is_written_in_full_at_the_next_cycle(tmp_path: Path) -> None:
    """The run's memory is taken when the records are built: a recording cut off before the append
    must not leave the next cycles believing the new hold (an alert firing, too few samples) is in
    the log, or it would only ever be in a heartbeat."""
    env, _ = _env(tmp_path)
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    _cycles(env, reconciler, 3, timedelta(seconds=10))  # starts, then holds
    recorder = reconciler._committer.recorder  # the seam where records are printed
    breaks = _Breaks(recorder.log)
    recorder.log = breaks
    env.metrics.answer = lambda promql: (
        Reading.of(1.0) if promql.startswith("sum(requests") else healthy(promql)
    )
    breaks.armed = True  # too few samples from now on: a new hold, whose recording fails
    env.clock.now += timedelta(seconds=10)
    with contextlib.suppress(BrokenPipeError):  # the cycle may report it, or raise it
        asyncio.run(reconciler.cycle())
    assert not breaks.armed
    _cycles(env, reconciler, 1, timedelta(seconds=10))
    last = list(read_records(env.log))[-1]
    assert "heartbeat" not in last
    assert last["reason"].startswith("no_data")


def test_a_clean_shutdown_writes_a_heartbeat_counting_the_cycles_compacted_away(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    _cycles(env, reconciler, 100, timedelta(seconds=10))  # starts, holds: heartbeats at 60 cycles
    before = list(read_records(env.log))
    assert before[-1]["heartbeat"]["cycles"] == 60
    closing = reconciler.close()
    after = list(read_records(env.log))
    assert after == [*before, *closing]
    assert len(closing) == 1
    beat = closing[0]
    assert record_problem(beat) is None
    assert beat["heartbeat"] == {"since": before[1]["time"], "cycles": 98}  # every hold after the first
    assert _time(beat) == env.clock.now  # as of the last evaluation
    assert reconciler.close() == []  # nothing more to tell
    assert list(read_records(env.log)) == after
    restarted = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    written = _cycles(env, restarted, 1, timedelta(seconds=10))
    assert [("heartbeat" in r, r["action"]) for r in written] == [(False, "hold")]
    assert "recover" not in env.actions()


def test_a_shutdown_right_after_a_written_record_adds_nothing(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    _cycles(env, reconciler, 62, timedelta(seconds=10))  # the 62nd cycle writes the first heartbeat
    assert list(read_records(env.log))[-1]["heartbeat"]["cycles"] == 60
    assert reconciler.close() == []
    _cycles(env, reconciler, 1, timedelta(seconds=10))
    reconciler.forget_runs()  # another replica leads now: it writes what it sees
    assert reconciler.close() == []


class _Follower:
    def is_leader(self) -> bool:
        return False


def test_a_replica_that_is_not_the_leader_writes_no_closing_heartbeat(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    _cycles(env, reconciler, 10, timedelta(seconds=10))
    reconciler._committer.leader = _Follower()  # lost the Lease after its last cycle
    assert reconciler.close() == []
    assert "heartbeat" not in list(read_records(env.log))[-1]


def test_no_closing_heartbeat_after_a_humans_record_so_a_restart_recovers_nothing(tmp_path: Path) -> None:
    """A human pauses the holding rollout between the last cycle and the shutdown: a heartbeat of the
    hold before the pause, appended after it, would pass for the newest record (status, recovery)."""
    env, _ = _env(tmp_path)
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    env.clock.now = datetime.now(UTC) - timedelta(minutes=30)  # the pause is stamped with the real clock
    _cycles(env, reconciler, 20, timedelta(seconds=10))  # holds, compacted away
    args = [
        "pause",
        "cache",
        "--flags",
        str(env.flags),
        "--decision-log",
        str(env.log),
        "--reason",
        "upgrade",
    ]
    assert cli.main(args) == 0
    assert reconciler.close() == []
    assert list(read_records(env.log))[-1]["action"] == "pause"
    env.clock.now = datetime.now(UTC) + timedelta(minutes=1)
    written = _cycles(env, env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS), 1, timedelta(seconds=1))
    assert [r["action"] for r in written] == ["hold"]  # paused: no `recover`


def test_an_abandoned_cycle_writes_no_closing_heartbeat_and_does_not_wait(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    reconciler = env.reconciler(heartbeat_seconds=HEARTBEAT_SECONDS)
    _cycles(env, reconciler, 10, timedelta(seconds=10))
    committer = reconciler._committer
    committer.lock_timeout_seconds = 0.05
    committer._mutex.acquire()  # as an abandoned commit still under way would hold it
    try:
        reconciler.abandon()
        with capture_logs() as logs:
            assert reconciler.close() == []
    finally:
        committer._mutex.release()
    assert logs == []  # it did not wait for the mutex (waiting, it would warn that it gave up)
