"""The web UI's pure pages (controller/core/ui*.py), parsed as HTML and their charts as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from controller.core.state import Status
from controller.core.uilog import DEFAULT_SIZE, BadParameter, LogFilter, parse_filters, render_log
from controller.core.uioverview import overview_rows, render_overview
from controller.core.uipage import content_security_policy, flag_href, render_page, style_hash
from controller.core.uirollout import Rollout, prometheus_graph_url, queries_of, render_rollout
from tests.support.policytext import BASE, edit, the_policy
from tests.support.policytext import load as load_policy
from tests.support.uidata import (
    HOSTILE_AIM,
    HOSTILE_KEY,
    NOW,
    TERMINAL_REASON,
    Page,
    check,
    document,
    ramp,
    record,
    state,
)

SVG = "{http://www.w3.org/2000/svg}"


def fleet() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A document of flags in every condition, and each one's last record."""
    states = [
        ("calm", state("calm")),
        ("done", state("done", Status.COMPLETED, 100.0, 3)),
        ("rolled", state("rolled", Status.ROLLED_BACK, 0.0)),
        ("naked", state("naked", unguarded_reason="no valid policy judges it", unguarded_since=NOW)),
        ("gate", state("gate", awaiting_approval_since=NOW - timedelta(minutes=3))),
        ("erring", state("erring")),
        ("old", state("old", review=NOW.date() - timedelta(days=2))),
        ("halted", state("halted", Status.STOPPED, 0.0, reason="on-call said so")),
        ("frozen", state("frozen")),
        (HOSTILE_KEY, state(HOSTILE_KEY)),
    ]
    at = NOW - timedelta(minutes=5)
    last = {key: record(key, at) for key, _ in states}
    last["erring"] = record("erring", at, checks=[check(None, verdict="error", detail="connection refused")])
    last["frozen"] = record(
        "frozen",
        at,
        waiting={"reason": "window", "opens_at": "2026-12-05T08:00:00Z", "timezone": "UTC"},
    )
    last[HOSTILE_KEY] = record(HOSTILE_KEY, at, reason=TERMINAL_REASON)
    return document(states), last


def test_the_overview_lists_what_needs_a_human_first() -> None:
    doc, last = fleet()
    exposures = {"calm": [(NOW - timedelta(hours=2), 1.0), (NOW - timedelta(hours=1), 5.0)]}
    rows = overview_rows(doc, last, exposures, NOW)
    order = [r.flag for r in rows]
    assert order[:5] == ["naked", "rolled", "gate", "erring", "old"]
    assert order.index("halted") < order.index("calm")
    assert order[-1] == "done"
    assert "unmanaged" not in order
    page = Page(render_overview(rows, NOW).html)
    listed = [a["data-flag"] for a in page.having("tr") if a.get("data-flag")]
    assert listed == order
    by_flag = {r.flag: r for r in rows}
    assert by_flag["gate"].status == "awaiting_approval"
    assert by_flag["naked"].guarded is False
    assert by_flag["old"].stale
    assert by_flag["erring"].not_passing == ("errors: error",)
    svgs = page.having("svg", **{"class": "sparkline"})
    assert len(svgs) == len(rows)
    cells = {row[0]: row for row in page.cells if row}
    assert cells["gate"][3] == "awaiting_approval"
    assert cells["naked"][4].startswith("UNGUARDED")
    assert cells["old"][5].startswith("STALE")
    assert cells["calm"][8] == "5m"  # the last decision's age


def test_a_row_says_what_the_last_decision_waits_for() -> None:
    doc, last = fleet()
    rows = {r.flag: r for r in overview_rows(doc, last, {}, NOW)}
    assert rows["frozen"].waiting_reason == "window"
    assert rows["frozen"].attention == "waiting"
    assert rows["frozen"].waiting == "outside the change windows: wait for the window Sat 08:00 UTC, in 20h"


def test_the_sparkline_draws_the_recorded_exposure() -> None:
    doc, last = fleet()
    exposures = {"calm": [(NOW - timedelta(hours=2), 1.0), (NOW - timedelta(hours=1), 5.0)]}
    html = render_overview(overview_rows(doc, last, exposures, NOW), NOW).html
    row = next(line for line in html.splitlines() if 'data-flag="calm"' in line)
    svg = ET.fromstring(row[row.index("<svg") : row.index("</svg>") + 6])
    path = svg.find(f"{SVG}path")
    assert path is not None
    assert path.get("d", "").startswith("M")
    assert svg.findtext(f"{SVG}title") == "exposure of calm"


def test_hostile_text_is_shown_as_text_and_keys_are_encoded_in_links() -> None:
    doc, last = fleet()
    html = render_overview(overview_rows(doc, last, {}, NOW), NOW).html
    page = Page(html)
    assert "<script" not in html.lower()
    assert "\x1b" not in html
    assert "\x07" not in html
    assert not page.having("script")
    links = [a["href"] for a in page.having("a") if (a.get("href") or "").startswith("/flags/")]
    hostile = flag_href(HOSTILE_KEY)
    assert hostile == "/flags/x%22%3C%26%2F%C3%BC%20caf%C3%A9"
    assert hostile in links
    assert HOSTILE_KEY in page.all_text()


def rollout_records() -> list[dict[str, object]]:
    start = NOW - timedelta(hours=2)
    found = ramp("demo", start, 90)
    found.append(record("demo", start + timedelta(minutes=50), "pause", 10.0, actor="alice", reason="look"))
    found.append(record("demo", start + timedelta(minutes=55), "resume", 10.0, actor="alice"))
    found.append(
        record(
            "demo",
            start + timedelta(minutes=60),
            "rollback",
            0.0,
            10.0,
            reason=TERMINAL_REASON,
            checks=[check(0.05, verdict="fail", control={"value": 0.001, "query": "control_errors"})],
        )
    )
    return sorted(found, key=lambda r: str(r["time"]))


def test_the_rollout_page_tells_the_story() -> None:
    policy = the_policy(load_policy(edit(("Cut p95 from 450ms to 250ms.", repr(HOSTILE_AIM)), text=BASE)))
    rollout = Rollout("demo", state("demo", Status.ROLLED_BACK, 0.0), rollout_records(), policy)
    html = render_rollout(rollout, NOW, prometheus_ui="https://prom.example.com/").html
    page = Page(html)
    assert "<script" not in html.lower()
    assert not page.having("script")
    assert "\x1b" not in html
    assert "held \ufffd[31mRED" in page.all_text()  # the rollback's reason, its escapes made visible
    assert policy.spec.aim == HOSTILE_AIM
    aim = page.having("dd", data_fact="aim")
    assert aim
    assert HOSTILE_AIM in page.all_text()
    figures = page.having("figure")
    assert [f["class"] for f in figures] == ["chart exposure", "chart guardrail"]
    charts = [ET.fromstring(html[i : html.index("</svg>", i) + 6]) for i in _starts(html, '<svg xmlns="http')]
    exposure, guardrail = charts
    assert [m.get("data-at") for m in exposure.iter(f"{SVG}g") if m.get("class") == "marker"] == [
        "2026-12-04T10:50:00Z",
        "2026-12-04T10:55:00Z",
        "2026-12-04T11:00:00Z",
    ]
    labels = [g.get("data-line") for g in guardrail.iter(f"{SVG}g") if g.get("data-line")]
    assert labels == ["treatment", "control", "bound (≤; max 0.01)"]
    moves = [a["data-action"] for a in page.having("tr") if a.get("data-action")]
    assert moves == ["rollback", "resume", "pause", "advance", "advance"]
    assert "errors treatment 0.05 > 0.01 (max; n=500)" in page.all_text()
    graph = [a["href"] for a in page.having("a", **{"class": "graph"})]
    assert len(graph) == 2
    query = parse_qs(urlsplit(graph[0] or "").query)
    assert graph[0].startswith("https://prom.example.com/graph?")  # type: ignore[union-attr]
    assert query["g0.expr"] == [str(check(0)["query"])]


def _starts(text: str, needle: str) -> list[int]:
    found, at = [], text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def test_a_rollout_without_policy_takes_its_words_from_the_records_and_without_url_links_nothing() -> None:
    records = [record("demo", NOW - timedelta(minutes=1), aim=HOSTILE_AIM)]
    html = render_rollout(Rollout("demo", state("demo"), records), NOW).html
    page = Page(html)
    assert "<script" not in html.lower()
    assert HOSTILE_AIM in page.all_text()
    assert not page.having("a", **{"class": "graph"})
    assert "sum(rate(errors_total" in page.all_text()


def test_a_rollout_without_records_says_so() -> None:
    page = Page(render_rollout(Rollout("demo", state("demo"), []), NOW).html)
    assert page.having("p", id="no-records")
    assert not page.having("svg")


def test_queries_of_a_record_are_each_listed_once() -> None:
    found = queries_of(
        {
            "checks": [
                check(0.1),
                check(0.2, control={"query": "c"}),
                {"sequential": {"treatment": {"events_query": "e"}}},
            ]
        }
    )
    assert found == [str(check(0)["query"]), "c", "e"]


def test_the_prometheus_link_encodes_the_query() -> None:
    url = prometheus_graph_url("http://p:9090", 'sum(x{a="b&c"})')
    assert url == "http://p:9090/graph?g0.expr=sum%28x%7Ba%3D%22b%26c%22%7D%29&g0.tab=0&g0.range_input=1h"


def log_records() -> list[dict[str, object]]:
    start = NOW - timedelta(hours=1)
    found = ramp("a", start, 30, timedelta(minutes=1)) + ramp(HOSTILE_KEY, start, 30, timedelta(minutes=1))
    return sorted(found, key=lambda r: str(r["time"]))


def test_the_log_pages_newest_first_with_links_that_keep_the_filters() -> None:
    records = log_records()
    chosen = parse_filters({"flag": [HOSTILE_KEY], "size": ["10"], "page": ["2"]})
    matched = [r for r in records if chosen.matches(r)]
    page = Page(render_log(chosen, matched, NOW).html)
    times = [row[0] for row in page.cells if row]
    assert len(times) == 10
    assert times == sorted(times, reverse=True)
    assert times[0] == str(matched[-11]["time"])
    older = page.having("a", rel="next")[0]["href"]
    newer = page.having("a", rel="prev")[0]["href"]
    assert parse_qs(urlsplit(older or "").query) == {"flag": [HOSTILE_KEY], "page": ["3"], "size": ["10"]}
    assert parse_qs(urlsplit(newer or "").query) == {"flag": [HOSTILE_KEY], "size": ["10"]}
    assert "%2F" in (older or "")
    assert "%22" in (older or "")


def test_the_log_filters_by_action_and_time() -> None:
    records = log_records()
    chosen = parse_filters(
        {"action": ["advance"], "since": ["2026-12-04T11:15:00Z"], "until": ["2026-12-04T12:00:00+00:00"]}
    )
    matched = [r for r in records if chosen.matches(r)]
    assert matched
    assert all(r["action"] == "advance" for r in matched)
    assert [r["time"] for r in matched] == ["2026-12-04T11:20:00.000Z"] * 2  # not the advances at 11:10


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"page": ["0"]}, "page 0"),
        ({"page": ["x"]}, "page 'x'"),
        ({"page": ["²"]}, "page '²'"),  # a digit to str.isdigit, not to int()
        ({"size": ["100000"]}, "size 100000"),
        ({"action": ["explode"]}, "action 'explode'"),
        ({"since": ["yesterday"]}, "since 'yesterday'"),
        ({"since": ["2026-12-04T10:00:00"]}, "no time zone"),
        ({"since": ["2026-12-05"], "until": ["2026-12-04"]}, "until"),
        ({"colour": ["red"]}, "unknown parameter 'colour'"),
        ({"flag": ["a", "b"]}, "'flag' is given 2 times"),
    ],
)
def test_a_bad_parameter_is_named(query: dict[str, list[str]], named: str) -> None:
    with pytest.raises(BadParameter, match=named.replace("(", r"\(")):
        parse_filters(query)


def test_a_plus_offset_read_back_as_a_space_is_an_offset() -> None:
    chosen = parse_filters({"since": ["2026-12-04T10:00:00 01:00"]})
    assert chosen.since is not None
    assert chosen.since.utcoffset() == timedelta(hours=1)


def test_no_filter_is_the_default() -> None:
    assert parse_filters({"flag": [""], "page": [""]}) == LogFilter()
    assert LogFilter().size == DEFAULT_SIZE


def test_pages_are_deterministic_and_carry_their_refresh_and_style_hash() -> None:
    doc, last = fleet()
    first = render_overview(overview_rows(doc, last, {}, NOW), NOW, refresh_seconds=15).html
    again = render_overview(overview_rows(doc, last, {}, NOW), NOW, refresh_seconds=15).html
    assert first == again
    page = Page(first)
    assert page.having("meta", http_equiv="refresh")[0]["content"] == "15"
    assert style_hash() in content_security_policy()
    assert "script-src" not in content_security_policy()
    assert "default-src 'none'" in content_security_policy()
    style = first[first.index("<style>") + 7 : first.index("</style>")]
    import base64
    import hashlib

    assert f"'sha256-{base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()}'" == style_hash()


def test_every_page_escapes_its_title() -> None:
    html = render_page(HOSTILE_AIM, [], NOW).html
    assert "<script" not in html.lower()


def test_no_page_holds_a_script_or_a_control_character() -> None:
    hostile = [
        record(
            HOSTILE_KEY,
            NOW - timedelta(minutes=1),
            "rollback",
            0.0,
            5.0,
            reason=TERMINAL_REASON,
            aim=HOSTILE_AIM,
        ),
        record("<script>", NOW, actor="<script>alert(2)</script>", notes=["</td><script>x</script>"]),
    ]
    chosen = parse_filters({"flag": ["<script>"]})
    pages = [
        render_log(LogFilter(), hostile, NOW).html,
        render_log(chosen, [r for r in hostile if chosen.matches(r)], NOW).html,
        render_rollout(Rollout(HOSTILE_KEY, None, hostile, problem="</dd><script>"), NOW).html,
        render_overview(overview_rows(document([("<script>", state("<script>"))]), {}, {}, NOW), NOW).html,
    ]
    for html in pages:
        assert "<script" not in html.lower()
        assert not Page(html).having("script")
        assert not any(ch in html for ch in "\x1b\x07\x00")
    assert "</td><script>x</script>" in Page(pages[0]).all_text()
    assert 'value="&lt;script&gt;"' in pages[1]  # the filter form shows the flag it filters by


def test_a_flag_filter_is_the_key_as_given_spaces_and_all() -> None:
    assert parse_filters({"flag": [" a"]}).flag == " a"
    assert parse_filters({"flag": ["  "]}).flag is None
    assert parse_filters({"action": [" rollback "]}).action == "rollback"
