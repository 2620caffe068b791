"""Compaction of the decision log (controller/core/compaction.py): a run of identical holds is its
first record in full and heartbeats; every state change and every change of a hold's reason is full."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.compaction import (
    Run,
    compacted,
    heartbeat,
    held_since,
    hold_key,
    is_heartbeat,
    latest,
    normalised,
)
from controller.core.records import record_problem, render

START = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check(verdict: str = "pass", value: float | None = 0.002, **more: Any) -> dict[str, Any]:
    return {
        "name": "error-rate",
        "kind": "guardrail",
        "rule": "max",
        "limit": 0.01,
        "arm": "treatment",
        "query": "sum(rate(errors_total[5m])) / sum(rate(requests_total[5m]))" * 3,
        "value": value,
        "bound": 0.01,
        "samples": 812.0,
        "verdict": verdict,
        "detail": None,
        "control": {"query": "sum(rate(x[5m]))", "value": 0.001, "samples": 800.0},
    } | more


def hold(flag: str, at: datetime, reason: str = "4m of the 5m hold left", **more: Any) -> dict[str, Any]:
    return {
        "time": iso(at),
        "policy": f"p-{flag}",
        "flag": flag,
        "revision": "r1",
        "action": "hold",
        "from_percent": 5.0,
        "to_percent": 5.0,
        "from_step": 1,
        "to_step": 1,
        "steps": 4,
        "status": "progressing",
        "reason": reason,
        "notes": [],
        "checkpoint": None,
        "checks": [check()],
        "waiting": None,
        "aim": "Cut p95.",
        "mechanism": "A cache.",
        "owner": "team-a",
        "review": None,
        "stale": False,
        "actor": "controller",
        "dry_run": False,
        "guarded": True,
    } | more


@dataclass(frozen=True)
class Event:
    flag: str
    after_seconds: int
    kind: str  # hold, writes (a hold that changes state), advance, pause
    reason: int  # which reason template
    number: int
    verdict: str


REASONS = ("{n}m of the 5m hold left", "no_data: hold", "onNoData: hold ({n} samples)", "alert firing")
EVENTS = st.builds(
    Event,
    flag=st.sampled_from(["a", "b"]),
    after_seconds=st.integers(0, 400),
    kind=st.sampled_from(["hold"] * 8 + ["writes", "advance", "pause"]),
    reason=st.integers(0, len(REASONS) - 1),
    number=st.integers(0, 99),
    verdict=st.sampled_from(["pass", "pass", "no_data", "fail"]),
)


def stream(events: list[Event]) -> list[tuple[dict[str, Any], bool, datetime]]:
    """Each event as (record, changes_state, now)."""
    now = START
    out = []
    for event in events:
        now += timedelta(seconds=event.after_seconds)
        text = REASONS[event.reason].format(n=event.number)
        record = hold(event.flag, now, text, checks=[check(event.verdict, value=event.number / 1000)])
        if event.kind == "advance":
            record |= {"action": "advance", "to_percent": 10.0, "to_step": 2}
        elif event.kind == "pause":
            record |= {"action": "pause", "actor": "alice", "status": "paused"}
        out.append((record, event.kind in {"writes", "advance", "pause"}, now))
    return out


def replay(
    items: list[tuple[dict[str, Any], bool, datetime]], heartbeat_seconds: float
) -> list[dict[str, Any] | None]:
    runs: dict[str, Run] = {}
    written = []
    for record, changes, now in items:
        out, runs[record["flag"]] = compacted(
            record, runs.get(record["flag"]), now, changes_state=changes, heartbeat_seconds=heartbeat_seconds
        )
        written.append(out)
    return written


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, max_size=60), st.sampled_from([30.0, 120.0, 600.0]))
def test_every_change_is_full_in_order_and_heartbeats_are_spaced(events: list[Event], seconds: float) -> None:
    items = stream(events)
    written = replay(items, seconds)
    last_key: dict[str, Any] = {}
    must_be_full = []
    for record, changes, _ in items:
        plain = record["action"] == "hold" and not changes
        key = hold_key(record) if plain else None
        if not plain or record["flag"] not in last_key or last_key[record["flag"]] != key:
            must_be_full.append(record)
        last_key[record["flag"]] = key
    full = [w for w in written if w is not None and not is_heartbeat(w)]
    assert [id(r) for r in full] == [id(r) for r in must_be_full]  # the very records, in order
    last_written: dict[str, datetime] = {}
    began: dict[str, tuple[str, int]] = {}  # the run's full record time, evaluations since
    for (record, _, now), out in zip(items, written, strict=True):
        flag = record["flag"]
        if out is not None and not is_heartbeat(out):
            began[flag] = (record["time"], 0)
        else:
            since, count = began[flag]
            began[flag] = (since, count + 1)
        if out is not None and is_heartbeat(out):
            assert (now - last_written[flag]).total_seconds() >= seconds
            assert out["heartbeat"] == {"since": began[flag][0], "cycles": began[flag][1]}
            assert record_problem(out) is None
            assert "query" not in str(out["checks"])
        if out is not None:
            last_written[flag] = now


@given(st.lists(EVENTS, max_size=40))
@settings(max_examples=50, deadline=None)
def test_zero_writes_everything_in_full(events: list[Event]) -> None:
    items = stream(events)
    assert replay(items, 0.0) == [record for record, _, _ in items]


def test_numbers_are_not_a_new_reason_but_another_reason_is() -> None:
    assert normalised("4m of the 5m hold left") == normalised("3m of the 5m hold left")
    assert normalised("2h59m of the 3h hold left at 1.5 %") == normalised("2h of the 3h hold left at 1 %")
    reasons = ["no_data", "onNoData: hold", "alert firing"]
    assert len({hold_key(hold("a", START, r)) for r in reasons}) == 3
    same = hold_key(hold("a", START, "4m left", checks=[check(value=0.5)]))
    assert same == hold_key(hold("a", START, "3m left", checks=[check(value=0.7)]))
    assert same != hold_key(hold("a", START, "3m left", checks=[check("fail")]))
    assert same != hold_key(hold("a", START, "4m left", waiting={"reason": "window"}))
    # Which alerts fire is part of the hold (a paused rollout, or one not started, says them in its
    # reason only, whose digits do not count): another alert firing is a new hold, written in full.
    disk = [check("fail", kind="alert", firing=['DiskFull{instance="10.0.0.1:9100"}'])]
    other = [check("fail", kind="alert", firing=['DiskFull{instance="10.0.0.2:9100"}'])]
    assert hold_key(hold("a", START, "paused", checks=disk)) != hold_key(
        hold("a", START, "paused", checks=other)
    )


def test_records_that_are_not_plain_holds_pass_through() -> None:
    run = Run(hold_key(hold("a", START)), iso(START), 5, START - timedelta(hours=1))
    later = START + timedelta(hours=1)
    for other in (
        {"actor": "alice"},
        {"dry_run": True},
        {"guarded": False},
        {"reminder": True},
        {"waiting": {"reason": "approval", "began": True}},
        {"action": "recover"},
        {"action": "reject"},
    ):
        record = hold("a", later) | other
        out, after = compacted(record, run, later, changes_state=False, heartbeat_seconds=60)
        assert out is record
        assert after.key is None


def test_a_heartbeat_is_read_back() -> None:
    full = hold("a", START)
    beat = heartbeat(hold("a", START + timedelta(minutes=10), "1m of the 5m hold left"), iso(START), 20)
    assert record_problem(beat) is None
    assert set(beat) >= {"time", "flag", "status", "to_percent", "waiting", "guarded", "actor", "reason"}
    assert held_since(beat) == f"held since {iso(START)} (20 cycles since): 1m of the 5m hold left"
    assert "held since" in render(beat)
    assert "\n" not in render(beat)
    merged, newest = latest([full, beat])
    assert newest is beat
    assert merged is not None
    assert merged["time"] == beat["time"]
    assert merged["checks"][0]["query"] == full["checks"][0]["query"]
    assert latest([beat]) == (beat, beat)  # its full record rotated away
    other = hold("a", START + timedelta(minutes=5), checks=[check(name="other")]) | {"actor": "alice"}
    merged, _ = latest([full, other, beat])  # the full record the heartbeat names, not the last one
    assert merged is not None
    assert merged["checks"][0]["name"] == "error-rate"


def test_a_broken_heartbeat_is_refused() -> None:
    beat = heartbeat(hold("a", START), iso(START), 3)
    assert "heartbeat.cycles" in str(record_problem(beat | {"heartbeat": {"since": iso(START), "cycles": 0}}))
    assert "heartbeat.since" in str(record_problem(beat | {"heartbeat": {"since": "x", "cycles": 1}}))
    assert "'heartbeat'" in str(record_problem(beat | {"heartbeat": 3}))
    assert "'action'" in str(record_problem(beat | {"action": "advance"}))
