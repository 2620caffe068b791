"""Inline SVG charts of time series, for pages that are plain HTML. Pure: data in, text out.

A :class:`TimeChart` is lines of ``(time, value)`` points over a window (``None``: a gap), drawn
straight or as steps, with vertical markers (a rollback, say) and labelled axes: times in UTC, values
with their unit. :func:`render_svg` gives one ``<svg>`` element, with a ``<title>`` and a ``<desc>``
for screen readers. It holds no script, no event handler, no stylesheet and no reference to anything
outside it: every colour, width and font is an SVG presentation attribute, so the element can go
into a page served under a strict Content-Security-Policy. Every piece of text from outside (titles,
labels, units) is escaped, and the same input always gives the same bytes.

However long a line, it is drawn with at most about two points per horizontal pixel: the points are
bucketed by pixel column and each column keeps its lowest and highest value (a spike survives) and
every point at a marker's time (:func:`downsample`).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter

Point = tuple[datetime, float | None]
Drawn = tuple[datetime, float]

# Colours: the value, the control arm, the bound and markers, the exposure; axes and text.
BLUE = "#1d4ed8"
GREY = "#6b7280"
RED = "#b91c1c"
GREEN = "#047857"
AXIS = "#9ca3af"
GRID = "#e5e7eb"
INK = "#111827"

# The margins around the plot, in pixels: value labels on the left, the title and legend on top,
# time labels below.
LEFT_PX = 64
RIGHT_PX = 16
TOP_PX = 48
BOTTOM_PX = 40
TICK_SPACING_PX = 110  # at least this much room per time label

# Time ticks: the first step that gives few enough of them.
TICK_STEPS_SECONDS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
)  # fmt: skip
DAY_SECONDS = 86400

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class Line:
    """One series: its label (in the legend), its points in time order, how it is drawn."""

    label: str
    points: Sequence[Point]
    colour: str = BLUE
    step: bool = False  # each value holds until the next point (an exposure)
    dashed: bool = False  # a bound


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line at one time, with its label."""

    at: datetime
    label: str
    colour: str = RED


@dataclass(frozen=True, slots=True)
class TimeChart:
    """One chart over [start, end]. ``ident`` makes the ids of its title and description unique on
    a page; ``value_range`` fixes the value axis (values beyond it are drawn at its edge)."""

    ident: str
    title: str
    description: str
    start: datetime
    end: datetime
    lines: Sequence[Line]
    markers: Sequence[Marker] = ()
    unit: str = ""
    value_range: tuple[float, float] | None = None
    width_px: int = 760
    height_px: int = 260


def escape(text: str) -> str:
    """``text`` as XML/HTML character data or an attribute value: markup and quotes escaped, and the
    characters XML cannot hold replaced by U+FFFD."""
    return html.escape(_NOT_XML.sub("\ufffd", text), quote=True)


def utc_text(at: datetime) -> str:
    """``2026-12-03T14:40:00Z``, or ``2026-12-03T14:40:00.250Z`` (milliseconds, as the decision
    records have them, when there are any)."""
    timespec = "milliseconds" if at.microsecond else "seconds"
    return at.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def downsample(
    points: Sequence[Point],
    start: datetime,
    end: datetime,
    columns: int,
    keep: AbstractSet[datetime] = frozenset(),
) -> list[list[Drawn]]:
    """The pieces of line to draw: runs of connected points within [start, end], with at most each
    column's lowest and highest value (in time order) and the points at the times in ``keep``.
    ``None`` and non-finite values are gaps: a column whose first point is a gap does not join the
    column before it, nor one whose last point is a gap the column after it. Inside a flat stretch,
    points that change nothing are left out."""
    span = (end - start).total_seconds()
    runs: list[list[Drawn]] = []
    run: list[Drawn] = []
    joined = False  # whether the previous column ended with a value

    def close() -> None:
        nonlocal run
        if run:
            runs.append(_collapsed(run, keep))
        run = []

    for column in _columns(points, start, end, span, max(1, columns)):
        chosen = column.chosen(keep)
        if not chosen:
            close()
        else:
            if not (joined and column.first_present):
                close()
            run.extend(chosen)
            if not column.last_present:
                close()
        joined = column.last_present
    close()
    return runs


@dataclass(slots=True)
class _Column:
    points: list[Drawn]  # the column's points with a value, in time order
    first_present: bool  # whether its first point had a value
    last_present: bool
    low: int  # the index in points of the lowest value (the first of equals); -1: none
    high: int

    def chosen(self, keep: AbstractSet[datetime]) -> list[Drawn]:
        """The lowest and highest value and the points at the kept times, in time order."""
        if not self.points:
            return []
        picked = {self.low, self.high}
        if keep:
            picked.update(i for i, (at, _) in enumerate(self.points) if at in keep)
        return [self.points[i] for i in sorted(picked)]


def _columns(
    points: Sequence[Point], start: datetime, end: datetime, span: float, columns: int
) -> Iterator[_Column]:
    """The points within [start, end] by column, in time order (one loop, no call a point: a chart of
    ten thousand decisions is drawn on every request of its page)."""
    index = -1
    drawn: list[Drawn] = []
    first_present = last_present = False
    low = high = -1
    last_column = columns - 1
    for at, value in sorted(points, key=itemgetter(0)):
        if at < start or at > end:
            continue
        column = int((at - start).total_seconds() / span * columns)
        if column > last_column:
            column = last_column
        present = value is not None and math.isfinite(value)
        if column != index:
            if index >= 0:
                yield _Column(drawn, first_present, last_present, low, high)
            index, drawn, first_present, low, high = column, [], present, -1, -1
        last_present = present
        if value is not None and present:
            drawn.append((at, value))
            if low < 0 or value < drawn[low][1]:
                low = len(drawn) - 1
            if high < 0 or value > drawn[high][1]:
                high = len(drawn) - 1
    if index >= 0:
        yield _Column(drawn, first_present, last_present, low, high)


def _collapsed(run: list[Drawn], keep: AbstractSet[datetime]) -> list[Drawn]:
    if len(run) < 3:
        return run
    kept = [run[0]]
    for before, point, after in zip(run, run[1:], run[2:], strict=False):
        if before[1] == point[1] == after[1] and point[0] not in keep:
            continue
        kept.append(point)
    kept.append(run[-1])
    return kept


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where the plot is and how times and values map onto it."""

    start: datetime
    end: datetime
    low: float
    high: float
    left: float
    right: float
    top: float
    bottom: float

    def x(self, at: datetime) -> float:
        share = (at - self.start).total_seconds() / (self.end - self.start).total_seconds()
        return self.left + min(1.0, max(0.0, share)) * (self.right - self.left)

    def y(self, value: float) -> float:
        share = (value - self.low) / (self.high - self.low)
        return self.bottom - min(1.0, max(0.0, share)) * (self.bottom - self.top)


def _c(value: float) -> str:
    return f"{value:.1f}"


def _number(value: float, decimals: int) -> str:
    """A tick's value to ``decimals`` places without trailing zeros; very large or very small
    ones (or ``decimals`` < 0) to four significant digits."""
    if decimals < 0 or decimals > 12 or abs(value) >= 1e12:
        return _short(value)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _short(value: float) -> str:
    return f"{value:.4g}"


def value_ticks(low: float, high: float, fixed: bool) -> tuple[float, float, list[float], int]:
    """About five round values over [low, high] (widened to round ends unless ``fixed``): the ends,
    the ticks and the decimals that show them."""
    raw = (high - low) / 4
    if not (math.isfinite(raw) and raw > 0):  # beyond what a float spans: the ends alone
        return low, high, [low, high], -1
    exponent = math.floor(math.log10(raw))
    base = 10.0**exponent
    multiple = next(m for m in (1.0, 2.0, 2.5, 5.0, 10.0) if raw <= m * base * (1 + 1e-9))
    step = multiple * base
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    if fixed:
        first, last = math.ceil(low / step - 1e-9) * step, math.floor(high / step + 1e-9) * step
    ticks = [first + i * step for i in range(round((last - first) / step) + 1)]
    decimals = max(0, -exponent + (1 if multiple == 2.5 else 0))
    return (low, high, ticks, decimals) if fixed else (first, last, ticks, decimals)


def time_ticks(start: datetime, end: datetime, most: int) -> list[tuple[datetime, str]]:
    """Round UTC times over [start, end], at most ``most`` of them (at least two), with labels: the
    date when it changes (``12-01 14:00``, then ``15:00``), the date alone for steps of days."""
    span = (end - start).total_seconds()
    most = max(2, most)
    step = next(
        (s for s in TICK_STEPS_SECONDS if span / s <= most),
        math.ceil(span / most / DAY_SECONDS) * DAY_SECONDS,
    )
    first = math.ceil(start.timestamp() / step) * step
    ticks: list[tuple[datetime, str]] = []
    last_date = ""
    at_s = first
    while at_s <= end.timestamp():
        at = datetime.fromtimestamp(at_s, UTC)
        date = at.strftime("%m-%d")
        clock = at.strftime("%H:%M:%S" if step < 60 else "%H:%M")
        label = date if step >= DAY_SECONDS else clock if date == last_date else f"{date} {clock}"
        last_date = date
        ticks.append((at, label))
        at_s += step
    return ticks


def _check(chart: TimeChart) -> None:
    for at in (chart.start, chart.end, *(m.at for m in chart.markers)):
        if at.tzinfo is None:
            raise ValueError(f"{at.isoformat()} has no time zone: charts take timezone-aware times")
    if chart.end <= chart.start:
        raise ValueError(
            f"the chart's start {utc_text(chart.start)} is not before its end {utc_text(chart.end)}"
        )


def _frame(chart: TimeChart, values: Sequence[float]) -> tuple[_Frame, list[float], int]:
    if chart.value_range is not None:
        low, high = chart.value_range
        fixed = True
    else:
        low, high = min([0.0, *values]), max([0.0, *values])
        fixed = False
    if high <= low:
        high = low + (abs(low) or 1.0)
    low, high, ticks, decimals = value_ticks(low, high, fixed)
    frame = _Frame(
        chart.start,
        chart.end,
        low,
        high,
        LEFT_PX,
        chart.width_px - RIGHT_PX,
        TOP_PX,
        chart.height_px - BOTTOM_PX,
    )
    return frame, ticks, decimals


def render_svg(chart: TimeChart) -> str:
    """The chart as one ``<svg>`` element (see the module's description)."""
    _check(chart)
    ident = re.sub(r"[^A-Za-z0-9_-]+", "-", chart.ident).strip("-") or "chart"
    plot_width = chart.width_px - LEFT_PX - RIGHT_PX
    keep = frozenset(m.at for m in chart.markers)
    drawn = [downsample(line.points, chart.start, chart.end, plot_width, keep) for line in chart.lines]
    values = [v for runs in drawn for run in runs for _, v in run]
    frame, ticks, decimals = _frame(chart, values)
    width, height = chart.width_px, chart.height_px
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{ident}-title {ident}-desc" '
        f'font-family="sans-serif" font-size="11" fill="{INK}" data-plot-width="{plot_width}">',
        f'<title id="{ident}-title">{escape(chart.title)}</title>',
        f'<desc id="{ident}-desc">{escape(_description(chart))}</desc>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(chart.title)}</text>',
        *_legend(chart.lines),
        *_value_axis(frame, ticks, decimals, chart.unit),
        *_time_axis(frame, width),
        f'<text x="{_c(frame.right)}" y="{height - 6}" text-anchor="end" fill="{GREY}">time (UTC)</text>',
        '<g class="lines">',
    ]
    for line, runs in zip(chart.lines, drawn, strict=True):
        parts.append(f'<g data-line="{escape(line.label)}">')
        if runs:
            dash = ' stroke-dasharray="6 4"' if line.dashed else ""
            parts.append(
                f'<path data-role="line" d="{_path(runs, frame, line.step)}" fill="none" '
                f'stroke="{escape(line.colour)}" stroke-width="1.5" stroke-linejoin="round" '
                f'stroke-linecap="round"{dash}/>'
            )
        parts.append("</g>")
    parts.append("</g>")
    if not values:
        middle_x, middle_y = (frame.left + frame.right) / 2, (frame.top + frame.bottom) / 2
        parts.append(
            f'<text x="{_c(middle_x)}" y="{_c(middle_y)}" text-anchor="middle" fill="{GREY}">no data</text>'
        )
    parts.extend(_markers(chart.markers, frame))
    parts.append("</svg>")
    return "\n".join(parts)


def _description(chart: TimeChart) -> str:
    said = [chart.description] if chart.description else []
    said.append(f"From {utc_text(chart.start)} to {utc_text(chart.end)}.")
    for line in chart.lines:
        present = [v for _, v in line.points if v is not None and math.isfinite(v)]
        if present:
            said.append(
                f"{line.label}: {len(present)} values, from {_short(min(present))}{chart.unit} "
                f"to {_short(max(present))}{chart.unit}."
            )
        else:
            said.append(f"{line.label}: no values.")
    for marker in chart.markers:
        said.append(f"Marked at {utc_text(marker.at)}: {marker.label}.")
    return " ".join(said)


def _legend(lines: Sequence[Line]) -> list[str]:
    parts = ['<g class="legend">']
    x = float(LEFT_PX)
    for line in lines:
        label = line.label if len(line.label) <= 60 else line.label[:59] + "…"
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(
            f'<g class="legend-entry"><line x1="{_c(x)}" y1="33" x2="{_c(x + 20)}" y2="33" '
            f'stroke="{escape(line.colour)}" stroke-width="2"{dash}/>'
            f'<text x="{_c(x + 24)}" y="37">{escape(label)}</text></g>'
        )
        x += 24 + 6.5 * len(label) + 16
    parts.append("</g>")
    return parts


def _value_axis(frame: _Frame, ticks: Sequence[float], decimals: int, unit: str) -> list[str]:
    parts = ['<g class="y-axis">']
    for value in ticks:
        y = _c(frame.y(value))
        parts.append(
            f'<line x1="{_c(frame.left)}" y1="{y}" x2="{_c(frame.right)}" y2="{y}" stroke="{GRID}"/>'
        )
        parts.append(
            f'<text x="{_c(frame.left - 6)}" y="{_c(frame.y(value) + 4)}" text-anchor="end">'
            f"{escape(_number(value, decimals) + unit)}</text>"
        )
    parts.append(
        f'<line x1="{_c(frame.left)}" y1="{_c(frame.top)}" x2="{_c(frame.left)}" '
        f'y2="{_c(frame.bottom)}" stroke="{AXIS}"/>'
    )
    parts.append("</g>")
    return parts


def _time_axis(frame: _Frame, width: int) -> list[str]:
    parts = [
        '<g class="x-axis">',
        f'<line x1="{_c(frame.left)}" y1="{_c(frame.bottom)}" x2="{_c(frame.right)}" '
        f'y2="{_c(frame.bottom)}" stroke="{AXIS}"/>',
    ]
    most = int((frame.right - frame.left) // TICK_SPACING_PX)
    for at, label in time_ticks(frame.start, frame.end, most):
        x = frame.x(at)
        anchor = "end" if x > width - RIGHT_PX - 40 else "middle"
        parts.append(
            f'<line x1="{_c(x)}" y1="{_c(frame.bottom)}" x2="{_c(x)}" y2="{_c(frame.bottom + 4)}" '
            f'stroke="{AXIS}"/>'
        )
        parts.append(
            f'<text x="{_c(x)}" y="{_c(frame.bottom + 16)}" text-anchor="{anchor}">{escape(label)}</text>'
        )
    parts.append("</g>")
    return parts


def _path(runs: Sequence[Sequence[Drawn]], frame: _Frame, step: bool) -> str:
    """Path data for the runs, in pixels to a tenth: a command that would not move is left out, and a
    run that never moves is a dot (the line's round cap on ``h0``)."""
    commands: list[str] = []
    for run in runs:
        x, y = _c(frame.x(run[0][0])), _c(frame.y(run[0][1]))
        commands.append(f"M{x},{y}")
        moved = False
        for at, value in run[1:]:
            nx, ny = _c(frame.x(at)), _c(frame.y(value))
            if not step and (nx, ny) != (x, y):
                commands.append(f"L{nx},{ny}")
                moved = True
            elif step:
                if nx != x:
                    commands.append(f"H{nx}")
                    moved = True
                if ny != y:
                    commands.append(f"V{ny}")
                    moved = True
            x, y = nx, ny
        if not moved:
            commands.append("h0")
    return "".join(commands)


def _markers(markers: Sequence[Marker], frame: _Frame) -> list[str]:
    parts = []
    for row, marker in enumerate(markers):
        x = frame.x(marker.at)
        label = escape(marker.label)
        near_right = x > frame.right - 160
        text_x = x - 4 if near_right else x + 4
        anchor = "end" if near_right else "start"
        parts.append(
            f'<g class="marker" data-at="{utc_text(marker.at)}"><title>{label}</title>'
            f'<line x1="{_c(x)}" y1="{_c(frame.top)}" x2="{_c(x)}" y2="{_c(frame.bottom)}" '
            f'stroke="{escape(marker.colour)}" stroke-width="1.5" stroke-dasharray="3 2"/>'
            f'<text x="{_c(text_x)}" y="{_c(frame.top + 10 + 12 * (row % 3))}" text-anchor="{anchor}" '
            f'fill="{escape(marker.colour)}">{label}</text></g>'
        )
    return parts


def render_sparkline(
    label: str,
    points: Sequence[Point],
    start: datetime,
    end: datetime,
    *,
    value_range: tuple[float, float] = (0.0, 100.0),
    width_px: int = 120,
    height_px: int = 24,
    colour: str = GREEN,
    step: bool = True,
) -> str:
    """A small chart of one line without axes (a table cell's trend), as one ``<svg>`` element with
    its ``<title>`` (``label``), downsampled as :func:`render_svg` does. No points: an empty frame."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("charts take timezone-aware times")
    if end <= start:
        end = start + timedelta(seconds=1)
    low, high = value_range
    frame = _Frame(start, end, low, high, 1.0, width_px - 1.0, 2.0, height_px - 2.0)
    runs = downsample(points, start, end, max(1, width_px - 2))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" width="{width_px}" '
        f'height="{height_px}" viewBox="0 0 {width_px} {height_px}" role="img">',
        f"<title>{escape(label)}</title>",
        f'<line x1="1" y1="{_c(frame.bottom)}" x2="{width_px - 1}" y2="{_c(frame.bottom)}" stroke="{GRID}"/>',
    ]
    if runs:
        parts.append(
            f'<path data-role="line" d="{_path(runs, frame, step)}" fill="none" stroke="{escape(colour)}" '
            'stroke-width="1.5" stroke-linejoin="round" stroke-linecap="round"/>'
        )
    parts.append("</svg>")
    return "".join(parts)
