"""Rotation of the decision log (controller.adapters.logrotation, through DecisionLog): the live file
becomes the gzipped generation ``.1.gz`` before an append would take it past its size, the oldest
generations beyond the count are deleted, a crash between any two steps of a rotation loses and
repeats nothing, and every reader (read_records, last_by_flag) reads across the generations, oldest
first. Following across rotations, concurrent writers and the stateful model are in
test_decisionlog_rotation_model.py."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.adapters import logrotation
from controller.adapters.decisionlog import (
    DecisionLog,
    PartialAppendError,
    follow,
    last_by_flag,
    read_records,
)
from controller.adapters.logrotation import rotation_steps, writer_lock
from controller.core.errors import WriteError
from controller.core.records import Record

LINE_BYTES = 40  # every record of these tests, as a line


def rec(n: int, flag: str = "a") -> Record:
    record: Record = {"flag": flag, "n": n}
    padding = LINE_BYTES - len(json.dumps(record)) - len(', "p": ""') - 1
    return {**record, "p": "x" * padding}


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def numbers(records: list[Record]) -> list[Any]:
    return [r["n"] for r in records]


class Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


def test_records_are_all_exactly_line_bytes_long() -> None:
    assert len(json.dumps(rec(7)).encode()) + 1 == LINE_BYTES
    assert len(json.dumps(rec(12345)).encode()) + 1 == LINE_BYTES


def test_an_append_past_the_limit_rotates_first_and_readers_read_every_generation(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=3 * LINE_BYTES, keep=5)
    for n in range(10):
        log.append([rec(n)])

    assert names(tmp_path) == [
        "decisions.jsonl",
        "decisions.jsonl.1.gz",
        "decisions.jsonl.2.gz",
        "decisions.jsonl.3.gz",
        "decisions.jsonl.lock",
    ]
    assert path.stat().st_size == LINE_BYTES  # record 9 alone: 0-2, 3-5, 6-8 are rotated
    with gzip.open(tmp_path / "decisions.jsonl.3.gz") as oldest:
        assert [json.loads(line)["n"] for line in oldest] == [0, 1, 2]
    warnings = Warnings()
    assert numbers(list(read_records(path, warn=warnings))) == list(range(10))
    assert warnings.messages == []


def test_one_append_rotates_as_often_as_its_records_need(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    DecisionLog(path, max_bytes=2 * LINE_BYTES, keep=9).append([rec(n) for n in range(7)])
    assert numbers(list(read_records(path))) == list(range(7))
    assert path.stat().st_size == LINE_BYTES
    assert len([n for n in names(tmp_path) if n.endswith(".gz")]) == 3


def test_the_oldest_generations_beyond_keep_are_deleted(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=LINE_BYTES, keep=2)
    for n in range(6):
        log.append([rec(n)])
    assert [n for n in names(tmp_path) if n.endswith(".gz")] == [
        "decisions.jsonl.1.gz",
        "decisions.jsonl.2.gz",
    ]
    assert numbers(list(read_records(path))) == [3, 4, 5]


def test_a_record_larger_than_the_limit_is_written_alone(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES, keep=5)
    big = {"flag": "a", "n": 1, "reason": "y" * 500}
    log.append([rec(0), big, rec(2)])
    assert [r["n"] for r in read_records(path)] == [0, 1, 2]
    with gzip.open(tmp_path / "decisions.jsonl.1.gz") as newest:
        assert [json.loads(line)["n"] for line in newest] == [1]


def test_max_bytes_zero_never_rotates(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    for n in range(50):
        log.append([rec(n)])
    assert names(tmp_path) == ["decisions.jsonl", "decisions.jsonl.lock"]
    assert path.stat().st_size == 50 * LINE_BYTES


def test_a_log_keeps_at_least_one_generation() -> None:
    with pytest.raises(ValueError, match="keep"):
        DecisionLog(Path("x"), max_bytes=10, keep=0)
    with pytest.raises(ValueError, match="max_bytes"):
        DecisionLog(Path("x"), max_bytes=-1)


def test_a_human_append_never_rotates_and_the_next_rotating_append_does(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    controller = DecisionLog(path, max_bytes=2 * LINE_BYTES)
    controller.append([rec(0), rec(1)])
    DecisionLog(path).append([rec(2)])  # flagroll stop: past the limit by its one record
    assert not (tmp_path / "decisions.jsonl.1.gz").exists()
    controller.append([rec(3)])
    assert numbers(list(read_records(path))) == [0, 1, 2, 3]
    assert path.stat().st_size == LINE_BYTES


# a crash between any two steps ------------------------------------------------------------------


def _steps_of_a_rotation(tmp_path: Path) -> int:
    path = tmp_path / "count" / "decisions.jsonl"
    path.parent.mkdir()
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES, keep=2)
    for n in range(6):
        log.append([rec(n)])
    return len(rotation_steps(path, keep=2))


@pytest.mark.parametrize("done", range(7))
def test_a_crash_after_any_step_of_a_rotation_loses_and_repeats_nothing(tmp_path: Path, done: int) -> None:
    steps_total = _steps_of_a_rotation(tmp_path)  # delete .2.gz, .1.gz to .2.gz, live to .1, compress,
    assert steps_total == 6  # rename the compressed copy into place, delete .1: "done" covers them all
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES, keep=2)
    for n in range(6):  # .2.gz: 0 1, .1.gz: 2 3, live: 4 5
        log.append([rec(n)])
    with writer_lock(path):
        for step in rotation_steps(path, keep=2)[:done]:
            step.run()  # then the process dies
    expected = list(range(6)) if done == 0 else list(range(2, 6))  # the first step deletes the oldest
    warnings = Warnings()
    assert numbers(list(read_records(path, warn=warnings))) == expected
    assert warnings.messages == []
    assert last_by_flag(path)["a"]["n"] == 5

    log.append([rec(6)])  # the next append finishes the rotation (and rotates if it must)
    log.append([rec(7)])
    assert numbers(list(read_records(path)))[-4:] == [4, 5, 6, 7]
    assert numbers(list(read_records(path))) == sorted(set(numbers(list(read_records(path)))))
    assert not any(n.endswith((".tmp", ".1")) for n in names(tmp_path))


def test_a_crash_part_way_through_compressing_leaves_a_temporary_file_nobody_reads(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES)
    log.append([rec(0), rec(1)])
    with writer_lock(path):
        steps = rotation_steps(path, keep=5)
        steps[0].run()  # the live file is .1
    (tmp_path / "decisions.jsonl.1.gz.tmp").write_bytes(gzip.compress(b'{"flag": "a", "n": 0}\n')[:15])
    assert numbers(list(read_records(path))) == [0, 1]
    log.append([rec(2)])
    assert numbers(list(read_records(path))) == [0, 1, 2]
    assert names(tmp_path) == ["decisions.jsonl", "decisions.jsonl.1.gz", "decisions.jsonl.lock"]


def test_a_failure_after_a_rotation_says_how_many_records_are_in(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES)
    real_write = DecisionLog._write
    calls: list[int] = []

    def write_then_fail(self: DecisionLog, lines: list[bytes]) -> None:
        calls.append(len(lines))
        if len(calls) == 2:
            raise WriteError("cannot append: No space left on device")
        real_write(self, lines)

    monkeypatch.setattr(DecisionLog, "_write", write_then_fail)
    with pytest.raises(PartialAppendError) as failed:
        log.append([rec(0), rec(1), rec(2), rec(3)])
    assert failed.value.written == 2
    assert numbers(list(read_records(path))) == [0, 1]


def test_a_failed_rotation_is_a_write_error_and_the_next_append_finishes_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES)
    log.append([rec(0), rec(1)])
    real_compress = logrotation._compress

    def no_space(source: Path, target: Path) -> None:
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(logrotation, "_compress", no_space)
    with pytest.raises(WriteError, match="No space left"):
        log.append([rec(2)])
    assert numbers(list(read_records(path))) == [0, 1]  # from the plain .1
    monkeypatch.setattr(logrotation, "_compress", real_compress)
    log.append([rec(2)])
    assert numbers(list(read_records(path))) == [0, 1, 2]


# readers across generations ---------------------------------------------------------------------


def test_last_by_flag_finds_a_flag_whose_last_record_is_in_an_old_generation(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES, keep=5)
    log.append([rec(0, "quiet"), rec(1, "quiet")])
    for n in range(2, 9):
        log.append([rec(n, "busy")])
    assert (tmp_path / "decisions.jsonl.4.gz").exists()
    last = last_by_flag(path, ["quiet", "busy", "absent"])
    assert last["quiet"]["n"] == 1
    assert last["busy"]["n"] == 8
    assert "absent" not in last
    assert last_by_flag(path)["quiet"]["n"] == 1
    assert last_by_flag(path, ["busy"], where=lambda r: r["n"] < 3)["busy"]["n"] == 2


def test_unreadable_lines_are_named_by_generation_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    body = b"".join(json.dumps(rec(n)).encode() + b"\n" for n in range(3))
    (tmp_path / "decisions.jsonl.2.gz").write_bytes(gzip.compress(body + b"{not json\n" + body))
    (tmp_path / "decisions.jsonl.1.gz").write_bytes(gzip.compress(body)[:-12])  # cut off
    path.write_bytes(body + b'{"flag": "a", "n": ')  # a torn last line
    warnings = Warnings()
    records = list(read_records(path, warn=warnings))
    assert numbers(records)[:6] == [0, 1, 2, 0, 1, 2]
    assert numbers(records)[-3:] == [0, 1, 2]
    assert warnings.messages[0] == f"{tmp_path / 'decisions.jsonl.2.gz'}:4: skipped an unreadable record"
    assert warnings.messages[1].startswith(f"{tmp_path / 'decisions.jsonl.1.gz'}:")
    assert "skipped the rest of this generation" in warnings.messages[1]
    assert warnings.messages[2] == (
        f"{path}:4: skipped an unreadable record (torn last line: a write was interrupted)"
    )
    assert len(warnings.messages) == 3
    assert last_by_flag(path)["a"]["n"] == 2


def test_readers_read_generations_when_the_live_file_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=LINE_BYTES)
    log.append([rec(0)])
    log.append([rec(1)])
    path.unlink()
    assert numbers(list(read_records(path))) == [0]
    assert last_by_flag(path, ["a"])["a"]["n"] == 0
    assert list(read_records(tmp_path / "none.jsonl")) == []


def test_a_second_writer_waits_for_the_lock_and_gives_up_with_a_write_error(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    DecisionLog(path, max_bytes=LINE_BYTES).append([rec(0)])
    with writer_lock(path):
        waiting = writer_lock(path, timeout_seconds=0.05)
        with pytest.raises(WriteError, match="held by another writer"):
            waiting.__enter__()
    assert numbers(list(read_records(path))) == [0]


def test_a_reader_takes_no_lock_and_opens_again_when_a_rotation_renames_under_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES)
    log.append([rec(0), rec(1), rec(2)])  # .1.gz: 0 1, live: 2
    log.append([rec(3)])
    real_identity = logrotation._identity
    calls: list[int] = []

    def rotating_meanwhile(where: Path) -> list[tuple[str, int, int]]:
        listed = real_identity(where)
        calls.append(1)
        if len(calls) == 1:  # a writer rotates between the reader's listing and its opening
            for step in rotation_steps(where, keep=5)[:3]:  # .1.gz to .2.gz, live to .1, compress
                step.run()
        return listed

    monkeypatch.setattr(logrotation, "_identity", rotating_meanwhile)
    with writer_lock(path):  # held by the writer all along: the reader does not wait for it
        assert numbers(list(read_records(path))) == [0, 1, 2, 3]
    assert len(calls) == 3  # listed, then opened other files: again, listed, opened, listed: the same


def test_last_by_flag_finds_a_key_that_json_escapes_in_an_old_generation(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=2 * LINE_BYTES, keep=5)
    odd = 'café "q" \\ ✓'
    log.append([{"flag": odd, "n": 0}, {"flag": "b", "n": 1, "note": odd[:-2]}])
    for n in range(2, 6):
        log.append([rec(n, "busy")])
    assert [r["flag"] for r in read_records(path)][:2] == [odd, "b"]
    assert "café" not in path.read_text()  # both in rotated generations
    last = last_by_flag(path, [odd, "b"])
    assert last[odd] == {"flag": odd, "n": 0}
    assert last["b"] == {"flag": "b", "n": 1, "note": odd[:-2]}


def test_last_by_flag_finds_a_key_written_with_ascii_escapes_in_an_old_generation(tmp_path: Path) -> None:
    """Another writer (a tool, a hand) may escape non-ASCII characters: the key is the same key."""
    path = tmp_path / "decisions.jsonl"
    escaped = (json.dumps({"flag": "müsli", "n": 0}, ensure_ascii=True) + "\n").encode()
    assert b"\\u00fc" in escaped
    path.with_name(path.name + ".1.gz").write_bytes(gzip.compress(escaped))
    path.write_text(json.dumps({"flag": "other", "n": 1}) + "\n")
    assert last_by_flag(path, ["müsli"])["müsli"] == {"flag": "müsli", "n": 0}


def _scripted(*steps: Callable[[], object], polls_after: int = 3) -> Callable[[], bool]:
    """A ``stop`` for follow that runs one step at each poll, then lets it poll a few more times."""
    queue = list(steps)
    left = [polls_after]

    def stop() -> bool:
        if queue:
            queue.pop(0)()
            return False
        left[0] -= 1
        return left[0] < 0

    return stop


def _line(reason: str, flag: str = "a") -> bytes:
    return (
        json.dumps({"time": "2026-11-21T12:00:00.000Z", "flag": flag, "action": "hold", "reason": reason})
        + "\n"
    ).encode()


def _add(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def test_follow_reads_on_from_the_last_line_still_there_after_a_cut_back(tmp_path: Path) -> None:
    """A failed append undone (DecisionLog._cut_back), a human's record, then the retried batch, all
    between two polls: the human's record is shown, the log is not shown again from its start."""
    path = tmp_path / "decisions.jsonl"
    _add(path, b"".join(_line(f"r{n}") for n in range(3)))
    kept = path.stat().st_size
    batch = b"".join(_line(f"r{n}") for n in (3, 4, 5))

    def cut_back_and_write_again() -> None:
        os.truncate(path, kept)
        _add(path, _line("alice pauses") + batch)

    stop = _scripted(lambda: _add(path, batch[: len(_line("r3")) + 10]), cut_back_and_write_again)
    shown = [r["reason"] for r in follow(path, poll_seconds=0.001, stop=stop)]
    assert shown == ["r0", "r1", "r2", "r3", "alice pauses", "r3", "r4", "r5"]  # r3 was shown, then undone


def test_follow_shows_a_cut_back_batch_again_at_most_not_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    _add(path, b"".join(_line(f"r{n}") for n in range(3)))
    kept = path.stat().st_size
    batch = _line("r3") + _line("r4")
    stop = _scripted(lambda: _add(path, batch), lambda: os.truncate(path, kept), lambda: _add(path, batch))
    shown = [r["reason"] for r in follow(path, poll_seconds=0.001, stop=stop)]
    assert shown == ["r0", "r1", "r2", "r3", "r4", "r3", "r4"]


def test_follow_does_not_read_the_generations_again_when_the_live_file_is_deleted(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=300, keep=5)
    for n in range(8):
        log.append([{"time": "2026-11-21T12:00:00.000Z", "flag": "a", "action": "hold", "reason": f"r{n}"}])
    assert len(list(tmp_path.glob("decisions.jsonl.*.gz"))) >= 2
    stop = _scripted(lambda: path.unlink(), lambda: log.append([json.loads(_line("new"))]))
    shown = [r["reason"] for r in follow(path, poll_seconds=0.001, stop=stop, last=1)]
    assert shown == ["r7", "new"]
