"""The readers of the decision log that are pure take heartbeats (controller/core/compaction.py): the
web UI's pages render them plainly (its charts use their values), and the backtest's recorded
exposure treats them as holds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.adapters.notify import events_from
from controller.core.backtestlog import Recorded
from controller.core.compaction import heartbeat
from controller.core.uilog import LogFilter, render_log
from controller.core.uioverview import overview_rows, render_overview
from controller.core.uirollout import Rollout, guardrail_series, render_rollout
from controller.core.uirollout import _timed as timed
from tests.support.uidata import NOW, Page, check, document, iso, record, state


def _held(key: str) -> list[dict[str, Any]]:
    """An advance to 5 %, a full hold, then heartbeats every 10 minutes, the value drifting."""
    start = NOW - timedelta(hours=1)
    full = record(key, start + timedelta(seconds=30), checks=[check(0.002)])
    beats = [
        heartbeat(
            record(key, start + timedelta(minutes=10 * n, seconds=30), checks=[check(0.002 + 0.001 * n)]),
            full["time"],
            20 * n,
        )
        for n in range(1, 5)
    ]
    return [record(key, start, "advance", 5.0, 1.0), full, *beats]


def test_the_rollout_page_charts_heartbeat_values_and_shows_the_queries_of_its_full_record() -> None:
    records = _held("demo")
    series = guardrail_series(timed(records))
    ((_, seen),) = series.items()
    assert [c.get("value") for _, c in seen][-1] == 0.006
    page = Page(render_rollout(Rollout("demo", state("demo"), records), NOW).html)
    text = " ".join(page.text)
    assert "errors_total" in text  # the query text, from the full record under the heartbeats
    assert "0.006" in text


def test_the_log_page_and_the_overview_take_heartbeats() -> None:
    records = _held("demo")
    page = Page(render_log(LogFilter(), records, NOW).html)
    assert any("held since" in cell for row in page.cells for cell in row)
    rows = overview_rows(document([("demo", state("demo"))]), {"demo": records[-1]}, {}, NOW)
    assert rows[0].flag == "demo"
    assert "demo" in render_overview(rows, NOW).html


def test_the_backtest_takes_heartbeats_for_holds() -> None:
    records = _held("demo")
    recorded = Recorded.of("demo", records)
    assert [m.action.value for m in recorded.moves] == ["advance"]
    assert recorded.percent_at(NOW) == 5.0
    assert iso(recorded.moves[0].at) == records[0]["time"]


def test_a_heartbeat_is_never_notified() -> None:
    waits = {"reason": "approval", "step": 1, "began": True, "text": "approve with flagroll approve demo"}
    telling = record("demo", NOW, waiting=waits, stale=True, review="2026-11-01")
    assert [e.kind for e in events_from([telling])]  # the full record tells
    assert events_from([heartbeat(telling, telling["time"], 3)]) == []
