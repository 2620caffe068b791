"""Red-team of what `flagroll explain` and `flagroll status` say about ``spec.schedule``, from a real
flag file and decision log written by cycles of the reconciler at an injected clock.

The window is Mon–Thu 09:00–16:00 in Berlin (08:00–15:00 UTC in winter).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import cli
from controller.cli import common
from tests.support.environment import POLICY, Environment

SCHEDULE = """\
  schedule:
    timezone: Europe/Berlin
    windows:
      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}
"""
# The first step holds 4 hours: started at 12:30 in Berlin, its hold ends at 16:30, after the window.
LONG_HOLD = POLICY.format(name="cache", key="cache").replace(
    "{percent: 1, hold: 1m}", "{percent: 1, hold: 4h}"
)
MONDAY_1230 = datetime(2026, 11, 23, 11, 30, tzinfo=UTC)
SATURDAY = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    environment = Environment(tmp_path)
    environment.add_policy("cache", "cache", LONG_HOLD + SCHEDULE)
    monkeypatch.setattr(common, "utc_now", lambda: environment.clock.now)
    return environment


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


def _to_advance(env: Environment, capsys: pytest.CaptureFixture[str]) -> str:
    out = _run(
        capsys,
        "explain",
        "cache",
        "--flags",
        str(env.flags),
        "--decision-log",
        str(env.log),
        "--policies",
        str(env.policies),
    )
    return out.split("To advance")[1].split("\n\n")[0]


def test_explain_says_a_hold_that_ends_after_the_window_closes_waits_for_the_next_one(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.clock.now = MONDAY_1230
    env.cycle()
    assert env.percent() == 1
    env.clock.now = MONDAY_1230 + timedelta(minutes=90)  # 14:00 in Berlin: the window is open
    env.cycle()
    must = _to_advance(env, capsys)
    assert "2h30m left" in must
    assert "wait for the window Tue 09:00 Europe/Berlin (08:00 UTC), in 19h" in must
    assert "when the hold ends" in must


def test_explain_does_not_name_a_window_the_hold_outlasts(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.clock.now = MONDAY_1230
    env.cycle()
    env.clock.now = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)  # Tue 08:00 in Berlin: closed for 1 h more
    env.cycle()
    assert env.actions() == ["advance", "hold"]
    last = json.loads(env.log.read_text().splitlines()[-1])
    assert last["waiting"] is not None  # the 4h hold ended at night: the advance waits for 09:00
    must = _to_advance(env, capsys)
    assert "wait for the window Tue 09:00 Europe/Berlin (08:00 UTC), in 1h" in must


def test_explain_does_not_make_a_completion_wait_for_a_window(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last step's hold over and no checkpoint: it completes at the next evaluation, window or
    not (a completion raises nobody's exposure), so explain must not say it waits."""
    env.add_policy(
        "cache", "cache", LONG_HOLD.replace("{percent: 1, hold: 4h}", "{percent: 1, hold: 1m}") + SCHEDULE
    )
    env.clock.now = MONDAY_1230
    env.cycle()
    env.clock.now += timedelta(minutes=2)
    env.cycle()
    assert env.percent() == 5  # the last step
    env.clock.now = SATURDAY
    must = _to_advance(env, capsys)
    assert "wait for the window" not in must
    env.cycle()
    assert env.actions()[-1] == "complete"


def test_explain_says_no_wait_for_a_rollout_no_policy_judges(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.clock.now = SATURDAY
    env.cycle()  # waits to start
    env.add_policy("other", "other")
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(minutes=1)
    env.cycle()
    assert "wait for the window" not in _to_advance(env, capsys)


def test_status_says_no_wait_for_a_rollout_paused_since_its_last_recorded_wait(
    env: Environment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The pause went to another decision log (with a Kubernetes store and no --decision-log, a
    human command's record goes to stdout only): the controller's last record is still the wait,
    but a paused rollout waits for a human, not for a window."""
    env.clock.now = SATURDAY
    env.cycle()
    elsewhere = tmp_path / "human.jsonl"
    _run(
        capsys,
        "pause",
        "cache",
        "--flags",
        str(env.flags),
        "--decision-log",
        str(elsewhere),
        "--reason",
        "look",
    )
    shown = _run(capsys, "status", "--json", "--flags", str(env.flags), "--decision-log", str(env.log))
    (row,) = json.loads(shown)
    assert row["status"] == "paused"
    assert row["waiting"] is None
    table = _run(capsys, "status", "--flags", str(env.flags), "--decision-log", str(env.log))
    assert "WAITING" not in table


def test_diff_of_a_schedule_edit_says_the_next_evaluation_follows_it(
    env: Environment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Editing the schedule of a waiting rollout is not a new revision, but it is not a change of
    "comments or layout only" either: the due move follows the new schedule at once."""
    env.clock.now = SATURDAY
    env.cycle()  # waits for Monday's window
    old = tmp_path / "old.yaml"
    old.write_text((env.policies / "cache.yaml").read_text())
    env.add_policy("cache", "cache", LONG_HOLD)  # the schedule removed
    out = _run(capsys, "diff", str(old), str(env.policies / "cache.yaml"), "--flags", str(env.flags))
    assert "administrative fields only" in out
    assert "- spec.schedule.timezone: 'Europe/Berlin'" in out
    assert "comments or layout only" not in out
    assert "spec.schedule changed: a due start, advance or promotion follows the new one from the next" in out
