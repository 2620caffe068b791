"""The inline SVG charts (controller/core/charts.py): well-formed, escaped, accessible, deterministic,
and small however long the series."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from controller.core.charts import Line, Marker, TimeChart, downsample, render_svg, utc_text

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 12, 1, tzinfo=UTC)


def week_at_30s(spike_at: int | None = None) -> list[tuple[datetime, float | None]]:
    """20,161 points, a week at 30 s: a slow wave, and one spike if asked."""
    points: list[tuple[datetime, float | None]] = []
    for i in range(20_161):
        value = 0.01 + 0.002 * math.sin(i / 50)
        if i == spike_at:
            value = 0.9
        points.append((START + timedelta(seconds=30 * i), value))
    return points


def chart(**changes: object) -> TimeChart:
    base: dict[str, object] = {
        "ident": "c1",
        "title": "error-rate treatment",
        "description": "the treatment's error rate against its bound",
        "start": START,
        "end": START + timedelta(hours=2),
        "lines": (
            Line("treatment", [(START + timedelta(minutes=5 * i), 0.01 * i) for i in range(25)]),
            Line("bound", [(START, 0.05), (START + timedelta(hours=2), 0.05)], dashed=True),
        ),
    }
    base.update(changes)
    return TimeChart(**base)  # type: ignore[arg-type]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def paths(root: ET.Element) -> list[ET.Element]:
    return root.findall(f".//{SVG}path")


def path_points(d: str) -> int:
    return len(re.findall(r"[MLHVh]", d))


def test_a_chart_is_well_formed_svg_with_a_title_and_description() -> None:
    root = parse(render_svg(chart()))
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "c1-title c1-desc"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None
    assert title.text == "error-rate treatment"
    assert title.get("id") == "c1-title"
    assert desc is not None
    assert desc.text is not None
    assert desc.text.startswith("the treatment's error rate against its bound")
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    lines = root.findall(f".//{SVG}g[@data-line]")
    assert [g.get("data-line") for g in lines] == ["treatment", "bound"]


def test_every_piece_of_outside_text_is_escaped() -> None:
    evil = "<script>alert(\"x\")</script> & 'quoted'"
    svg = render_svg(
        chart(
            ident='x"><script>',
            title=evil,
            description=evil,
            lines=(Line(evil, [(START, 1.0), (START + timedelta(hours=1), 2.0)]),),
            markers=(Marker(START + timedelta(minutes=30), evil),),
            unit=evil,
        )
    )
    assert "<script" not in svg
    assert '"x"' not in svg
    root = parse(svg)  # still well-formed
    title = root.find(f"{SVG}title")
    assert title is not None
    assert title.text == evil
    assert root.get("aria-labelledby") == "x-script-title x-script-desc"
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert any(evil in t for t in texts)
    marker = root.find(f".//{SVG}g[@class='marker']")
    assert marker is not None
    assert "".join(marker.itertext()).count(evil) >= 1


def test_control_characters_do_not_break_the_xml() -> None:
    svg = render_svg(chart(title="bad\x00name\x1b"))
    title = parse(svg).find(f"{SVG}title")
    assert title is not None
    assert title.text == "bad\ufffdname\ufffd"


def test_a_week_at_30s_is_downsampled_to_about_two_points_per_pixel_keeping_spikes() -> None:
    end = START + timedelta(days=7)
    points = week_at_30s(spike_at=10_000)
    svg = render_svg(chart(end=end, lines=(Line("treatment", points),), width_px=760))
    root = parse(svg)
    (path,) = [p for p in paths(root) if p.get("data-role") == "line"]
    d = path.get("d") or ""
    plot_width = float(root.get("data-plot-width") or 0)
    assert 600 <= plot_width < 760
    assert path_points(d) <= 2 * plot_width + 2
    assert len(svg.encode()) < 30_000  # 20,161 points in: a few KB out
    # the spike survives, far above the wave (a smaller y is higher up)
    ys = [float(y) for y in re.findall(r"[ML][\d.]+,([\d.]+)", d)]
    assert min(ys) < 0.5 * max(ys)
    runs = downsample(points, START, end, columns=int(plot_width))
    assert (points[10_000][0], 0.9) in [p for run in runs for p in run]


def test_downsampling_keeps_each_columns_min_and_max_in_time_order_and_the_marked_times() -> None:
    points: list[tuple[datetime, float | None]] = [
        (START + timedelta(seconds=i), float(v)) for i, v in enumerate([5, 1, 9, 3, 4, 7])
    ]
    marked = START + timedelta(seconds=3)
    runs = downsample(points, START, START + timedelta(seconds=6), columns=1, keep=frozenset({marked}))
    assert runs == [[points[1], points[2], points[3]]]  # min 1, max 9, and the marked 3, by time
    untouched = downsample(points, START, START + timedelta(seconds=6), columns=100)
    assert untouched == [points]


def test_a_gap_breaks_the_line_and_flat_stretches_collapse() -> None:
    t = [START + timedelta(minutes=i) for i in range(10)]
    points: list[tuple[datetime, float | None]] = [
        (t[0], 1.0),
        (t[1], 1.0),
        (t[2], 1.0),
        (t[3], 1.0),
        (t[4], None),
        (t[5], 2.0),
        (t[6], 3.0),
        (t[7], None),
        (t[8], None),
        (t[9], 4.0),
    ]
    runs = downsample(points, t[0], t[9], columns=1000)
    assert runs == [[(t[0], 1.0), (t[3], 1.0)], [(t[5], 2.0), (t[6], 3.0)], [(t[9], 4.0)]]
    svg = render_svg(chart(start=t[0], end=t[9], lines=(Line("v", points),)))
    (path,) = [p for p in paths(parse(svg)) if p.get("data-role") == "line"]
    assert (path.get("d") or "").count("M") == 3  # three pieces; the lone last point is a dot
    assert "NaN" not in svg


def test_non_finite_values_are_gaps() -> None:
    t = [START + timedelta(minutes=i) for i in range(3)]
    runs = downsample([(t[0], 1.0), (t[1], math.nan), (t[2], math.inf)], t[0], t[2], columns=10)
    assert runs == [[(t[0], 1.0)]]


def test_a_step_line_holds_each_value_until_the_next_point() -> None:
    t0, t1, end = START, START + timedelta(hours=1), START + timedelta(hours=2)
    svg = render_svg(
        chart(end=end, lines=(Line("exposure", [(t0, 0.0), (t1, 50.0), (end, 50.0)], step=True),))
    )
    (path,) = [p for p in paths(parse(svg)) if p.get("data-role") == "line"]
    d = path.get("d") or ""
    assert re.fullmatch(r"M[\d.]+,[\d.]+H[\d.]+V[\d.]+H[\d.]+", d), d


def test_markers_are_vertical_lines_with_their_time_and_label_never_dropped() -> None:
    end = START + timedelta(days=7)
    at = START + timedelta(days=3, seconds=30)
    svg = render_svg(
        chart(end=end, lines=(Line("v", week_at_30s()),), markers=(Marker(at, "rollback 50% → 0%"),))
    )
    root = parse(svg)
    (marker,) = root.findall(f".//{SVG}g[@class='marker']")
    assert marker.get("data-at") == "2026-12-04T00:00:30Z"
    line = marker.find(f"{SVG}line")
    assert line is not None
    assert line.get("x1") == line.get("x2")
    assert "rollback 50% → 0%" in "".join(marker.itertext())
    # the series keeps its point at the marker's time
    runs = downsample(week_at_30s(), START, end, columns=10, keep=frozenset({at}))
    assert any(point[0] == at for run in runs for point in run)


def test_time_ticks_are_readable_utc_and_values_are_labelled() -> None:
    root = parse(render_svg(chart(unit=" %")))
    ticks = [t.text or "" for t in root.iterfind(f".//{SVG}g[@class='x-axis']/{SVG}text")]
    assert ticks[0] == "12-01 00:00"
    assert "00:30" in ticks
    assert all(re.fullmatch(r"(\d\d-\d\d )?\d\d:\d\d", t) for t in ticks), ticks
    values = [t.text or "" for t in root.iterfind(f".//{SVG}g[@class='y-axis']/{SVG}text")]
    assert values[0] == "0 %"
    assert "0.1 %" in values or "0.10 %" in values
    assert any("UTC" in (t.text or "") for t in root.iter(f"{SVG}text"))


def test_days_long_windows_get_dated_ticks() -> None:
    root = parse(render_svg(chart(end=START + timedelta(days=7), lines=(Line("v", week_at_30s()),))))
    ticks = [t.text or "" for t in root.iterfind(f".//{SVG}g[@class='x-axis']/{SVG}text")]
    assert 3 <= len(ticks) <= 8
    assert all(re.fullmatch(r"\d\d-\d\d( \d\d:\d\d)?", t) for t in ticks), ticks


def test_a_fixed_value_range_clamps_and_no_data_is_said() -> None:
    fixed = render_svg(chart(lines=(Line("v", [(START, 150.0), (START + timedelta(hours=1), 50.0)]),)))
    assert parse(fixed) is not None
    clamped = parse(
        render_svg(
            chart(
                lines=(Line("v", [(START, 150.0), (START + timedelta(hours=1), 50.0)]),),
                value_range=(0.0, 100.0),
            )
        )
    )
    values = [t.text or "" for t in clamped.iterfind(f".//{SVG}g[@class='y-axis']/{SVG}text")]
    assert values[0] == "0"
    assert values[-1] == "100"
    empty = parse(render_svg(chart(lines=(Line("v", [(START, None)]),))))
    assert "no data" in "".join(empty.itertext())


def test_the_same_input_gives_the_same_bytes_and_times_must_be_utc_aware() -> None:
    assert render_svg(chart()) == render_svg(chart())
    with pytest.raises(ValueError, match="time zone"):
        render_svg(chart(start=datetime(2026, 12, 1)))  # noqa: DTZ001
    with pytest.raises(ValueError, match="before"):
        render_svg(chart(end=START))


def test_no_scripts_handlers_or_external_references() -> None:
    svg = render_svg(chart(markers=(Marker(START + timedelta(minutes=10), "m"),)))
    root = parse(svg)
    for element in root.iter():
        for name in element.attrib:
            assert not name.lower().startswith("on")
            assert "href" not in name.lower()
    assert "<script" not in svg
    assert "url(" not in svg
    assert "<style" not in svg


def test_points_at_one_time_are_all_kept_so_a_step_can_start_with_a_jump() -> None:
    t1 = START + timedelta(hours=1)
    points: list[tuple[datetime, float | None]] = [(START, 0.0), (START, 5.0), (t1, 5.0)]
    assert downsample(points, START, t1, columns=100) == [[(START, 0.0), (START, 5.0), (t1, 5.0)]]
    svg = render_svg(chart(end=t1, lines=(Line("exposure", points, step=True),), value_range=(0.0, 100.0)))
    (path,) = [p for p in paths(parse(svg)) if p.get("data-role") == "line"]
    assert re.fullmatch(r"M64\.0,220\.0V[\d.]+H744\.0", path.get("d") or ""), path.get("d")


def test_extreme_values_are_drawn_without_a_traceback() -> None:
    t1 = START + timedelta(hours=1)
    for values in ((1e308, -1e308), (1e-300, 2e-300), (5e15, 5e15 + 4)):
        points: list[tuple[datetime, float | None]] = [(START, values[0]), (t1, values[1])]
        root = parse(render_svg(chart(end=t1, lines=(Line("v", points),))))
        labels = [t.text or "" for t in root.iterfind(f".//{SVG}g[@class='y-axis']/{SVG}text")]
        assert labels
        assert all(len(label) < 16 for label in labels), labels


def test_times_are_shown_to_the_second_or_to_the_millisecond_as_records_have_them() -> None:
    assert utc_text(datetime(2026, 12, 3, 14, 40, tzinfo=UTC)) == "2026-12-03T14:40:00Z"
    assert utc_text(datetime(2026, 12, 3, 14, 40, 0, 250_000, tzinfo=UTC)) == "2026-12-03T14:40:00.250Z"
    assert utc_text(datetime(2026, 12, 3, 14, 40, 0, 86_741, tzinfo=UTC)) == "2026-12-03T14:40:00.086Z"
