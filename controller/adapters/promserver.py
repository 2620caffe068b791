"""Run a local Prometheus as a child process: for the demo, the tests and the benchmarks.

It listens on 127.0.0.1 at a free port, keeps its data in a temporary directory and scrapes the given
targets every second. It is stopped (TERM, then KILL) and its directory removed on :meth:`stop`.
Given ``data_dir`` (an existing TSDB directory, e.g. blocks backfilled with ``promtool tsdb
create-blocks-from openmetrics``) it serves that instead, and keeps it on stop; ``retention`` must then
reach back to the oldest block, or Prometheus deletes it at start.
Another server that scrapes and answers Prometheus's API may reuse the lifecycle: a subclass gives
its :attr:`~PrometheusServer.name`, :meth:`~PrometheusServer.arguments` and
:meth:`~PrometheusServer.version`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from controller.core.errors import UsageError

INSTALL_HINT = (
    "Prometheus is not installed. On Debian or Ubuntu: "
    "sudo apt-get install -y --no-install-recommends prometheus "
    "(or put a 'prometheus' binary on PATH, or pass --prometheus-binary)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str = "prometheus") -> str:
    found = shutil.which(name)
    if found is None:
        raise UsageError(INSTALL_HINT)
    return found


class PrometheusServer:
    name = "prometheus"  # in messages, and the names of its files in the working directory

    def __init__(
        self,
        targets: Sequence[str],
        *,
        scrape_interval_seconds: float = 1.0,
        binary: str = "prometheus",
        job: str = "flagroll",
        web_config: str | None = None,
        ready_auth: tuple[str, str] | None = None,
        ready_verify: ssl.SSLContext | bool = True,
        port: int = 0,
        data_dir: Path | None = None,
        retention: str = "1d",
        rules: str | None = None,
    ) -> None:
        self.targets = list(targets)
        self.rules = rules  # YAML of a rule file (alerting and recording rules), evaluated every interval
        # An existing TSDB directory (e.g. blocks backfilled by promtool) to serve: kept on stop.
        self.data_dir = data_dir
        self.retention = retention
        self.web_config = web_config  # YAML for --web.config.file (TLS, basic auth): for tests
        self.ready_auth = ready_auth
        self.ready_verify = ready_verify
        self.scrape_interval_seconds = scrape_interval_seconds
        self.binary = find_binary(binary)
        self.job = job
        self.port = port  # 0: pick a free port at start
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.web_config and "tls_server_config" in self.web_config else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _config(self, *, evaluation: bool = True) -> str:
        """The scrape configuration; ``evaluation=False`` leaves out ``evaluation_interval`` (for a
        store that refuses fields it does not know)."""
        interval = f"{self.scrape_interval_seconds:g}s"
        targets = ", ".join(f'"{t}"' for t in self.targets)
        return (
            "global:\n"
            f"  scrape_interval: {interval}\n"
            + (f"  evaluation_interval: {interval}\n" if evaluation else "")
            + ("rule_files: [rules.yml]\n" if self.rules is not None else "")
            + "scrape_configs:\n"
            f"  - job_name: {self.job}\n"
            f"    scrape_interval: {interval}\n"
            f"    scrape_timeout: {interval}\n"
            f"    static_configs:\n      - targets: [{targets}]\n"
        )

    def arguments(self, workdir: Path) -> list[str]:
        """The command line, with its configuration written into ``workdir``."""
        config = workdir / "prometheus.yml"
        config.write_text(self._config())
        if self.rules is not None:
            (workdir / "rules.yml").write_text(self.rules)  # rule_files are relative to the config
        extra = []
        if self.web_config is not None:
            web = workdir / "web.yml"
            web.write_text(self.web_config)
            extra.append(f"--web.config.file={web}")
        return [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.data_dir or workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            f"--storage.tsdb.retention.time={self.retention}",
            *extra,
        ]

    def start(self, ready_timeout_seconds: float = 30.0) -> PrometheusServer:
        """Start (or, after :meth:`pause`, start again on the same port with the same data)."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"flagroll-{self.name}-"))
        if not self.port:
            self.port = free_port()
        arguments = self.arguments(self.workdir)
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            arguments,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the parent does not kill it behind its back
        )
        log.close()
        try:
            self._wait_ready(ready_timeout_seconds)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(
                    f"{self.url}/-/ready", timeout=1.0, auth=self.ready_auth, verify=self.ready_verify
                )
                if answer.status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout_seconds:g}s: {self.log_tail()}")

    def version(self, timeout_seconds: float = 5.0) -> str:
        """The running server's version from ``/api/v1/status/buildinfo`` (``2.42.0+ds``, ``3.16.0``)."""
        answer = httpx.get(
            f"{self.url}/api/v1/status/buildinfo",
            timeout=timeout_seconds,
            auth=self.ready_auth,
            verify=self.ready_verify,
        )
        answer.raise_for_status()
        return str(answer.json()["data"]["version"])

    def log_tail(self, lines: int = 20) -> str:
        if self.workdir is None:
            return ""
        path = self.workdir / f"{self.name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def pause(self, timeout_seconds: float = 10.0) -> None:
        """Stop the process but keep its port and data, so that :meth:`start` brings it back."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self, timeout_seconds: float = 10.0) -> None:
        self.pause(timeout_seconds)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
