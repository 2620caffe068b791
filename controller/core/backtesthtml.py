"""``flagroll backtest --html``: the report as one self-contained page. Pure: replays in, text out.

Per policy set and policy: the summary of the text report (the simulated decisions, the first
would-be rollback, where the rollout ended, per check the outcome counts and quantiles from
:func:`~controller.core.backtestreport.summarise`), a chart of the simulated exposure over time, and
per guardrail check (name, arm, rule) a chart of its value (and the control arm's, for a rule
relative to control) against its bound, with the rollbacks marked; with ``--compare``, the verdict
per flag; and the problems the command reports. The charts are inline SVG from
:mod:`controller.core.charts`; the page has no script and refers to nothing outside itself (its
only styles are in one ``<style>`` element).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.core.backtest import Replay
from controller.core.backtestcompare import FlagComparison
from controller.core.backtestlog import TAKEN_DOWN
from controller.core.backtestreport import CheckSummary, summarise
from controller.core.charts import BLUE, GREEN, GREY, RED, Line, Marker, Point, TimeChart, escape, render_svg
from controller.core.charts import utc_text as _time
from controller.core.checkrecord import SYMBOL, Check, fmt
from controller.core.durations import format_duration
from controller.core.policy import pct
from controller.core.queries import Source
from controller.core.state import Action

STYLE = """
body { font-family: sans-serif; margin: 1.5rem; color: #111827; max-width: 64rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.2rem; margin-top: 2rem; } h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #e5e7eb; padding: 0.2rem 0.4rem; text-align: left; vertical-align: top; }
td.number { text-align: right; }
figure { margin: 0.5rem 0 1rem; }
svg { max-width: 100%; height: auto; }
.problems { border-left: 4px solid #b91c1c; padding-left: 0.8rem; }
""".strip()

CheckKey = tuple[str, str, str]  # name, arm, rule


@dataclass(frozen=True, slots=True)
class PolicySet:
    """One set of policies as the command line named it (``--policies DIR``) and its replays."""

    option: str
    path: str
    replays: Sequence[Replay]


def exposure_timeline(replay: Replay) -> list[tuple[datetime, float]]:
    """The exposure (percent) the replay judged over the window, as steps: the simulated one (0 at
    the start, moved by its decisions) or the recorded one (``--decision-log``), the last
    percentage held to the end."""
    timeline = list(replay.exposure) or [(replay.start, 0.0)]
    timeline.append((chart_end(replay), timeline[-1][1]))
    return timeline


def _exposure_name(replay: Replay) -> str:
    return "simulated exposure" if replay.recorded is None else "recorded exposure"


def guardrail_series(replay: Replay) -> dict[CheckKey, list[tuple[datetime, Check]]]:
    """Each guardrail check (name, arm, rule) at every evaluation time, in the order first met."""
    found: dict[CheckKey, list[tuple[datetime, Check]]] = {}
    for evaluation in replay.evaluations:
        for check in evaluation.checks:
            if check.kind is Source.GUARDRAIL:
                found.setdefault((check.name, check.arm.value, check.rule), []).append((evaluation.at, check))
    return found


def rollbacks(replay: Replay) -> list[Marker]:
    """The simulated rollbacks; with a decision log, the would-be rollback and every recorded
    rollback or stop in the window (a rollout resumed after one may be taken down again)."""
    if replay.recorded is not None:
        marked = []
        if replay.would_rollback is not None:
            marked.append(Marker(replay.would_rollback.at, "would-be rollback"))
        for down in replay.recorded:
            if down.action in TAKEN_DOWN:
                who = f" by {down.actor}" if down.actor else ""
                marked.append(Marker(down.at, f"recorded {down.action.value}{who}"))
        return marked
    return [
        Marker(m.at, f"rollback {pct(m.from_percent)}% → {pct(m.to_percent)}%")
        for m in replay.moves
        if m.action is Action.ROLLBACK
    ]


def chart_end(replay: Replay) -> datetime:
    """Where a chart of ``replay`` ends: its last evaluation or its last recorded move (up to
    ``--to``), at least one interval after the first (a window of one evaluation still gets a
    chart)."""
    last = replay.recorded[-1].at if replay.recorded else replay.end
    return max(replay.end, last, replay.start + timedelta(seconds=replay.interval_seconds))


def exposure_chart(replay: Replay, ident: str) -> TimeChart:
    return TimeChart(
        ident=ident,
        title=f"{replay.policy}: {_exposure_name(replay)}",
        description=(
            f"The share of users the simulated rollout of flag {replay.flag} exposed, in percent, "
            "starting at 0 at the start of the window."
            if replay.recorded is None
            else f"The share of users flag {replay.flag} exposed, in percent, as its decision log "
            "recorded it."
        ),
        start=replay.start,
        end=chart_end(replay),
        lines=(Line(_exposure_name(replay), exposure_timeline(replay), GREEN, step=True),),
        markers=rollbacks(replay),
        unit="%",
        value_range=(0.0, 100.0),
    )


def guardrail_chart(
    replay: Replay, key: CheckKey, seen: Sequence[tuple[datetime, Check]], ident: str
) -> TimeChart:
    name, arm, rule = key
    first = seen[0][1]
    values: list[Point] = [(at, c.value) for at, c in seen]
    bounds: list[Point] = [(at, c.bound) for at, c in seen]
    lines = [Line(arm, values, BLUE if arm == "treatment" else GREY)]
    if any(c.control is not None for _, c in seen):
        control: list[Point] = [(at, None if c.control is None else c.control.value) for at, c in seen]
        lines.append(Line("control", control, GREY))
    symbol = SYMBOL.get(rule, "vs")
    how = f"{rule} {fmt(first.limit)}" + ("" if rule in {"max", "min", "minSamples"} else " over control")
    lines.append(Line(f"bound ({symbol}; {how})", bounds, RED, dashed=True))
    return TimeChart(
        ident=ident,
        title=f"{replay.policy}: {name} {arm} {rule}",
        description=(
            f"The {arm} value of guardrail {name} at every evaluation time"
            + (", the control arm's value" if len(lines) == 3 else "")
            + f" and the bound it was held to ({how}); gaps where it had no value."
        ),
        start=replay.start,
        end=chart_end(replay),
        lines=lines,
        markers=rollbacks(replay),
    )


def render_html(
    start: datetime,
    end: datetime,
    sets: Sequence[PolicySet],
    comparisons: Sequence[FlagComparison] = (),
    problems: Sequence[str] = (),
    requests: int | None = None,
) -> str:
    """The page: the window, the problems, each set's policies, the comparison."""
    title = f"flagroll backtest {_time(start)} → {_time(end)}"
    body = [
        f"<h1>{escape(title)}</h1>",
        "<p>What each policy would have done over the window, replayed through the controller's own "
        "decision core on Prometheus's history. Nothing was written to any flag file or decision log. "
        "Times are UTC.</p>",
    ]
    if requests is not None:
        body.append(f"<p>{requests} HTTP requests to Prometheus.</p>")
    if problems:
        body.append('<section class="problems"><h2>Problems</h2><ul>')
        body.extend(f"<li>{escape(p)}</li>" for p in problems)
        body.append("</ul></section>")
    for s, policy_set in enumerate(sets, start=1):
        body.extend(_set_section(policy_set, f"s{s}"))
    if comparisons:
        body.extend(_comparison(comparisons))
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>\n{STYLE}\n</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


def _set_section(policy_set: PolicySet, ident: str) -> list[str]:
    heading = f"{policy_set.option} {policy_set.path}"
    parts = [
        f'<section class="policy-set" data-option="{escape(policy_set.option)}" id="{ident}">',
        f"<h2>{escape(heading)}</h2>",
    ]
    if not policy_set.replays:
        parts.append("<p>No policy was replayed.</p>")
    for p, result in enumerate(policy_set.replays, start=1):
        parts.extend(_policy(result, f"{ident}-p{p}"))
    parts.append("</section>")
    return parts


def _policy(replay: Replay, ident: str) -> list[str]:
    rollback = replay.first_rollback
    final = replay.final
    end_state = "—" if final is None else f"{final.status.value} at {pct(final.percent)} %"
    parts = [
        f'<article class="policy" data-policy="{escape(replay.policy)}" id="{ident}">',
        f"<h3>policy {escape(replay.policy)} (flag {escape(replay.flag)})</h3>",
        f"<p>{len(replay.evaluations)} evaluations every {format_duration(replay.interval_seconds)}, "
        f"{_time(replay.start)} → {_time(replay.end)}; "
        + (
            "the simulated rollout starts at the window's start.</p>"
            if replay.recorded is None
            else "the exposure judged is the one the decision log recorded.</p>"
        ),
        "<ul>",
        f"<li>first would-be rollback: {_time(rollback.at) if rollback else 'none'}</li>",
        *(f'<li class="verdict">{escape(v)}</li>' for v in [replay.verdict] if v is not None),
        *(f'<li class="note">note: {escape(n)}</li>' for n in replay.notes),
        f"<li>at the end: {escape(end_state)}</li>",
        f"<li>{replay.holds} holds</li>",
        "</ul>",
        f'<figure class="chart exposure" data-policy="{escape(replay.policy)}">',
        render_svg(exposure_chart(replay, f"{ident}-exposure")),
        "</figure>",
        *_decisions(replay),
        *_checks(summarise(replay)),
    ]
    for c, (key, seen) in enumerate(guardrail_series(replay).items(), start=1):
        parts.append(f'<figure class="chart guardrail" data-check="{escape(" ".join(key))}">')
        parts.append(render_svg(guardrail_chart(replay, key, seen, f"{ident}-c{c}")))
        parts.append("</figure>")
    parts.append("</article>")
    return parts


def _decisions(replay: Replay) -> list[str]:
    if replay.recorded is not None:
        return _recorded(replay)
    parts = [
        "<h4>Simulated decisions (other than holds)</h4>",
        '<table class="decisions">',
        "<tr><th>time</th><th>action</th><th>from → to</th><th>reason</th></tr>",
    ]
    for m in replay.moves:
        parts.append(
            f'<tr data-action="{escape(m.action.value)}"><td>{_time(m.at)}</td>'
            f"<td>{escape(m.action.value)}</td>"
            f"<td>{pct(m.from_percent)}% → {pct(m.to_percent)}%</td><td>{escape(m.reason)}</td></tr>"
        )
    if not replay.moves:
        parts.append('<tr><td colspan="4">none but holds</td></tr>')
    parts.append("</table>")
    return parts


def _recorded(replay: Replay) -> list[str]:
    parts = [
        "<h4>Recorded decisions (the exposure judged, from the decision log)</h4>",
        '<table class="decisions recorded">',
        "<tr><th>time</th><th>action</th><th>from → to</th><th>by</th><th>reason</th></tr>",
    ]
    for r in replay.recorded or ():
        parts.append(
            f'<tr data-action="{escape(r.action.value)}"><td>{_time(r.at)}</td>'
            f"<td>{escape(r.action.value)}</td><td>{pct(r.from_percent)}% → {pct(r.to_percent)}%</td>"
            f"<td>{escape(r.actor or '')}</td><td>{escape(r.reason)}</td></tr>"
        )
    if not replay.recorded:
        parts.append('<tr><td colspan="5">none in the window</td></tr>')
    parts.append("</table>")
    return parts


def _checks(summaries: Sequence[CheckSummary]) -> list[str]:
    parts = [
        "<h4>Checks at every evaluation time</h4>",
        '<table class="checks">',
        "<tr><th>check</th><th>rule</th><th>bound</th><th>pass</th><th>fail</th><th>no_data</th>"
        "<th>error</th><th>p50</th><th>p90</th><th>max</th><th>longest no_data / error</th>"
        "<th>first failure</th></tr>",
    ]
    for s in summaries:
        bound = "—" if s.bounds is None else fmt(s.bounds["min"])
        if s.bounds is not None and s.bounds["max"] != s.bounds["min"]:
            bound += f"…{fmt(s.bounds['max'])}"
        values = ["—"] * 3 if s.values is None else [fmt(s.values[q]) for q in ("p50", "p90", "max")]
        stretches = [
            f"{what}: {stretch.describe()}"
            for what, stretch in (("no_data", s.longest_no_data), ("error", s.longest_error))
            if stretch is not None
        ]
        failure = "—" if s.first_fail is None else f"{_time(s.first_fail)}: {s.first_fail_detail}"
        cells = [
            f"<td>{escape(s.name)} {escape(s.arm)} {escape(s.rule)}</td>",
            f"<td>{escape(SYMBOL.get(s.rule, 'vs'))} {escape(s.rule)} {fmt(s.limit)}</td>",
            f"<td>{bound}</td>",
            *(f'<td class="number">{s.counts[o]}</td>' for o in ("pass", "fail", "no_data", "error")),
            *(f'<td class="number">{v}</td>' for v in values),
            f"<td>{escape('; '.join(stretches)) or '—'}</td>",
            f"<td>{escape(failure)}</td>",
        ]
        key = f"{s.name} {s.arm} {s.rule}"
        parts.append(f'<tr data-check="{escape(key)}">{"".join(cells)}</tr>')
    parts.append("</table>")
    return parts


def _comparison(comparisons: Sequence[FlagComparison]) -> list[str]:
    parts = [
        '<section class="comparison">',
        "<h2>Comparison (the same readings for both sets)</h2>",
        '<table class="comparison">',
        "<tr><th>flag</th><th>--policies</th><th>--compare</th><th>verdict</th></tr>",
    ]
    for c in comparisons:
        sides = [_side(r) for r in (c.base, c.other)]
        parts.append(
            f'<tr data-flag="{escape(c.flag)}"><td>{escape(c.flag)}</td>'
            + "".join(f"<td>{escape(side)}</td>" for side in sides)
            + f'<td class="verdict">{escape(c.verdict)}</td></tr>'
        )
    parts.append("</table>")
    parts.append("</section>")
    return parts


def _side(replay: Replay | None) -> str:
    if replay is None:
        return "no policy"
    rollback = replay.first_rollback
    said = f"{replay.policy}: first would-be rollback {_time(rollback.at) if rollback else 'none'}"
    if replay.final is not None:
        said += f"; ends {replay.final.status.value} at {pct(replay.final.percent)} %"
    return said
