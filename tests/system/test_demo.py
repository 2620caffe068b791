"""``flagroll demo`` end to end: a real Prometheus, the demo service, real flagd evaluation."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from controller.adapters.decisionlog import read_records
from controller.core.flagd import read_state
from controller.core.state import Status
from controller.demo.service import FLAG
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def started_pids(output: str) -> list[int]:
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]
    assert len(pids) == 2, output  # Prometheus and the demo service
    return pids


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def exposure(flags: Path, users: int = 2000) -> dict[str, int]:
    core = FlagdCore()
    core.set_flags(flags.read_text())
    counts: dict[str, int] = {}
    for i in range(users):
        variant = core.resolve_boolean_value(FLAG, False, EvaluationContext(targeting_key=f"u{i}")).variant
        counts[str(variant)] = counts.get(str(variant), 0) + 1
    return counts


COMPARISON = re.compile(
    r"errors-vs-control: treatment \d+\.\d % vs control \d+\.\d % \(n \d+/\d+ since exposure\), "
    r"excess ≥ ([+-]\d+\.\d+) pt \((bound|above) 0\)"
)


def test_the_regression_is_caught_by_the_comparison_with_control_not_the_fixed_ceiling(
    tmp_path: Path,
) -> None:
    done = demo(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    records = list(read_records(tmp_path / "decisions.jsonl"))
    moves = [r["action"] for r in records if r["action"] != "hold"]
    assert moves[0] == "advance"
    assert moves[-1] == "rollback"
    assert set(moves[:-1]) == {"advance"}
    rollback = records[-1]
    failed = [c["name"] for c in rollback["checks"] if c["verdict"] == "fail"]
    assert failed == ["errors-vs-control"], rollback["reason"]
    assert "errors-vs-control" in rollback["reason"]
    # Live: the estimates and the lower bound of the excess, rising as requests accumulate, until it
    # is above 0.
    shown = COMPARISON.findall(done.stdout)
    assert len(shown) >= 3, done.stdout
    assert shown[-1][1] == "above"
    assert all(side == "bound" for _, side in shown[:-1])
    assert float(shown[0][0]) < 0 < float(shown[-1][0])
    # The summary says which guardrail tripped first and why, and how the fixed ceiling stood.
    assert "tripped first: errors-vs-control\n" in done.stdout
    assert "more than chance explains" in done.stdout
    assert re.search(
        r"not tripped: error-rate treatment \S+ ≤ 0\.2 \(max; n=\d+/\d+\) over the last 10s, a fixed bound",
        done.stdout,
    )
    assert "The decision record that explains it" in done.stdout
    assert re.search(r"rolled back at (5|20|50) %, \d+\.\ds after the first user was exposed", done.stdout)
    assert "result: as expected" in done.stdout
    # Nobody is exposed any more, as the real flagd evaluator reads the file.
    state = read_state(json.loads((tmp_path / "flags.json").read_text()), FLAG)
    assert state is not None
    assert (state.status, state.percent) == (Status.ROLLED_BACK, 0)
    assert set(exposure(tmp_path / "flags.json")) == {"off"}
    assert not any(alive(pid) for pid in started_pids(done.stdout))


def test_the_healthy_scenario_ramps_to_completion_without_tripping_on_noise(tmp_path: Path) -> None:
    done = demo(tmp_path, "--scenario", "healthy")
    assert done.returncode == 0, done.stdout + done.stderr
    records = list(read_records(tmp_path / "decisions.jsonl"))
    assert [r["action"] for r in records if r["action"] != "hold"] == ["advance"] * 3 + ["complete"]
    assert records[-1]["checkpoint"] == "pass"
    compared = [c for r in records for c in r["checks"] if c["name"] == "errors-vs-control"]
    assert {c["verdict"] for c in compared} <= {"pass", "no_data"}
    assert sum(c["verdict"] == "pass" for c in compared) >= 5
    shown = COMPARISON.findall(done.stdout)
    assert len(shown) >= 5, done.stdout
    assert all(side == "bound" and float(lower) <= 0 for lower, side in shown)
    assert "no guardrail tripped; against the control arm at the last look:" in done.stdout
    assert "nothing was rolled back on noise" in done.stdout
    assert "result: as expected" in done.stdout
    counts = exposure(tmp_path / "flags.json")
    assert abs(counts["on"] / 2000 - 0.5) < 0.04
    assert not any(alive(pid) for pid in started_pids(done.stdout))


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "controller", "demo", "--dir", str(tmp_path / "demo")],
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for(
            lambda: "started the demo service" in out.read_text(), timeout_seconds=60, what="the service"
        )
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out.read_text())]
        assert all(alive(pid) for pid in pids)
        os.kill(process.pid, signal.SIGINT)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 130
    assert "interrupted" in out.read_text()
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)


def test_without_prometheus_it_says_how_to_install_it(tmp_path: Path) -> None:
    done = demo(tmp_path, "--prometheus-binary", "/nonexistent/prometheus")
    assert done.returncode != 0
    assert "apt-get install -y --no-install-recommends prometheus" in done.stderr
