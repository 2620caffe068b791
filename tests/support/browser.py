"""Headless Chromium driven through chromedriver (Selenium), for the web UI's browser tests.

Debian's ``chromium`` and ``chromium-driver`` packages (``scripts/install-chromium``, run by ``make
test``). A machine without them fails the tests that need them, saying how to install them.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support.paths import ROOT

WINDOW = (1280, 900)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""What Chromium runs with (docs/ui.md#browser-tests), besides a fresh ``--user-data-dir`` and the window size."""

INSTALL = "install them with scripts/install-chromium (Debian packages chromium and chromium-driver; `make test` runs it)"


def executables() -> tuple[str, str]:
    """``chromium`` and ``chromedriver`` from PATH; fails the test when either is missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        pytest.fail(f"the browser tests need {missing} on PATH: {INSTALL}", pytrace=False)
    return browser, driver


def start_chromium(user_data_dir: Path, *, javascript: bool = True) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile in ``user_data_dir``, its console logged for
    ``driver.get_log("browser")``; JavaScript off when ``javascript`` is False."""
    browser, driver = executables()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console entries of level SEVERE since the last call (a CSP violation is one)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry for entry in entries if entry.get("level") == "SEVERE"]


def artifacts() -> Path:
    """Where the tests save what a human may want to look at: env ``FLAGROLL_TEST_ARTIFACTS``, else
    ``test-artifacts/`` in the checkout."""
    directory = Path(os.environ.get("FLAGROLL_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def png_size(data: bytes) -> tuple[int, int]:
    """The width and height of a PNG; fails on anything else."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR", "a PNG without its header chunk first"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def full_page_screenshot(driver: webdriver.Chrome, path: Path, *, most_height: int = 4000) -> tuple[int, int]:
    """The whole page (up to ``most_height`` CSS pixels tall) as a PNG at ``path``: the window is made
    as tall as the page for the shot, then put back. Returns the viewport's size in device pixels."""
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(WINDOW[0], max(WINDOW[1], min(most_height, int(height)) + int(chrome)))
    try:
        width, shown, ratio = driver.execute_script(
            "return [window.innerWidth, window.innerHeight, window.devicePixelRatio]"
        )
        assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    finally:
        driver.set_window_size(*WINDOW)
    return round(width * ratio), round(shown * ratio)
