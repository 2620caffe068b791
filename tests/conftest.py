"""Shared fixtures: one real Prometheus per test session and tested version, scraping one synthetic
service."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import structlog

from controller.adapters.promserver import PrometheusServer
from tests.support.paths import ROOT
from tests.support.synthetic import SyntheticService

PROMETHEUS_VERSIONS = ("prom2", "prom3")
"""The Prometheus servers the ``prometheus`` fixture runs every test against: the Debian package's 2.x
(``prometheus`` on PATH) and the 3.x release ``scripts/peer prometheus3`` builds (docs/peers.md)."""


def prometheus_binary(version: str) -> str:
    """The server binary for one of :data:`PROMETHEUS_VERSIONS` (building Prometheus 3 on first use)."""
    if version == "prom2":
        return "prometheus"
    done = subprocess.run(
        [str(ROOT / "scripts" / "peer"), "prometheus3"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/peer prometheus3 failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout.splitlines()[-1]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """``flagroll`` configures structlog for the stream it was given; undo that after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def synthetic() -> Iterator[SyntheticService]:
    with SyntheticService() as service:
        yield service


@pytest.fixture(scope="session", params=PROMETHEUS_VERSIONS)
def prometheus(request: pytest.FixtureRequest, synthetic: SyntheticService) -> Iterator[PrometheusServer]:
    """A real Prometheus on 127.0.0.1, scraping ``synthetic`` every second: once the Debian package's
    2.x (test id ``prom2``), once the built 3.x (``prom3``)."""
    with PrometheusServer([synthetic.target], binary=prometheus_binary(request.param)) as server:
        TESTED_VERSIONS[request.param] = server.version()
        yield server


TESTED_VERSIONS: dict[str, str] = {}
"""The version each Prometheus of :data:`PROMETHEUS_VERSIONS` reported, for the session's summary."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TESTED_VERSIONS:
        tested = ", ".join(f"{param} = {version}" for param, version in sorted(TESTED_VERSIONS.items()))
        terminalreporter.write_line(f"Prometheus servers tested: {tested}")
