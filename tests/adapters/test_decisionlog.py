"""The decision log: append and read back, torn lines, the newest record per flag, follow, rendering."""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.decisionlog import DecisionLog, follow, last_by_flag, read_records
from controller.adapters.policyfile import load_file
from controller.core.checkrecord import fmt
from controller.core.decision import Decision, decide, initial_state, queries_for, stop
from controller.core.errors import WriteError
from controller.core.policy import Policy
from controller.core.queries import Arm, Reading
from controller.core.records import Context, Record, render, render_all, to_record
from controller.core.state import Action, Status
from tests.support.paths import EXAMPLES
from tests.support.waiting import wait_for

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TAIL_CHUNK = 64 * 1024  # how much last_by_flag reads at a time, backwards from the end
POLICY_FILE = EXAMPLES / "price-quote-cache.yaml"


def rec(flag: str, n: int, **extra: Any) -> Record:
    return {"flag": flag, "n": n, **extra}


def line(record: Record) -> bytes:
    return json.dumps(record).encode() + b"\n"


class Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


def has_number(text: str, value: float) -> bool:
    """Whether ``value`` appears in ``text`` as a number of its own (0.25 is not in 0.251)."""
    return re.search(rf"(?<![\d.]){re.escape(fmt(value))}(?![\d.])", text) is not None


def has_word(text: str, word: str) -> bool:
    """Whether ``word`` appears in ``text`` on its own (max is not in maxIncrease)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def flat(text: str) -> str:
    """Text with every run of whitespace made one space, so wrapped lines compare as one."""
    return " ".join(text.split())


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


# to_record, render, render_all -----------------------------------------------------------------


def load_policy() -> Policy:
    loaded = load_file(POLICY_FILE)
    assert loaded.errors == []
    assert len(loaded.policies) == 1
    return loaded.policies[0].policy


HEALTHY: dict[tuple[str, Arm], float] = {
    ("traffic", Arm.TREATMENT): 1000,
    ("traffic", Arm.CONTROL): 1000,
    ("error-rate", Arm.TREATMENT): 0.0001,
    ("error-rate", Arm.CONTROL): 0.0001,
    ("p95-latency", Arm.TREATMENT): 0.2,
    ("p95-latency", Arm.CONTROL): 0.21,
}


def decide_with(
    policy: Policy, decision: Decision | None, values: dict[tuple[str, Arm], float], now: datetime
) -> Decision:
    state = decision.after if decision is not None else initial_state(policy, now)
    queries = queries_for(policy, state, now)
    readings = {q.key: Reading.of(values[(q.key.name, q.key.arm)]) for q in queries}
    return decide(policy, state, queries, readings, now)


@dataclass(frozen=True)
class Story:
    policy: Policy
    start: Decision  # 0 % → 1 %
    rollback: Decision  # 1 % → 0 %: error rate and p95 breached
    start_time: datetime
    rollback_time: datetime


@pytest.fixture(scope="module")
def story() -> Story:
    policy = load_policy()
    start = decide_with(policy, None, HEALTHY, T0)
    assert start.action is Action.ADVANCE
    later = T0 + timedelta(minutes=6)
    breached = {
        **HEALTHY,
        ("error-rate", Arm.TREATMENT): 0.005,
        ("p95-latency", Arm.TREATMENT): 0.3,
    }
    rollback = decide_with(policy, start, breached, later)
    assert rollback.action is Action.ROLLBACK
    return Story(policy, start, rollback, T0, later)


def test_to_record_of_a_real_decision(story: Story) -> None:
    policy = story.policy
    record = to_record(story.rollback, Context(policy.flag_key, policy=policy), story.rollback_time)

    required = {"time", "policy", "flag", "action", "from_percent", "to_percent", "reason", "checks"}
    assert required <= set(record)
    assert record["time"] == "2026-11-21T12:06:00.000Z"
    assert record["policy"] == "price-quote-cache"
    assert record["flag"] == "price-quote-cache"
    assert record["action"] == "rollback"
    assert record["from_percent"] == 1
    assert record["to_percent"] == 0
    assert record["status"] == Status.ROLLED_BACK.value
    assert record["reason"] == story.rollback.reason
    assert record["aim"] == policy.spec.aim
    assert record["mechanism"] == policy.spec.mechanism
    assert record["actor"] == "controller"

    assert len(record["checks"]) == len(story.rollback.checks) > 0
    for check in record["checks"]:
        assert {"name", "arm", "query", "value", "bound", "samples", "verdict"} <= set(check)
    error_rate = next(c for c in record["checks"] if c["name"] == "error-rate")
    assert error_rate["arm"] == "treatment"
    assert error_rate["value"] == 0.005
    assert error_rate["bound"] == 0.001
    assert error_rate["samples"] == 1000
    assert error_rate["verdict"] == "fail"
    assert 'feature_flag_result_variant="on"' in error_rate["query"]
    assert 'code=~"5.."' in error_rate["query"]
    assert "{{" not in error_rate["query"]


def test_a_record_survives_the_log(story: Story, tmp_path: Path) -> None:
    policy = story.policy
    records = [
        to_record(story.start, Context(policy.flag_key, policy=policy), story.start_time),
        to_record(story.rollback, Context(policy.flag_key, policy=policy), story.rollback_time),
    ]
    path = tmp_path / "decisions.jsonl"

    DecisionLog(path).append(records)

    assert list(read_records(path)) == records
    assert last_by_flag(path) == {policy.flag_key: records[1]}


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
        datetime(2026, 11, 21, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 11, 21, 7, 0, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_record_time_is_utc_iso_with_z(story: Story, now: datetime) -> None:
    record = to_record(story.start, Context("price-quote-cache"), now)

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", record["time"])
    assert datetime.fromisoformat(record["time"].replace("Z", "+00:00")) == T0


def test_render_of_a_rollback_explains_it(story: Story) -> None:
    policy = story.policy
    record = to_record(story.rollback, Context(policy.flag_key, policy=policy), story.rollback_time)

    text = render(record)

    assert flat(policy.spec.aim) in flat(text)
    assert policy.spec.mechanism is not None
    assert flat(policy.spec.mechanism) in flat(text)
    assert flat(story.rollback.reason) in flat(text)
    assert "ROLLBACK" in text
    assert "1% → 0%" in text
    lines = text.splitlines()
    failing = [c for c in record["checks"] if c["verdict"] == "fail"]
    assert len(failing) == 3  # error-rate max, p95 max, p95 maxIncrease
    for check in failing:
        shown = [
            ln
            for ln in lines
            if "FAIL" in ln
            and f"{check['name']} {check['arm']}" in ln
            and has_word(ln, check["rule"])
            and has_number(ln, check["value"])
            and has_number(ln, check["bound"])
        ]
        assert len(shown) == 1, f"{check['name']} {check['rule']} not shown with its value and bound"
        assert any(ln.strip() == f"query: {check['query']}" for ln in lines)


def test_render_lists_the_query_of_every_failing_check_once(story: Story) -> None:
    policy = story.policy
    record = to_record(story.rollback, Context(policy.flag_key, policy=policy), story.rollback_time)

    lines = [ln.strip() for ln in render(record).splitlines()]

    queries = {c["query"] for c in record["checks"] if c["verdict"] == "fail"}
    assert len(queries) == 2
    for query in queries:
        assert lines.count(f"query: {query}") == 1


def test_render_of_an_advance_shows_the_aim_and_mechanism(story: Story) -> None:
    policy = story.policy
    record = to_record(story.start, Context(policy.flag_key, policy=policy), story.start_time)

    text = render(record)

    assert "ADVANCE" in text
    assert "0% → 1%" in text
    assert flat(policy.spec.aim) in flat(text)
    assert flat(story.start.reason) in flat(text)
    assert "query:" not in text  # every check passed: no query to chase


def test_render_of_a_checkpoint_rollback_shows_the_expectation_that_failed(story: Story) -> None:
    policy = story.policy
    decision, now = story.start, story.start_time
    for minutes in (6, 11, 31):  # the holds of 5m, 10m and 30m run out one after the other
        now += timedelta(minutes=minutes)
        decision = decide_with(policy, decision, HEALTHY, now)
    assert decision.action is Action.ROLLBACK
    record = to_record(decision, Context(policy.flag_key, policy=policy), now)
    expected = [c for c in record["checks"] if c["kind"] == "checkpoint"]
    assert [c["verdict"] for c in expected] == ["fail"]
    check = expected[0]
    assert check["value"] == HEALTHY[("p95-latency", Arm.TREATMENT)]
    assert check["bound"] == pytest.approx(HEALTHY[("p95-latency", Arm.CONTROL)] * (1 - 0.25))

    text = render(record)

    lines = text.splitlines()
    assert any(ln.strip() == "Checkpoint FAIL" for ln in lines)
    shown = [
        ln
        for ln in lines
        if "FAIL" in ln
        and f"{check['name']} {check['arm']}" in ln
        and has_word(ln, check["rule"])
        and has_number(ln, check["value"])
        and has_number(ln, check["bound"])
    ]
    assert len(shown) == 1
    assert any(ln.strip() == f"query: {check['query']}" for ln in lines)
    assert flat(decision.reason) in flat(text)


def test_render_all_carries_the_aim_to_a_human_record(story: Story) -> None:
    policy = story.policy
    flag = policy.flag_key
    controller_record = to_record(story.rollback, Context(flag, policy=policy), story.rollback_time)
    stopped = stop(story.rollback.after, "pager went off", story.rollback_time + timedelta(minutes=1))
    human_record = to_record(stopped, Context(flag, actor="human:alice"), story.rollback_time)
    other_flag = {**human_record, "flag": "other-flag"}
    assert human_record["aim"] is None

    assert flat(policy.spec.aim) not in flat(render(human_record))
    rendered = list(render_all([controller_record, human_record, other_flag]))

    assert len(rendered) == 3
    assert "STOP" in rendered[1]
    assert "pager went off" in rendered[1]
    assert "by human:alice" in rendered[1]
    assert flat(policy.spec.aim) in flat(rendered[1])
    assert policy.spec.mechanism is not None
    assert flat(policy.spec.mechanism) in flat(rendered[1])
    assert flat(policy.spec.aim) not in flat(rendered[2])


def test_render_tolerates_a_sparse_record() -> None:
    text = render({"flag": "x", "action": "hold"})

    assert text.splitlines()[0].split()[1:3] == ["x", "HOLD"]
    assert "Aim" in text


def test_render_shows_the_control_query_of_a_failing_relative_check() -> None:
    record = {
        "time": "2026-11-21T12:00:00.000Z",
        "flag": "cache",
        "action": "rollback",
        "from_percent": 5,
        "to_percent": 0,
        "status": "rolled_back",
        "reason": "guardrail failed",
        "checks": [
            {
                "name": "p95",
                "kind": "guardrail",
                "rule": "maxIncrease",
                "limit": 0.1,
                "arm": "treatment",
                "query": 'q{v="on"}',
                "value": 0.3,
                "bound": 0.22,
                "samples": 500,
                "verdict": "fail",
                "detail": None,
                "control": {"query": 'q{v="control"}', "value": 0.2, "samples": 510},
            }
        ],
    }
    text = render(record)
    assert 'query: q{v="on"}' in text
    assert 'query: q{v="control"}' in text


def test_render_says_when_a_rollout_is_stale() -> None:
    record = {
        "time": "t",
        "flag": "f",
        "action": "hold",
        "status": "progressing",
        "stale": True,
        "review": "2026-10-01",
    }
    assert "STALE: past its review date 2026-10-01" in render(record).splitlines()[0]
    assert "STALE" not in render({**record, "stale": False})
