"""Durations: what policies may write (``90s``, ``5m``, ``1h30m``) and how they are shown to people."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.durations import format_duration, parse_duration

YEAR_LIMIT_SECONDS = 366 * 86400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("1d2h3m4s", 93784.0),
        ("0s", 0.0),
        ("366d", float(YEAR_LIMIT_SECONDS)),
    ],
)
def test_parse_duration_accepts_number_unit_parts(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_ignores_surrounding_whitespace() -> None:
    assert parse_duration("  5m\n") == 300.0


def test_parse_duration_reads_ms_as_milliseconds_not_minutes_then_seconds() -> None:
    assert parse_duration("5ms") == pytest.approx(0.005)
    assert parse_duration("5m5s") == 305.0


@pytest.mark.parametrize("text", ["30", "1.5", " 45 "])
def test_bare_number_is_refused_with_a_hint_to_add_a_unit(text: str) -> None:
    with pytest.raises(ValueError, match="no unit") as raised:
        parse_duration(text)
    number = text.strip()
    assert f"'{number}s'" in str(raised.value)
    assert f"'{number}m'" in str(raised.value)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text",
    [
        "-5m",  # negative
        "5 m",  # space between number and unit
        "1h 30m",  # space between parts
        "5M",  # units are lower case
        "5min",
        "5mm",
        "m",
        ".5s",
        "5.s",
        "1e3s",
        "five minutes",
        "5m!",
        "P1D",
    ],
)
def test_garbage_is_refused_with_an_example_of_the_syntax(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as raised:
        parse_duration(text)
    message = str(raised.value)
    assert repr(text) in message
    assert "90s, 5m, 1h, 1h30m" in message


@pytest.mark.parametrize("value", [30, 5.0, None, b"5m", ["5m"]])
def test_non_string_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(value)


@pytest.mark.parametrize("text", ["367d", "8785h", "366d1s", "9000h", "9" * 400 + "d"])
def test_durations_longer_than_a_year_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="longer than a year"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (300, "5m"),
        (192, "3m12s"),
        (3600, "1h"),
        (3720, "1h2m"),
        (86400, "1d"),
        (183600, "2d3h"),
        (1.5, "1.5s"),
        (9.5, "9.5s"),
        (59.6, "1m"),
        (-90, "-1m30s"),
        (-0.5, "-500ms"),
        (0.04, "40ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_drops_seconds_once_hours_show_and_hours_minutes_once_days_show() -> None:
    assert format_duration(3661) == "1h1m"
    assert format_duration(90061) == "1d1h"


_FORMATTED = re.compile(r"\d+s|\d+m(\d+s)?|\d+h(\d+m)?|\d+d(\d+h)?|\d\.\ds")


@given(st.integers(min_value=0, max_value=10**6))
def test_format_then_parse_is_exact_up_to_the_coarsest_unit_shown(seconds: int) -> None:
    text = format_duration(seconds)
    assert _FORMATTED.fullmatch(text), text
    # Below an hour everything is shown; with hours the seconds are dropped; with days the minutes too.
    granularity = 1 if seconds < 3600 else 60 if seconds < 86400 else 3600
    assert parse_duration(text) == seconds - seconds % granularity


@given(st.integers(min_value=0, max_value=3599))
def test_format_then_parse_round_trips_below_an_hour(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=YEAR_LIMIT_SECONDS))
def test_parse_accepts_whole_seconds_written_in_seconds(seconds: int) -> None:
    assert parse_duration(f"{seconds}s") == seconds
