"""`flagroll status` and `flagroll explain` for a rollout waiting for its change window, from a real
flag file and decision log written by cycles of the reconciler at an injected clock.

``T0`` (2026-11-21 12:00 UTC) is a Saturday; the window is Mon–Thu 09:00–16:00 in Berlin.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import cli
from controller.cli import common
from tests.support.environment import POLICY, Environment, failing

SCHEDULE = """\
  schedule:
    timezone: Europe/Berlin
    windows:
      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}
"""
MONDAY = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    environment = Environment(tmp_path)
    environment.add_policy("cache", "cache", POLICY.format(name="cache", key="cache") + SCHEDULE)
    monkeypatch.setattr(common, "utc_now", lambda: environment.clock.now)
    return environment


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


def test_status_says_the_rollout_waits_and_when_the_window_opens(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    assert env.actions() == ["hold"]
    assert env.percent() == 0
    env.clock.now += timedelta(hours=2)
    out = _run(capsys, "status", "--flags", str(env.flags), "--decision-log", str(env.log))
    assert (
        "WAITING: outside the change windows: wait for the window Mon 09:00 Europe/Berlin (08:00 UTC), in 1d18h"
        in out
    )
    rows = json.loads(
        _run(capsys, "status", "--json", "--flags", str(env.flags), "--decision-log", str(env.log))
    )
    waiting = rows[0]["waiting"]
    assert waiting["reason"] == "window"
    assert waiting["opens_at"] == "2026-11-23T08:00:00Z"
    assert waiting["opens_at_local"] == "2026-11-23T09:00:00+01:00"
    assert waiting["timezone"] == "Europe/Berlin"
    assert waiting["text"].endswith("in 1d18h")


def test_explain_says_what_the_rollout_waits_for(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    for extra in ((), ("--policies", str(env.policies))):
        out = _run(
            capsys, "explain", "cache", "--flags", str(env.flags), "--decision-log", str(env.log), *extra
        )
        must = out.split("To advance")[1]
        assert "- wait for the window Mon 09:00 Europe/Berlin (08:00 UTC), in 1d20h" in must


def test_inside_the_window_it_starts_and_no_longer_waits(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    env.clock.now = MONDAY
    env.cycle()
    assert env.actions() == ["hold", "advance"]
    assert env.percent() == 1
    rows = json.loads(
        _run(capsys, "status", "--json", "--flags", str(env.flags), "--decision-log", str(env.log))
    )
    assert rows[0]["waiting"] is None
    out = _run(capsys, "explain", "cache", "--flags", str(env.flags), "--decision-log", str(env.log))
    assert "wait for the window" not in out


def test_a_failing_guardrail_rolls_back_outside_the_window(env: Environment) -> None:
    env.clock.now = MONDAY
    env.cycle()  # starts inside the window
    env.clock.now = MONDAY + timedelta(days=4)  # Friday: outside every window
    env.metrics.answer = failing
    env.cycle()
    assert env.actions() == ["advance", "rollback"]
    assert env.percent() == 0
