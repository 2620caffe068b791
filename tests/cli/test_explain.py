"""`flagroll explain FLAG`: the story of a rollout from its real flag file and decision log."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from controller import cli
from controller.adapters.prometheus import parse_listing
from controller.cli import common
from controller.core.queries import Reading
from tests.support.environment import POLICY, T0, Environment, failing, healthy


def _explain(env: Environment, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()  # the cycles' own log lines
    code = cli.main(["explain", "cache", "--flags", str(env.flags), "--decision-log", str(env.log), *extra])
    assert code == 0
    return capsys.readouterr().out


@pytest.fixture
def env(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Environment:
    from pathlib import Path

    environment = Environment(Path(str(tmp_path)))
    monkeypatch.setattr(common, "utc_now", lambda: environment.clock.now)
    return environment


def test_a_rollout_on_hold_says_what_must_change(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()  # starts at 1 %
    env.clock.now += timedelta(minutes=1)
    env.cycle()  # advances to 5 %
    env.clock.now += timedelta(seconds=20)
    env.metrics.answer = lambda promql: (
        Reading.of(5.0) if promql.startswith("sum(requests") else healthy(promql)
    )
    env.cycle()  # too little traffic: holds
    out = _explain(env, capsys, "--policies", str(env.policies))
    assert out.startswith("cache: progressing, step 2/2 at 5 % (control 5 %)")
    assert "Aim        Cut p95 from 450ms to 250ms." in out
    assert "Mechanism  A cache removes repeated I/O." in out
    steps = out.split("Steps taken")[1].split("Last decision")[0]
    assert "advance  0 % → 1 %" in steps
    assert "advance  1 % → 5 %" in steps
    assert "(20s ago)" in steps
    assert "Last decision  HOLD" in out
    assert "NO_DATA  traffic control 5" in out
    must = out.split("To advance")[1].split("PromQL")[0]
    assert (
        "traffic (treatment) needs data: not enough samples yet: treatment has 5 of 10 samples (5 missing)"
        in must
    )
    assert "the 1m hold at 5 % must pass: 40s left" in must
    assert "this is the last step" in must
    promql = out.split("PromQL (paste into Prometheus)")[1]
    assert 'sum(errors{v="on",flag="cache"})' in promql
    assert 'sum(errors{v="control",flag="cache"})' in promql


def test_a_failing_guardrail_names_the_bound_it_must_meet(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    env.metrics.answer = failing
    env.clock.now += timedelta(seconds=10)
    env.cycle()  # rolled back
    out = _explain(env, capsys)
    assert out.startswith("cache: rolled_back, not started at 0 %")
    assert "Last decision  ROLLBACK" in out
    assert "FAIL     errors treatment 0.5 > 0.01" in out
    assert "restarts on a new policy revision or `flagroll resume cache`" in out


def test_without_a_decision_log_it_still_tells_the_state(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    env.log.unlink()
    out = _explain(env, capsys)
    assert "Last decision: none recorded" in out
    assert "Steps taken\n  none recorded" in out


def test_an_unknown_flag_is_a_usage_error_naming_the_managed_ones(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    capsys.readouterr()
    code = cli.main(["explain", "nope", "--flags", str(env.flags)])
    assert code == 2
    assert "managed flags: cache" in capsys.readouterr().err


def test_times_are_shown_with_their_age(env: Environment, capsys: pytest.CaptureFixture[str]) -> None:
    env.cycle()
    env.clock.now = T0 + timedelta(hours=2)
    assert "2026-11-21 12:00:00Z (2h ago)" in _explain(env, capsys)


def _finish_the_ramp(env: Environment, on_pass: str) -> None:
    checkpoint = (
        "  checkpoint:\n    expect:\n      - name: errors\n        max: 0.01\n"
        f"    onPass: {on_pass}\n    onFail: rollback\n"
    )
    env.add_policy("cache", "cache", POLICY.format(name="cache", key="cache") + checkpoint)
    for _ in range(3):  # starts, advances, judges the checkpoint
        env.cycle()
        env.clock.now += timedelta(minutes=1, seconds=10)


def test_a_promoted_flag_is_said_to_be_unwatched_and_is_not_judged_any_more(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    _finish_the_ramp(env, "promote")
    assert env.percent() == 100
    out = _explain(env, capsys, "--policies", str(env.policies))
    assert out.startswith("cache: promoted")
    assert "armed" not in out
    assert "Guardrails NOT evaluated: promoted is final" in out
    assert "`flagroll stop cache --reason" in out
    # What it says is what happens: a regression now moves nothing, and nobody asks.
    env.metrics.answer = failing
    env.metrics.asked.clear()
    env.cycle()
    assert env.percent() == 100
    assert env.metrics.asked == []


def test_a_completed_flag_is_said_to_be_watched_and_is_rolled_back_on_a_regression(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    _finish_the_ramp(env, "complete")
    out = _explain(env, capsys, "--policies", str(env.policies))
    assert out.startswith("cache: completed")
    assert "guardrails stay armed" in out
    assert "NOT evaluated" not in out
    env.metrics.answer = failing
    env.cycle()
    assert env.percent() == 0


def test_a_firing_alert_is_what_must_change_and_status_says_it_waits(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts = "  alerts:\n    - name: pages\n      selector: '{severity=\"page\"}'\n"
    env.add_policy("cache", "cache", POLICY.format(name="cache", key="cache") + alerts)
    paging = 'Down{severity="page"}'
    env.metrics.answer = lambda promql: (
        Reading.listed([paging]) if promql.startswith("ALERTS") else healthy(promql)
    )
    env.cycle()  # does not start
    assert env.percent() == 0
    out = _explain(env, capsys, "--policies", str(env.policies))
    assert 'FAIL     alert pages: 1 alert firing (Down{severity="page"}); onFiring: hold' in out
    must = out.split("To advance")[1].split("PromQL")[0]
    assert f"alert pages must stop firing ({paging}; onFiring: hold)" in must
    assert 'ALERTS{alertstate="firing", severity="page"}' in out.split("PromQL (paste into Prometheus)")[1]
    assert cli.main(["status", "--flags", str(env.flags), "--decision-log", str(env.log)]) == 0
    shown = capsys.readouterr().out
    assert f"WAITING: alert firing: pages ({paging}): wait until it stops firing (onFiring: hold)" in shown
    env.metrics.answer = lambda promql: Reading.listed([]) if promql.startswith("ALERTS") else healthy(promql)
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    assert env.percent() == 1


def test_an_alert_with_hostile_labels_prints_escaped_in_log_status_and_explain(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alert labels come from the metrics a rule reads: a newline or a terminal escape in one is
    shown escaped by `flagroll log`, `status` and `explain`, never acted on by the terminal."""
    alerts = "  alerts:\n    - name: pages\n      selector: '{severity=\"page\"}'\n"
    env.add_policy("cache", "cache", POLICY.format(name="cache", key="cache") + alerts)
    labels = {"alertname": "Down", "severity": "page", "path": "/x\n\x1b[2J\x1b]0;owned\x07"}
    body = json.dumps(
        {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": labels, "value": [1, "1"]}]},
        }
    ).encode()
    env.metrics.answer = lambda promql: (
        parse_listing(200, body) if promql.startswith("ALERTS") else healthy(promql)
    )
    env.cycle()
    assert env.percent() == 0
    shown = r'Down{path="/x\n\x1b[2J\x1b]0;owned\x07", severity="page"}'
    outputs = [_explain(env, capsys, "--policies", str(env.policies))]
    for command in (["status", "--flags", str(env.flags)], ["log"]):
        assert cli.main([*command, "--decision-log", str(env.log)]) == 0
        outputs.append(capsys.readouterr().out)
    for out in outputs:
        assert shown in out
        assert "\x1b" not in out
        assert "\x07" not in out


def test_terminal_escapes_in_any_record_text_are_printed_escaped(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a record says may come from outside: a proxy's error page, a record written by an older
    version. `flagroll log`, `status` and `explain` print its control characters escaped (lines stay
    lines): nothing in the decision log can clear the screen or retitle the terminal."""
    env.metrics.answer = lambda promql: Reading.error("HTTP 502: \x1b[2J\x1b]0;owned\x07<html>\r")
    env.cycle()
    assert "\x1b[2J" in json.loads(env.log.read_text().splitlines()[-1])["reason"]  # recorded as said
    outputs = [_explain(env, capsys)]
    for command in (["status", "--flags", str(env.flags)], ["log"]):
        assert cli.main([*command, "--decision-log", str(env.log)]) == 0
        outputs.append(capsys.readouterr().out)
    for out in outputs:
        assert r"HTTP 502: \x1b[2J\x1b]0;owned\x07<html>\r" in out, out
        assert not any(c in out for c in "\x1b\x07\r")
        assert "\n" in out
