"""Time to rollback, end to end on real components: from the moment a regression starts in the
treatment path to the moment an OpenFeature client evaluates ``off`` for users who were in treatment.

What runs, all on 127.0.0.1:

- a real Prometheus (:class:`controller.adapters.promserver.PrometheusServer`, 1 s scrape), one for all runs;
- the demo service (``python -m controller.demo.service``): it evaluates the flag through OpenFeature
  and the flagd provider in FILE mode, serves 150 requests per second to 20,000 simulated users and
  exports per-variant metrics; SIGUSR1 injects a regression into the treatment path (errors 0.1 % →
  20 %, +200 ms), SIGUSR2 clears it;
- the controller: the real :class:`~controller.reconciler.Reconciler` with the file flag store, the
  Prometheus client and the decision log, one cycle every 2 s (the policy's ``interval``), driven on a
  fixed schedule by this process;
- an OpenFeature client in this process: the flagd provider in FILE mode on the same flag file, which
  it polls every 200 ms (``deadline_ms``).

The policy is the demo's error-rate guardrail (``max: 0.05`` over a 10 s rate window, ``minSamples:
40`` of traffic) with a single step at 50 %; the demo's p95-latency guardrail is left out (it often
trips first), so that what is measured is the guardrail the bound is about. Each run writes a new
policy revision (which restarts a rolled-back rollout), waits until the rollout is at 50 %, its arms
have been exposed for a full rate window plus two scrapes and the last two checks passed, picks
treatment users (the client evaluates ``on`` for them), then sends SIGUSR1 at a random moment
between two checks. From that moment it evaluates the flag for those users every 20 ms until every
one of them gets ``off``: that is the measured time. It then sends SIGUSR2 and, before the next run,
waits until the guardrail's rate window no longer sees the regression.

    .venv/bin/python -m bench.time_to_rollback                  # 10 runs, about 5 minutes
    .venv/bin/python -m bench.time_to_rollback --runs 3 --json /tmp/ttr.json

It prints every run, the median and the maximum, the bound the docs give and whether the target
(median ≤ 15 s) is met; exit code 0 when every run rolled back and the target is met. See
docs/benchmarks.md for the figures and why the bound holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FileFlagStore, atomic_write
from controller.adapters.policyfile import load_text
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer, find_binary, free_port
from controller.core.errors import UsageError
from controller.core.queries import ReadingKind
from controller.demo.runner import stop_process, wait_http
from controller.demo.service import ERROR_RATIO, FLAG, REGRESSION_ERROR_RATIO, ROUTE
from controller.reconciler import Reconciler

ROOT = Path(__file__).resolve().parent.parent
POLICY_NAME = "price-quote-cache"
DOMAIN = "time-to-rollback"  # the OpenFeature domain of this process's client
TARGET_MEDIAN_SECONDS = 15.0
EVALUATION_POLL_SECONDS = 0.02  # how often the client evaluates the flag once the regression started
WATCHED_USERS = 5  # treatment users the client watches in each run
USER_POOL = 2000  # the watched users are drawn from u0 … u1999 (the service serves u0 … u19999)
PASSING_CHECKS = 2  # consecutive checks at the step, every one passing, before the injection
READY_TIMEOUT_SECONDS = 90.0  # per run: policy written → ready to inject (the first run warms up)
ROLLBACK_TIMEOUT_SECONDS = 30.0  # per run: injection → the client evaluates off
CLEAR_TIMEOUT_SECONDS = 60.0  # per run: the last run's regression leaves the rate window
SERVICE_TIMEOUT_SECONDS = 30.0

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Parameters:
    """Everything the measured time depends on; the bound is computed from these."""

    scrape_seconds: float = 1.0
    window_seconds: int = 10  # the rate window of the policy's queries
    interval_seconds: int = 2  # the policy's check interval
    client_poll_ms: int = 200  # the flagd FILE provider re-reads the flag file this often
    percent: float = 50.0  # the single step: treatment 50 %, control 50 %
    min_samples: int = 40
    error_bound: float = 0.05  # the guardrail's max
    errors_before: float = ERROR_RATIO  # the treatment path's error ratio, healthy
    errors_after: float = REGRESSION_ERROR_RATIO  # … and once the regression is injected
    service_rps: float = 150.0  # the demo service's default load

    @property
    def client_poll_seconds(self) -> float:
        return self.client_poll_ms / 1000

    @property
    def share(self) -> float:
        """The share of the rate window that must hold regressed requests before the ratio crosses
        the bound: (bound − before) / (after − before)."""
        return (self.error_bound - self.errors_before) / (self.errors_after - self.errors_before)


def bound_seconds(p: Parameters) -> float:
    """The docs' bound (``_bound_seconds`` in controller/demo/runner.py: a scrape to see the first
    bad sample, the share of the rate window that must be bad, one check interval, one more scrape
    for rate()'s extrapolation) plus one poll of the flagd client, which only then sees the file."""
    return 2 * p.scrape_seconds + p.share * p.window_seconds + p.interval_seconds + p.client_poll_seconds


def bound_formula(p: Parameters) -> str:
    return (
        f"2 × scrape ({p.scrape_seconds:g}s) + {p.share:.2f} × rate window ({p.window_seconds}s) + "
        f"check interval ({p.interval_seconds}s) + client poll ({p.client_poll_seconds:g}s) "
        f"= {bound_seconds(p):.2f}s"
    )


_LABELS = 'route="{route}",feature_flag_key="{{{{flag}}}}",feature_flag_result_variant="{{{{variant}}}}"'


def policy_text(p: Parameters, run: int) -> str:
    """The demo's error-rate guardrail on a single step; ``run`` makes each run a new revision."""
    labels = _LABELS.format(route=ROUTE)
    window = f"{p.window_seconds}s"
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata:
  name: {POLICY_NAME}
spec:
  owner: demo-sre
  aim: "Cut p95 of /price/quote from 140ms to 70ms (time-to-rollback run {run})."
  mechanism: "We believe a read-through cache cuts p95 because it removes the pricing-database call."
  flag:
    key: {FLAG}
  control: true
  maxPercent: {p.percent:g}
  interval: {p.interval_seconds}s
  steps:
    - {{percent: {p.percent:g}, hold: 1h}}
  traffic:
    query: sum(increase(http_server_requests_total{{{labels}}}[{window}]))
    minSamples: {p.min_samples}
  guardrails:
    - name: error-rate
      query: >-
        sum(rate(http_server_requests_total{{code=~"5..",{labels}}}[{window}]))
        / sum(rate(http_server_requests_total{{{labels}}}[{window}]))
      max: {p.error_bound:g}
"""


def revision_of_text(text: str) -> str:
    loaded = load_text(text, "<time-to-rollback>")
    if loaded.errors or len(loaded.policies) != 1:
        raise ValueError("the benchmark's policy is invalid: " + "; ".join(str(e) for e in loaded.errors))
    return loaded.policies[0].policy.revision


def treatment_error_ratio_query(p: Parameters) -> str:
    """The guardrail's query for the treatment arm: what the controller sees."""
    labels = f'route="{ROUTE}",feature_flag_key="{FLAG}",feature_flag_result_variant="on"'
    window = f"{p.window_seconds}s"
    return (
        f'sum(rate(http_server_requests_total{{code=~"5..",{labels}}}[{window}])) '
        f"/ sum(rate(http_server_requests_total{{{labels}}}[{window}]))"
    )


def passing(record: Record, percent: float) -> bool:
    """A hold at ``percent`` in which every check (traffic and guardrails) passed."""
    checks = record.get("checks") or []
    return (
        record.get("action") == "hold"
        and record.get("status") == "progressing"
        and record.get("to_percent") == percent
        and bool(checks)
        and all(isinstance(c, Mapping) and c.get("verdict") == "pass" for c in checks)
    )


def tripped(record: Record) -> Mapping[str, Any] | None:
    """The first failed guardrail check of a rollback record."""
    return next(
        (
            c
            for c in record.get("checks") or []
            if isinstance(c, Mapping) and c.get("kind") == "guardrail" and c.get("verdict") == "fail"
        ),
        None,
    )


def record_time(record: Record) -> datetime:
    moment = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"record time without a zone: {record['time']!r}")
    return moment.astimezone(UTC)


def is_on(details: FlagEvaluationDetails[bool]) -> bool:
    return details.error_code is None and details.value is True and details.variant == "on"


def is_off(details: FlagEvaluationDetails[bool]) -> bool:
    return details.error_code is None and details.value is False and details.variant == "off"


# Results ----------------------------------------------------------------------------------------


@dataclass
class RunResult:
    run: int
    revision: str = ""
    rolled_back: bool = False  # the controller wrote a rollback record for this run's revision
    client_saw_off: bool = False  # … and the client evaluated off for every watched user
    seconds: float | None = None  # the measure: injection → the client evaluates off
    rollback_record_seconds: float | None = None  # injection → the controller decided to roll back
    injection_phase: float | None = None  # where between two checks (0–1 of the interval) it started
    exposed_seconds_before_injection: float | None = None
    error_rate_before: float | None = None  # the last passing check's treatment error rate
    guardrail: str | None = None  # the guardrail that tripped, its value, bound and samples
    value: float | None = None
    bound: float | None = None
    samples: float | None = None
    users: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.rolled_back and self.client_saw_off and self.seconds is not None


@dataclass(frozen=True)
class Summary:
    runs: int
    rolled_back: int
    median_seconds: float | None
    max_seconds: float | None
    min_seconds: float | None
    target_median_seconds: float
    target_met: bool
    ok: bool  # every run rolled back and the client saw it, and the target is met


def summarise(results: Sequence[RunResult], target_median_seconds: float = TARGET_MEDIAN_SECONDS) -> Summary:
    measured = [r.seconds for r in results if r.ok and r.seconds is not None]
    median = statistics.median(measured) if measured else None
    met = median is not None and median <= target_median_seconds
    every = bool(results) and all(r.ok for r in results)
    return Summary(
        runs=len(results),
        rolled_back=sum(1 for r in results if r.ok),
        median_seconds=median,
        max_seconds=max(measured) if measured else None,
        min_seconds=min(measured) if measured else None,
        target_median_seconds=target_median_seconds,
        target_met=met,
        ok=every and met,
    )


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}s"


def run_line(result: RunResult, runs: int) -> str:
    head = f"  run {result.run:>2}/{runs}: "
    if not result.ok:
        return head + f"FAILED: {result.problem or 'no rollback seen'}"
    why = ""
    if result.guardrail is not None and result.value is not None:
        why = f"; {result.guardrail} {result.value:.4g} > {result.bound:g} (n={result.samples:.0f})"
    return (
        head
        + f"{_seconds(result.seconds)} to off (rollback decided at {_seconds(result.rollback_record_seconds)}"
        + f"{why}; injected {result.injection_phase or 0:.2f} of an interval after a check)"
    )


def report_lines(p: Parameters, results: Sequence[RunResult], summary: Summary) -> list[str]:
    measured = ", ".join(f"{r.seconds:.2f}" for r in results if r.ok and r.seconds is not None)
    target = f"median ≤ {summary.target_median_seconds:g} s"
    verdict = "met" if summary.target_met else "NOT met"
    return [
        f"time to rollback (s), regression start → client evaluates off: {measured or '—'}",
        f"median {_seconds(summary.median_seconds)}, max {_seconds(summary.max_seconds)} "
        f"({summary.rolled_back}/{summary.runs} runs rolled back)",
        f"parameters: scrape interval {p.scrape_seconds:g}s, rate window {p.window_seconds}s, "
        f"check interval {p.interval_seconds}s, flagd client poll {p.client_poll_seconds:g}s "
        f"(deadline_ms {p.client_poll_ms}), evaluation poll {EVALUATION_POLL_SECONDS * 1000:.0f}ms, "
        f"{p.percent:g} % treatment at {p.service_rps:g} req/s",
        f"bound: {bound_formula(p)}",
        f"  where {p.share:.2f} = (error bound {p.error_bound:g} − errors before {p.errors_before:g}) / "
        f"(errors after {p.errors_after:g} − errors before {p.errors_before:g})",
        f"target: {target}: {verdict} ({_seconds(summary.median_seconds)})",
    ]


def document(
    p: Parameters, results: Sequence[RunResult], summary: Summary, *, command: str, started: datetime
) -> dict[str, Any]:
    return {
        "command": command,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "measures": "seconds from the regression's start (SIGUSR1 sent to the service) until an "
        "OpenFeature flagd FILE-mode client evaluates off for every watched treatment user",
        "parameters": {
            **asdict(p),
            "client_poll_seconds": p.client_poll_seconds,
            "evaluation_poll_seconds": EVALUATION_POLL_SECONDS,
            "watched_users": WATCHED_USERS,
            "passing_checks_before_injection": PASSING_CHECKS,
        },
        "bound": {
            "seconds": round(bound_seconds(p), 3),
            "formula": bound_formula(p),
            "share": round(p.share, 4),
        },
        "target": {
            "median_seconds_at_most": summary.target_median_seconds,
            "met": summary.target_met,
        },
        "summary": asdict(summary),
        "seconds": [r.seconds for r in results if r.ok],
        "runs": [asdict(r) for r in results],
        "policy": policy_text(p, 1),
    }


# The pieces that run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A decision record and the cycle that wrote it (monotonic seconds)."""

    record: Record
    cycle_started: float
    cycle_finished: float


class Driver:
    """Runs the reconciler's cycle on a fixed schedule, one every interval, and keeps every record."""

    def __init__(self, reconciler: Reconciler, interval_seconds: float) -> None:
        self.reconciler = reconciler
        self.interval_seconds = interval_seconds
        self.seen: list[Seen] = []
        self.cycle_starts: list[float] = []
        self.stop = asyncio.Event()

    async def cycle(self) -> None:
        started = time.monotonic()
        result = await self.reconciler.cycle()
        finished = time.monotonic()
        self.cycle_starts.append(started)
        self.seen.extend(Seen(r, started, finished) for r in result.records)

    async def run(self) -> None:
        tick = time.monotonic()
        while not self.stop.is_set():
            tick += self.interval_seconds
            while tick <= time.monotonic():  # a cycle slower than the interval skips a tick
                tick += self.interval_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=tick - time.monotonic())
            if not self.stop.is_set():
                await self.cycle()

    def next_cycle_after(self, moment: float) -> float:
        """When the first cycle after ``moment`` starts, on the schedule of the last one."""
        last = self.cycle_starts[-1]
        return last + math.floor((moment - last) / self.interval_seconds + 1) * self.interval_seconds


class Watcher:
    """The OpenFeature client of this process: the flagd provider in FILE mode on the flag file."""

    def __init__(self, flags: Path, poll_ms: int) -> None:
        provider = FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(flags), deadline_ms=poll_ms
        )
        api.set_provider_and_wait(provider, domain=DOMAIN)
        self.client = api.get_client(DOMAIN)

    def evaluate(self, user: str) -> FlagEvaluationDetails[bool]:
        return self.client.get_boolean_details(FLAG, False, EvaluationContext(targeting_key=user))

    def treatment_users(self, pool: int = USER_POOL) -> list[str]:
        return [u for u in (f"u{i}" for i in range(pool)) if is_on(self.evaluate(u))]

    @staticmethod
    def close() -> None:
        api.shutdown()


class Bench:
    def __init__(
        self,
        p: Parameters,
        directory: Path,
        driver: Driver,
        driver_task: asyncio.Task[None],
        watcher: Watcher,
        prometheus: PrometheusClient,
        service: subprocess.Popen[bytes],
        rng: random.Random,
    ) -> None:
        self.p = p
        self.directory = directory
        self.driver = driver
        self.driver_task = driver_task
        self.watcher = watcher
        self.prometheus = prometheus
        self.service = service
        self.rng = rng
        self.consumed = 0  # records already looked at; the later ones belong to the next run

    def _alive(self) -> None:
        if self.driver_task.done():
            self.driver_task.result()  # raises what stopped it
            raise RuntimeError("the controller loop stopped")
        if self.service.poll() is not None:
            raise RuntimeError(f"the demo service exited (code {self.service.returncode})")

    async def _next_record(self, index: int, deadline: float, what: str) -> Seen:
        while index >= len(self.driver.seen):
            self._alive()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(EVALUATION_POLL_SECONDS)
        return self.driver.seen[index]

    async def wait_window_clear(self) -> None:
        """Until the guardrail's rate window holds no regressed treatment request: no treatment
        traffic in it (NaN, no data), or an error ratio far below the bound."""
        deadline = time.monotonic() + CLEAR_TIMEOUT_SECONDS
        query = treatment_error_ratio_query(self.p)
        while True:
            reading = await self.prometheus.query(query)
            if reading.kind is ReadingKind.NO_DATA or (
                reading.kind is ReadingKind.VALUE
                and reading.value is not None
                and reading.value <= self.p.error_bound / 5
            ):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the last regression was still in the rate window: {reading}")
            await asyncio.sleep(self.p.scrape_seconds / 2)

    async def one(self, run: int) -> RunResult:
        result = RunResult(run)
        try:
            await self._measure(result)
        except TimeoutError as exc:
            result.problem = str(exc)
        finally:
            if self.service.poll() is None:
                os.kill(self.service.pid, signal.SIGUSR2)  # heal, whatever happened
            self.consumed = len(self.driver.seen)
        return result

    async def _measure(self, result: RunResult) -> None:
        p = self.p
        await self.wait_window_clear()
        text = policy_text(p, result.run)
        result.revision = revision_of_text(text)
        index = self.consumed
        path = self.directory / "policies" / f"{POLICY_NAME}.yaml"
        if path.read_text() != text:  # the first run's policy is there from the start
            atomic_write(path, text)

        # Ready: at the step, exposed for a full window plus two scrapes, the last checks passing.
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        exposed_since: float | None = None
        streak = 0
        while True:
            seen = await self._next_record(
                index, deadline, "the rollout to reach its step with passing checks"
            )
            index += 1
            record = seen.record
            if record.get("revision") != result.revision:
                continue
            if record.get("action") == "rollback":
                result.problem = "rolled back before the regression was injected"
                return
            if exposed_since is None and record.get("to_percent"):  # the advance, or a run that went on
                exposed_since = seen.cycle_finished
            streak = streak + 1 if passing(record, p.percent) else 0
            full_window = p.window_seconds + 2 * p.scrape_seconds
            if (
                streak >= PASSING_CHECKS
                and exposed_since is not None
                and seen.cycle_started - exposed_since >= full_window
            ):
                break
        last_check = seen
        before = next(
            (
                c
                for c in last_check.record["checks"]
                if c.get("kind") == "guardrail" and c.get("arm") == "treatment"
            ),
            None,
        )
        result.error_rate_before = before.get("value") if before is not None else None

        # Treatment users, as this process's client sees the flag file.
        users = self.watcher.treatment_users()
        while len(users) < WATCHED_USERS:
            if time.monotonic() >= deadline:
                raise TimeoutError("the client did not see the treatment arm")
            await asyncio.sleep(p.client_poll_seconds)
            users = self.watcher.treatment_users()
        result.users = sorted(self.rng.sample(users, WATCHED_USERS), key=lambda u: int(u[1:]))

        # Inject at a random moment between two checks.
        phase = self.rng.uniform(0.1, 0.9)
        previous = self.driver.cycle_starts[-1]
        inject_at = previous + phase * p.interval_seconds
        if inject_at <= time.monotonic() + 0.01:  # that moment has passed: the next gap, same phase
            previous = self.driver.next_cycle_after(time.monotonic())
            inject_at = previous + phase * p.interval_seconds
        await asyncio.sleep(inject_at - time.monotonic())
        if not all(is_on(self.watcher.evaluate(u)) for u in result.users):
            result.problem = "the watched users were not in treatment any more before the injection"
            return
        started = time.monotonic()
        started_wall = datetime.now(UTC)
        os.kill(self.service.pid, signal.SIGUSR1)
        result.exposed_seconds_before_injection = round(started - (exposed_since or started), 3)
        checks_before = [s for s in self.driver.cycle_starts if s <= started]
        result.injection_phase = round((started - checks_before[-1]) / p.interval_seconds, 3)

        # Measure: evaluate every 20 ms until every watched user gets off.
        deadline = started + ROLLBACK_TIMEOUT_SECONDS
        while True:
            self._alive()
            off = all(is_off(self.watcher.evaluate(u)) for u in result.users)
            now = time.monotonic()
            if off:
                result.seconds = round(now - started, 3)  # milliseconds: the poll is 20 ms
                result.client_saw_off = True
                break
            if now >= deadline:
                result.problem = (
                    f"the client still evaluated on {ROLLBACK_TIMEOUT_SECONDS:g}s after the injection"
                )
                break
            await asyncio.sleep(EVALUATION_POLL_SECONDS)

        # The rollback record (appended just after the flag file was written).
        deadline = time.monotonic() + 2 * p.interval_seconds + 5
        while True:
            try:
                seen = await self._next_record(index, deadline, "the rollback record")
            except TimeoutError:
                if result.problem is None:
                    result.problem = "the client saw off but no rollback record was written"
                return
            index += 1
            if seen.record.get("revision") == result.revision and seen.record.get("action") == "rollback":
                break
        result.rolled_back = True
        result.rollback_record_seconds = round((record_time(seen.record) - started_wall).total_seconds(), 3)
        check = tripped(seen.record)
        if check is not None:
            result.guardrail = str(check.get("name"))
            result.value, result.bound, result.samples = (
                check.get("value"),
                check.get("bound"),
                check.get("samples"),
            )


def _start_service(directory: Path, flags: Path, port: int, rps: float) -> subprocess.Popen[bytes]:
    with (directory / "service.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller.demo.service",
                "--flags",
                str(flags),
                "--port",
                str(port),
                "--rps",
                f"{rps:g}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops the service itself
        )


async def measure(
    runs: int, directory: Path, out: TextIO, p: Parameters | None = None, seed: int | None = None
) -> list[RunResult]:
    """Run the benchmark ``runs`` times on one Prometheus, one service and one controller."""
    p = p or Parameters()
    binary = find_binary()  # says how to install Prometheus when it is missing
    rng = random.Random(seed)
    (directory / "policies").mkdir(parents=True, exist_ok=True)
    flags, decisions = directory / "flags.json", directory / "decisions.jsonl"
    for stale in (flags, decisions):
        stale.unlink(missing_ok=True)
    atomic_write(directory / "policies" / f"{POLICY_NAME}.yaml", policy_text(p, 1))
    port = free_port()
    results: list[RunResult] = []
    with (
        (directory / "controller.log").open("w") as controller_log,
        PrometheusServer(
            [f"127.0.0.1:{port}"], binary=binary, job="demo-service", scrape_interval_seconds=p.scrape_seconds
        ) as prometheus,
    ):
        log = structlog.wrap_logger(
            structlog.PrintLogger(controller_log),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="logged_at"),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
        )
        print(f"Prometheus {prometheus.url}, scraping every {p.scrape_seconds:g}s", file=out, flush=True)
        async with PrometheusClient(prometheus.url, timeout_seconds=5) as client:
            reconciler = Reconciler(
                policies=directory / "policies",
                store=FileFlagStore(flags),
                prometheus=client,
                decision_log=DecisionLog(decisions),
                log=log,
            )
            driver = Driver(reconciler, p.interval_seconds)
            await driver.cycle()  # writes the flag file, which the service and the client read
            service = _start_service(directory, flags, port, p.service_rps)
            watcher: Watcher | None = None
            task: asyncio.Task[None] | None = None
            try:
                await wait_http(f"http://127.0.0.1:{port}/metrics", SERVICE_TIMEOUT_SECONDS, service)
                watcher = Watcher(flags, p.client_poll_ms)
                task = asyncio.create_task(driver.run())
                bench = Bench(p, directory, driver, task, watcher, client, service, rng)
                for run in range(1, runs + 1):
                    result = await bench.one(run)
                    results.append(result)
                    print(run_line(result, runs), file=out, flush=True)
            finally:
                driver.stop.set()
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if watcher is not None:
                    watcher.close()
                stop_process(service)
    return results


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m bench.time_to_rollback",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--runs", type=int, default=10, help="regressions to inject, one per run (default 10)"
    )
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument(
        "--dir",
        type=Path,
        help="keep the flag file, decision log, policy and logs here (default: a temporary "
        "directory, removed afterwards)",
    )
    parser.add_argument("--seed", type=int, help="seed of the injection moments and watched users")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    p = Parameters()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="flagroll-ttr-"))
    started = datetime.now(UTC)
    print(
        f"time to rollback: {args.runs} runs; regression start → client evaluates off; "
        f"bound {bound_seconds(p):.2f}s, target median ≤ {TARGET_MEDIAN_SECONDS:g}s",
        file=out,
        flush=True,
    )
    try:
        results = asyncio.run(measure(args.runs, directory, out, p, args.seed))
    except UsageError as exc:
        print(f"time_to_rollback: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    summary = summarise(results)
    print(file=out)
    for line in report_lines(p, results, summary):
        print(line, file=out)
    if args.json is not None:
        command = "python -m bench.time_to_rollback " + " ".join(argv if argv is not None else sys.argv[1:])
        figures = document(p, results, summary, command=command.strip(), started=started)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1, ensure_ascii=False) + "\n")
        print(f"JSON: {args.json}", file=out)
    if args.dir is not None:
        print(f"flag file, decision log, policy and logs: {args.dir}", file=out)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
