"""Shared fixtures: one real Prometheus per test session, scraping one synthetic service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from controller.adapters.promserver import PrometheusServer
from tests.support.synthetic import SyntheticService


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """``flagroll`` configures structlog for the stream it was given; undo that after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def synthetic() -> Iterator[SyntheticService]:
    with SyntheticService() as service:
        yield service


@pytest.fixture(scope="session")
def prometheus(synthetic: SyntheticService) -> Iterator[PrometheusServer]:
    """A real Prometheus (Debian package) on 127.0.0.1, scraping ``synthetic`` every second."""
    with PrometheusServer([synthetic.target]) as server:
        yield server
