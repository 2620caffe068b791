"""Faults injected into real components: a metrics outage never moves a flag, a full or read-only disk
never damages the flag file, and SIGTERM never leaves a cycle half done.

- Metrics outages: the real reconciler and HTTP client talk over TCP to a fault-injecting proxy in
  front of the session's real Prometheus (or to a dedicated Prometheus that is stopped and started).
- Disk faults: ``flagroll run`` as a child process. "Read-only" drops the process's right to override
  file permissions (``setpriv``), so the kernel refuses to write into a directory it may only read;
  "disk full" lowers the running process's file-size limit (``prlimit``), so the kernel refuses
  writes the way a full disk does (EFBIG instead of ENOSPC). Neither needs privileges to mount a
  small filesystem, which CI machines may not grant.
- Graceful shutdown: ``flagroll run`` as a child process, sent SIGTERM in the middle of a query, while
  waiting for the lock, and while idle.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer
from controller.core.flagd import read_state
from controller.reconciler import Reconciler
from tests.support.faultproxy import Body, Delay, Fault, FaultProxy, Refuse, Rewrite, Status
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus]

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FLAG = "fault-test"


def policy(interval: str = "10s", hold: str = "1m", on_error: str = "hold") -> str:
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {FLAG}}}
spec:
  owner: sre-lead
  aim: "Hold through any outage."
  mechanism: "Missing data is never a pass and never a fail."
  flag: {{key: {FLAG}}}
  maxPercent: 10
  interval: {interval}
  onError: {on_error}
  steps:
    - {{percent: 1, hold: {hold}}}
    - {{percent: 5, hold: {hold}}}
    - {{percent: 10, hold: {hold}}}
  traffic:
    query: sum(label_replace(vector(100), "arm", "{{{{variant}}}}", "", ""))
    minSamples: 10
  guardrails:
    - name: error-rate
      query: sum(label_replace(vector(0.001), "arm", "{{{{variant}}}}", "", ""))
      max: 0.05
"""


def _every_value(body: bytes, value: str) -> bytes:
    payload = json.loads(body)
    for series in payload["data"]["result"]:
        series["value"][1] = value
    return json.dumps(payload).encode()


TWO_SERIES = json.dumps(
    {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"pod": "a"}, "value": [1.0, "0.001"]},
                {"metric": {"pod": "b"}, "value": [1.0, "0.9"]},
            ],
        },
    }
).encode()

FAULTS: dict[str, tuple[Fault, str]] = {
    "http-500": (Status(500, b"internal error"), "HTTP 500"),
    "http-503": (Status(503), "HTTP 503"),
    "html": (Body(b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"), "not JSON"),
    "truncated-json": (Rewrite(lambda body: body[: len(body) // 2]), "not JSON"),
    "nan": (Rewrite(lambda body: _every_value(body, "NaN")), "NaN"),
    "plus-inf": (Rewrite(lambda body: _every_value(body, "+Inf")), "+Inf"),
    "several-series": (Body(TWO_SERIES), "2 series where one is expected"),
    "slower-than-timeout": (Delay(3.0), "timed out"),
    "connection-refused": (Refuse(), "cannot connect"),
}


class Rig:
    """The real reconciler, file store and decision log, on a clock the test moves."""

    def __init__(self, root: Path, url: str, policy_text: str) -> None:
        (root / "policies").mkdir(exist_ok=True)
        (root / "policies" / "p.yaml").write_text(policy_text)
        self.root = root
        self.url = url
        self.flags = root / "flags.json"
        self.log = root / "decisions.jsonl"
        self.now = T0

    def cycle(self) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            async with PrometheusClient(self.url, timeout_seconds=0.5) as client:
                reconciler = Reconciler(
                    policies=self.root / "policies",
                    store=FileFlagStore(self.flags),
                    prometheus=client,
                    decision_log=DecisionLog(self.log),
                    clock=lambda: self.now,
                )
                return (await reconciler.cycle()).records

        return asyncio.run(go())

    def percent(self) -> float:
        state = read_state(json.loads(self.flags.read_text()), FLAG)
        assert state is not None
        return state.percent


@pytest.fixture
def proxy(prometheus: PrometheusServer) -> Iterator[FaultProxy]:
    with FaultProxy(prometheus.url) as running:
        yield running


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_metrics_outage_neither_advances_nor_rolls_back_and_progress_resumes(
    name: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    fault, fragment = FAULTS[name]
    rig = Rig(tmp_path, proxy.url, policy())
    assert [r["action"] for r in rig.cycle()] == ["advance"]  # healthy: the rollout starts at 1 %
    rig.now += timedelta(minutes=2)  # the hold is over: without the fault it would advance now
    proxy.inject(fault)
    before = rig.flags.read_bytes()
    for _ in range(4):  # several intervals of outage
        records = rig.cycle()
        assert [r["action"] for r in records] == ["hold"], records
        assert fragment in json.dumps(records[0]), (fragment, records[0])
        assert records[0]["to_percent"] == 1.0
        rig.now += timedelta(seconds=10)
    assert rig.flags.read_bytes() == before  # not even rewritten
    proxy.inject(None)  # recovery, without a human
    records = rig.cycle()
    assert [r["action"] for r in records] == ["advance"]
    assert rig.percent() == 5.0


def test_a_policy_can_ask_for_rollback_on_error(proxy: FaultProxy, tmp_path: Path) -> None:
    rig = Rig(tmp_path, proxy.url, policy(on_error="rollback"))
    rig.cycle()
    proxy.inject(Status(503))
    rig.now += timedelta(seconds=10)
    records = rig.cycle()
    assert [r["action"] for r in records] == ["rollback"]
    assert "HTTP 503" in json.dumps(records[0])
    assert rig.percent() == 0.0


def test_prometheus_stopped_for_several_intervals_then_started_again(tmp_path: Path) -> None:
    with PrometheusServer([]) as dedicated:
        rig = Rig(tmp_path, dedicated.url, policy())
        assert [r["action"] for r in rig.cycle()] == ["advance"]
        rig.now += timedelta(minutes=2)
        dedicated.pause()  # the real server is down: its port refuses connections
        for _ in range(4):
            records = rig.cycle()
            assert [r["action"] for r in records] == ["hold"]
            assert "cannot connect" in json.dumps(records[0])
            rig.now += timedelta(seconds=10)
        dedicated.start()  # same port, same data
        assert [r["action"] for r in rig.cycle()] == ["advance"]
    holds = [r for r in read_records(rig.log) if r["action"] == "hold"]
    assert len(holds) == 4  # a record of each cycle of the outage


# --------------------------------------------------------------------------- child processes


class Controller:
    """``flagroll run`` as a child process, its output collected line by line from a pipe."""

    def __init__(self, workdir: Path, url: str, *extra: str, wrapper: tuple[str, ...] = ()) -> None:
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        command = [
            *wrapper,
            sys.executable,
            "-m",
            "controller",
            "--log-format",
            "json",
            "run",
            "--policies",
            str(workdir / "policies"),
            "--flags",
            str(workdir / "flags" / "flags.json"),
            "--decision-log",
            str(workdir / "log" / "decisions.jsonl"),
            "--prometheus",
            url,
            *extra,
        ]

        def ignore_file_size_signal() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=ignore_file_size_signal,
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            text = raw.decode(errors="replace").strip()
            self.raw.append(text)
            try:
                self.lines.append(json.loads(text))
            except ValueError:
                continue

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line.get("event") == name]

    def wait_for_event(self, name: str, count: int = 1, timeout_seconds: float = 30) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            found = self.events(name)
            return found if len(found) >= count else None

        return wait_for(
            enough,
            timeout_seconds=timeout_seconds,
            what=f"{count} × {name!r} in the controller's output: {self.raw[-5:]}",
        )

    def terminate(self, timeout_seconds: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_seconds)
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(5)
        if self.process.stdout is not None and not self.process.stdout.closed:
            self.process.stdout.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory outside pytest's private tree, with policies, a flag directory and a log directory."""
    root = Path(tempfile.mkdtemp(prefix="flagroll-faults-"))
    for name in ("policies", "flags", "log"):
        (root / name).mkdir()
    (root / "policies" / "p.yaml").write_text(policy(interval="1s", hold="1s"))
    yield root
    for name in ("flags", "log"):
        (root / name).chmod(0o755)
        for path in (root / name).iterdir():
            path.chmod(0o644)
    subprocess.run(["rm", "-rf", str(root)], check=False)


NO_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--")


def _state(workdir: Path) -> Any:
    return read_state(json.loads((workdir / "flags" / "flags.json").read_text()), FLAG)


def test_a_read_only_flag_directory_fails_loudly_keeps_the_old_file_and_recovers(
    workdir: Path, prometheus: PrometheusServer
) -> None:
    controller = Controller(workdir, prometheus.url, wrapper=NO_OVERRIDE)
    try:
        flags = workdir / "flags" / "flags.json"
        wait_for(lambda: flags.exists() and _state(workdir), timeout_seconds=30, what="the rollout to start")
        (workdir / "flags").chmod(0o555)  # read-only for a process that cannot override permissions
        before = flags.read_bytes()
        failures = controller.wait_for_event("cycle_failed", count=3)
        assert all(
            "Permission denied" in f["error"] and "old file is intact" in f["error"] for f in failures
        ), failures
        assert flags.read_bytes() == before
        (workdir / "flags").chmod(0o755)
        wait_for(lambda: _state(workdir).step >= 1, timeout_seconds=30, what="progress after the fault")
    finally:
        assert controller.terminate() == 0
    records = list(read_records(workdir / "log" / "decisions.jsonl"))
    steps = [r["to_step"] for r in records if r["action"] == "advance"]
    assert steps == list(range(len(steps)))  # no step skipped or applied twice across the fault


def test_a_read_only_decision_log_keeps_records_in_memory_until_it_is_writable(
    workdir: Path, prometheus: PrometheusServer
) -> None:
    log = workdir / "log" / "decisions.jsonl"
    controller = Controller(workdir, prometheus.url, wrapper=NO_OVERRIDE)
    try:
        wait_for(lambda: log.exists() and log.read_text(), timeout_seconds=30, what="the first record")
        log.chmod(0o444)
        failed = controller.wait_for_event("decision_log_write_failed", count=2)
        assert failed[-1]["pending"] >= 2
        printed = len(controller.events("decision"))
        log.chmod(0o644)
        caught_up = controller.wait_for_event("decision_log_caught_up")
        assert caught_up[0]["appended"] >= 2
        wait_for(
            lambda: len(controller.events("decision")) > printed + 1, timeout_seconds=30, what="more cycles"
        )
    finally:
        assert controller.terminate() == 0
    printed_times = [(e["time"], e["action"]) for e in controller.events("decision")]
    logged_times = [(r["time"], r["action"]) for r in read_records(log)]
    assert logged_times == printed_times  # every decision printed is in the log, in order, once


def test_a_full_disk_fails_loudly_keeps_the_old_file_and_recovers(
    workdir: Path, prometheus: PrometheusServer
) -> None:
    controller = Controller(workdir, prometheus.url)
    try:
        flags = workdir / "flags" / "flags.json"
        wait_for(lambda: flags.exists() and _state(workdir), timeout_seconds=30, what="the rollout to start")
        before_failures = len(controller.events("cycle_failed"))
        resource.prlimit(controller.process.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        # A write whose temporary file was complete before the limit may still be renamed into
        # place: the file is compared from the end of the first failed cycle on.
        controller.wait_for_event("cycle_failed", count=before_failures + 1)
        before = flags.read_bytes()
        failures = controller.wait_for_event("cycle_failed", count=before_failures + 3)
        assert all("File too large" in f["error"] for f in failures[before_failures:])
        assert flags.read_bytes() == before  # the old flag file is intact
        assert not list((workdir / "flags").glob(".flags.json.*.tmp"))  # no half-written leftovers
        resource.prlimit(
            controller.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        step = _state(workdir).step
        wait_for(lambda: _state(workdir).step > step, timeout_seconds=30, what="progress after the fault")
    finally:
        assert controller.terminate() == 0
    warnings: list[str] = []
    records = list(read_records(workdir / "log" / "decisions.jsonl", warnings.append))
    assert warnings == []  # no torn line
    steps = [r["to_step"] for r in records if r["action"] == "advance"]
    assert steps == list(range(len(steps)))


# --------------------------------------------------------------------------- graceful shutdown


def test_sigterm_during_a_slow_query_abandons_the_cycle_within_the_shutdown_timeout(
    workdir: Path, proxy: FaultProxy
) -> None:
    proxy.inject(Delay(60))
    controller = Controller(workdir, proxy.url, "--query-timeout", "50s", "--shutdown-timeout", "1s")
    try:
        wait_for(lambda: proxy.requests, timeout_seconds=30, what="a query in flight")
        started = time.monotonic()
        code = controller.terminate()
        elapsed = time.monotonic() - started
    finally:
        controller.kill()
    print(f"\nSIGTERM during a query: exited after {elapsed:.2f}s")
    assert code == 0
    assert elapsed < 5.0, elapsed  # 1 s shutdown timeout, plus the interpreter's exit
    assert controller.events("cycle_abandoned")
    assert controller.events("stopped")
    assert not (workdir / "flags" / "flags.json").exists()  # nothing half-done: nothing at all


def test_sigterm_while_waiting_for_the_lock_gives_up_within_the_shutdown_timeout(
    workdir: Path, prometheus: PrometheusServer
) -> None:
    store = FileFlagStore(workdir / "flags" / "flags.json")
    with store.locked(5):  # somebody else (say an on-call command) holds the lock
        controller = Controller(workdir, prometheus.url, "--lock-timeout", "60s", "--shutdown-timeout", "1s")
        try:
            controller.wait_for_event("waiting_for_lock")
            started = time.monotonic()
            code = controller.terminate()
            elapsed = time.monotonic() - started
        finally:
            controller.kill()
    print(f"\nSIGTERM while waiting for the lock: exited after {elapsed:.2f}s")
    assert code == 0
    assert elapsed < 5.0, elapsed
    assert controller.events("cycle_abandoned")
    assert not (workdir / "flags" / "flags.json").exists()


def test_sigterm_between_cycles_stops_at_once_after_finishing_its_work(
    workdir: Path, prometheus: PrometheusServer
) -> None:
    controller = Controller(workdir, prometheus.url, "--shutdown-timeout", "10s")
    try:
        controller.wait_for_event("decision")
        started = time.monotonic()
        code = controller.terminate()
        elapsed = time.monotonic() - started
    finally:
        controller.kill()
    print(f"\nSIGTERM between cycles: exited after {elapsed:.2f}s")
    assert code == 0
    assert elapsed < 5.0
    assert not controller.events("cycle_abandoned")
    assert [e["event"] for e in controller.lines][-2:] == ["shutting_down", "stopped"]
    state = _state(workdir)
    assert state is not None
    logged = list(read_records(workdir / "log" / "decisions.jsonl"))
    assert logged[-1]["to_step"] == state.step  # the last move is both written and logged
