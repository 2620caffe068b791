"""``flagroll backtest --html``: the pure page (controller/core/backtesthtml.py), parsed as HTML and
its charts as XML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from html.parser import HTMLParser

from controller.core.backtest import (
    Evaluation,
    Move,
    Replay,
    evaluation_times,
    fetched_queries,
    replay,
)
from controller.core.backtestcompare import compare
from controller.core.backtesthtml import PolicySet, exposure_timeline, render_html
from controller.core.backtestranges import RangeAnswer, Series, to_ms
from controller.core.checkrecord import ArmEvidence, Check
from controller.core.policy import Policy
from controller.core.queries import Arm, Source
from controller.core.state import Action, Outcome
from tests.core.test_backtest import POLICY, START, constant, load

SVG = "{http://www.w3.org/2000/svg}"
END = START + timedelta(hours=2)
ROLLBACK = START + timedelta(minutes=65)


def answers(policy: Policy, times: list[datetime], incident: datetime | None) -> dict[str, RangeAnswer]:
    """Traffic enough in both arms; 1 % errors, 30 % in the treatment from ``incident``."""
    found = {}
    for q in fetched_queries(policy, {}):
        if q.key.name == "traffic":
            found[q.promql] = constant(times, 1000.0)
        elif q.key.arm is Arm.TREATMENT and incident is not None:
            points = {to_ms(t): 0.3 if t >= incident else 0.01 for t in times}
            found[q.promql] = RangeAnswer((Series({}, points),))
        else:
            found[q.promql] = constant(times, 0.01)
    return found


def replayed(incident: datetime | None, text: str = POLICY) -> Replay:
    policy = load(text)
    times = evaluation_times(START, END, policy.spec.interval_seconds)
    return replay(policy, times, answers(policy, times, incident), {})


class Page(HTMLParser):
    """The tags of a page (name, attributes) in order, its doctype and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.doctype = ""
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag
            and all(wanted[k] in (attrs.get(k.rstrip("_").replace("_", "-")) or "").split() for k in wanted)
        ]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def parsed(page: str) -> Page:
    result = Page()
    result.feed(page)
    result.close()
    return result


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)]


def markers(svg: ET.Element) -> list[str]:
    return [g.get("data-at") or "" for g in svg.iter(f"{SVG}g") if g.get("class") == "marker"]


def guardrail_checks(result: Replay) -> set[tuple[str, str, str]]:
    return {
        (c.name, c.arm.value, c.rule)
        for e in result.evaluations
        for c in e.checks
        if c.kind is Source.GUARDRAIL
    }


def test_the_exposure_timeline_starts_at_zero_and_steps_with_the_moves_to_the_end() -> None:
    result = replayed(START + timedelta(minutes=62))
    timeline = exposure_timeline(result)
    assert timeline[0] == (START, 0.0)
    assert timeline[-1] == (END, 0.0)
    assert (ROLLBACK, 0.0) in timeline
    assert [v for at, v in timeline if START < at < ROLLBACK][-1] == 20.0
    assert timeline == sorted(timeline, key=lambda p: p[0])
    quiet = Replay("p", "f", 300, START, END)
    assert exposure_timeline(quiet) == [(START, 0.0), (END, 0.0)]


def test_a_page_is_self_contained_html_with_well_formed_charts() -> None:
    result = replayed(START + timedelta(minutes=62))
    page = render_html(START, END, [PolicySet("--policies", "policies/", [result])], requests=4)
    assert page.startswith("<!doctype html>")
    doc = parsed(page)
    assert doc.doctype.lower() == "doctype html"
    assert doc.having("meta", charset="utf-8")
    assert re.search(r"<head>.*<title>[^<]+</title>.*</head>", page, flags=re.DOTALL)
    assert "2026-12-01T00:00:00Z" in page
    assert "<script" not in page.lower()
    for name, attrs in doc.tags:
        assert name not in {"script", "link", "img", "iframe", "object", "embed"}
        for key, value in attrs.items():
            assert not key.startswith("on"), (name, key)
            if key in {"src", "href", "action", "xlink:href"}:
                assert not re.match(r"\s*(https?:)?//", value or ""), (name, key, value)
    assert "url(" not in page
    assert "@import" not in page
    charts = svgs(page)
    assert len(charts) == len(doc.having("svg"))
    assert all(c.tag == f"{SVG}svg" for c in charts)
    assert "4 HTTP requests" in doc.all_text


def test_one_exposure_chart_and_one_chart_per_guardrail_check_with_the_rollback_marked() -> None:
    result = replayed(START + timedelta(minutes=62))
    checks = guardrail_checks(result)
    assert ("errors", "treatment", "max") in checks
    page = render_html(START, END, [PolicySet("--policies", "policies/", [result])])
    doc = parsed(page)
    assert len(doc.having("figure", class_="exposure")) == 1
    figures = doc.having("figure", class_="guardrail")
    assert {f["data-check"] for f in figures} == {" ".join(c) for c in checks}
    assert len(figures) == len(checks)
    charts = svgs(page)
    assert len(charts) == 1 + len(checks)
    for chart in charts:
        assert markers(chart) == ["2026-12-01T01:05:00Z"]
    exposure = charts[0]
    assert [g.get("data-line") for g in exposure.iter(f"{SVG}g") if g.get("data-line")] == [
        "simulated exposure"
    ]
    (step,) = exposure.iter(f"{SVG}path")
    bottom = "220.0"  # 0 %: the exposure starts from nobody
    assert (step.get("d") or "").startswith(f"M64.0,{bottom}V")
    (treatment,) = [f for f in figures if f["data-check"] == "errors treatment max"]
    guard = charts[1 + figures.index(treatment)]
    lines = [g.get("data-line") or "" for g in guard.iter(f"{SVG}g") if g.get("data-line")]
    assert lines[0] == "treatment"
    assert lines[-1].startswith("bound")


def test_a_replay_without_rollback_has_no_marker() -> None:
    page = render_html(START, END, [PolicySet("--policies", "p", [replayed(None)])])
    charts = svgs(page)
    assert len(charts) >= 2
    assert all(markers(c) == [] for c in charts)
    assert "first would-be rollback" in parsed(page).all_text


def test_the_summary_has_the_decisions_the_end_state_and_the_check_counts() -> None:
    result = replayed(START + timedelta(minutes=62))
    doc = parsed(render_html(START, END, [PolicySet("--policies", "p", [result])]))
    text = doc.all_text
    assert len(doc.having("table", class_="decisions")) == 1
    for move in result.moves:
        assert move.reason in text
    assert "rolled_back at 0 %" in text
    assert "2026-12-01T01:05:00Z" in text
    assert len(doc.having("table", class_="checks")) == 1
    rows = [a for a in doc.having("tr") if a.get("data-check")]
    assert "errors treatment max" in {r["data-check"] for r in rows}
    # the counts of the text report (13 passes, 12 failures), in cells of their own
    assert re.search(r"errors treatment max.*?13\s*12\s*0\s*0", text, flags=re.DOTALL)


def test_outside_text_is_escaped_everywhere() -> None:
    evil = '<script>alert("x")</script>'
    result = Replay(evil, f'flag"{evil}', 300, START, END)
    result.moves.append(Move(START, Action.ADVANCE, 0, 5, f"reason {evil} <img src=x onerror=alert(1)>"))
    result.moves.append(Move(START + timedelta(minutes=5), Action.ROLLBACK, 5, 0, evil))
    check = Check(evil, Source.GUARDRAIL, "max", 0.05, Arm.TREATMENT, "q", 0.1, 0.05, 10.0, Outcome.FAIL)
    result.evaluations.extend(Evaluation(START + timedelta(minutes=5 * i), (check,)) for i in range(3))
    page = render_html(START, END, [PolicySet("--policies", evil, [result])], problems=[evil])
    assert "<script" not in page
    assert "<img" not in page
    doc = parsed(page)
    assert evil in doc.all_text
    assert not [t for t, _ in doc.tags if t in {"script", "img"}]
    assert len(svgs(page)) == 2  # still well-formed XML


def test_compare_shows_both_sets_and_the_verdicts() -> None:
    tight = replayed(START + timedelta(minutes=62))
    loose = replayed(None, POLICY.replace("max: 0.05", "max: 0.5"))
    page = render_html(
        START,
        END,
        [PolicySet("--policies", "tight/", [tight]), PolicySet("--compare", "loose/", [loose])],
        comparisons=compare([tight], [loose]),
    )
    doc = parsed(page)
    assert [s["data-option"] for s in doc.having("section", class_="policy-set")] == [
        "--policies",
        "--compare",
    ]
    assert len(doc.having("figure", class_="exposure")) == 2
    assert len(doc.having("section", class_="comparison")) == 1
    assert "only --policies rolled back, at 2026-12-01T01:05:00Z" in doc.all_text
    assert "tight/" in doc.all_text
    assert "loose/" in doc.all_text


def test_problems_are_shown() -> None:
    page = render_html(START, END, [], problems=["query failed: HTTP 400 bad_data"])
    doc = parsed(page)
    assert len(doc.having("section", class_="problems")) == 1
    assert "query failed: HTTP 400 bad_data" in doc.all_text


def test_a_relative_bound_shows_the_control_value_and_the_moving_bound() -> None:
    result = Replay("p", "f", 300, START, END)
    for i in range(24):
        control = 0.2 + 0.001 * i
        check = Check(
            "p95",
            Source.GUARDRAIL,
            "maxIncrease",
            0.1,
            Arm.TREATMENT,
            "q",
            0.21,
            control * 1.1,
            900.0,
            Outcome.PASS,
            control=ArmEvidence("qc", control, 910.0),
        )
        result.evaluations.append(Evaluation(START + timedelta(minutes=5 * i), (check,)))
    (_, guard) = svgs(render_html(START, END, [PolicySet("--policies", "p", [result])]))
    lines = [g.get("data-line") or "" for g in guard.iter(f"{SVG}g") if g.get("data-line")]
    assert lines[:2] == ["treatment", "control"]
    assert lines[2].startswith("bound")
    (bound,) = [g for g in guard.iter(f"{SVG}g") if (g.get("data-line") or "").startswith("bound")]
    path = bound.find(f"{SVG}path")
    assert path is not None
    assert (path.get("d") or "").count("L") > 10  # it moves with the control


def week_replay() -> Replay:
    """A week at 30 s (20,161 evaluations) with two guardrails, both arms, and a rollback."""
    times = [START + timedelta(seconds=30 * i) for i in range(20_161)]
    result = Replay("shop", "shop", 30, times[0], times[-1])
    result.moves.append(Move(times[0], Action.ADVANCE, 0, 5, "rollout starts"))
    result.moves.append(Move(times[12_000], Action.ROLLBACK, 5, 0, "guardrail failed"))
    for i, at in enumerate(times):
        checks = []
        for name, base in (("error-rate", 0.01), ("p95", 0.2)):
            for arm in Arm:
                value = base * (1.5 if arm is Arm.TREATMENT and i >= 12_000 else 1) + 0.0001 * (i % 7)
                verdict = Outcome.FAIL if value > base * 1.3 else Outcome.PASS
                checks.append(
                    Check(
                        name, Source.GUARDRAIL, "max", base * 1.3, arm, "q", value, base * 1.3, 600.0, verdict
                    )
                )
        result.evaluations.append(Evaluation(at, tuple(checks)))
    return result


def test_a_week_at_30s_with_two_guardrails_makes_a_small_page() -> None:
    result = week_replay()
    page = render_html(result.start, result.end, [PolicySet("--policies", "p", [result])])
    size = len(page.encode())
    assert size < 200_000, size
    charts = svgs(page)
    assert len(charts) == 1 + 4
    for chart in charts:
        width = float(chart.get("data-plot-width") or 0)
        for path in chart.iter(f"{SVG}path"):
            assert len(re.findall(r"[MLHV]", path.get("d") or "")) <= 2 * width + 2
        assert markers(chart) == ["2026-12-05T04:00:00Z"]


def test_the_same_replays_give_the_same_page() -> None:
    result = replayed(START + timedelta(minutes=62))
    sets = [PolicySet("--policies", "p", [result])]
    assert render_html(START, END, sets) == render_html(START, END, sets)
