"""``log``, ``explain`` and ``status`` on a decision log whose holds were compacted into heartbeats;
``flagroll run --decision-log-heartbeat``."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.promserver import free_port
from controller.cli import build_parser, main
from tests.support.controller import ControllerProcess
from tests.support.environment import POLICY, T0, Environment
from tests.support.policytext import BASE
from tests.support.waiting import wait_for

LONG_HOLD = POLICY.format(name="cache", key="cache").replace("hold: 1m", "hold: 3h")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # the controller's own lines, before
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def held(tmp_path: Path) -> Environment:
    """``cache`` at 1 %, held 30 minutes of 10 s cycles: an advance, a full hold, heartbeats."""
    env = Environment(tmp_path)
    env.add_policy("cache", "cache", LONG_HOLD)
    reconciler = env.reconciler(heartbeat_seconds=600)
    for _ in range(182):
        asyncio.run(reconciler.cycle())
        env.clock.now += timedelta(seconds=10)
    assert env.log.read_text().count('"heartbeat"') == 3
    return env


def test_log_shows_a_heartbeat_as_one_line(capsys: pytest.CaptureFixture[str], held: Environment) -> None:
    code, out, err = run(capsys, "log", "--decision-log", str(held.log))
    assert code == 0
    assert not err
    beats = [line for line in out.splitlines() if "held since" in line]
    assert len(beats) == 3
    assert beats[-1].startswith("2026-11-21T12:30:10.000Z  cache  HOLD  held since 2026-11-21T12:00:10.000Z")
    assert "(180 cycles since): all 3 checks pass; 2h29m of the 3h hold left at 1 %" in beats[-1]
    code, out, _ = run(capsys, "log", "--decision-log", str(held.log), "--json", "--last", "1")
    assert json.loads(out)["heartbeat"] == {"since": "2026-11-21T12:00:10.000Z", "cycles": 180}


def test_explain_says_since_when_and_how_many_cycles_with_the_queries(
    capsys: pytest.CaptureFixture[str], held: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controller.cli.common.utc_now", lambda: T0 + timedelta(minutes=31))
    code, out, err = run(
        capsys, "explain", "cache", "--flags", str(held.flags), "--decision-log", str(held.log)
    )
    assert code == 0, err
    assert "Last decision  HOLD 2026-11-21 12:30:10Z (50s ago)" in out
    assert "2h29m of the 3h hold left" in out
    held_line = next(line for line in out.splitlines() if line.strip().startswith("Held"))
    assert "since 2026-11-21 12:00:10Z (30m50s ago)" in held_line
    assert "180 cycles since, because all 3 checks" in held_line
    assert 'sum(errors{v="on",flag="cache"})' in out  # the query text, from the full record


def test_status_reads_a_heartbeat_as_the_last_decision(
    capsys: pytest.CaptureFixture[str], held: Environment
) -> None:
    code, out, err = run(
        capsys, "status", "--json", "--flags", str(held.flags), "--decision-log", str(held.log)
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["last_action"] == "hold"
    assert row["last_decision_at"] == "2026-11-21T12:30:10.000Z"
    assert "2h29m of the 3h hold left" in row["last_reason"]


def test_run_takes_the_heartbeat_option() -> None:
    common = ["run", "--policies", "p", "--flags", "f.json", "--prometheus", "http://x"]
    parser = build_parser()
    assert parser.parse_args(common).decision_log_heartbeat == 1800.0
    assert parser.parse_args([*common, "--decision-log-heartbeat", "0"]).decision_log_heartbeat == 0.0
    assert parser.parse_args([*common, "--decision-log-heartbeat", "1h"]).decision_log_heartbeat == 3600.0
    with pytest.raises(SystemExit):
        parser.parse_args([*common, "--decision-log-heartbeat", "10"])


def _holds(base: str) -> float:
    try:
        text = httpx.get(base + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "flagroll_decisions_total" and sample.labels.get("action") == "hold":
                return float(sample.value)
    return 0.0


def test_run_stopped_by_sigterm_writes_a_heartbeat_counting_every_held_cycle(tmp_path: Path) -> None:
    """Prometheus unreachable: the rollout holds every second, compacted (one full record, then
    nothing for an hour); SIGTERM writes the heartbeat that counts the cycles since."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    controller = ControllerProcess(
        tmp_path, "http://127.0.0.1:9", "--listen", f"127.0.0.1:{port}", "--decision-log-heartbeat", "1h"
    )
    controller.add_policy("demo", BASE.replace("interval: 30s", "interval: 1s"))
    with controller:
        wait_for(lambda: _holds(base) >= 5, timeout_seconds=60, what="five held cycles")
        full = [(False, "hold"), (False, "hold")]  # the new rollout's hold, then the plain one
        assert [("heartbeat" in r, r["action"]) for r in controller.records()] == full
        assert controller.stop() == 0
    records = controller.records()
    assert [("heartbeat" in r, r["action"]) for r in records] == [*full, (True, "hold")]
    beat = records[-1]["heartbeat"]
    assert beat["since"] == records[1]["time"]
    assert beat["cycles"] >= 3  # every hold after the plain one, up to the last before the signal
    assert '"event": "stopped"' in controller.output()
