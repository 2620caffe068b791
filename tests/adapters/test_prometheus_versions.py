"""The shared ``prometheus`` fixture runs each test against both tested servers: the test id names the
version, and the server answering is that version (its own build information says so)."""

from __future__ import annotations

import pytest

from controller.adapters.promserver import PrometheusServer
from tests.conftest import PROMETHEUS_VERSIONS

pytestmark = pytest.mark.prometheus

MAJOR = {"prom2": "2.", "prom3": "3."}


def test_the_server_is_the_version_its_test_id_names(
    prometheus: PrometheusServer, request: pytest.FixtureRequest
) -> None:
    which = request.node.callspec.params["prometheus"]
    assert which in PROMETHEUS_VERSIONS
    assert prometheus.version().startswith(MAJOR[which])
