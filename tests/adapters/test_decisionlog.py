"""The decision log (controller.adapters.decisionlog): append and read back, torn lines, the newest
record per flag, follow. The records themselves, built from decisions and rendered for people, are in
tests/core/test_records.py."""

from __future__ import annotations

import errno
import json
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.decisionlog import DecisionLog, follow, last_by_flag, read_records
from controller.core.errors import WriteError
from controller.core.records import Record
from tests.support.waiting import wait_for

TAIL_CHUNK = 64 * 1024  # how much last_by_flag reads at a time, backwards from the end


def rec(flag: str, n: int, **extra: Any) -> Record:
    return {"flag": flag, "n": n, **extra}


def line(record: Record) -> bytes:
    return json.dumps(record).encode() + b"\n"


class Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


# append and read_records -----------------------------------------------------------------------


def test_appended_records_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    first = [rec("a", 1), rec("b", 2, reason="café ≤ 250 ms")]
    second = [rec("a", 3)]

    log.append(first)
    log.append(second)
    log.append([])

    warnings = Warnings()
    assert list(read_records(path, warn=warnings)) == first + second
    assert warnings.messages == []
    assert path.read_bytes().count(b"\n") == 3
    assert path.read_bytes().endswith(b"\n")


def test_appending_nothing_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"

    DecisionLog(path).append([])

    assert not path.exists()


def test_reading_a_missing_log_gives_no_records(tmp_path: Path) -> None:
    assert list(read_records(tmp_path / "absent.jsonl")) == []


def test_an_append_that_cannot_write_raises_write_error(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "missing-directory" / "decisions.jsonl")

    with pytest.raises(WriteError, match="missing-directory"):
        log.append([rec("a", 1)])


def test_an_append_that_fails_midway_leaves_the_log_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk part-way through a cycle's records: the caller is told the append failed, so none
    of it may stay (a retry would duplicate the records that made it, a torn one would stay torn)."""
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    log.append([rec("a", 1)])
    before = path.read_bytes()
    real_write = os.write
    calls: list[int] = []

    def half_then_full(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])  # a short write, as at the disk's end
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("controller.adapters.decisionlog.os.write", half_then_full)
    with pytest.raises(WriteError, match="No space left on device"):
        log.append([rec("b", n) for n in range(50)])
    monkeypatch.undo()
    assert len(calls) == 2
    assert path.read_bytes() == before
    log.append([rec("c", 1)])
    warnings: list[str] = []
    assert [r["flag"] for r in read_records(path, warnings.append)] == ["a", "c"]
    assert warnings == []


def test_an_append_whose_fsync_fails_leaves_the_log_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    log.append([rec("a", 1)])
    before = path.read_bytes()
    failed: list[int] = []

    def fsync_fails(fd: int) -> None:
        if not failed:
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("controller.adapters.decisionlog.os.fsync", fsync_fails)
    with pytest.raises(WriteError, match="Input/output error"):
        log.append([rec("b", 1)])
    assert path.read_bytes() == before


def test_a_large_append_is_written_whole_through_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "decisions.jsonl"
    real_write = os.write

    def at_most_100_bytes(fd: int, data: Any) -> int:
        return real_write(fd, bytes(data)[:100])

    monkeypatch.setattr("controller.adapters.decisionlog.os.write", at_most_100_bytes)
    DecisionLog(path).append([rec("a", n, text="x" * 300) for n in range(500)])
    monkeypatch.undo()
    assert [r["n"] for r in read_records(path)] == list(range(500))


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    log.append([rec("a", 1), rec("a", 2)])
    with path.open("ab") as handle:  # a crash in the middle of the next append
        handle.write(b'{"flag": "a", "n": 3, "reason": "guardr')

    warnings = Warnings()
    assert list(read_records(path, warn=warnings)) == [rec("a", 1), rec("a", 2)]
    assert len(warnings.messages) == 1
    where, _, what = warnings.messages[0].partition(f"{path}:3:")
    assert where == ""
    assert "torn" in what


def test_the_append_after_a_torn_line_starts_on_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    log.append([rec("a", 1), rec("a", 2)])
    with path.open("ab") as handle:
        handle.write(b'{"flag": "a", "n": 3, "reason": "guardr')

    log.append([rec("a", 4)])

    warnings = Warnings()
    assert list(read_records(path, warn=warnings)) == [rec("a", 1), rec("a", 2), rec("a", 4)]
    assert len(warnings.messages) == 1  # the torn fragment, now a complete but unreadable line
    assert warnings.messages[0].startswith(f"{path}:3:")
    assert "torn" not in warnings.messages[0].removeprefix(str(path))
    lines = path.read_bytes().split(b"\n")
    assert lines[-2] == json.dumps(rec("a", 4)).encode()
    assert lines[-1] == b""


def test_a_torn_line_of_broken_utf8_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(line(rec("a", 1)) + '{"flag": "a", "reason": "café'.encode()[:-1])

    warnings = Warnings()
    assert list(read_records(path, warn=warnings)) == [rec("a", 1)]
    assert len(warnings.messages) == 1
    assert "torn" in warnings.messages[0].removeprefix(f"{path}:2:")


def test_blank_and_garbage_lines_in_the_middle_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(
        line(rec("a", 1))
        + b"\n"
        + b"   \n"
        + b"this is not json\n"
        + b"[1, 2, 3]\n"
        + line(rec("b", 2))
        + b"\n"
        + line(rec("a", 3))
    )

    warnings = Warnings()
    assert list(read_records(path, warn=warnings)) == [rec("a", 1), rec("b", 2), rec("a", 3)]
    assert len(warnings.messages) == 2
    assert f"{path}:4:" in warnings.messages[0]
    assert f"{path}:5:" in warnings.messages[1]
    assert not any("torn" in m.removeprefix(str(path)) for m in warnings.messages)


def test_read_records_without_a_warn_callback_still_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(line(rec("a", 1)) + b"garbage\n" + line(rec("a", 2)) + b'{"torn')

    assert list(read_records(path)) == [rec("a", 1), rec("a", 2)]


# last_by_flag ----------------------------------------------------------------------------------


def newest_by_flag(path: Path) -> dict[str, Record]:
    """The obvious, slow answer: read everything forwards."""
    newest: dict[str, Record] = {}
    for record in read_records(path):
        newest[record["flag"]] = record
    return newest


def test_last_by_flag_of_a_small_log(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    DecisionLog(path).append([rec("a", 1), rec("b", 2), rec("a", 3), rec("c", 4), rec("b", 5)])

    assert last_by_flag(path) == {"a": rec("a", 3), "b": rec("b", 5), "c": rec("c", 4)}
    assert last_by_flag(path, ["b"])["b"] == rec("b", 5)


def test_last_by_flag_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert last_by_flag(tmp_path / "absent.jsonl") == {}
    assert last_by_flag(tmp_path / "absent.jsonl", ["a"]) == {}


def test_last_by_flag_skips_a_torn_last_line_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(
        line(rec("a", 1)) + b"garbage\n" + line(rec("b", 2)) + b"\n" + line(rec("a", 3)) + b'{"flag": "a", "n'
    )

    assert last_by_flag(path) == {"a": rec("a", 3), "b": rec("b", 2)}
    assert last_by_flag(path, ["a", "b"]) == {"a": rec("a", 3), "b": rec("b", 2)}


@pytest.fixture(params=["ragged", "aligned"])
def long_log(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """Several tail chunks of records for flags a, b, c; flag ``early`` only in the first record.

    ``ragged`` lines vary in length so chunk boundaries fall inside lines; ``aligned`` lines are
    exactly 64 bytes so that every chunk boundary falls exactly at the start of a line.
    """
    path = tmp_path / "decisions.jsonl"
    records = [rec("early", 0)]
    for n in range(1, 5000):
        flag = "abc"[n % 3]
        if request.param == "ragged":
            records.append(rec(flag, n, pad="x" * (n % 97)))
        else:
            records.append(rec(flag, n, pad=""))
    if request.param == "aligned":
        records = [fixed_width(r, 64) for r in records]
    DecisionLog(path).append(records)
    size = path.stat().st_size
    assert size > 4 * TAIL_CHUNK
    if request.param == "aligned":
        assert size % 64 == 0
        assert TAIL_CHUNK % 64 == 0
    return path


def fixed_width(record: Record, width: int) -> Record:
    """Pad a record so that its JSON line (with newline) is exactly ``width`` bytes."""
    record = {**record, "pad": ""}
    short = width - len(line(record))
    assert short >= 0
    return {**record, "pad": "x" * short}


def test_last_by_flag_across_many_tail_chunks(long_log: Path) -> None:
    expected = newest_by_flag(long_log)
    assert set(expected) == {"early", "a", "b", "c"}

    assert last_by_flag(long_log) == expected
    assert last_by_flag(long_log)["early"]["n"] == 0


@pytest.mark.parametrize(
    "wanted",
    [["a"], ["c", "b"], ["early"], ["a", "early"], ["never-logged", "b"], []],
)
def test_last_by_flag_for_some_flags_is_still_correct(long_log: Path, wanted: list[str]) -> None:
    expected = newest_by_flag(long_log)

    found = last_by_flag(long_log, wanted)

    for flag in wanted:
        assert found.get(flag) == expected.get(flag)


def test_last_by_flag_with_one_line_longer_than_a_chunk(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    big = rec("a", 1, reason="y" * (3 * TAIL_CHUNK))
    DecisionLog(path).append([rec("b", 0), big, rec("c", 2)])

    assert last_by_flag(path) == {"a": big, "b": rec("b", 0), "c": rec("c", 2)}


# follow ----------------------------------------------------------------------------------------


@dataclass
class Follower:
    """``follow`` running in a thread, handing records over through a queue."""

    path: Path
    records: queue.Queue[Record] = field(default_factory=queue.Queue)
    warnings: Warnings = field(default_factory=Warnings)
    stopping: threading.Event = field(default_factory=threading.Event)
    polls: int = 0
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def stop_requested(self) -> bool:
        self.polls += 1  # follow asks before every look at the file
        return self.stopping.is_set()

    def run(self) -> None:
        try:
            for record in follow(self.path, poll_seconds=0.01, stop=self.stop_requested, warn=self.warnings):
                self.records.put(record)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.errors.append(exc)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def next(self) -> Record:
        try:
            return self.records.get(timeout=10)
        except queue.Empty:
            raise AssertionError(f"follow yielded nothing within 10s (errors: {self.errors})") from None

    def settle(self) -> None:
        """Wait until follow has looked at the file at least once after this call."""
        seen = self.polls
        wait_for(lambda: self.polls >= seen + 2, timeout_seconds=10, interval_seconds=0.005, what="a poll")

    def finish(self) -> None:
        self.stopping.set()
        assert self.thread is not None
        self.thread.join(10)
        assert not self.thread.is_alive(), "follow did not stop when stop() returned True"
        assert self.errors == []


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Follower]:
    following = Follower(tmp_path / "decisions.jsonl")
    try:
        yield following
    finally:
        following.stopping.set()
        if following.thread is not None:
            following.thread.join(10)


def test_follow_yields_existing_then_appended_records_in_order(follower: Follower) -> None:
    log = DecisionLog(follower.path)
    log.append([rec("a", 1), rec("b", 2)])
    follower.start()

    assert follower.next() == rec("a", 1)
    assert follower.next() == rec("b", 2)

    log.append([rec("a", 3)])
    log.append([rec("c", 4), rec("a", 5)])

    assert [follower.next() for _ in range(3)] == [rec("a", 3), rec("c", 4), rec("a", 5)]
    follower.settle()
    assert follower.records.empty()
    follower.finish()


def test_follow_waits_for_a_file_that_does_not_exist_yet(follower: Follower) -> None:
    follower.start()
    follower.settle()
    assert follower.records.empty()

    DecisionLog(follower.path).append([rec("a", 1)])

    assert follower.next() == rec("a", 1)
    follower.finish()


def test_follow_does_not_yield_a_partial_line_until_its_newline(follower: Follower) -> None:
    DecisionLog(follower.path).append([rec("a", 1)])
    follower.start()
    assert follower.next() == rec("a", 1)
    whole = line(rec("a", 2, reason="all checks pass"))

    with follower.path.open("ab") as handle:
        handle.write(whole[:20])
    follower.settle()
    assert follower.records.empty()

    with follower.path.open("ab") as handle:
        handle.write(whole[20:-1])
    follower.settle()
    assert follower.records.empty()

    with follower.path.open("ab") as handle:
        handle.write(b"\n")
    assert follower.next() == rec("a", 2, reason="all checks pass")
    follower.finish()
    assert follower.warnings.messages == []


def test_follow_starts_again_when_the_log_is_truncated(follower: Follower) -> None:
    log = DecisionLog(follower.path)
    log.append([rec("a", 1), rec("a", 2)])
    follower.start()
    assert [follower.next(), follower.next()] == [rec("a", 1), rec("a", 2)]

    follower.path.write_bytes(b"")
    follower.settle()
    log.append([rec("b", 3)])

    assert follower.next() == rec("b", 3)
    follower.finish()


def test_follow_skips_unreadable_lines_with_a_warning(follower: Follower) -> None:
    follower.path.write_bytes(line(rec("a", 1)) + b"\n" + b"garbage\n" + line(rec("a", 2)))
    follower.start()

    assert [follower.next(), follower.next()] == [rec("a", 1), rec("a", 2)]
    follower.finish()
    assert len(follower.warnings.messages) == 1


def test_follow_stops_when_asked(follower: Follower) -> None:
    DecisionLog(follower.path).append([rec("a", 1)])
    follower.start()
    assert follower.next() == rec("a", 1)

    follower.finish()
    DecisionLog(follower.path).append([rec("a", 2)])

    assert follower.records.empty()


def test_follow_checks_stop_before_reading() -> None:
    calls: list[int] = []

    def stop_now() -> bool:
        calls.append(1)
        return True

    assert list(follow(Path("/nonexistent/decisions.jsonl"), poll_seconds=0.01, stop=stop_now)) == []
    assert calls == [1]


def test_follow_skips_a_record_of_wrong_types_with_a_warning_naming_file_and_line(
    follower: Follower,
) -> None:
    log = DecisionLog(follower.path)
    log.append([rec("a", 1), rec("a", 2, to_percent="abc"), rec("a", 3)])
    follower.start()
    assert [follower.next() for _ in range(2)] == [rec("a", 1), rec("a", 3)]
    log.append([rec("a", 4, checks=3)])
    log.append([rec("a", 5)])
    assert follower.next() == rec("a", 5)
    follower.finish()
    assert follower.warnings.messages == [
        f"{follower.path}:2: skipped a record: 'to_percent' is 'abc', not a number",
        f"{follower.path}:4: skipped a record: 'checks' is 3, not a list of checks",
    ]


def test_read_records_skips_a_record_of_wrong_types_with_a_warning_naming_file_and_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "decisions.jsonl"
    DecisionLog(path).append([rec("a", 1), rec("a", 2, time=5), rec("a", 3)])
    warnings = Warnings()
    assert list(read_records(path, warn=warnings)) == [rec("a", 1), rec("a", 3)]
    assert warnings.messages == [f"{path}:2: skipped a record: 'time' is 5, not an ISO time with a timezone"]
