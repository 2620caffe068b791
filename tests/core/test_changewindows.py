"""Change windows and freezes: the calendar of ``spec.schedule``, judged at an injected ``now``.

Windows are judged on the wall clock of the policy's time zone (daylight-saving changes included), a
window across midnight belongs to the day it starts, and freeze dates are whole local days. The
properties check ``next_opening`` against ``is_open`` on random schedules and instants.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.changewindows import (
    Waiting,
    is_open,
    next_opening,
    waiting,
    waiting_from_record,
    zone_problem,
)
from controller.core.policy import Schedule


def schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate(fields)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


OFFICE = schedule(
    timezone="Europe/Berlin",
    windows=[{"days": ["mon", "tue", "wed", "thu"], "from": "09:00", "to": "16:00"}],
)


# --- windows -----------------------------------------------------------------------------------------


def test_open_inside_a_window_and_closed_outside_it() -> None:
    assert is_open(OFFICE, utc(2026, 12, 1, 8, 0))  # Tue 09:00 in Berlin (UTC+1)
    assert is_open(OFFICE, utc(2026, 12, 1, 14, 59, 59))  # Tue 15:59:59
    assert not is_open(OFFICE, utc(2026, 12, 1, 15, 0))  # Tue 16:00: `to` is not in the window
    assert not is_open(OFFICE, utc(2026, 12, 1, 7, 59))  # Tue 08:59
    assert not is_open(OFFICE, utc(2026, 12, 4, 10, 0))  # Friday
    assert not is_open(OFFICE, utc(2026, 11, 21, 12, 0))  # Saturday


def test_no_schedule_and_an_empty_one_are_always_open() -> None:
    moment = utc(2026, 11, 21, 3, 0)
    assert is_open(None, moment)
    assert next_opening(None, moment) == moment
    assert is_open(schedule(), moment)
    assert waiting(None, moment) is None


def test_the_next_opening_over_a_weekend_is_monday_morning_local_time() -> None:
    saturday = utc(2026, 11, 21, 12, 0)
    assert next_opening(OFFICE, saturday) == utc(2026, 11, 23, 8, 0)


def test_a_window_that_is_open_now_opens_now() -> None:
    moment = utc(2026, 12, 1, 10, 17, 3)
    assert next_opening(OFFICE, moment) == moment


def test_after_a_window_closes_the_next_one_is_tomorrow() -> None:
    assert next_opening(OFFICE, utc(2026, 12, 1, 15, 0)) == utc(2026, 12, 2, 8, 0)
    assert next_opening(OFFICE, utc(2026, 12, 3, 15, 0)) == utc(2026, 12, 7, 8, 0)  # Thu → Mon


def test_a_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    night = schedule(timezone="UTC", windows=[{"days": ["fri"], "from": "22:00", "to": "02:00"}])
    assert not is_open(night, utc(2026, 12, 4, 21, 59))  # Fri 21:59
    assert is_open(night, utc(2026, 12, 4, 22, 0))  # Fri 22:00
    assert is_open(night, utc(2026, 12, 5, 1, 59))  # Sat 01:59: still Friday's window
    assert not is_open(night, utc(2026, 12, 5, 2, 0))  # Sat 02:00
    assert not is_open(night, utc(2026, 12, 5, 23, 0))  # Sat 23:00: Saturday has no window
    assert not is_open(night, utc(2026, 12, 4, 1, 0))  # Fri 01:00: Thursday had no window
    assert next_opening(night, utc(2026, 12, 5, 3, 0)) == utc(2026, 12, 11, 22, 0)


def test_a_window_to_24_00_ends_at_midnight() -> None:
    evening = schedule(timezone="UTC", windows=[{"days": ["mon"], "from": "20:00", "to": "24:00"}])
    assert is_open(evening, utc(2026, 11, 30, 23, 59, 59))
    assert not is_open(evening, utc(2026, 12, 1, 0, 0))


def test_overlapping_windows_are_their_union() -> None:
    both = schedule(
        timezone="UTC",
        windows=[
            {"days": ["mon"], "from": "09:00", "to": "12:00"},
            {"days": ["mon"], "from": "11:00", "to": "14:00"},
        ],
    )
    assert all(is_open(both, utc(2026, 11, 30, h, 30)) for h in range(9, 14))
    assert not is_open(both, utc(2026, 11, 30, 14, 0))


# --- daylight-saving changes ---------------------------------------------------------------------------


def test_berlin_windows_follow_the_wall_clock_across_spring_forward() -> None:
    daily = schedule(
        timezone="Europe/Berlin", windows=[{"days": ["sat", "sun"], "from": "09:00", "to": "16:00"}]
    )
    # 2027-03-28: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
    assert next_opening(daily, utc(2027, 3, 27, 0, 0)) == utc(2027, 3, 27, 8, 0)  # CET
    assert next_opening(daily, utc(2027, 3, 27, 16, 0)) == utc(2027, 3, 28, 7, 0)  # CEST


def test_a_window_starting_in_the_skipped_hour_opens_when_the_clock_jumps() -> None:
    early = schedule(timezone="Europe/Berlin", windows=[{"days": ["sun"], "from": "02:30", "to": "04:00"}])
    assert not is_open(early, utc(2027, 3, 28, 0, 59, 59))  # 01:59:59 CET
    assert is_open(early, utc(2027, 3, 28, 1, 0))  # 03:00 CEST
    assert next_opening(early, utc(2027, 3, 27, 12, 0)) == utc(2027, 3, 28, 1, 0)
    assert not is_open(early, utc(2027, 3, 28, 2, 0))  # 04:00 CEST


def test_a_window_inside_the_skipped_hour_does_not_open_that_day() -> None:
    lost = schedule(timezone="Europe/Berlin", windows=[{"days": ["sun"], "from": "02:10", "to": "02:40"}])
    assert next_opening(lost, utc(2027, 3, 27, 12, 0)) == utc(2027, 4, 4, 0, 10)  # a week later, CEST


def test_the_repeated_hour_of_fall_back_is_open_twice() -> None:
    repeated = schedule(timezone="Europe/Berlin", windows=[{"days": ["sun"], "from": "02:00", "to": "02:30"}])
    # 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC.
    assert is_open(repeated, utc(2026, 10, 25, 0, 15))  # 02:15 CEST
    assert not is_open(repeated, utc(2026, 10, 25, 0, 45))  # 02:45 CEST
    assert is_open(repeated, utc(2026, 10, 25, 1, 15))  # 02:15 CET
    assert next_opening(repeated, utc(2026, 10, 25, 0, 45)) == utc(2026, 10, 25, 1, 0)


def test_a_window_entered_by_the_clock_going_back_opens_at_the_change() -> None:
    around = schedule(timezone="Europe/Berlin", windows=[{"days": ["sun"], "from": "01:30", "to": "02:30"}])
    assert not is_open(around, utc(2026, 10, 25, 0, 59))  # 02:59 CEST
    assert next_opening(around, utc(2026, 10, 25, 0, 40)) == utc(2026, 10, 25, 1, 0)  # 02:00 CET


def test_new_york_windows_across_both_changes() -> None:
    office = schedule(
        timezone="America/New_York", windows=[{"days": ["sat", "sun"], "from": "09:00", "to": "17:00"}]
    )
    # 2027-03-14: 02:00 EST becomes 03:00 EDT.
    assert next_opening(office, utc(2027, 3, 13, 0, 0)) == utc(2027, 3, 13, 14, 0)  # EST
    assert next_opening(office, utc(2027, 3, 13, 23, 0)) == utc(2027, 3, 14, 13, 0)  # EDT
    # 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:00–01:30 happens twice.
    night = schedule(timezone="America/New_York", windows=[{"days": ["sun"], "from": "01:00", "to": "01:30"}])
    assert is_open(night, utc(2026, 11, 1, 5, 10))  # 01:10 EDT
    assert not is_open(night, utc(2026, 11, 1, 5, 40))
    assert next_opening(night, utc(2026, 11, 1, 5, 40)) == utc(2026, 11, 1, 6, 0)  # 01:00 EST


# --- freezes -------------------------------------------------------------------------------------------

HOLIDAYS = schedule(
    timezone="Europe/Berlin",
    windows=[{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "16:00"}],
    freeze=[{"from": "2026-12-24", "to": "2027-01-02", "reason": "holiday freeze"}],
)


def test_a_freeze_closes_its_dates_inclusive_in_local_time() -> None:
    assert is_open(HOLIDAYS, utc(2026, 12, 23, 10, 0))
    assert not is_open(HOLIDAYS, utc(2026, 12, 24, 10, 0))
    assert not is_open(HOLIDAYS, utc(2027, 1, 1, 10, 0))
    # Next opening: past the freeze and the weekend after it (2027-01-03 is a Sunday).
    assert next_opening(HOLIDAYS, utc(2026, 12, 24, 10, 0)) == utc(2027, 1, 4, 8, 0)


def test_a_freeze_that_ends_mid_window_opens_at_local_midnight() -> None:
    nightly = schedule(
        timezone="Europe/Berlin",
        windows=[{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": "22:00", "to": "02:00"}],
        freeze=[{"from": "2026-12-24", "to": "2027-01-02"}],
    )
    assert not is_open(nightly, utc(2027, 1, 2, 22, 30))  # 23:30 local on the last frozen day
    assert next_opening(nightly, utc(2027, 1, 2, 22, 30)) == utc(2027, 1, 2, 23, 0)  # 00:00 local


def test_a_freeze_without_windows_is_judged_in_utc() -> None:
    frozen = schedule(freeze=[{"from": "2026-12-24", "to": "2026-12-26"}])
    assert is_open(frozen, utc(2026, 12, 23, 23, 59))
    assert not is_open(frozen, utc(2026, 12, 24, 0, 0))
    assert next_opening(frozen, utc(2026, 12, 25, 12, 0)) == utc(2026, 12, 27, 0, 0)


# --- why it waits --------------------------------------------------------------------------------------


def test_waiting_for_a_window_says_when_in_local_time_and_utc() -> None:
    saturday = utc(2026, 11, 21, 12, 0)
    waits = waiting(OFFICE, saturday)
    assert waits is not None
    assert waits.reason == "window"
    assert waits.opens_at == utc(2026, 11, 23, 8, 0)
    assert waits.describe(saturday) == (
        "outside the change windows: wait for the window Mon 09:00 Europe/Berlin (08:00 UTC), in 1d20h"
    )
    assert waiting(OFFICE, utc(2026, 12, 1, 8, 0)) is None


def test_waiting_in_a_freeze_names_it_and_dates_an_opening_a_week_away() -> None:
    moment = utc(2026, 12, 24, 10, 0)
    waits = waiting(HOLIDAYS, moment)
    assert waits is not None
    assert waits.reason == "freeze"
    assert waits.describe(moment) == (
        "frozen 2026-12-24 to 2027-01-02 (holiday freeze): wait for the window "
        "Mon 2027-01-04 09:00 Europe/Berlin (08:00 UTC), in 10d22h"
    )


def test_the_utc_time_names_its_own_day_when_it_differs() -> None:
    tokyo = schedule(timezone="Asia/Tokyo", windows=[{"days": ["mon"], "from": "08:00", "to": "10:00"}])
    moment = utc(2026, 11, 29, 12, 0)  # Sun 21:00 in Tokyo
    waits = waiting(tokyo, moment)
    assert waits is not None
    assert waits.describe(moment) == (
        "outside the change windows: wait for the window Mon 08:00 Asia/Tokyo (Sun 23:00 UTC), in 11h"
    )


def test_a_freeze_without_windows_waits_for_its_end() -> None:
    frozen = schedule(freeze=[{"from": "2026-12-24", "to": "2026-12-26", "reason": "stop the line"}])
    moment = utc(2026, 12, 25, 12, 0)
    waits = waiting(frozen, moment)
    assert waits is not None
    assert waits.describe(moment) == (
        "frozen 2026-12-24 to 2026-12-26 (stop the line): wait for the end of the freeze Sun 00:00 UTC, in 1d12h"
    )


def test_an_opening_already_past_says_so() -> None:
    saturday = utc(2026, 11, 21, 12, 0)
    waits = waiting(OFFICE, saturday)
    assert waits is not None
    later = utc(2026, 11, 23, 10, 0)
    assert waits.describe(later).endswith("2h ago; no decision since")


def test_waiting_is_recorded_and_read_back() -> None:
    moment = utc(2026, 12, 24, 10, 0)
    waits = waiting(HOLIDAYS, moment)
    assert waits is not None
    record = waits.as_record(moment)
    assert record["reason"] == "freeze"
    assert record["opens_at"] == "2027-01-04T08:00:00Z"
    assert record["opens_at_local"] == "2027-01-04T09:00:00+01:00"
    assert record["timezone"] == "Europe/Berlin"
    assert record["freeze"] == {"from": "2026-12-24", "to": "2027-01-02", "reason": "holiday freeze"}
    assert record["text"] == waits.describe(moment)
    assert waiting_from_record(record) == waits
    assert waiting_from_record(None) is None
    assert waiting_from_record({"reason": "nonsense"}) is None
    assert waiting_from_record("window") is None


def test_zone_problems_name_a_close_match() -> None:
    assert zone_problem("Europe/Berlin") is None
    assert zone_problem("UTC") is None
    problem = zone_problem("Europe/Berln")
    assert problem is not None
    assert "unknown time zone 'Europe/Berln'" in problem
    assert "did you mean 'Europe/Berlin'" in problem
    assert zone_problem("../../etc/passwd") is not None
    assert zone_problem("Europe") is not None


# --- properties ----------------------------------------------------------------------------------------

# Lord Howe moves its clocks by 30 minutes; Santiago and Havana skip or repeat their midnight.
ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "UTC",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
]
DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@st.composite
def clock_times(draw: st.DrawFn) -> str:
    minutes = (
        draw(st.integers(0, 24 * 60 - 1)) // 15 * 15 if draw(st.booleans()) else draw(st.integers(0, 1439))
    )
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(clock_times())
    end = draw(clock_times().filter(lambda t: t != start) | st.just("24:00"))
    days = draw(st.lists(st.sampled_from(DAY_NAMES), min_size=1, max_size=7, unique=True))
    return {"days": days, "from": start, "to": end}


@st.composite
def freezes(draw: st.DrawFn) -> dict[str, Any]:
    first = draw(st.dates(date(2026, 1, 1), date(2028, 12, 31)))
    length = draw(st.integers(0, 20))
    return {"from": first.isoformat(), "to": (first + timedelta(days=length)).isoformat()}


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    fields: dict[str, Any] = {"timezone": draw(st.sampled_from(ZONES))}
    frozen = draw(st.lists(freezes(), max_size=2))
    if frozen:
        fields["freeze"] = frozen
    if not frozen or draw(st.booleans()):
        fields["windows"] = draw(st.lists(windows(), min_size=1, max_size=3))
    return schedule(**fields)


# hypothesis takes naive bounds and attaches the time zone itself
instants = st.datetimes(datetime(2026, 1, 1), datetime(2028, 12, 31), timezones=st.just(UTC))  # noqa: DTZ001


@settings(max_examples=300, deadline=None)
@given(schedules(), instants, st.lists(st.floats(0, 1, exclude_max=True), max_size=30))
def test_the_next_opening_is_open_and_nothing_before_it_is(
    plan: Schedule, now: datetime, fractions: list[float]
) -> None:
    opening = next_opening(plan, now)
    assert opening is not None
    assert opening >= now
    assert opening.utcoffset() == timedelta(0)
    assert is_open(plan, opening)
    assert (opening == now) == is_open(plan, now)
    if opening > now:
        assert not is_open(plan, opening - timedelta(seconds=1))
        gap = opening - now
        for fraction in fractions:
            point = now + gap * fraction
            assert point >= opening or not is_open(plan, point)  # (rounded to a microsecond)


@settings(max_examples=150, deadline=None)
@given(schedules(), instants)
def test_waiting_agrees_with_is_open(plan: Schedule, now: datetime) -> None:
    waits = waiting(plan, now)
    assert (waits is None) == is_open(plan, now)
    if waits is not None:
        assert waits.opens_at == next_opening(plan, now)
        assert isinstance(waits, Waiting)
        assert waiting_from_record(waits.as_record(now)) == waits


def test_a_minute_by_minute_walk_across_both_berlin_changes_finds_every_opening() -> None:
    plan = schedule(
        timezone="Europe/Berlin",
        windows=[
            {"days": ["sun"], "from": "01:30", "to": "02:30"},
            {"days": ["sun"], "from": "02:45", "to": "03:15"},
            {"days": ["sat"], "from": "23:00", "to": "01:00"},
        ],
    )
    for start in (utc(2026, 10, 24, 18, 0), utc(2027, 3, 27, 18, 0)):
        moment = start
        while moment < start + timedelta(hours=14):
            opening = next_opening(plan, moment)
            assert opening is not None
            walk = moment
            while not is_open(plan, walk):
                walk += timedelta(minutes=1)
            assert opening == walk, moment
            moment += timedelta(minutes=7)
