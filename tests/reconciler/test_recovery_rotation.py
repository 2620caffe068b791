"""Crash recovery reads the decision log across its rotated generations: a flag whose last record
was rotated into an old generation has its record, so a restarted controller writes no ``recover``
record for it (it would, if it read only the live file: the control case shows it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from controller.adapters.decisionlog import DecisionLog, last_by_flag, read_records
from controller.adapters.logrotation import rotate, writer_lock
from tests.support.environment import Environment


def _rotated(root: Path) -> Environment:
    """``cache`` and ``other`` started and advanced, their records two generations back."""
    env = Environment(root)
    env.add_policy("other", "other")
    env.cycle()
    env.clock.now += timedelta(minutes=2)
    assert [r["action"] for r in env.cycle()] == ["advance", "advance"]
    with writer_lock(env.log):
        rotate(env.log, keep=5)
    DecisionLog(env.log).append([{"flag": "unrelated", "action": "hold", "time": "2026-11-21T12:02:00.000Z"}])
    with writer_lock(env.log):
        rotate(env.log, keep=5)
    DecisionLog(env.log).append([{"flag": "unrelated", "action": "hold", "time": "2026-11-21T12:02:01.000Z"}])
    assert sorted(p.name for p in root.glob("decisions.jsonl.*.gz")) == [
        "decisions.jsonl.1.gz",
        "decisions.jsonl.2.gz",
    ]
    assert {"cache", "other"} <= set(last_by_flag(env.log, ["cache", "other"]))
    return env


def test_a_restarted_controller_after_a_rotation_writes_no_spurious_recover_record(tmp_path: Path) -> None:
    env = _rotated(tmp_path)
    env.clock.now += timedelta(seconds=10)
    records = env.cycle()  # a fresh reconciler: its recovery reads the log once

    assert records
    assert "recover" not in [r["action"] for r in records]
    assert "recover" not in env.actions()
    assert env.percent("cache") == env.percent("other") == 5


def test_control_without_the_generations_the_same_restart_recovers_both(tmp_path: Path) -> None:
    env = _rotated(tmp_path)
    for generation in tmp_path.glob("decisions.jsonl.*.gz"):
        generation.unlink()
    env.clock.now += timedelta(seconds=10)
    records = env.cycle()
    assert sorted(str(r["flag"]) for r in records if r["action"] == "recover") == ["cache", "other"]
    assert [r["flag"] for r in read_records(env.log)][:1] == ["unrelated"]
