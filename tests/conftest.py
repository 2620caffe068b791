"""Shared fixtures: one real Prometheus per test session and tested version, scraping one synthetic
service; for the tests marked ``victoriametrics``, also VictoriaMetrics single-node scraping it; one
real Kubernetes API server (etcd and kube-apiserver) per session for the tests that ask for
``kube_api``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import structlog

from controller.adapters.promserver import PrometheusServer
from tests.support.kubeapi import KubeApiServer
from tests.support.peers import peer_path
from tests.support.synthetic import SyntheticService
from tests.support.victoriametrics import VictoriaMetricsServer

PROMETHEUS_VERSIONS = ("prom2", "prom3")
"""The Prometheus servers the ``prometheus`` fixture runs every test against: the Debian package's 2.x
(``prometheus`` on PATH) and the 3.x release ``scripts/peer prometheus3`` builds (docs/peers.md)."""

STORES = ("vm",)
"""The long-term stores a test marked ``victoriametrics`` runs against as well, through the same
fixture: VictoriaMetrics single-node, built by ``scripts/peer victoriametrics`` (docs/peers.md says
which tests and why only those)."""


def prometheus_binary(version: str) -> str:
    """The server binary for one of :data:`PROMETHEUS_VERSIONS` (building Prometheus 3 on first use)."""
    if version == "prom2":
        return "prometheus"
    return peer_path("prometheus3")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the ``prometheus`` fixture gets one instance per Prometheus version; one
    marked ``victoriametrics`` also one against VictoriaMetrics (id ``vm``)."""
    if "prometheus" in metafunc.fixturenames:
        servers: tuple[str, ...] = PROMETHEUS_VERSIONS
        if metafunc.definition.get_closest_marker("victoriametrics") is not None:
            servers += STORES
        metafunc.parametrize("prometheus", servers, indirect=True, scope="session")


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """``flagroll`` configures structlog for the stream it was given; undo that after each test."""
    yield
    structlog.reset_defaults()


def _server(which: str, synthetic: SyntheticService) -> PrometheusServer:
    if which in STORES:
        return VictoriaMetricsServer([synthetic.target])
    return PrometheusServer([synthetic.target], binary=prometheus_binary(which))


Running = tuple[SyntheticService, dict[str, PrometheusServer]]
"""The synthetic service and the servers scraping it, by test id."""


@pytest.fixture(scope="session")
def _servers(request: pytest.FixtureRequest) -> Iterator[Running]:
    """The synthetic service and every server the selected tests ask for, all started before any
    test sets an arm, so that each server sees every series from its first sample, as a store that
    scrapes a service from its start does. (VictoriaMetrics counts a slow counter it first sees in the
    middle of its life from zero: docs/peers.md.)"""
    wanted = {
        item.callspec.params["prometheus"]
        for item in request.session.items
        if hasattr(item, "callspec") and "prometheus" in item.callspec.params
    }
    with SyntheticService() as service, contextlib.ExitStack() as running:
        servers = {}
        for which in sorted(wanted):
            servers[which] = running.enter_context(_server(which, service))
            TESTED_VERSIONS[which] = servers[which].version()
        yield service, servers


@pytest.fixture(scope="session")
def synthetic(_servers: Running) -> SyntheticService:
    """The synthetic service the shared servers scrape: tests set its arms."""
    return _servers[0]


@pytest.fixture(scope="session")
def prometheus(request: pytest.FixtureRequest, _servers: Running) -> PrometheusServer:
    """A real server on 127.0.0.1 that answers Prometheus's query API, scraping ``synthetic`` every
    second: the Debian package's Prometheus 2.x (test id ``prom2``), the built 3.x (``prom3``), and for
    the tests marked ``victoriametrics`` VictoriaMetrics single-node (``vm``)."""
    return _servers[1][request.param]


TESTED_VERSIONS: dict[str, str] = {}
"""The version each server of :data:`PROMETHEUS_VERSIONS` and :data:`STORES` reported, for the
session's summary."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TESTED_VERSIONS:
        tested = ", ".join(f"{param} = {version}" for param, version in sorted(TESTED_VERSIONS.items()))
        terminalreporter.write_line(f"Servers tested: {tested}")


@pytest.fixture(scope="session")
def kube_api() -> Iterator[KubeApiServer]:
    """A real Kubernetes API server with the FeatureFlag CRD (tests/support/kubeapi.py), for the whole
    session; each test takes a fresh namespace from it."""
    with KubeApiServer() as server:
        yield server
