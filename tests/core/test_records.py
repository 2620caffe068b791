"""Decision records (controller.core.records): built from real decisions on an example policy, their
time in UTC, rendered for people (what failed, by how much, with which query), and one written to
the decision log and read back unchanged."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from controller.adapters.decisionlog import DecisionLog, last_by_flag, read_records
from controller.adapters.policyfile import load_file
from controller.core.checkrecord import fmt
from controller.core.commands import stop
from controller.core.decision import Decision, decide, initial_state, queries_for
from controller.core.policy import Policy
from controller.core.queries import Arm, Reading
from controller.core.records import Context, render, render_all, to_record
from controller.core.state import Action, Status
from tests.support.paths import EXAMPLES

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
POLICY_FILE = EXAMPLES / "price-quote-cache.yaml"


def has_number(text: str, value: float) -> bool:
    """Whether ``value`` appears in ``text`` as a number of its own (0.25 is not in 0.251)."""
    return re.search(rf"(?<![\d.]){re.escape(fmt(value))}(?![\d.])", text) is not None


def has_word(text: str, word: str) -> bool:
    """Whether ``word`` appears in ``text`` on its own (max is not in maxIncrease)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def flat(text: str) -> str:
    """Text with every run of whitespace made one space, so wrapped lines compare as one."""
    return " ".join(text.split())


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


def test_render_tolerates_values_that_are_not_finite() -> None:
    # A log line edited by hand, or written by another tool, may hold NaN or Infinity (json reads
    # both): the line is shown as it is, never a traceback.
    check = {
        "name": "errors",
        "kind": "guardrail",
        "rule": "maxDelta",
        "limit": 0.001,
        "arm": "treatment",
        "value": float("nan"),
        "samples": float("inf"),
        "verdict": "error",
        "metric": "errorRatio",
        "control": {"value": float("-inf"), "samples": float("nan")},
    }
    ratio = {
        "name": "sample-ratio",
        "kind": "exposure",
        "rule": "sampleRatio",
        "arm": "treatment",
        "verdict": "error",
        "sample_ratio": {
            "share": float("nan"),
            "designed_share": 0.5,
            "treatment": float("inf"),
            "control": 1.0,
        },
    }
    text = render({"flag": "x", "action": "hold", "checks": [check, ratio]})
    assert "errors treatment nan vs control -inf (maxDelta 0.001; n=inf/nan)" in text
    assert "sample-ratio treatment nan % of exposures, designed 50 % (n=inf/1;" in text
    assert fmt(float("nan")) == "nan"
