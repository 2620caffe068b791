"""The rotating decision log under load and under crashes: a stateful model of appends, rotations and
crashes between any two steps of a rotation (every record appended is read back exactly once, in
order; no file is past its size by more than one record); ``follow`` across rotations made by a
writer thread while it follows; and two processes appending through rotations, losing nothing.

The model and the follower skip ``os.fsync`` (thousands of appends and rotations would take minutes
on a busy disk): they stop a rotation between its steps, as a process that dies does, and do not
test what a power cut leaves; the two processes fsync as in production."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from controller.adapters.decisionlog import DecisionLog, follow, last_by_flag, read_records
from controller.adapters.logrotation import LogFile, finish_steps, opened, rotation_steps, writer_lock
from controller.core.records import Record
from tests.support.waiting import wait_for

MAX_BYTES = 200
TWO_RECORDS_BYTES = 64  # rec("a", n) is a line of 31 or 32 bytes: two fit, not three
FLAGS = ("a", "b", "c")


def rec(flag: str, n: int, padding: int = 0) -> Record:
    return {"flag": flag, "n": n, "p": "x" * padding}


def _size(file: LogFile) -> tuple[int, int]:
    """Bytes and lines of a file of the log, decompressed."""
    data = b"".join(file.lines())
    return len(data), data.count(b"\n")


class RotatingLog(RuleBasedStateMachine):
    """Appends of small and oversized records, and rotations stopped after any step."""

    def __init__(self) -> None:
        super().__init__()
        self.no_fsync = mock.patch("os.fsync")
        self.no_fsync.start()
        self.root = Path(tempfile.mkdtemp(prefix="flagroll-rotation-"))
        self.path = self.root / "decisions.jsonl"
        self.appended: list[tuple[str, int]] = []
        self.keep = 1
        self.log = DecisionLog(self.path, max_bytes=MAX_BYTES, keep=1)

    @initialize(keep=st.sampled_from([1, 2, 3, 1000]))
    def choose_keep(self, keep: int) -> None:
        self.keep = keep
        self.log = DecisionLog(self.path, max_bytes=MAX_BYTES, keep=keep)

    @rule(
        batch=st.lists(
            st.tuples(st.sampled_from(FLAGS), st.sampled_from([0, 10, 60, 150, 400])), min_size=1, max_size=5
        )
    )
    def append(self, batch: list[tuple[str, int]]) -> None:
        records = [rec(flag, len(self.appended) + i, padding) for i, (flag, padding) in enumerate(batch)]
        self.log.append(records)
        self.appended += [(str(r["flag"]), int(r["n"])) for r in records]

    @precondition(lambda self: self.path.exists() and self.path.stat().st_size > 0)
    @rule(done=st.integers(min_value=0, max_value=12))
    def crash_in_a_rotation(self, done: int) -> None:
        with writer_lock(self.path):
            if finish_steps(self.path):  # an earlier crash: the next writer finishes first, perhaps dying too
                steps = finish_steps(self.path)
            else:
                steps = rotation_steps(self.path, self.keep)
            for step in steps[:done]:
                step.run()

    @invariant()
    def every_record_is_read_back_once_in_order(self) -> None:
        read = [(str(r["flag"]), int(r["n"])) for r in read_records(self.path)]
        if self.keep == 1000:  # nothing was deleted: everything is there
            assert read == self.appended
        else:  # the oldest generations were deleted: what is left is the newest records, all of them
            assert read == self.appended[len(self.appended) - len(read) :]
            if self.appended:
                assert read[-1] == self.appended[-1]
        newest = dict(read)
        assert {flag: r["n"] for flag, r in last_by_flag(self.path).items()} == newest

    @invariant()
    def no_file_is_past_its_size_by_more_than_one_record(self) -> None:
        with opened(self.path) as files:
            assert len(files.generations) <= self.keep
            for file in [*files.generations, *([files.live] if files.live is not None else [])]:
                size_bytes, lines = _size(file)
                assert size_bytes <= MAX_BYTES or lines == 1, (file.path, size_bytes, lines)

    def teardown(self) -> None:
        self.no_fsync.stop()
        shutil.rmtree(self.root, ignore_errors=True)


TestRotatingLog = RotatingLog.TestCase
TestRotatingLog.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


# follow across rotations ------------------------------------------------------------------------


class Follower:
    """``follow`` in a thread, collecting what it yields until told to stop."""

    def __init__(self, path: Path, poll_seconds: float) -> None:
        self.seen: list[Record] = []
        self.warnings: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(path, poll_seconds), name="follower", daemon=True
        )
        self.thread.start()

    def _run(self, path: Path, poll_seconds: float) -> None:
        for record in follow(
            path, poll_seconds=poll_seconds, stop=self.done.is_set, warn=self.warnings.append
        ):
            self.seen.append(record)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def test_follow_yields_every_record_once_across_rotations_made_while_it_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=5 * TWO_RECORDS_BYTES // 2, keep=10_000)
    log.append([rec("a", n) for n in range(3)])  # existing records come first
    total = 600
    follower = Follower(path, poll_seconds=0.02)  # slower than the writer: several rotations per poll

    def write() -> None:
        for n in range(3, total):
            log.append([rec("a", n)])

    writer = threading.Thread(target=write, name="writer")
    writer.start()
    wait_for(lambda: len(follower.seen) >= total, timeout_seconds=30, what=f"{total} records followed")
    writer.join()
    log.append([rec("a", total)])  # one more: nothing shown twice comes before it
    wait_for(lambda: len(follower.seen) > total, timeout_seconds=10, what="the last record")
    follower.stop()
    assert [r["n"] for r in follower.seen] == list(range(total + 1))
    assert follower.warnings == []
    assert len(list(tmp_path.glob("decisions.jsonl.*.gz"))) > 50


def _deadline(seconds: float) -> Callable[[], bool]:
    """A ``stop`` for follow: a record that never comes ends the test instead of hanging it."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


def _take(records: Iterator[Record], count: int) -> list[Any]:
    return [next(records)["n"] for _ in range(count)]


def test_follow_reads_the_generations_rotated_between_two_polls_and_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=TWO_RECORDS_BYTES, keep=3)
    log.append([rec("a", 0), rec("a", 1), rec("a", 2)])  # .1.gz holds 0 1, the live file 2
    records = follow(path, poll_seconds=0.001, stop=_deadline(10))
    assert _take(records, 3) == [0, 1, 2]
    log.append([rec("a", n) for n in range(3, 8)])  # two rotations before the next poll
    assert _take(records, 5) == [3, 4, 5, 6, 7]
    # So many that the file it followed is deleted: every generation left is newer, and read.
    log.append([rec("a", n) for n in range(8, 20)])
    assert _take(records, 8) == list(range(12, 20))
    log.append([rec("a", 20)])
    assert _take(records, 1) == [20]
    records.close()


def test_follow_survives_a_crash_that_left_no_live_file(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=TWO_RECORDS_BYTES, keep=5)
    log.append([rec("a", 0), rec("a", 1)])
    records = follow(path, poll_seconds=0.001, stop=_deadline(10))
    assert _take(records, 2) == [0, 1]
    with writer_lock(path):
        steps = rotation_steps(path, keep=5)
        steps[0].run()  # the live file is .1; the process dies
    log.append([rec("a", 2)])  # finishes the rotation, then starts a new live file
    log.append([rec("a", 3), rec("a", 4), rec("a", 5)])
    assert _take(records, 4) == [2, 3, 4, 5]
    log.append([rec("a", 6)])
    assert _take(records, 1) == [6]
    records.close()


def test_follow_starts_with_every_generation(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=TWO_RECORDS_BYTES // 2, keep=5)  # one record a file
    log.append([rec("a", n) for n in range(4)])
    path.unlink()  # no live file (records 0 to 2 are in generations)
    records = follow(path, poll_seconds=0.001, stop=_deadline(10))
    assert _take(records, 3) == [0, 1, 2]
    log.append([rec("a", 4)])
    assert _take(records, 1) == [4]
    records.close()


# two processes ----------------------------------------------------------------------------------


def _append_many(path: str, flag: str, count: int) -> None:
    log = DecisionLog(Path(path), max_bytes=2000, keep=100_000)
    for n in range(count):
        log.append([rec(flag, n, padding=n % 90)])


def test_two_processes_appending_through_rotations_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    count = 400
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), flag, count)) for flag in ("p", "q")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    warnings: list[str] = []
    records = list(read_records(path, warn=warnings.append))
    assert warnings == []
    for flag in ("p", "q"):
        assert [r["n"] for r in records if r["flag"] == flag] == list(range(count))
    assert len(records) == 2 * count
    assert len(list(tmp_path.glob("decisions.jsonl.*.gz"))) > 20
    assert json.loads(path.read_bytes().splitlines()[-1])["flag"] in {"p", "q"}
