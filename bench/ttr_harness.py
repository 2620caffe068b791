"""The live harness of the time-to-rollback benchmark (bench/time_to_rollback.py): a real Prometheus,
the demo service, the controller's loop on a fixed schedule (:class:`Driver`), a flagd FILE-mode
OpenFeature client (:class:`Watcher`), a flag server's OFREP API (the fake of
tests/support/ofrepfake.py in a process of its own, on the same flag file: the flagd daemon cannot
run here) that the controller verifies its rollbacks against and the benchmark asks too, and
:class:`Bench`, which measures one run after another on them."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import structlog
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails

from bench.ttr_parameters import (
    EVALUATION_POLL_SECONDS,
    PASSING_CHECKS,
    POLICY_NAME,
    VERIFY_SAMPLE,
    VERIFY_TIMEOUT_SECONDS,
    WATCHED_USERS,
    Parameters,
    policy_text,
    revision_of_text,
    treatment_error_ratio_query,
)
from bench.ttr_records import Record, is_off, is_on, passing, record_time, tripped
from bench.ttr_results import RunResult, run_line
from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.flagstore import FileFlagStore, atomic_write
from controller.adapters.ofrep import OfrepClient
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer, find_binary, free_port
from controller.core.queries import ReadingKind
from controller.demo.runner import stop_process, wait_http
from controller.demo.service import FLAG
from controller.reconciler import Reconciler
from controller.reconciler.verify import ServingSettings

DOMAIN = "time-to-rollback"  # the OpenFeature domain of this process's client
USER_POOL = 2000  # the watched users are drawn from u0 … u1999 (the service serves u0 … u19999)
READY_TIMEOUT_SECONDS = 90.0  # per run: policy written → ready to inject (the first run warms up)
ROLLBACK_TIMEOUT_SECONDS = 30.0  # per run: injection → the client evaluates off
CLEAR_TIMEOUT_SECONDS = 60.0  # per run: the last run's regression leaves the rate window
SERVICE_TIMEOUT_SECONDS = 30.0


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


@dataclass(frozen=True)
class Ready:
    """A run ready for the injection: the index of the next record to read, and since when (monotonic
    seconds) the arms have been exposed."""

    index: int
    exposed_since: float | None


@dataclass(frozen=True)
class Injection:
    """When the regression was injected: monotonic seconds, and the wall clock for decision records."""

    started: float
    started_wall: datetime


class Bench:
    """Measures one run after another on the same Prometheus, service, controller loop and client."""

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
        flag_server: OfrepClient,
    ) -> None:
        self.p = p
        self.directory = directory
        self.driver = driver
        self.driver_task = driver_task
        self.watcher = watcher
        self.prometheus = prometheus
        self.service = service
        self.rng = rng
        self.flag_server = flag_server
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
        """A new revision; ready at its step; treatment users watched; the regression injected;
        the time until the client evaluates off; the rollback record."""
        await self.wait_window_clear()
        index = self._write_revision(result)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        ready = await self._wait_ready(result, index, deadline)
        if ready is None:
            return
        await self._watch_users(result, deadline)
        injection = await self._inject(result, ready.exposed_since)
        if injection is None:
            return
        await self._wait_off(result, injection.started)
        rollback = await self._find_rollback(result, ready.index, injection)
        if rollback is not None:
            await self._find_verification(result, rollback)

    def _write_revision(self, result: RunResult) -> int:
        """Write this run's policy, a new revision; the index of the first record that may be its."""
        text = policy_text(self.p, result.run)
        result.revision = revision_of_text(text)
        index = self.consumed
        path = self.directory / "policies" / f"{POLICY_NAME}.yaml"
        if path.read_text() != text:  # the first run's policy is there from the start
            atomic_write(path, text)
        return index

    async def _wait_ready(self, result: RunResult, index: int, deadline: float) -> Ready | None:
        """Until the rollout is at the step, exposed for a full window plus two scrapes, the last
        checks passing; None (and the problem told) when it rolled back before."""
        p = self.p
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
                return None
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
        return Ready(index, exposed_since)

    async def _watch_users(self, result: RunResult, deadline: float) -> None:
        """Treatment users, as this process's client sees the flag file."""
        users = self.watcher.treatment_users()
        while len(users) < WATCHED_USERS:
            if time.monotonic() >= deadline:
                raise TimeoutError("the client did not see the treatment arm")
            await asyncio.sleep(self.p.client_poll_seconds)
            users = self.watcher.treatment_users()
        result.users = sorted(self.rng.sample(users, WATCHED_USERS), key=lambda u: int(u[1:]))

    async def _inject(self, result: RunResult, exposed_since: float | None) -> Injection | None:
        """Inject at a random moment between two checks; None (and the problem told) when the
        watched users were not in treatment any more."""
        p = self.p
        phase = self.rng.uniform(0.1, 0.9)
        previous = self.driver.cycle_starts[-1]
        inject_at = previous + phase * p.interval_seconds
        if inject_at <= time.monotonic() + 0.01:  # that moment has passed: the next gap, same phase
            previous = self.driver.next_cycle_after(time.monotonic())
            inject_at = previous + phase * p.interval_seconds
        await asyncio.sleep(inject_at - time.monotonic())
        if not all(is_on(self.watcher.evaluate(u)) for u in result.users):
            result.problem = "the watched users were not in treatment any more before the injection"
            return None
        started = time.monotonic()
        started_wall = datetime.now(UTC)
        os.kill(self.service.pid, signal.SIGUSR1)
        result.exposed_seconds_before_injection = round(started - (exposed_since or started), 3)
        checks_before = [s for s in self.driver.cycle_starts if s <= started]
        result.injection_phase = round((started - checks_before[-1]) / p.interval_seconds, 3)
        return Injection(started, started_wall)

    async def _wait_off(self, result: RunResult, started: float) -> None:
        """The measure: evaluate every 20 ms until every watched user gets off, in this process's
        client and from the flag server over OFREP (each timed on its own)."""
        deadline = started + ROLLBACK_TIMEOUT_SECONDS
        while True:
            self._alive()
            if result.seconds is None and all(is_off(self.watcher.evaluate(u)) for u in result.users):
                result.seconds = round(time.monotonic() - started, 3)  # milliseconds: the poll is 20 ms
                result.client_saw_off = True
            if result.ofrep_seconds is None:
                answers = [await self.flag_server.evaluate(FLAG, u) for u in result.users]
                if all(a.variant == "off" for a in answers):
                    result.ofrep_seconds = round(time.monotonic() - started, 3)
            if result.seconds is not None and result.ofrep_seconds is not None:
                return
            if time.monotonic() >= deadline:
                if result.seconds is None:
                    result.problem = (
                        f"the client still evaluated on {ROLLBACK_TIMEOUT_SECONDS:g}s after the injection"
                    )
                return
            await asyncio.sleep(EVALUATION_POLL_SECONDS)

    async def _find_rollback(self, result: RunResult, index: int, injection: Injection) -> Record | None:
        """The rollback record (appended just after the flag file was written)."""
        deadline = time.monotonic() + 2 * self.p.interval_seconds + 5
        while True:
            try:
                seen = await self._next_record(index, deadline, "the rollback record")
            except TimeoutError:
                if result.problem is None:
                    result.problem = "the client saw off but no rollback record was written"
                return None
            index += 1
            if seen.record.get("revision") == result.revision and seen.record.get("action") == "rollback":
                break
        result.rolled_back = True
        result.rollback_record_seconds = round(
            (record_time(seen.record) - injection.started_wall).total_seconds(), 3
        )
        check = tripped(seen.record)
        if check is not None:
            result.guardrail = str(check.get("name"))
            result.value, result.bound, result.samples = (
                check.get("value"),
                check.get("bound"),
                check.get("samples"),
            )
        return seen.record

    async def _find_verification(self, result: RunResult, rollback: Record) -> None:
        """flagroll's verification of the rollback against the flag server (it runs beside the
        loop, and is appended to the decision log when it has its outcome)."""
        deadline = time.monotonic() + VERIFY_TIMEOUT_SECONDS + 5
        while time.monotonic() < deadline:
            for record in read_records(self.directory / "decisions.jsonl"):
                serving = record.get("serving")
                if not (record.get("action") == "verify" and isinstance(serving, dict)):
                    continue
                if serving.get("written_at") == rollback.get("time"):
                    result.verified = str(serving.get("outcome"))
                    result.verified_seconds = serving.get("seconds")
                    return
            await asyncio.sleep(0.1)


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


def _start_flag_server(directory: Path, flags: Path, port: int) -> subprocess.Popen[bytes]:
    """The fake of a flag server's OFREP API, in a process of its own as the daemon would be."""
    with (directory / "flag-server.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.support.ofrepfake", "--flags", str(flags), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,  # the repository, where `tests` is a package
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
        server_port = free_port()
        server_url = f"http://127.0.0.1:{server_port}"
        async with (
            PrometheusClient(prometheus.url, timeout_seconds=5) as client,
            OfrepClient(server_url) as verifying,  # the controller's
            OfrepClient(server_url) as flag_server,  # the benchmark's own: it never waits on the other
        ):
            serving = ServingSettings(
                verifying, sample=VERIFY_SAMPLE, timeout_seconds=VERIFY_TIMEOUT_SECONDS, share=False
            )
            reconciler = Reconciler(
                policies=directory / "policies",
                store=FileFlagStore(flags),
                prometheus=client,
                decision_log=DecisionLog(decisions),
                log=log,
                serving=serving,
            )
            driver = Driver(reconciler, p.interval_seconds)
            await driver.cycle()  # writes the flag file, which the service and the client read
            service = _start_service(directory, flags, port, p.service_rps)
            fake_flag_server = _start_flag_server(directory, flags, server_port)
            watcher: Watcher | None = None
            task: asyncio.Task[None] | None = None
            try:
                await wait_http(f"http://127.0.0.1:{port}/metrics", SERVICE_TIMEOUT_SECONDS, service)
                await wait_http(f"{server_url}/healthz", SERVICE_TIMEOUT_SECONDS, fake_flag_server)
                watcher = Watcher(flags, p.client_poll_ms)
                task = asyncio.create_task(driver.run())
                bench = Bench(p, directory, driver, task, watcher, client, service, rng, flag_server)
                for run in range(1, runs + 1):
                    result = await bench.one(run)
                    results.append(result)
                    print(run_line(result, runs), file=out, flush=True)
            finally:
                driver.stop.set()
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if reconciler.verifier is not None:
                    await reconciler.verifier.close(wait=False)
                if watcher is not None:
                    watcher.close()
                stop_process(service)
                stop_process(fake_flag_server)
    return results
