"""The web UI's rollout page (``/flags/<key>``): one rollout's story. Pure.

Aim, mechanism, owner and review (from the policy when the UI was given the policy files, else from
the newest record that carries them); a timeline of the exposure and one chart per guardrail check
(its treatment value, the control arm's and the bound, at every decision), rollbacks and human actions
(stop, pause, resume, approve, or any record made by someone other than the controller) marked; the
moves taken; the last decision's checks (:func:`~controller.core.checkrecord.describe`); and every query
of the last decision as PromQL, linked to the Prometheus graph page when its URL is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from controller.core.charts import (
    BLUE,
    GREEN,
    GREY,
    RED,
    Line,
    Marker,
    Point,
    TimeChart,
    escape,
    render_svg,
    utc_text,
)
from controller.core.checkrecord import SYMBOL, describe, fmt
from controller.core.compaction import heartbeat_base, is_heartbeat, latest
from controller.core.policy import Policy, pct
from controller.core.state import Action, RolloutState
from controller.core.uipage import REFRESH_SECONDS, Page, age, log_href, parse_time, render_page

Record = Mapping[str, Any]

HUMAN_ACTIONS = frozenset({Action.STOP.value, Action.PAUSE.value, Action.RESUME.value, Action.APPROVE.value})
NOT_MOVES = frozenset({Action.HOLD.value, Action.VERIFY.value, Action.REJECT.value})
MOST_MARKERS = 40  # the newest ones: more would hide the lines
MOST_MOVES = 200  # moves listed on the page; the decision log page has them all
CheckKey = tuple[str, str, str]  # name, arm, rule


@dataclass(frozen=True, slots=True)
class Rollout:
    """What the page is about: the flag, its state in the flag document (None: not managed there or
    unreadable, with ``problem``), its decision records in time order, its policy if known."""

    flag: str
    state: RolloutState | None
    records: Sequence[Record]
    policy: Policy | None = None
    problem: str | None = None
    full: Callable[[Record], Record] | None = None  # records are slim (:func:`slim`): their full forms


# What the page reads of a record besides its last decision (which it reads whole): see :func:`slim`.
SLIM_FIELDS = (
    "time",
    "action",
    "actor",
    "from_percent",
    "to_percent",
    "to_step",
    "steps",
    "reason",
    "aim",
    "mechanism",
    "owner",
    "review",
    "heartbeat",
)
SLIM_CHECK_FIELDS = ("kind", "name", "arm", "rule", "value", "bound", "limit")


def slim(record: Record) -> dict[str, Any]:
    """What this page reads of ``record`` when it is not the last decision: the page drawn from slim
    records (with :attr:`Rollout.full` to find the last decision's whole record) is the page drawn
    from the records themselves, for a fraction of their size (no query texts, no other checks)."""
    found = {name: record[name] for name in SLIM_FIELDS if name in record}
    checks = record.get("checks")
    if isinstance(checks, list):
        kept = []
        for check in checks:
            if isinstance(check, Mapping) and check.get("kind") == "guardrail":
                small = {name: check[name] for name in SLIM_CHECK_FIELDS if name in check}
                control = check.get("control")
                if isinstance(control, Mapping):
                    small["control"] = {"value": control["value"]} if "value" in control else {}
                elif control is not None:
                    small["control"] = control
                kept.append(small)
        found["checks"] = kept
    elif checks is not None:
        found["checks"] = checks
    return found


def last_decision(records: Sequence[Record], full: Callable[[Record], Record] | None) -> Record | None:
    """:func:`~controller.core.compaction.latest` of ``records`` (oldest first); with ``full``, of
    slim records, reading whole only the ones it lays together."""
    if full is None or not records:
        return latest(records)[0]
    if not is_heartbeat(records[-1]):
        return full(records[-1])
    base = heartbeat_base(records)
    return latest([*([full(base)] if base is not None else []), full(records[-1])])[0]


def prometheus_graph_url(base: str, query: str) -> str:
    """The Prometheus expression browser on ``query``: ``<base>/graph?g0.expr=…`` (Prometheus 2;
    Prometheus 3 sends ``/graph`` on to its query page with the parameters)."""
    params = urlencode([("g0.expr", query), ("g0.tab", "0"), ("g0.range_input", "1h")])
    return f"{base.rstrip('/')}/graph?{params}"


def _timed(records: Sequence[Record]) -> list[tuple[datetime, Record]]:
    found = []
    for record in records:
        at = parse_time(record.get("time"))
        if at is not None:
            found.append((at, record))
    found.sort(key=lambda pair: pair[0])
    return found


def markers(timed: Sequence[tuple[datetime, Record]]) -> list[Marker]:
    """Rollbacks (red) and human actions (grey), the newest :data:`MOST_MARKERS`."""
    found = []
    for at, record in timed:
        action = str(record.get("action"))
        actor = record.get("actor")
        if action == Action.ROLLBACK.value:
            found.append(Marker(at, "rollback", RED))
        elif action in HUMAN_ACTIONS or (actor not in (None, "controller") and action not in NOT_MOVES):
            who = f" by {actor}" if actor not in (None, "controller") else ""
            found.append(Marker(at, f"{action}{who}", GREY))
    return found[-MOST_MARKERS:]


def exposure_points(timed: Sequence[tuple[datetime, Record]], end: datetime) -> list[Point]:
    points: list[Point] = []
    for at, record in timed:
        value = record.get("to_percent")
        if isinstance(value, int | float) and not isinstance(value, bool):
            points.append((at, float(value)))
    if points:
        points.append((end, points[-1][1]))
    return points


def guardrail_series(
    timed: Sequence[tuple[datetime, Record]],
) -> dict[CheckKey, list[tuple[datetime, Record]]]:
    """Each guardrail check (name, arm, rule) at every decision that judged it, in the order first met."""
    found: dict[CheckKey, list[tuple[datetime, Record]]] = {}
    for at, record in timed:
        for check in record.get("checks") or []:
            if isinstance(check, Mapping) and check.get("kind") == "guardrail":
                key = (str(check.get("name")), str(check.get("arm")), str(check.get("rule")))
                found.setdefault(key, []).append((at, check))
    return found


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _series(seen: Sequence[tuple[datetime, Mapping[str, Any]]], name: str) -> list[Point]:
    """Each check's number ``name`` at its time (None where it has none): :func:`_number`, inlined,
    for ten thousand decisions a chart."""
    found: list[Point] = []
    for at, check in seen:
        value = check.get(name)
        kind = type(value)
        if kind is float:
            found.append((at, value))
        elif value is None:
            found.append((at, None))
        elif kind is not bool and isinstance(value, int | float):
            found.append((at, float(value)))
        else:
            found.append((at, None))
    return found


def guardrail_chart(
    key: CheckKey,
    seen: Sequence[tuple[datetime, Record]],
    start: datetime,
    end: datetime,
    ident: str,
    marks: Sequence[Marker],
) -> TimeChart:
    name, arm, rule = key
    values = _series(seen, "value")
    bounds = _series(seen, "bound")
    lines = [Line(arm, values, BLUE if arm == "treatment" else GREY)]
    controls = _series([(at, c.get("control") or {}) for at, c in seen], "value")
    if any(v is not None for _, v in controls):
        lines.append(Line("control", controls, GREY))
    limit = _number(seen[-1][1].get("limit"))
    how = f"{rule} {fmt(limit)}" + ("" if rule in {"max", "min", "minSamples"} else " over control")
    lines.append(Line(f"bound ({SYMBOL.get(rule, 'vs')}; {how})", bounds, RED, dashed=True))
    return TimeChart(
        ident=ident,
        title=f"{name} {arm} {rule}",
        description=f"The {arm} value of guardrail {name} at every decision"
        + (", the control arm's value" if len(lines) == 3 else "")
        + f" and the bound it was held to ({how}); gaps where it had no value.",
        start=start,
        end=end,
        lines=lines,
        markers=marks,
    )


def render_rollout(
    rollout: Rollout,
    now: datetime,
    *,
    prometheus_ui: str | None = None,
    refresh_seconds: int = REFRESH_SECONDS,
) -> Page:
    timed = _timed(rollout.records)
    body = [*_facts(rollout, timed, now)]
    if timed:
        start = timed[0][0]
        end = max(now, timed[-1][0])
        if end <= start:
            end = start + timedelta(minutes=1)
        marks = markers(timed)
        body.append("<h2>Timeline</h2>")
        body.append('<figure class="chart exposure">')
        body.append(render_svg(_exposure_chart(rollout.flag, timed, start, end, marks)))
        body.append("</figure>")
        for n, (key, seen) in enumerate(guardrail_series(timed).items(), start=1):
            body.append(f'<figure class="chart guardrail" data-check="{escape(" ".join(key))}">')
            body.append(render_svg(guardrail_chart(key, seen, start, end, f"guardrail-{n}", marks)))
            body.append("</figure>")
        body.extend(_moves(rollout.flag, timed))
        last = last_decision([record for _, record in timed], rollout.full)  # a heartbeat over its hold's
        body.extend(_last_checks(dict(last or timed[-1][1]), now, prometheus_ui))
    else:
        body.append('<p id="no-records">No decision records for this flag in the decision log.</p>')
    return render_page(f"Rollout {rollout.flag}", body, now, refresh_seconds=refresh_seconds)


def _exposure_chart(
    flag: str,
    timed: Sequence[tuple[datetime, Record]],
    start: datetime,
    end: datetime,
    marks: Sequence[Marker],
) -> TimeChart:
    return TimeChart(
        ident="exposure",
        title=f"{flag}: exposure",
        description=f"The share of users flag {flag} exposed, in percent, as its decision records say.",
        start=start,
        end=end,
        lines=(Line("exposure", exposure_points(timed, end), GREEN, step=True),),
        markers=marks,
        unit="%",
        value_range=(0.0, 100.0),
    )


def _described(timed: Sequence[tuple[datetime, Record]], field: str) -> str | None:
    for _, record in reversed(timed):
        value = record.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def _facts(rollout: Rollout, timed: Sequence[tuple[datetime, Record]], now: datetime) -> Iterator[str]:
    spec = rollout.policy.spec if rollout.policy is not None else None
    state = rollout.state
    aim = spec.aim if spec is not None else _described(timed, "aim")
    mechanism = spec.mechanism if spec is not None else _described(timed, "mechanism")
    owner = (
        spec.owner
        if spec is not None
        else (state.owner if state and state.owner else _described(timed, "owner"))
    )
    review_date = spec.review if spec is not None else (state.review if state else None)
    review = review_date.isoformat() if review_date is not None else _described(timed, "review")
    facts: list[tuple[str, str]] = [
        ("aim", aim or "—"),
        ("mechanism", mechanism or "—"),
        ("owner", owner or "—"),
        (
            "review",
            (review or "—")
            + (" (STALE: past its review date)" if state and state.is_stale(now.date()) else ""),
        ),
    ]
    if state is not None:
        step = f"{state.step + 1}/{state.steps}" if state.step >= 0 else f"-/{state.steps}"
        facts += [
            ("status", state.shown_status + (f": {state.reason}" if state.reason else "")),
            ("percent", f"{pct(state.percent)} % (control {pct(state.control_percent)} %)"),
            ("step", step),
            ("policy", f"{state.policy} (revision {state.revision})"),
        ]
        if state.unguarded and state.exposed:
            facts.append(("UNGUARDED", state.unguarded_reason))
    if rollout.problem:
        facts.append(("PROBLEM", rollout.problem))
    if timed:
        facts.append(("decision records", f"{len(timed)}, the last {age(timed[-1][0], now)} ago"))
    yield '<dl class="facts">'
    for name, value in facts:
        yield f'<dt>{escape(name)}</dt><dd data-fact="{escape(name)}">{escape(value)}</dd>'
    yield "</dl>"
    yield f'<p><a href="{escape(log_href(flag=rollout.flag))}">This flag\'s decision log</a></p>'


def _moves(flag: str, timed: Sequence[tuple[datetime, Record]]) -> Iterator[str]:
    moves = [(at, r) for at, r in timed if str(r.get("action")) not in NOT_MOVES]
    yield "<h2>Steps taken</h2>"
    if len(moves) > MOST_MOVES:
        yield f'<p class="muted">The newest {MOST_MOVES} of {len(moves)} moves (the log has all).</p>'
    yield (
        '<table class="moves"><tr><th>time (UTC)</th><th>action</th><th>from → to</th><th>step</th>'
        "<th>by</th><th>reason</th></tr>"
    )
    for at, r in reversed(moves[-MOST_MOVES:]):
        to_step = r.get("to_step")
        step = f"{to_step + 1 if isinstance(to_step, int) else '?'}/{r.get('steps') or '?'}"
        moved = f"{pct(_number(r.get('from_percent')) or 0)}% → {pct(_number(r.get('to_percent')) or 0)}%"
        action = escape(str(r.get("action")))
        yield (
            f'<tr data-action="{action}"><td>{utc_text(at)}</td><td>{action}</td>'
            f"<td>{escape(moved)}</td><td>{escape(step)}</td><td>{escape(str(r.get('actor') or ''))}</td>"
            f"<td>{escape(str(r.get('reason') or ''))}</td></tr>"
        )
    if not moves:
        yield '<tr><td colspan="6">none but holds</td></tr>'
    yield "</table>"


def queries_of(record: Record) -> list[str]:
    """Every PromQL text the record's checks name (their own, the control arm's, the counts'), once
    each, in the order met."""
    found: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str) and value and value not in found:
            found.append(value)

    for check in record.get("checks") or []:
        if not isinstance(check, Mapping):
            continue
        add(check.get("query"))
        for name in ("control", "sequential", "sample_ratio"):
            evidence = check.get(name)
            if not isinstance(evidence, Mapping):
                continue
            add(evidence.get("query"))
            for arm in ("treatment", "control", "dispersion"):
                inner = evidence.get(arm)
                if isinstance(inner, Mapping):
                    add(inner.get("events_query"))
                    add(inner.get("samples_query"))
                    add(inner.get("query"))
    return found


def _last_checks(record: Record, now: datetime, prometheus_ui: str | None) -> Iterator[str]:
    at = parse_time(record.get("time"))
    yield "<h2>The last decision</h2>"
    yield (
        f'<p id="last-decision">{escape(str(record.get("action")))} at {escape(str(record.get("time")))} '
        f"({escape(age(at, now))} ago): {escape(str(record.get('reason') or ''))}</p>"
    )
    checks = [c for c in record.get("checks") or [] if isinstance(c, Mapping)]
    yield '<table class="checks"><tr><th>verdict</th><th>kind</th><th>check</th></tr>'
    for check in checks:
        verdict = str(check.get("verdict"))
        css = "good" if verdict == "pass" else "bad"
        name = escape(str(check.get("name")))
        yield (
            f'<tr data-check="{name}"><td class="{css}">{escape(verdict.upper())}</td>'
            f"<td>{escape(str(check.get('kind')))}</td><td>{escape(describe(check))}</td></tr>"
        )
    if not checks:
        yield '<tr><td colspan="3">no checks</td></tr>'
    yield "</table>"
    queries = queries_of(record)
    if queries:
        yield "<h2>Queries</h2>"
        yield '<ul class="queries">'
        for query in queries:
            link = ""
            if prometheus_ui:
                link = (
                    f' <a class="graph" href="{escape(prometheus_graph_url(prometheus_ui, query))}">graph</a>'
                )
            yield f"<li><code>{escape(query)}</code>{link}</li>"
        yield "</ul>"
