"""The web UI in a real browser: headless Chromium (tests/support/browser.py) opening the pages of
``flagroll ui`` over the seeded rollouts (tests/support/uiseed.py). What a parser of the HTML cannot
tell: the charts are laid out at a size, the stylesheet applies under the Content-Security-Policy, no
console error, hostile text stays text when a browser reads it, links lead to pages."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from controller.core.uipage import flag_href
from tests.support.browser import artifacts, console_errors, full_page_screenshot, png_size
from tests.support.uidata import HOSTILE_KEY, record
from tests.support.uiseed import (
    GUARDRAILS,
    HOSTILE_TEXT,
    ORDER,
    PROGRESSING,
    PROMETHEUS_UI,
    ROLLED_BACK,
    ServedUI,
    flagroll_ui,
    now,
    write_records,
    write_seed,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.browser

SCRIPTED = "data:text/html,<title>did not run</title><script>document.title='ran'</script>"
"""A page whose script retitles it: tells whether a browser runs scripts."""

ERROR_TITLES = ("Not found", "Bad filter", "Cannot read", "Method not allowed", "No such rollout")


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    assert driver.title.endswith(" · flagroll"), (url, driver.title)
    assert not driver.find_elements(By.ID, "problem"), (url, driver.title)  # the error pages' paragraph


def laid_out(element: WebElement) -> tuple[float, float]:
    size = element.size
    shown = str(element.get_attribute("outerHTML"))[:200]
    assert size["width"] > 0, shown
    assert size["height"] > 0, shown
    return size["width"], size["height"]


def rows(driver: webdriver.Chrome, table: str, attribute: str) -> list[str]:
    return [
        str(row.get_attribute(attribute))
        for row in driver.find_elements(By.CSS_SELECTOR, f"table.{table} tr[{attribute}]")
    ]


def test_the_overview_lists_every_managed_flag_with_a_sparkline_what_needs_a_human_first(
    browser: webdriver.Chrome, ui: ServedUI
) -> None:
    open_page(browser, ui.base + "/")
    assert browser.title == "Rollouts · flagroll"
    assert rows(browser, "overview", "data-flag") == list(ORDER)
    for row in browser.find_elements(By.CSS_SELECTOR, "table.overview tr[data-flag]"):
        sparklines = row.find_elements(By.TAG_NAME, "svg")
        assert len(sparklines) == 1, row.get_attribute("data-flag")
        laid_out(sparklines[0])
        assert sparklines[0].find_elements(By.CSS_SELECTOR, "path, polyline"), row.get_attribute("data-flag")
    shown = [
        row.get_attribute("data-attention") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-flag]")
    ]
    assert shown == [
        "unguarded",
        "rolled_back",
        "awaiting_approval",
        "paused",
        "progressing",
        "progressing",
        "completed",
    ]


def test_the_stylesheet_applies_under_the_content_security_policy(
    browser: webdriver.Chrome, ui: ServedUI
) -> None:
    """The page's one stylesheet is allowed by its hash: were it blocked, the console would say so
    (the ``browser`` fixture checks) and the rolled-back row would not be shaded."""
    open_page(browser, ui.base + "/")
    shaded = browser.find_element(By.CSS_SELECTOR, f'tr[data-flag="{ROLLED_BACK}"] td')
    assert shaded.value_of_css_property("background-color") == "rgba(254, 242, 242, 1)"  # #fef2f2
    unguarded = browser.find_element(By.CSS_SELECTOR, "span.bad")
    assert unguarded.value_of_css_property("color") == "rgba(185, 28, 28, 1)"  # #b91c1c
    assert unguarded.value_of_css_property("font-weight") == "700"


def test_the_rolled_back_rollout_shows_its_charts_rollback_moves_and_last_checks(
    browser: webdriver.Chrome, ui: ServedUI
) -> None:
    open_page(browser, ui.base + flag_href(ROLLED_BACK))
    exposure = browser.find_element(By.CSS_SELECTOR, "figure.chart.exposure svg")
    laid_out(exposure)
    guardrails = browser.find_elements(By.CSS_SELECTOR, "figure.chart.guardrail")
    assert [g.get_attribute("data-check") for g in guardrails] == [f"{n} treatment max" for n in GUARDRAILS]
    for figure in guardrails:
        width, height = laid_out(figure.find_element(By.TAG_NAME, "svg"))
        assert width > 300
        assert height > 100
    text = browser.find_element(By.TAG_NAME, "body").text
    for chart in (exposure, *(g.find_element(By.TAG_NAME, "svg") for g in guardrails)):
        assert "rollback" in chart.text  # the marker's label, drawn
    assert rows(browser, "moves", "data-action") == ["rollback", "advance", "advance"]
    assert browser.find_element(By.ID, "last-decision").text.startswith("rollback at ")
    verdicts = {
        row.get_attribute("data-check"): row.find_element(By.TAG_NAME, "td").text
        for row in browser.find_elements(By.CSS_SELECTOR, "table.checks tr[data-check]")
    }
    assert verdicts == {"errors": "FAIL", "latency_p95": "FAIL"}
    assert "guardrail errors failed: 0.031 > 0.01" in text
    failed = browser.find_element(By.CSS_SELECTOR, "table.checks td.bad")
    assert failed.value_of_css_property("color") == "rgba(185, 28, 28, 1)"


def test_the_log_filtered_by_flag_and_action_pages_through_only_matching_rows(
    browser: webdriver.Chrome, ui: ServedUI
) -> None:
    open_page(browser, ui.base + f"/log?flag={ROLLED_BACK}&action=hold&size=5")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        found = browser.find_elements(By.CSS_SELECTOR, "table.log tr[data-flag]")
        assert found
        assert {(r.get_attribute("data-flag"), r.get_attribute("data-action")) for r in found} == {
            (ROLLED_BACK, "hold")
        }
        seen += [r.find_element(By.TAG_NAME, "td").text for r in found]
        older = browser.find_elements(By.CSS_SELECTOR, "a[rel=next]")
        if not older:
            break
        older[0].click()
        assert browser.find_element(By.ID, "count").text.startswith("22 records match; page ")
    assert pages == 5
    assert len(seen) == len(set(seen)) == 22  # 24 records but the two advances
    assert seen == sorted(seen, reverse=True)  # newest first, page after page
    browser.find_element(By.CSS_SELECTOR, "a[rel=prev]").click()
    assert parse_qs(urlsplit(browser.current_url).query) == {
        "flag": [ROLLED_BACK], "action": ["hold"], "size": ["5"], "page": ["4"]
    }  # fmt: skip


@pytest.mark.parametrize("path", ["/", flag_href(ROLLED_BACK), flag_href(HOSTILE_KEY), "/log?size=10"])
def test_every_link_of_a_page_leads_to_a_page(browser: webdriver.Chrome, ui: ServedUI, path: str) -> None:
    open_page(browser, ui.base + path)
    hrefs = {str(a.get_attribute("href")) for a in browser.find_elements(By.CSS_SELECTOR, "a[href]")}
    inside = sorted(h for h in hrefs if h.startswith(ui.base + "/"))
    outside = sorted(hrefs - set(inside))
    assert len(inside) >= 2  # the navigation's two, at least
    for href in inside:
        assert httpx.get(href, timeout=10).status_code == 200, href
        open_page(browser, href)
        assert not browser.title.startswith(ERROR_TITLES), href
    for href in outside:  # the graph links: well-formed, not followed
        split = urlsplit(href)
        assert (split.scheme, split.netloc, split.path) == ("https", "prometheus.example.com", "/graph"), href
        assert parse_qs(split.query)["g0.expr"][0].startswith(("sum(", "histogram_quantile(")), href
    if path.startswith("/flags/"):
        assert len(outside) == 2  # one query a guardrail
        assert all(h.startswith(PROMETHEUS_UI + "/graph?") for h in outside)
    else:
        assert outside == []


def test_hostile_text_is_shown_as_text_and_runs_nothing(browser: webdriver.Chrome, ui: ServedUI) -> None:
    """The aim and reasons of one flag are a script that would retitle the page and raise an alert,
    and its key holds a quote, markup, an ampersand and a slash: each page shows them as text, and
    nothing ran in this browser, which runs scripts (as the first page shows)."""
    browser.get(SCRIPTED)
    assert browser.title == "ran"  # JavaScript is on in this browser
    for path in ("/", flag_href(HOSTILE_KEY), f"/log?flag={quote(HOSTILE_KEY)}"):
        open_page(browser, ui.base + path)
        text = browser.find_element(By.TAG_NAME, "body").text
        assert HOSTILE_KEY in text, path
        assert HOSTILE_TEXT in text, path
        assert "pwned" not in browser.title, path
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018
    assert browser.title == "Decision log · flagroll"
    open_page(browser, ui.base + flag_href(HOSTILE_KEY))
    assert browser.title == f"Rollout {HOSTILE_KEY} · flagroll"
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Rollout {HOSTILE_KEY}"
    assert browser.find_element(By.CSS_SELECTOR, 'dd[data-fact="aim"]').text == HOSTILE_TEXT


def test_the_pages_work_without_javascript(chromium_without_js: webdriver.Chrome, ui: ServedUI) -> None:
    driver = chromium_without_js
    driver.get(SCRIPTED)
    assert driver.title == "did not run"  # JavaScript is off in this browser
    open_page(driver, ui.base + "/")
    assert rows(driver, "overview", "data-flag") == list(ORDER)
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.overview svg")) == len(ORDER)
    driver.find_element(By.LINK_TEXT, ROLLED_BACK).click()
    assert driver.title == f"Rollout {ROLLED_BACK} · flagroll"
    for chart in driver.find_elements(By.CSS_SELECTOR, "figure.chart svg"):
        laid_out(chart)
    assert len(driver.find_elements(By.CSS_SELECTOR, "figure.chart svg")) == 1 + len(GUARDRAILS)
    driver.find_element(By.LINK_TEXT, "This flag's decision log").click()
    assert {r.get_attribute("data-flag") for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-flag]")} == {
        ROLLED_BACK
    }
    assert console_errors(driver) == []


def test_screenshots_of_the_overview_and_a_rolled_back_rollout(
    browser: webdriver.Chrome, ui: ServedUI
) -> None:
    directory = artifacts()
    for name, path in (("ui-overview.png", "/"), ("ui-rolled-back.png", flag_href(ROLLED_BACK))):
        target = directory / name
        target.unlink(missing_ok=True)
        open_page(browser, ui.base + path)
        expected = full_page_screenshot(browser, target)
        assert png_size(target.read_bytes()) == expected
        assert expected[0] >= 1000, expected
        assert expected[1] >= 600, expected


NEW = "a record written after the page loaded"


def body_text(driver: webdriver.Chrome) -> str:
    """The page's visible text, or nothing while the page is being replaced."""
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:
        return ""


def test_a_page_reloads_itself_and_shows_what_the_log_says_now(
    chromium: webdriver.Chrome, tmp_path: Path
) -> None:
    """With ``--ui-refresh 1`` the page declares a one-second refresh, and the browser, left alone on
    it, shows a record written after it loaded."""
    flags, log = write_seed(tmp_path, now())
    with flagroll_ui(flags, log, "--ui-refresh", "1") as served:
        open_page(chromium, served.base + f"/log?flag={PROGRESSING}")
        refresh = chromium.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        assert refresh.get_attribute("content") == "1"
        shown = chromium.current_url
        assert NEW not in chromium.page_source
        write_records(
            log,
            [record(PROGRESSING, now(), "stop", 0.0, 5.0, actor="on-call", reason=NEW)],
            append=True,
        )
        wait_for(
            lambda: NEW in body_text(chromium),
            timeout_seconds=15,
            what="the page to reload itself with the new record",
        )
        assert chromium.current_url == shown
        assert rows(chromium, "log", "data-action")[0] == "stop"
        chromium.get("about:blank")  # away before the server stops, so no reload fails against it
    assert console_errors(chromium) == []
