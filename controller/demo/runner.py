"""``flagroll demo``: a real rollout and a real rollback in one command.

It starts a real Prometheus (child process, 127.0.0.1, free port, temporary storage, 1 s scrape),
the demo service (child process; OpenFeature + flagd FILE provider reading the flag file; metrics from
the instrumentation kit; its own load generator), and the controller itself, in this process, on an
embedded policy with short holds. Each cycle it prints the flag's percent, each guardrail's value
against its bound and the samples per arm; each move is printed as it happens. In the ``regression``
scenario a regression is injected into the treatment path once the ramp reaches its last step; the
controller rolls it back and the demo prints the decision record that explains why. Every process it
started is stopped on the way out, also on Ctrl-C; the flag file and decision log stay behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer, find_binary, free_port
from controller.core.checkrecord import fmt
from controller.core.durations import format_duration
from controller.core.policy import pct
from controller.core.records import render
from controller.demo.service import (
    ERROR_RATIO,
    FLAG,
    REGRESSION_ERROR_RATIO,
    REGRESSION_LATENCY_SECONDS,
)
from controller.reconciler import Reconciler

SCENARIOS = ("regression", "healthy")
SCRAPE_SECONDS = 1.0
WINDOW_SECONDS = 10
INTERVAL_SECONDS = 2
ERROR_BOUND = 0.05  # far above the normal 0.1 %, so that a few unlucky errors never trip it
ERRORS_BEFORE, ERRORS_AFTER = ERROR_RATIO, REGRESSION_ERROR_RATIO
INJECT_AFTER_SECONDS = 4.0  # into the last step, plus a random part of an interval
TIMEOUT_SECONDS = 110.0

_LABELS = 'route="/price/quote",feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"'

POLICY = f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata:
  name: price-quote-cache
spec:
  owner: demo-sre
  aim: "Cut p95 of /price/quote from 140ms to 70ms."
  mechanism: "We believe a read-through cache cuts p95 because it removes the pricing-database call."
  flag:
    key: {FLAG}
  control: true
  maxPercent: 50
  interval: {INTERVAL_SECONDS}s
  steps:
    - {{percent: 5, hold: 10s}}
    - {{percent: 20, hold: 10s}}
    - {{percent: 50, hold: 16s}}
  traffic:
    query: sum(increase(http_server_requests_total{{{_LABELS}}}[{WINDOW_SECONDS}s]))
    minSamples: 40
  guardrails:
    - name: error-rate
      query: >-
        sum(rate(http_server_requests_total{{code=~"5..",{_LABELS}}}[{WINDOW_SECONDS}s]))
        / sum(rate(http_server_requests_total{{{_LABELS}}}[{WINDOW_SECONDS}s]))
      max: {ERROR_BOUND}
    - name: p95-latency
      query: >-
        histogram_quantile(0.95, sum by (le)
        (rate(http_server_request_duration_seconds_bucket{{{_LABELS}}}[{WINDOW_SECONDS}s])))
      max: 0.25
      maxIncrease: 0.5
  checkpoint:
    expect:
      - name: p95-latency
        minDecrease: 0.25
    onPass: complete
    onFail: rollback
"""


@dataclass
class Run:
    """What happened, for the summary."""

    scenario: str
    started: float = field(default_factory=time.monotonic)
    injected_at: float | None = None
    injected_wall: float | None = None
    last_step_since: float | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None  # the final action seen: rollback, complete, promote

    def at(self, moment: float | None = None) -> str:
        return f"+{(moment if moment is not None else time.monotonic()) - self.started:5.1f}s"


def _bound_seconds() -> float:
    """Time to rollback is bounded by: a scrape to see the first bad sample, the share of the rate
    window that must be bad before the ratio crosses the bound, one check interval, and one more
    scrape for rate()'s extrapolation."""
    share = (ERROR_BOUND - ERRORS_BEFORE) / (ERRORS_AFTER - ERRORS_BEFORE)
    return 2 * SCRAPE_SECONDS + share * WINDOW_SECONDS + INTERVAL_SECONDS


def _line(record: Mapping[str, Any], run: Run) -> str:
    checks = [c for c in record.get("checks", []) if isinstance(c, dict)]
    samples = {c["arm"]: c.get("value") for c in checks if c.get("kind") == "traffic"}
    parts = []
    worst: dict[str, dict[str, Any]] = {}  # per guardrail, its most telling check
    rank = {"fail": 3, "error": 2, "no_data": 1, "pass": 0}
    for check in checks:
        if check.get("kind") == "guardrail":
            name = check["name"]
            if name not in worst or rank[check["verdict"]] > rank[worst[name]["verdict"]]:
                worst[name] = check
    for check in worst.values():
        if check.get("value") is None:
            parts.append(f"{check['name']} {check['verdict']}")
        elif check["verdict"] in {"pass", "fail"}:
            symbol = ">" if check["verdict"] == "fail" else "≤"
            parts.append(f"{check['name']} {fmt(check['value'])} {symbol} {fmt(check['bound'])}")
        else:  # a value, but too few samples behind it to judge
            parts.append(f"{check['name']} {fmt(check['value'])} ({check['verdict']})")
    counts = [samples.get(arm) for arm in ("treatment", "control")]
    n = "/".join(fmt(round(c)) if isinstance(c, int | float) else "—" for c in counts)
    step = record.get("to_step")
    step_text = f"step {step + 1}/{record.get('steps')}" if isinstance(step, int) and step >= 0 else "step -"
    return (
        f"{run.at()}  {pct(record['to_percent']):>3}%  {step_text:<9}  {record['action']:<8}  "
        f"{' · '.join(parts) or '—'}  (n treatment/control {n})"
    )


def _print(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


def _start_service(directory: Path, flags: Path, port: int) -> subprocess.Popen[bytes]:
    log = (directory / "service.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "controller.demo.service", "--flags", str(flags), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the service itself
        )
    finally:
        log.close()


def stop_process(process: subprocess.Popen[bytes], timeout_seconds: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_http(url: str, timeout_seconds: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_seconds
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the demo service exited early (code {process.returncode})")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the demo service did not answer on {url} within {timeout_seconds:g}s")


async def run_demo(scenario: str, directory: Path | None, prometheus_binary: str, out: TextIO) -> int:
    """Run the scenario; 0 when it ended as expected."""
    binary = find_binary(prometheus_binary)  # says how to install Prometheus when it is missing
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    directory = directory or Path(tempfile.mkdtemp(prefix="flagroll-demo-"))
    (directory / "policies").mkdir(parents=True, exist_ok=True)
    (directory / "policies" / "price-quote-cache.yaml").write_text(POLICY)
    flags, log = directory / "flags.json", directory / "decisions.jsonl"
    for stale in (flags, log):
        stale.unlink(missing_ok=True)
    run = Run(scenario)
    port = free_port()
    _print(out, f"flagroll demo — scenario: {scenario}; files in {directory}")
    service: subprocess.Popen[bytes] | None = None
    with PrometheusServer([f"127.0.0.1:{port}"], binary=binary, job="demo-service") as prometheus:
        pid = prometheus.process.pid if prometheus.process else "?"
        _print(out, f"started Prometheus {prometheus.url} (pid {pid}), scraping every {SCRAPE_SECONDS:g}s")
        try:
            async with PrometheusClient(prometheus.url, timeout_seconds=5) as client:
                reconciler = Reconciler(
                    policies=directory / "policies",
                    store=FileFlagStore(flags),
                    prometheus=client,
                    decision_log=DecisionLog(log),
                )
                first = await reconciler.cycle()
                run.records.extend(first.records)
                service = _start_service(directory, flags, port)
                _print(out, f"started the demo service (pid {service.pid}), metrics on 127.0.0.1:{port}")
                await wait_http(f"http://127.0.0.1:{port}/metrics", 30, service)
                _print(out, "started the controller on the demo policy (steps 5 % → 20 % → 50 %)\n")
                for record in first.records:
                    _print(out, _line(record, run))
                await _drive(reconciler, run, service, out)
        finally:
            if service is not None:
                stop_process(service)
    return _summary(run, directory, out)


async def _drive(reconciler: Reconciler, run: Run, service: subprocess.Popen[bytes], out: TextIO) -> None:
    deadline = run.started + TIMEOUT_SECONDS
    await asyncio.sleep(INTERVAL_SECONDS)  # the first cycle has just run
    while time.monotonic() < deadline:
        tick = time.monotonic()
        result = await reconciler.cycle()
        for record in result.records:
            run.records.append(record)
            _print(out, _line(record, run))
            action = record["action"]
            if action not in {"hold"}:
                _print(
                    out,
                    f"          ▶ {action.upper()} {pct(record['from_percent'])}% → "
                    f"{pct(record['to_percent'])}%: {record['reason']}",
                )
            if action == "advance" and record["to_step"] == record["steps"] - 1:
                run.last_step_since = time.monotonic()
            if action in {"rollback", "complete", "promote"}:
                run.outcome = action
                if action == "rollback":
                    _print(out, "\nThe decision record that explains it:\n")
                    _print(out, render(record))
                return
        next_tick = tick + INTERVAL_SECONDS
        if (
            run.scenario == "regression"
            and run.injected_at is None
            and run.last_step_since is not None
            and time.monotonic() - run.last_step_since >= INJECT_AFTER_SECONDS
        ):
            # At a random moment between two cycles, so the measured time is not just one interval.
            await asyncio.sleep(random.uniform(0.1, 0.9) * INTERVAL_SECONDS)
            os.kill(service.pid, signal.SIGUSR1)
            run.injected_at, run.injected_wall = time.monotonic(), time.time()
            _print(
                out,
                f"{run.at()}  ⚡ regression injected into the treatment path: errors "
                f"{ERRORS_BEFORE:.1%} → {ERRORS_AFTER:.0%}, "
                f"latency +{REGRESSION_LATENCY_SECONDS * 1000:.0f} ms",
            )
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    _print(out, f"\nthe scenario did not finish within {TIMEOUT_SECONDS:g}s")


def _flagroll_command() -> str:
    """How the user can run flagroll: plain ``flagroll`` when it is on PATH."""
    beside = Path(sys.executable).parent / "flagroll"
    if shutil.which("flagroll") == str(beside) or not beside.exists():
        return "flagroll"
    return str(beside)


def _summary(run: Run, directory: Path, out: TextIO) -> int:
    actions = Counter(str(r["action"]) for r in run.records)
    expected = "rollback" if run.scenario == "regression" else "complete"
    _print(out, f"\nSummary (scenario: {run.scenario})")
    if run.injected_at is not None and run.injected_wall is not None:
        _print(out, f"  regression injected {run.injected_at - run.started:.1f}s into the demo")
        rollback = next((r for r in run.records if r["action"] == "rollback"), None)
        if rollback is not None:
            rolled = datetime.fromisoformat(str(rollback["time"]).replace("Z", "+00:00")).timestamp()
            took = rolled - run.injected_wall
            _print(
                out,
                f"  rolled back {took:.1f}s after the regression started (measured); the error-rate "
                f"guardrail alone trips within about {_bound_seconds():.1f}s: "
                f"2 × scrape ({SCRAPE_SECONDS:g}s) + "
                f"{(ERROR_BOUND - ERRORS_BEFORE) / (ERRORS_AFTER - ERRORS_BEFORE):.2f} × rate window "
                f"({WINDOW_SECONDS}s) + check interval ({INTERVAL_SECONDS}s)",
            )
    counts = ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    _print(
        out,
        f"  decisions: {sum(actions.values())} ({counts}) in "
        f"{format_duration(time.monotonic() - run.started)}",
    )
    _print(out, f"  flag file and decision log: {directory / 'flags.json'}, {directory / 'decisions.jsonl'}")
    command = _flagroll_command()
    _print(out, f"  try: {command} status --flags {directory / 'flags.json'}")
    _print(out, f"       {command} log --flags {directory / 'flags.json'}")
    got = run.outcome or "nothing"
    if run.scenario == "regression" and run.outcome == "rollback" and run.injected_at is None:
        got = "a rollback before any regression was injected"
    ok = got == expected
    _print(out, f"  result: {'as expected' if ok else 'NOT as expected'} (wanted {expected}, got {got})")
    return 0 if ok else 1
