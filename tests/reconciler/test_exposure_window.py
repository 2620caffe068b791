"""The exposure window through the reconciler, with real files and counts that grow with the fake
clock: the ``increase(…[Ns])`` range that errorRatio and latency guardrails and the sample-ratio check
count over. A control arm turned on mid-rollout is counted over the same window as the treatment."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from controller.adapters.decisionlog import read_records
from controller.core.decision import COMPLETED_WINDOW_SECONDS
from controller.core.flagd import read_state
from controller.core.queries import Reading
from controller.core.state import RolloutState
from tests.support.environment import Environment

EXPOSURES_PER_SECOND = 10.0  # flag evaluations per second in each arm, once the arm is served

SELECT = 'feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"'

POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {name: cache}
spec:
  owner: sre-lead
  aim: Cut p95 from 450ms to 250ms.
  flag: {key: cache}
  control: false
  interval: 10s
  steps:
    - {percent: 1, hold: 10m}
    - {percent: 5, hold: 1h}
  guardrails:
    - name: errors
      query: sum(errors{v="{{variant}}"})
      max: 0.01
"""

WITH_CONTROL = POLICY.replace("  control: false\n", "  control: true\n") + (
    f"  statistics:\n    exposure: feature_flag_evaluations_total{{{SELECT}}}\n"
)

_WINDOW = re.compile(r"\[(\d+)s\]")


class Exposures:
    """Cumulative flag evaluations per arm: each arm is evaluated ``EXPOSURES_PER_SECOND`` times a
    second from the moment the flag file first serves it, and Prometheus's ``increase`` over ``[Ns]``
    counts what fell in the last N seconds."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.served_since: dict[str, datetime] = {}
        self.windows: list[int] = []

    def note_served(self) -> None:
        state = _state(self.env)
        now = self.env.clock.now
        if state.percent > 0:
            self.served_since.setdefault("on", now)
        if state.control_percent > 0:
            self.served_since.setdefault("control", now)

    def __call__(self, promql: str) -> Reading:
        if not promql.startswith("sum(increase(feature_flag_evaluations_total"):
            return Reading.of(0.001)
        window = _WINDOW.search(promql)
        assert window is not None, promql
        seconds = int(window.group(1))
        self.windows.append(seconds)
        variant = "control" if 'variant="control"' in promql else "on"
        since = self.served_since.get(variant)
        if since is None:
            return Reading.of(0.0)
        served = (self.env.clock.now - since).total_seconds()
        return Reading.of(EXPOSURES_PER_SECOND * max(0.0, min(seconds, served)))


def _state(env: Environment) -> RolloutState:
    state = read_state(json.loads(env.flags.read_text()), "cache")
    assert state is not None
    return state


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    environment = Environment(tmp_path)
    environment.add_policy("cache", "cache", POLICY)
    return environment


def _cycle(env: Environment, exposures: Exposures) -> dict[str, Any]:
    records = [r for r in env.cycle() if r["flag"] == "cache"]
    exposures.note_served()
    (record,) = records
    return cast(dict[str, Any], record)


def test_turning_the_control_arm_on_mid_rollout_counts_both_arms_from_then(env: Environment) -> None:
    exposures = Exposures(env)
    env.metrics.answer = exposures
    _cycle(env, exposures)
    env.clock.now += timedelta(minutes=10)
    assert _cycle(env, exposures)["to_percent"] == 5
    env.clock.now += timedelta(minutes=20)
    env.add_policy("cache", "cache", WITH_CONTROL)
    edited = _cycle(env, exposures)
    assert any("control arm" in str(note) for note in edited["notes"]), edited["notes"]
    assert _state(env).exposed_since == env.clock.now
    for _ in range(6):
        env.clock.now += timedelta(seconds=10)
        record = _cycle(env, exposures)
        assert "sample-ratio" not in str(record["reason"]), record["reason"]
        (ratio,) = [c for c in record["checks"] if c["name"] == "sample-ratio"]
        assert ratio["verdict"] == "pass", ratio
    assert exposures.windows[-1] == 60  # both arms counted since the edit, not since the first step
    assert [r["action"] for r in read_records(env.log)][-6:] == ["hold"] * 6


def _completed(env: Environment, exposures: Exposures) -> None:
    env.metrics.answer = exposures
    env.add_policy("cache", "cache", WITH_CONTROL)
    _cycle(env, exposures)
    env.clock.now += timedelta(minutes=10)
    _cycle(env, exposures)
    env.clock.now += timedelta(hours=1)
    assert _cycle(env, exposures)["action"] == "complete"


def test_a_rollout_completed_long_ago_counts_over_a_trailing_day(env: Environment) -> None:
    """Counting since exposure began, a completed rollout's window would grow for as long as its
    guardrails stay armed, until Prometheus refuses the query and the rollout holds as error."""
    exposures = Exposures(env)
    _completed(env, exposures)
    env.clock.now += timedelta(days=30)
    record = _cycle(env, exposures)
    assert exposures.windows[-1] == COMPLETED_WINDOW_SECONDS == 86_400
    counts = [q for q in env.metrics.asked if q.startswith("sum(increase(")]
    assert all(f"[{COMPLETED_WINDOW_SECONDS}s]" in q for q in counts[-2:])
    # The dispersion's bins span the same day, widened to minutes: at most 1,440 of them.
    assert f"[{COMPLETED_WINDOW_SECONDS}s:60s]" in env.metrics.asked[-1]
    assert record["action"] == "hold"
    assert "all 2 checks pass" in str(record["reason"])
    (ratio,) = [c for c in record["checks"] if c["name"] == "sample-ratio"]
    assert ratio["sample_ratio"]["window_seconds"] == 86_400
