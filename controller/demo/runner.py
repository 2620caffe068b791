"""``flagroll demo``: a real rollout and a real rollback in one command.

It starts a real Prometheus (child process, 127.0.0.1, free port, temporary storage, 1 s scrape),
the demo service (child process; OpenFeature + flagd FILE provider reading the flag file; metrics from
the instrumentation kit; its own load generator), and the controller itself, in this process, on an
embedded policy with short holds. Each cycle it prints the flag's percent, each fixed guardrail's value
against its bound and the samples per arm, and beneath it the statistical guardrail's comparison with
the control arm (:mod:`controller.demo.report`); each move is printed as it happens. Both paths fail a
share of requests at random, so the arms differ by chance. In the ``regression`` scenario the treatment
path fails more often from its first user, too little for the fixed ceiling to see; the comparison with
control catches it, the controller rolls it back, and the demo prints the decision record that explains
why. Every process it started is stopped on the way out, also on Ctrl-C; the flag file and decision log
stay behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer, find_binary, free_port
from controller.core.durations import format_duration
from controller.core.errors import UsageError
from controller.core.policy import pct
from controller.core.records import render
from controller.demo import report
from controller.demo.service import FLAG
from controller.reconciler import Reconciler

SCENARIOS = ("regression", "healthy")
SCRAPE_SECONDS = 1.0
WINDOW_SECONDS = 10
INTERVAL_SECONDS = 2
SERVICE_RPS = 300  # requests per second; at 5 % that is 15 per arm, at 50 % 150
ERROR_RATIO = 0.01  # both paths, every request independently: the arms differ by chance
REGRESSION_ERROR_RATIO = 0.05  # the treatment path in the regression scenario, from its first user
# A fixed ceiling must sit far above the normal 1 %: at 5 % a 10 s window holds 100 to 150 requests,
# where 1.5 errors are expected and 8 unlucky ones make 5 %. So it never sees the regression's 5 %;
# the comparison with control does (docs/demo.md: the scenarios' design and their measured outcomes).
ERROR_CEILING = 0.2
TIMEOUT_SECONDS = 110.0
MARKER = ".flagroll-demo"  # in a directory the demo made its own
POLICY_FILE = "price-quote-cache.yaml"
FLAGS_FILE, LOG_FILE = "flags.json", "decisions.jsonl"

_FLAG_LABELS = 'feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"'
_LABELS = f'route="/price/quote",{_FLAG_LABELS}'

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
    - {{percent: 50, hold: 24s}}
  traffic:
    query: sum(increase(http_server_requests_total{{{_LABELS}}}[{WINDOW_SECONDS}s]))
    minSamples: 40
  guardrails:
    - name: errors-vs-control
      errorRatio:
        errors: http_server_requests_total{{code=~"5..",{_LABELS}}}
        requests: http_server_requests_total{{{_LABELS}}}
      maxDelta: 0
    - name: error-rate
      query: >-
        sum(rate(http_server_requests_total{{code=~"5..",{_LABELS}}}[{WINDOW_SECONDS}s]))
        / sum(rate(http_server_requests_total{{{_LABELS}}}[{WINDOW_SECONDS}s]))
      max: {ERROR_CEILING}
    - name: p95-latency
      query: >-
        histogram_quantile(0.95, sum by (le)
        (rate(http_server_request_duration_seconds_bucket{{{_LABELS}}}[{WINDOW_SECONDS}s])))
      max: 0.25
      maxIncrease: 0.5
  statistics:
    alpha: 0.01
    exposure: feature_flag_evaluations_total{{{_FLAG_LABELS}}}
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
    records: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None  # the final action seen: rollback, complete, promote

    def at(self, moment: float | None = None) -> str:
        return f"+{(moment if moment is not None else time.monotonic()) - self.started:5.1f}s"


def _show(record: dict[str, Any], run: Run, out: TextIO) -> None:
    _print(out, report.cycle_line(record, run.at()))
    for line in report.comparison_lines(record):
        _print(out, line)


def _print(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


def _service_command(scenario: str, flags: Path, port: int, seed: int) -> list[str]:
    command = [sys.executable, "-m", "controller.demo.service", "--flags", str(flags), "--port", str(port)]
    command += ["--rps", f"{SERVICE_RPS:g}", "--error-ratio", f"{ERROR_RATIO:g}", "--seed", str(seed)]
    if scenario == "regression":  # errors only: the latency guardrail and the checkpoint stay quiet
        command += ["--regressed", "--regression-error-ratio", f"{REGRESSION_ERROR_RATIO:g}"]
        command += ["--regression-latency-ms", "0"]
    return command


def _start_service(scenario: str, directory: Path, flags: Path, port: int) -> subprocess.Popen[bytes]:
    log = (directory / "service.log").open("wb")
    try:
        return subprocess.Popen(
            _service_command(scenario, flags, port, random.randrange(2**31)),
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


def _check_interrupted(stop: asyncio.Event | None) -> None:
    """Raise if Ctrl-C or SIGTERM came: a cancellation that lands inside an HTTP call can come back
    as a connection error, which the demo's loops tolerate, so they also look at this event."""
    if stop is not None and stop.is_set():
        raise asyncio.CancelledError


async def wait_http(
    url: str, timeout_seconds: float, process: subprocess.Popen[bytes], stop: asyncio.Event | None = None
) -> None:
    deadline = time.monotonic() + timeout_seconds
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            _check_interrupted(stop)
            if process.poll() is not None:
                raise RuntimeError(f"the demo service exited early (code {process.returncode})")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the demo service did not answer on {url} within {timeout_seconds:g}s")


def _refuse(directory: Path, entries: list[str], where: str) -> None:
    if entries:
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise UsageError(
            f"--dir {directory}: {where} holds files the demo did not write ({shown}); the demo runs every "
            f"policy in policies/ and deletes {FLAGS_FILE} and {LOG_FILE}: name a new or empty directory"
        )


def prepare_directory(directory: Path) -> None:
    """Make ``directory`` the demo's: new, empty, or one a demo used before (its marker file), where
    the last demo's flag file and decision log are deleted. Anything else is refused, naming what is
    there: the demo never deletes, or runs, what is not its own."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        entries = sorted(path.name for path in directory.iterdir())
        if MARKER not in entries:
            _refuse(directory, entries, "it")
        policies = directory / "policies"
        if policies.is_dir():
            _refuse(
                directory, sorted(p.name for p in policies.iterdir() if p.name != POLICY_FILE), "policies/"
            )
        (directory / MARKER).write_text("a directory of 'flagroll demo', which deletes its files here\n")
        policies.mkdir(exist_ok=True)
        (policies / POLICY_FILE).write_text(POLICY)
        for stale in (FLAGS_FILE, LOG_FILE):
            (directory / stale).unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"--dir {directory}: cannot use it: {exc.strerror or exc}") from exc


async def run_demo(scenario: str, directory: Path | None, prometheus_binary: str, out: TextIO) -> int:
    """Run the scenario; 0 when it ended as expected."""
    binary = find_binary(prometheus_binary)  # says how to install Prometheus when it is missing
    main_task = asyncio.current_task()
    stop = asyncio.Event()

    def interrupt() -> None:
        stop.set()
        if main_task is not None:
            main_task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, interrupt)
    directory = directory or Path(tempfile.mkdtemp(prefix="flagroll-demo-"))
    prepare_directory(directory)
    flags, log = directory / FLAGS_FILE, directory / LOG_FILE
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
                service = _start_service(scenario, directory, flags, port)
                _print(out, f"started the demo service (pid {service.pid}), metrics on 127.0.0.1:{port}")
                await wait_http(f"http://127.0.0.1:{port}/metrics", 30, service, stop)
                _print(out, _setting(scenario))
                _print(out, "started the controller on the demo policy (steps 5 % → 20 % → 50 %)\n")
                for record in first.records:
                    _show(record, run, out)
                await _drive(reconciler, run, out, stop)
        finally:
            if service is not None:
                stop_process(service)
    _check_interrupted(stop)
    return _summary(run, directory, out)


def _setting(scenario: str) -> str:
    def share(ratio: float) -> str:
        return f"{100 * ratio:g} %"

    both = f"{SERVICE_RPS:g} requests/s; every request fails at random, {share(ERROR_RATIO)} on both paths"
    if scenario == "regression":
        return (
            f"{both}, but the treatment path (the cache) fails {share(REGRESSION_ERROR_RATIO)} from "
            f"its first user: far below error-rate's fixed ceiling of {share(ERROR_CEILING)}"
        )
    return f"{both}: the arms differ by chance alone"


async def _drive(reconciler: Reconciler, run: Run, out: TextIO, stop: asyncio.Event | None = None) -> None:
    deadline = run.started + TIMEOUT_SECONDS
    await asyncio.sleep(INTERVAL_SECONDS)  # the first cycle has just run
    while time.monotonic() < deadline:
        _check_interrupted(stop)
        tick = time.monotonic()
        result = await reconciler.cycle()
        for record in result.records:
            run.records.append(record)
            _show(record, run, out)
            action = record["action"]
            if action not in {"hold"}:
                _print(
                    out,
                    f"          ▶ {action.upper()} {pct(record['from_percent'])}% → "
                    f"{pct(record['to_percent'])}%: {record['reason']}",
                )
            if action in {"rollback", "complete", "promote"}:
                run.outcome = action
                if action == "rollback":
                    _print(out, "\nThe decision record that explains it:\n")
                    _print(out, report.long_lines(render(record)))
                return
        await asyncio.sleep(max(0.0, tick + INTERVAL_SECONDS - time.monotonic()))
    _print(out, f"\nthe scenario did not finish within {TIMEOUT_SECONDS:g}s")


def _flagroll_command() -> str:
    """How the user can run flagroll: plain ``flagroll`` when it is on PATH."""
    beside = Path(sys.executable).parent / "flagroll"
    if shutil.which("flagroll") == str(beside) or not beside.exists():
        return "flagroll"
    return str(beside)


def _seconds_between(first: dict[str, Any], last: dict[str, Any]) -> float:
    def moment(record: dict[str, Any]) -> float:
        return datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()

    return moment(last) - moment(first)


def _summary(run: Run, directory: Path, out: TextIO) -> int:
    actions = Counter(str(r["action"]) for r in run.records)
    expected = "rollback" if run.scenario == "regression" else "complete"
    _print(out, f"\nSummary (scenario: {run.scenario})")
    _print(out, f"  {_setting(run.scenario)}")
    exposed = next((r for r in run.records if r["action"] == "advance"), None)
    rollback = next((r for r in run.records if r["action"] == "rollback"), None)
    if rollback is not None:
        after = (
            f", {_seconds_between(exposed, rollback):.1f}s after the first user was exposed"
            if exposed
            else ""
        )
        _print(out, f"  rolled back at {pct(rollback['from_percent'])} %{after}")
        for line in report.tripped(rollback, WINDOW_SECONDS):
            _print(out, f"  {line}")
    else:
        for line in report.calm(run.records):
            _print(out, f"  {line}")
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
    ok = got == expected
    _print(out, f"  result: {'as expected' if ok else 'NOT as expected'} (wanted {expected}, got {got})")
    return 0 if ok else 1
