"""One headless Chromium per session (and one with JavaScript off, for the tests that ask), and
``flagroll ui`` serving the seeded flag store and decision log (tests/support/uiseed.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from selenium import webdriver

from tests.support.browser import console_errors, start_chromium
from tests.support.uiseed import PROMETHEUS_UI, ServedUI, flagroll_ui, now, write_seed

STARTED: dict[str, float] = {}
"""How long each browser took to start, in seconds (printed at the end of the session)."""


def _chromium(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, javascript: bool
) -> Iterator[webdriver.Chrome]:
    began = time.monotonic()
    driver = start_chromium(tmp_path_factory.mktemp(f"{name}-profile"), javascript=javascript)
    STARTED[name] = time.monotonic() - began
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    yield from _chromium(tmp_path_factory, "chromium", javascript=True)


@pytest.fixture(scope="session")
def chromium_without_js(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    yield from _chromium(tmp_path_factory, "chromium-without-js", javascript=False)


@pytest.fixture
def browser(chromium: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The session's Chromium, its console read empty before the test and checked empty of errors
    after it: no page a test opened logged one."""
    console_errors(chromium)
    yield chromium
    assert console_errors(chromium) == []


@pytest.fixture(scope="session")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedUI]:
    """``flagroll ui`` over the seeded files, with graph links to a Prometheus UI, refreshing rarely
    (so that no page reloads under a test)."""
    flags, log = write_seed(tmp_path_factory.mktemp("ui"), now())
    with flagroll_ui(flags, log, "--prometheus-ui-url", PROMETHEUS_UI, "--ui-refresh", "600") as served:
        yield served


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, seconds in STARTED.items():
        terminalreporter.write_line(f"browser tests: {name} started in {seconds:.2f}s")
