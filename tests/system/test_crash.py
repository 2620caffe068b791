"""Crash safety and concurrency, with real processes killed by SIGKILL at random points.

Controllers run in forked child processes (the real reconciler, file store and decision log, querying
the session's real Prometheus) on a clock that runs ``SPEED`` times faster than the wall clock, so a
step's hold passes in milliseconds and almost every cycle writes. The parent kills them at random
moments, hundreds of times, and after each kill checks what an operator relies on:

- the flag file is valid flagd JSON that the flagd evaluator loads and evaluates;
- it never holds a percentage the policy did not reach, and its targeting matches its state;
- no step is applied twice (the log's advances climb one step at a time between restarts);
- the decision log reads back with every complete record (a torn last line is skipped with a warning),
  and a change whose record was lost in the crash is recorded as ``recover`` by the next controller;
  the log rotates every few records (``LOG_MAX_BYTES``), so kills land in rotations too, and recovery
  reads across the generations; holds are compacted into heartbeats (``HEARTBEAT_SECONDS``), and no
  ``recover`` record is spurious because a flag's last record is a heartbeat.

The figures of a run (kills, writes, torn lines, recovered records) are printed; the last run's are
in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest
import structlog
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from controller import cli
from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.flagstore import FileFlagStore, Snapshot
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer
from controller.cli import common
from controller.core.flagd import read_state
from controller.core.state import Status
from controller.reconciler import Reconciler
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

SPEED = 200.0  # simulated seconds per wall-clock second
FLAG = "crash-test"
STEPS = list(range(2, 42, 2))  # 20 steps: 2 %, 4 %, … 40 %
KILLS = int(os.environ.get("FLAGROLL_CRASH_KILLS", "300"))
FORK = multiprocessing.get_context("fork")
LOG_MAX_BYTES = 16 * 1024  # a rotation every dozen records or so; every generation is kept
LOG_KEEP = 100_000
HEARTBEAT_SECONDS = 0.3  # simulated: a step's hold of 1 s is a full record and heartbeats, under the kills

POLICY = f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {FLAG}}}
spec:
  owner: sre-lead
  aim: "Survive being killed at any moment."
  mechanism: "Atomic writes, state in the flag file, records appended after the write."
  flag: {{key: {FLAG}}}
  maxPercent: 40
  interval: 1s
  steps:
{chr(10).join(f"    - {{percent: {p}, hold: 1s}}" for p in STEPS)}
  guardrails:
    - name: always-fine
      query: vector(0.001)
      max: 0.05
"""


def fast_clock(origin: float) -> Callable[[], datetime]:
    def now() -> datetime:
        return datetime.fromtimestamp(origin + (time.time() - origin) * SPEED, UTC)

    return now


class _JournalledStore(FileFlagStore):
    """The file store, noting when each write starts and ends (CLOCK_MONOTONIC is system-wide), so
    the test can check that two writers never overlap."""

    def __init__(self, path: Path, journal: Path) -> None:
        super().__init__(path)
        self.journal = journal

    def write(self, document: Any, expected: Snapshot, changed: Any) -> None:
        start = time.monotonic_ns()
        super().write(document, expected, changed)
        with self.journal.open("a") as handle:
            handle.write(f"{os.getpid()} {start} {time.monotonic_ns()}\n")


def _controller(workdir: Path, url: str, origin: float) -> None:
    """A child process: reconcile as fast as possible until killed."""
    silent = structlog.wrap_logger(structlog.ReturnLogger())

    async def loop() -> None:
        async with PrometheusClient(url, timeout_seconds=5) as prometheus:
            reconciler = Reconciler(
                policies=workdir / "policies",
                store=_JournalledStore(workdir / "flags.json", workdir / "writes.journal"),
                prometheus=prometheus,
                decision_log=DecisionLog(workdir / "decisions.jsonl", max_bytes=LOG_MAX_BYTES, keep=LOG_KEEP),
                clock=fast_clock(origin),
                log=silent,
                heartbeat_seconds=HEARTBEAT_SECONDS,
            )
            while True:
                await reconciler.cycle()

    asyncio.run(loop())


@dataclass
class Figures:
    kills: int = 0
    torn_lines: int = 0
    recovered: int = 0
    advances: int = 0
    heartbeats: int = 0
    stops: int = 0
    writes: int = 0
    warnings: list[str] = field(default_factory=list)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crash.yaml").write_text(POLICY)
    return tmp_path


def _human(workdir: Path, command: str, origin: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "utc_now", fast_clock(origin))
    flags = str(workdir / "flags.json")
    code = cli.main([command, FLAG, "--reason", "crash test", "--flags", flags, "--actor", "on-call"])
    assert code == 0


def _check_flag_file(workdir: Path) -> Status | None:
    path = workdir / "flags.json"
    if not path.exists():
        return None
    text = path.read_text()
    document = json.loads(text)  # complete JSON, never a torn file
    core = FlagdCore()
    core.set_flags(text)  # the flagd evaluator loads it
    for user in ("u1", "u2", "u3"):
        details = core.resolve_boolean_value(FLAG, False, EvaluationContext(targeting_key=user))
        assert details.variant in {"on", "off", "control"}
    state = read_state(document, FLAG)  # targeting matches the recorded state
    assert state is not None
    if state.status in {Status.STOPPED, Status.ROLLED_BACK} or state.step < 0:
        assert state.percent == 0
    else:
        assert state.percent == STEPS[state.step], (state.step, state.percent)
    return state.status


def _check_log(workdir: Path, figures: Figures) -> None:
    warnings: list[str] = []
    records = list(read_records(workdir / "decisions.jsonl", warnings.append))
    figures.torn_lines = len(warnings)
    figures.warnings = warnings
    for warning in warnings:
        assert "skipped an unreadable record" in warning
    step = -1
    advances = stops = recovered = 0
    for record in records:
        action = record["action"]
        if action == "advance":
            advances += 1
            assert record["to_step"] == step + 1, f"step applied twice or skipped: {record} after step {step}"
            step = record["to_step"]
        elif action == "recover":
            recovered += 1
            assert record["to_step"] >= step, f"a recovered record went backwards: {record} after {step}"
            # Never spurious: no record before it already recorded the change (a record read from an
            # older generation counts: recovery reads across them).
            earlier = [r for r in records[: records.index(record)] if r["time"] >= record["time"]]
            assert earlier == [], f"a recover record for a change already recorded: {record}"
            step = record["to_step"]
        elif action in {"stop", "rollback", "resume"}:
            stops += action == "stop"
            step = record["to_step"]
    figures.advances, figures.stops, figures.recovered = advances, stops, recovered
    figures.heartbeats = sum("heartbeat" in r for r in records)


def _overlapping_writes(journal: Path) -> list[tuple[str, str]]:
    if not journal.exists():
        return []
    spans = sorted(
        (int(start), int(end), pid)
        for pid, start, end in (line.split() for line in journal.read_text().splitlines() if line.strip())
    )
    return [(a[2], b[2]) for a, b in itertools.pairwise(spans) if b[0] < a[1]]


def _kill(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.join(10)
        assert process.exitcode is not None


def test_hundreds_of_sigkills_never_corrupt_the_flag_file_or_lose_a_record(
    workdir: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = time.time()
    rng = random.Random(20261121)
    figures = Figures()
    for _ in range(KILLS):
        child = FORK.Process(target=_controller, args=(workdir, prometheus.url, origin), daemon=True)
        child.start()
        time.sleep(rng.uniform(0.0, 0.3))  # the random moment of the kill: this is the fault, not a wait
        _kill([child])
        figures.kills += 1
        status = _check_flag_file(workdir)
        if status is Status.COMPLETED:
            _human(workdir, "stop", origin, monkeypatch)
            _human(workdir, "resume", origin, monkeypatch)
    _check_log(workdir, figures)
    journal = workdir / "writes.journal"
    figures.writes = len(journal.read_text().splitlines())
    print(f"\ncrash test: {figures}")
    # The rollout really moved under fire: many advances, several full ramps, and recoveries happened.
    assert figures.advances > KILLS // 3
    assert figures.stops >= KILLS // 100
    assert figures.heartbeats > 0  # holds were compacted under the kills too
    # One more controller, left to finish a cycle: every move of the flag file is now in the log.
    child = FORK.Process(target=_controller, args=(workdir, prometheus.url, origin), daemon=True)
    child.start()

    def finished() -> bool:
        state = read_state(json.loads((workdir / "flags.json").read_text()), FLAG)
        records = [r for r in read_records(workdir / "decisions.jsonl") if r["flag"] == FLAG]
        return state is not None and state.status is Status.COMPLETED and records[-1]["status"] == "completed"

    wait_for(finished, timeout_seconds=30, what="the last controller to complete the rollout")
    _kill([child])
    assert _overlapping_writes(journal) == []
    rotated = list(workdir.glob("decisions.jsonl.*.gz"))
    print(f"crash test: {len(rotated)} rotated generations")
    assert len(rotated) > KILLS // 10  # the log rotated under fire
    assert list(workdir.glob(".flags.json.*.tmp")) == []  # leftovers of killed writers were swept


def test_two_controllers_and_an_on_call_stop_never_double_advance_or_lose_the_stop(
    workdir: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = time.time()
    rng = random.Random(7)
    figures = Figures()
    for _ in range(20):
        children = [
            FORK.Process(target=_controller, args=(workdir, prometheus.url, origin), daemon=True)
            for _ in range(2)
        ]
        for child in children:
            child.start()
        wait_for(lambda: _check_flag_file(workdir), timeout_seconds=30, what="the first write")
        time.sleep(rng.uniform(0.05, 0.4))  # let both race for a while: the fault window
        _human(workdir, "stop", origin, monkeypatch)  # on-call says stop while both are running
        time.sleep(rng.uniform(0.05, 0.2))  # both keep cycling after the stop
        stopped = _check_flag_file(workdir)
        _kill(children)
        assert stopped is Status.STOPPED, "a controller overwrote the on-call stop"
        assert _check_flag_file(workdir) is Status.STOPPED
        _human(workdir, "resume", origin, monkeypatch)
    _check_log(workdir, figures)
    print(f"\nconcurrency test: {figures}")
    assert figures.advances > 20
    assert figures.stops == 20
    assert _overlapping_writes(workdir / "writes.journal") == []
