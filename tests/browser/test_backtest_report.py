"""``flagroll backtest --html``'s report (controller/core/backtesthtml.py) opened from a file in headless
Chromium: its charts are laid out at a size and nothing is logged to the console."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from controller.core.backtesthtml import PolicySet, render_html
from tests.core.test_backtest import START
from tests.core.test_backtest_html import END, guardrail_checks, replayed

pytestmark = pytest.mark.browser


def test_the_backtest_report_renders_its_charts(browser: webdriver.Chrome, tmp_path: Path) -> None:
    result = replayed(START + timedelta(minutes=62))
    report = tmp_path / "backtest.html"
    report.write_text(
        render_html(START, END, [PolicySet("--policies", "policies/", [result])]), encoding="utf-8"
    )
    browser.get(report.as_uri())
    assert browser.title.startswith("flagroll backtest ")
    charts = browser.find_elements(By.CSS_SELECTOR, "figure svg")
    assert len(charts) == 1 + len(guardrail_checks(result))
    for chart in charts:
        size = chart.size
        assert size["width"] > 300, size
        assert size["height"] > 100, size
        assert "rollback" in chart.text  # the marker's label, drawn
