"""The web UI's index of the decision log (controller/adapters/logindex.py): its pages equal the pages
of a full read of the log (WebUI with indexed=False, the reference) after appends, a torn line
completed later, rotations (and every moment of one a crash can leave), truncation, replacement and
deleted generations; and it reads only what is new. The stateful model is in
test_logindex_model.py."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.adapters import logindex
from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.logindex import LogIndex
from controller.adapters.logrotation import rotation_steps, writer_lock
from controller.adapters.webui import WebUI
from controller.core.compaction import HEARTBEAT
from tests.support.uidata import NOW, check, document, iso, record, state

FLAGS = ["a", "b", "c"]
TARGETS = ["/", "/flags/a", "/flags/b", "/flags/gone", "/log", "/log?flag=a", "/log?action=verify&size=3",
           f"/log?since={iso(NOW - timedelta(minutes=30))}&page=2&size=2"]  # fmt: skip


def rec(n: int, flag: str = "a", **more: Any) -> dict[str, Any]:
    percent = float(min(50, 1 + n // 3))
    checks = [check(0.001 * n, control={"value": 0.002, "query": "q"}), check(0.1, kind="traffic", name="t")]
    return (
        record(flag, NOW - timedelta(hours=1) + timedelta(seconds=30 * n), to_percent=percent, checks=checks)
        | more
    )


def line(one: dict[str, Any]) -> bytes:
    return (json.dumps(one, ensure_ascii=False) + "\n").encode()


class Pair:
    """The same flag store and log behind an indexed UI and the full-read reference."""

    def __init__(self, tmp_path: Path) -> None:
        self.flags = tmp_path / "flags.json"
        self.flags.write_text(json.dumps(document((key, state(key)) for key in FLAGS)))
        self.log = tmp_path / "decisions.jsonl"
        self.indexed = WebUI(FileFlagStore(self.flags), self.log, lambda: NOW)
        self.reference = WebUI(FileFlagStore(self.flags), self.log, lambda: NOW, indexed=False)

    def append(self, *records: dict[str, Any]) -> None:
        with self.log.open("ab") as handle:
            handle.write(b"".join(line(r) for r in records))

    def assert_same(self) -> None:
        for target in TARGETS:
            got, wanted = self.indexed.reply("GET", target), self.reference.reply("GET", target)
            assert (got.status, got.body.decode()) == (wanted.status, wanted.body.decode()), target


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair(tmp_path)


@pytest.fixture
def lines_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many lines each view of an index read."""
    counted: list[int] = []
    real = logindex._read

    def counting(segment: logindex.Segment, lines: Any, *, final: bool) -> bytes:
        seen = list(lines)
        counted.append(len(seen))
        return real(segment, iter(seen), final=final)

    monkeypatch.setattr(logindex, "_read", counting)
    return counted


def test_pages_equal_a_full_read_and_only_new_lines_are_read(pair: Pair, lines_read: list[int]) -> None:
    pair.append(*(rec(n, FLAGS[n % 3]) for n in range(30)))
    pair.assert_same()
    assert lines_read[0] == 30
    lines_read.clear()
    pair.append(rec(30), rec(31, "b"))
    pair.assert_same()
    assert lines_read[0] == 2  # the first request after the append; the others read nothing
    assert set(lines_read[1:]) == {0}


def test_a_torn_line_waits_and_is_indexed_once_complete(pair: Pair) -> None:
    pair.append(*(rec(n) for n in range(5)))
    torn = line(rec(5, "b"))
    with pair.log.open("ab") as handle:
        handle.write(torn[:40])
    pair.assert_same()
    with pair.log.open("ab") as handle:
        handle.write(torn[40:-1])  # whole but for its newline: it parses, and a full read shows it
    pair.assert_same()
    with pair.log.open("ab") as handle:
        handle.write(b"\n")
    pair.append(rec(6))
    pair.assert_same()
    view = pair.indexed.index.view() if pair.indexed.index else None
    assert view is not None
    assert [len(s.flags) for s in view.segments] == [7]


def test_unreadable_and_unfit_records_are_skipped_as_a_full_read_skips_them(pair: Pair) -> None:
    pair.append(rec(0))
    with pair.log.open("ab") as handle:
        handle.write(b"not json\n[1, 2]\n\n" + line(rec(1) | {"to_percent": "abc"}))
    pair.append(rec(2), rec(3) | {"flag": 7})
    pair.assert_same()
    assert b"abc" not in pair.indexed.reply("GET", "/log").body


def test_heartbeats_and_verifications(pair: Pair) -> None:
    held = rec(3, "a", action="hold", reason="held: errors high")
    beat = rec(9, "a", action="hold", reason="still held") | {HEARTBEAT: {"since": held["time"], "cycles": 6}}
    beat["checks"] = [check(0.5)]
    verify = rec(10, "a", action="verify") | {"serving": {"ok": True}}
    pair.append(rec(1), rec(2), held, rec(4, "b"), beat, verify)
    pair.assert_same()
    page = pair.indexed.reply("GET", "/flags/a").body.decode()
    assert "still held" in page
    assert "<code>q</code>" in page  # the hold's control query: read from its whole record


def rotate(log: Path, keep: int = 5, done: int | None = None) -> None:
    with writer_lock(log):
        for step in rotation_steps(log, keep)[:done]:
            step.run()


def test_a_rotation_is_followed_and_its_compressed_generation_is_not_read_again(
    pair: Pair, lines_read: list[int]
) -> None:
    pair.append(*(rec(n, FLAGS[n % 2]) for n in range(10)))
    pair.assert_same()
    rotate(pair.log)  # the live file, read to its end, becomes .1.gz: known by its first bytes and size
    pair.append(rec(10), rec(11, "c"))
    lines_read.clear()
    pair.assert_same()
    assert sum(lines_read) == 2
    pair.append(rec(12))
    rotate(pair.log)  # with a line not read yet: the new .1.gz is read whole
    lines_read.clear()
    pair.assert_same()
    assert sum(lines_read) == 3


@pytest.mark.parametrize("done", range(1, 6))
def test_every_moment_a_crash_can_leave_in_a_rotation(pair: Pair, done: int) -> None:
    pair.append(*(rec(n) for n in range(6)))
    rotate(pair.log)
    pair.append(*(rec(n, "b") for n in range(6, 9)))
    pair.assert_same()
    rotate(pair.log, done=done)  # .2.gz then .1 (and .1.gz.tmp, or .1.gz beside .1)
    pair.assert_same()
    pair.append(rec(9, "c"))
    pair.assert_same()
    DecisionLog(pair.log, max_bytes=1).append([rec(10)])  # finishes the rotation, and rotates
    pair.assert_same()


def test_several_rotations_between_two_requests(pair: Pair) -> None:
    log = DecisionLog(pair.log, max_bytes=3 * len(line(rec(0))), keep=2)
    log.append([rec(0)])
    pair.assert_same()
    for n in range(1, 14):
        log.append([rec(n, FLAGS[n % 3])])
    pair.assert_same()  # deleted generations took their records with them


def test_a_truncated_or_replaced_live_file_is_read_again(pair: Pair, tmp_path: Path) -> None:
    pair.append(*(rec(n) for n in range(5)))
    pair.assert_same()
    pair.log.write_bytes(line(rec(7, "b")))  # truncated in place
    pair.assert_same()
    pair.log.write_bytes(b"".join(line(rec(n, "c")) for n in range(8)))  # and written again, longer
    pair.assert_same()
    other = tmp_path / "other.jsonl"
    other.write_bytes(line(rec(20, "a")))
    other.replace(pair.log)
    pair.assert_same()
    pair.log.unlink()
    pair.assert_same()


def test_a_live_file_cut_back_and_grown_past_the_offset_read_is_read_again(pair: Pair) -> None:
    """A failed append is undone by cutting the file back (decisionlog._cut_back), and the records
    are appended again, with others, past where a request had read: the first bytes are the same,
    the size larger, but what lies before the old offset is not what was read."""
    kept = b"".join(line(rec(n)) for n in range(20))  # past the first bytes the index compares
    pair.append(*(rec(n) for n in range(20)))
    pair.append(rec(20, "b", reason="attempt one"))
    pair.assert_same()
    with pair.log.open("r+b") as handle:
        handle.truncate(len(kept))  # the append undone
    pair.append(rec(21, "c", action="rollback"), rec(20, "b", reason="retried, longer than before"))
    pair.assert_same()


def test_a_damaged_generation_is_read_once_not_at_every_request(pair: Pair, lines_read: list[int]) -> None:
    packed = gzip.compress(b"".join(line(rec(n)) for n in range(400)))
    pair.log.with_name(pair.log.name + ".1.gz").write_bytes(packed[:-200])  # its end cut off
    pair.append(rec(400))
    pair.assert_same()
    assert sum(lines_read) > 300
    lines_read.clear()
    pair.assert_same()
    assert sum(lines_read) == 0


def test_a_deleted_generation_takes_its_records(pair: Pair) -> None:
    pair.append(rec(0, "gone"))
    rotate(pair.log)
    pair.append(rec(1))
    rotate(pair.log)
    pair.append(rec(2))
    pair.assert_same()
    assert pair.indexed.reply("GET", "/flags/gone").status == 200
    (pair.log.parent / (pair.log.name + ".2.gz")).unlink()
    pair.assert_same()
    assert pair.indexed.reply("GET", "/flags/gone").status == 404


def test_a_flag_with_more_records_than_a_block(pair: Pair) -> None:
    count = logindex.BLOCK_RECORDS * 2 + 7
    pair.append(*(rec(n, "a", reason=f"reason {n}") for n in range(count)))
    pair.assert_same()
    assert (
        pair.reference.reply("GET", "/log?size=500&page=2").body
        == pair.indexed.reply("GET", "/log?size=500&page=2").body
    )


def test_the_index_keeps_what_it_read_compressed(pair: Pair) -> None:
    pair.append(*(rec(n, FLAGS[n % 3]) for n in range(600)))
    rotate(pair.log)
    pair.append(*(rec(n, FLAGS[n % 3]) for n in range(600, 1200)))
    index = LogIndex(pair.log)
    view = index.view()
    size_bytes = pair.log.stat().st_size
    assert logindex.index_size_bytes(view) < size_bytes / 3  # the live file's newest lines wait
    assert sum(len(p.full.open) for s in view.segments for p in s.parts.values()) < 3 * 16


def test_requests_in_threads_while_the_log_is_appended_and_rotated(pair: Pair) -> None:
    log = DecisionLog(pair.log, max_bytes=20 * len(line(rec(0))), keep=3)
    log.append([rec(0)])
    statuses: list[int] = []
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            for n in range(15):
                statuses.append(pair.indexed.reply("GET", TARGETS[n % len(TARGETS)]).status)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for n in range(1, 120):
        log.append([rec(n, FLAGS[n % 3])])
    for thread in threads:
        thread.join()
    assert failures == []
    assert set(statuses) <= {200, 404}
    assert len(statuses) == 60
    pair.assert_same()
