"""The shared ``prometheus`` fixture runs each test against both tested Prometheus versions, and the tests
marked ``victoriametrics`` against VictoriaMetrics too: the test id names the server, and the server
answering is that one (its own build information says so)."""

from __future__ import annotations

import pytest

from controller.adapters.promserver import PrometheusServer
from tests.conftest import PROMETHEUS_VERSIONS, STORES

pytestmark = [pytest.mark.prometheus, pytest.mark.victoriametrics]

MAJOR = {"prom2": "2.", "prom3": "3.", "vm": "1.151."}


def test_the_server_is_the_version_its_test_id_names(
    prometheus: PrometheusServer, request: pytest.FixtureRequest
) -> None:
    which = request.node.callspec.params["prometheus"]
    assert which in PROMETHEUS_VERSIONS + STORES
    assert prometheus.version().startswith(MAJOR[which])
