"""Run ``flagroll run`` as a child process, as an operator would, and read what it wrote.

The tests that use it count the records of each evaluation (eight cycles of an outage, a hold per
cycle), so it runs with ``--decision-log-heartbeat 0``: every evaluation in full. A test of
compaction gives its own ``--decision-log-heartbeat`` (the last one given counts)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from controller.adapters.decisionlog import read_records
from controller.core.flagd import read_state
from controller.core.state import RolloutState


class ControllerProcess:
    def __init__(self, workdir: Path, prometheus_url: str, *extra: str) -> None:
        self.workdir = workdir
        self.policies = workdir / "policies"
        self.policies.mkdir(exist_ok=True)
        self.flags = workdir / "flags.json"
        self.log = workdir / "decisions.jsonl"
        self.stdout = workdir / "controller.out"
        self.url = prometheus_url
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def add_policy(self, name: str, text: str) -> None:
        (self.policies / f"{name}.yaml").write_text(text)

    def start(self) -> ControllerProcess:
        with self.stdout.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "controller",
                    "--log-format",
                    "json",
                    "run",
                    "--policies",
                    str(self.policies),
                    "--flags",
                    str(self.flags),
                    "--prometheus",
                    self.url,
                    "--decision-log-heartbeat",
                    "0",
                    *self.extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self, timeout_seconds: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"controller did not stop on SIGTERM: {self.output()[-2000:]}") from None
        self.process = None
        return code

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") if self.stdout.exists() else ""

    def records(self, flag: str | None = None) -> list[dict[str, Any]]:
        return [r for r in read_records(self.log) if flag is None or r.get("flag") == flag]

    def state(self, flag: str) -> RolloutState | None:
        if not self.flags.exists():
            return None
        return read_state(json.loads(self.flags.read_text()), flag)

    def __enter__(self) -> ControllerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        code = self.stop()
        if kind is None and code != 0:
            raise AssertionError(f"controller exited {code}: {self.output()[-2000:]}")
