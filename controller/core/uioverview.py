"""The web UI's overview (``/``): every managed flag, what needs a human first. Pure.

One row per flag flagroll manages in the flag document: percent, step, the shown status
(``awaiting_approval`` included), guarded or not, stale, what the last decision said it waits for
(a change window, a freeze, an approval, firing alerts), the last decision and its age, and a
sparkline of its exposure from its decision records. Rows are sorted by :data:`ATTENTION` (what
needs a human first), then by flag key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from controller.core import approval
from controller.core.charts import GREEN, RED, escape, render_sparkline
from controller.core.errors import FlagFileError
from controller.core.flagd import managed_keys, read_state
from controller.core.policy import pct
from controller.core.state import Outcome, RolloutState, Status
from controller.core.uipage import REFRESH_SECONDS, Page, age, flag_href, parse_time, render_page

ExposurePoint = tuple[datetime, float]

# What needs a human first: the rank of each reason a row is listed where it is (lower: higher up).
ATTENTION = (
    ("unguarded", "exposed and no valid policy judges it"),
    ("unreadable", "its rollout state cannot be read"),
    ("rolled_back", "rolled back: 0 % until a new revision or a resume"),
    ("awaiting_approval", "waits for flagroll approve"),
    ("failing", "its last decision had checks that did not pass"),
    ("stale", "past its review date and still partial"),
    ("stopped", "stopped by a human"),
    ("paused", "paused by a human"),
    ("waiting", "a due move waits (change window, freeze, alerts)"),
    ("progressing", "progressing"),
    ("completed", "completed"),
    ("promoted", "promoted"),
)
RANK = {name: rank for rank, (name, _) in enumerate(ATTENTION)}
NOT_PASSING = frozenset({Outcome.FAIL.value, Outcome.ERROR.value, Outcome.NO_DATA.value})


@dataclass(frozen=True, slots=True)
class OverviewRow:
    flag: str
    attention: str  # a name in ATTENTION
    status: str
    percent: float | None
    step: int | None  # 1-based; None before the first step or when unreadable
    steps: int | None
    guarded: bool | None
    unguarded_reason: str | None
    stale: bool
    review: str | None
    waiting: str | None  # the text of what it waits for
    waiting_reason: str | None  # window, freeze, approval, alert
    not_passing: tuple[str, ...]  # names and verdicts of the last decision's checks that did not pass
    last_action: str | None
    last_reason: str | None
    last_at: datetime | None
    problem: str | None
    exposure: tuple[ExposurePoint, ...]


def overview_rows(
    document: Mapping[str, Any],
    last: Mapping[str, Mapping[str, Any]],
    exposures: Mapping[str, Sequence[ExposurePoint]],
    now: datetime,
    unjudged: Mapping[str, str] | None = None,
) -> list[OverviewRow]:
    """The rows, sorted. ``last``: each flag's newest decision record; ``exposures``: each flag's
    recorded exposure over time; ``unjudged``: from the policy files (flags no valid policy judges
    now, and why), else None (the mark in the flag's metadata says it)."""
    rows = [
        _row(key, document, last.get(key, {}), exposures.get(key, ()), now, unjudged)
        for key in managed_keys(document)
    ]
    return sorted(rows, key=lambda r: (RANK[r.attention], r.flag))


def _row(
    key: str,
    document: Mapping[str, Any],
    record: Mapping[str, Any],
    exposure: Sequence[ExposurePoint],
    now: datetime,
    unjudged: Mapping[str, str] | None,
) -> OverviewRow:
    problem = None
    state: RolloutState | None = None
    try:
        state = read_state(document, key)
    except FlagFileError as exc:
        problem = str(exc)
        with contextlib.suppress(FlagFileError):
            state = read_state(document, key, check_layout=False)
    not_passing = tuple(
        f"{c.get('name')}: {c.get('verdict')}"
        for c in record.get("checks") or []
        if isinstance(c, Mapping) and c.get("verdict") in NOT_PASSING and not c.get("shadow")
    )
    last_at = parse_time(record.get("time"))
    last_action, last_reason = _text(record.get("action")), _text(record.get("reason"))
    if state is None:
        return OverviewRow(
            flag=key, attention="unreadable", status="unknown", percent=None, step=None, steps=None,
            guarded=None, unguarded_reason=None, stale=False, review=None, waiting=None,
            waiting_reason=None, not_passing=not_passing, last_action=last_action,
            last_reason=last_reason, last_at=last_at, problem=problem or "no rollout state",
            exposure=tuple(exposure),
        )  # fmt: skip
    guarded, reason = _guarded(key, state, unjudged)
    waits = _waiting(record, state, now) if guarded or unjudged is None else None
    row = OverviewRow(
        flag=key,
        attention="",
        status=state.shown_status,
        percent=state.percent,
        step=state.step + 1 if state.step >= 0 else None,
        steps=state.steps,
        guarded=guarded,
        unguarded_reason=reason,
        stale=state.is_stale(now.date()),
        review=state.review.isoformat() if state.review else None,
        waiting=waits[0] if waits else None,
        waiting_reason=waits[1] if waits else None,
        not_passing=not_passing,
        last_action=last_action,
        last_reason=last_reason,
        last_at=last_at,
        problem=problem,
        exposure=tuple(exposure),
    )
    return _with_attention(row)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _guarded(key: str, state: RolloutState, unjudged: Mapping[str, str] | None) -> tuple[bool, str | None]:
    if unjudged is not None:
        reason = unjudged.get(key)
        return (True, None) if reason is None or not state.exposed else (False, reason)
    if state.unguarded and state.exposed:
        return False, state.unguarded_reason
    return True, None


def _waiting(record: Mapping[str, Any], state: RolloutState, now: datetime) -> tuple[str, str] | None:
    """What the last decision said the rollout waits for, if it still describes the rollout (as
    ``flagroll status`` tells it): its text as of ``now`` and its reason."""
    waits = approval.waiting_read(record.get("waiting"))
    if waits is None or state.status is not Status.PROGRESSING or record.get("to_percent") != state.percent:
        return None
    if waits.reason == approval.APPROVAL and not state.awaiting_approval:
        return None
    told = waits.as_record(now)
    return str(told.get("text") or waits.reason), str(waits.reason)


def _with_attention(row: OverviewRow) -> OverviewRow:
    if row.guarded is False:
        attention = "unguarded"
    elif row.problem is not None:
        attention = "unreadable"
    elif row.status in {"rolled_back", "awaiting_approval"}:
        attention = row.status
    elif row.not_passing and row.status not in {"stopped", "promoted"}:
        attention = "failing"
    elif row.stale:
        attention = "stale"
    elif row.status in {"stopped", "paused"}:
        attention = row.status
    elif row.waiting is not None:
        attention = "waiting"
    else:
        attention = row.status if row.status in RANK else "progressing"
    return replace(row, attention=attention)


def sparkline_window(rows: Sequence[OverviewRow], now: datetime) -> tuple[datetime, datetime]:
    """One window for every sparkline (so that they compare): from the earliest recorded exposure
    (at most :data:`SPARKLINE_DAYS` back) to ``now``."""
    earliest = min((r.exposure[0][0] for r in rows if r.exposure), default=now - timedelta(hours=1))
    start = max(earliest, now - timedelta(days=SPARKLINE_DAYS))
    return (start, now) if start < now else (now - timedelta(hours=1), now)


SPARKLINE_DAYS = 7


def render_overview(
    rows: Sequence[OverviewRow], now: datetime, *, source: str = "", refresh_seconds: int = REFRESH_SECONDS
) -> Page:
    """The page of the rows (already sorted)."""
    start, end = sparkline_window(rows, now)
    needing = sum(1 for r in rows if RANK[r.attention] < RANK["stopped"])
    body = [
        f'<p id="summary">{len(rows)} managed flags'
        + (f" in {escape(source)}" if source else "")
        + f"; {needing} need a human. Exposure sparklines from {escape(start.strftime('%Y-%m-%d %H:%M'))} "
        "UTC to now (0–100 %). Sorted by what needs a human first: "
        + ", ".join(escape(name.replace("_", " ")) for name, _ in ATTENTION)
        + ".</p>",
        '<table class="overview">',
        "<tr><th>flag</th><th>percent</th><th>step</th><th>status</th><th>guarded</th><th>stale</th>"
        "<th>waiting</th><th>last decision</th><th>age</th><th>exposure</th><th>why it is here</th></tr>",
    ]
    body.extend(_row_html(row, start, end, now) for row in rows)
    if not rows:
        body.append('<tr><td colspan="11">no flags managed by flagroll</td></tr>')
    body.append("</table>")
    return render_page("Rollouts", body, now, refresh_seconds=refresh_seconds)


def _row_html(row: OverviewRow, start: datetime, end: datetime, now: datetime) -> str:
    rank = RANK[row.attention]
    css = "attention" if rank <= RANK["failing"] else "human" if rank < RANK["waiting"] else ""
    step = (
        f"{row.step}/{row.steps}"
        if row.step is not None
        else f"-/{row.steps if row.steps is not None else '?'}"
    )
    guarded = (
        "?"
        if row.guarded is None
        else "yes"
        if row.guarded
        else f'<span class="bad">UNGUARDED</span>: {escape(row.unguarded_reason or "")}'
    )
    stale = f'<span class="warn">STALE</span> (review {escape(row.review or "")})' if row.stale else "no"
    waiting = "—" if row.waiting is None else f"{escape(row.waiting_reason or '')}: {escape(row.waiting)}"
    last = "—" if row.last_action is None else escape(row.last_action)
    if row.last_reason:
        last += f'<br><span class="muted">{escape(_short(row.last_reason))}</span>'
    why = dict(ATTENTION)[row.attention]
    details = [why, *([f"PROBLEM: {row.problem}"] if row.problem else []), *row.not_passing]
    spark = render_sparkline(
        f"exposure of {row.flag}",
        [*row.exposure, (end, row.exposure[-1][1])] if row.exposure else [],
        start,
        end,
        colour=RED if row.status == "rolled_back" else GREEN,
    )
    cells = [
        f'<td><a href="{escape(flag_href(row.flag))}">{escape(row.flag)}</a></td>',
        f'<td class="number">{"?" if row.percent is None else escape(pct(row.percent)) + "%"}</td>',
        f"<td>{escape(step)}</td>",
        f'<td class="status">{escape(row.status)}</td>',
        f"<td>{guarded}</td>",
        f"<td>{stale}</td>",
        f"<td>{waiting}</td>",
        f"<td>{last}</td>",
        f"<td>{escape(age(row.last_at, now))}</td>",
        f"<td>{spark}</td>",
        f"<td>{'<br>'.join(escape(d) for d in details)}</td>",
    ]
    return (
        f'<tr class="{css}" data-flag="{escape(row.flag)}" data-attention="{row.attention}">'
        + "".join(cells)
        + "</tr>"
    )


def _short(text: str, most: int = 140) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"
