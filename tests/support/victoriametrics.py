"""VictoriaMetrics single-node as a child process, scraping the same targets as the tests' Prometheus and
answering flagroll at its Prometheus-compatible API (``/api/v1/query``): a long-term store to run the
core scenarios against (docs/peers.md, "VictoriaMetrics and other long-term stores").

It has the lifecycle of :class:`~controller.adapters.promserver.PrometheusServer` (127.0.0.1 at a free
port, a temporary directory, readiness polled with a deadline, TERM then KILL, the directory removed),
with VictoriaMetrics's own command line and scrape configuration.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import httpx

from controller.adapters.promserver import PrometheusServer
from tests.support.peers import peer_path

FLAGS = (
    # An instant query is evaluated where it is asked, not 30 s earlier (the default: samples younger
    # than the offset are left out as possibly incomplete). Prometheus has no such delay.
    "-search.latencyOffset=0s",
    "-retentionPeriod=1d",
    "-loggerLevel=WARN",
)
"""The flags beside the listen address, the data directory and the scrape configuration (docs/peers.md
says why each)."""


def victoriametrics_binary() -> str:
    """The binary ``scripts/peer victoriametrics`` builds (once; then found in its cache)."""
    return peer_path("victoriametrics")


class VictoriaMetricsServer(PrometheusServer):
    name = "victoria-metrics"

    def __init__(
        self,
        targets: Sequence[str],
        *,
        binary: str | None = None,
        scrape_interval_seconds: float = 1.0,
        job: str = "flagroll",
        port: int = 0,
    ) -> None:
        super().__init__(
            targets,
            scrape_interval_seconds=scrape_interval_seconds,
            binary=binary or victoriametrics_binary(),
            job=job,
            port=port,
        )

    def _config(self, *, evaluation: bool = False) -> str:
        # VictoriaMetrics refuses fields it does not know (evaluation_interval).
        return super()._config(evaluation=False)

    def arguments(self, workdir: Path) -> list[str]:
        config = workdir / "scrape.yml"
        config.write_text(self._config())
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={workdir / 'data'}",
            f"-promscrape.config={config}",
            *FLAGS,
        ]

    def version(self, timeout_seconds: float = 5.0) -> str:
        """The running server's version (``1.151.0``) from its own metrics: its
        ``/api/v1/status/buildinfo`` answers a fixed Prometheus version (2.24.0) for dashboards."""
        answer = httpx.get(f"{self.url}/metrics", timeout=timeout_seconds)
        answer.raise_for_status()
        found = re.search(r'vm_app_version\{[^}]*version="[a-z-]*-v([0-9][^"-]*)', answer.text)
        if found is None:
            raise RuntimeError(f"{self.name} at {self.url} does not say its version in /metrics")
        return found.group(1)
