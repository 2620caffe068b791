"""Change windows and freezes (``spec.schedule``): whether a due move may happen at ``now``, when it
next may, and why it waits. Pure calendar arithmetic; the only time read is the ``now`` passed in.

- A window is judged on the **wall clock** of the schedule's time zone: ``09:00``–``16:00`` is 08:00–15:00
  UTC in Berlin's winter and 07:00–14:00 in its summer. On the day clocks go forward, wall times that do
  not exist are skipped (a window starting in the skipped hour opens when the clock jumps past its
  start); when clocks go back, a repeated wall time is inside a window both times.
- A window whose ``to`` is earlier than its ``from`` runs across midnight and belongs to the day it
  starts: ``fri 22:00``–``02:00`` is open from Friday 22:00 to Saturday 02:00. ``to`` is not part of
  the window; ``24:00`` is the end of the day. Overlapping windows are their union.
- A freeze covers whole local dates, both ends included. Without windows, every time outside a
  freeze is open; without a time zone (allowed for a freeze alone), dates are UTC dates.

Instants in and out are timezone-aware UTC datetimes; local times are named so.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from controller.core.durations import format_duration
from controller.core.policy import DAY_NAMES, ChangeWindow, Freeze, Schedule

WINDOW = "window"  # waiting for a change window to open
FREEZE = "freeze"  # waiting for a freeze to end
REASONS = (WINDOW, FREEZE)

# How far past the last freeze ``next_opening`` looks: windows repeat every week, so two weeks find
# any window whose wall time exists (one inside a skipped hour may miss a week).
_HORIZON_DAYS = 15
_DAY_MINUTES = 24 * 60
# The search ends this far before the last date Python knows, so that no instant it looks at (a
# day's midnight anywhere, a change of the clocks up to a day later) overflows it.
LAST_SEARCHED = date.max - timedelta(days=_HORIZON_DAYS + 3)
_SHORT_FORM_WITHIN = timedelta(days=6)  # closer than this, a weekday names the day unambiguously


# Names zoneinfo loads that are no IANA place: the host's own zone (``localtime``: the laptop's for a
# backtest, UTC in the image), zones that count leap seconds (``right/…``: 27 s off) or their twins
# (``posix/…``), and files that are no place's time.
_NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})
_NOT_PLACE_PREFIXES = ("right/", "posix/")
_ZULU = frozenset({"Z", "z"})  # ISO 8601 writes UTC so
_ETC_GMT = re.compile(r"^Etc/GMT([+-])(\d{1,2})$")


@functools.cache
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(n for n in available_timezones() if n not in _NOT_PLACES))


def zone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone this Python knows, with a close match; None when it is one."""
    if name not in _NOT_PLACES and not name.startswith(_NOT_PLACE_PREFIXES):
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
        else:
            return None
    advice = "; use an IANA name such as Europe/Berlin"
    hint = _suggestion(name)
    if hint is not None:
        advice = f" (did you mean {hint!r}?)"
    return f"unknown time zone {name!r}{advice}"


def _suggestion(name: str) -> str | None:
    """The zone ``name`` most likely means: the same name in other letter case, UTC for Zulu time,
    the zone a ``right/`` or ``posix/`` name copies, else the closest spelling."""
    names = _zone_names()
    stripped = name.removeprefix("right/").removeprefix("posix/")
    same = [n for n in names if n.lower() == stripped.lower()]
    if same:
        return same[0]
    if name in _ZULU or name in _NOT_PLACES:
        return "UTC" if name in _ZULU else None
    close = difflib.get_close_matches(name, names, n=1)
    return close[0] if close and len(name) > 2 else None


def zone_warning(name: str) -> str | None:
    """What may surprise in a known zone: ``Etc/GMT+1`` is one hour *behind* UTC (those names count
    west of Greenwich as positive, the opposite of ISO 8601). None for every other zone."""
    found = _ETC_GMT.match(name)
    if found is None or int(found.group(2)) == 0:
        return None
    sign = "-" if found.group(1) == "+" else "+"
    offset = f"UTC{sign}{int(found.group(2)):02d}:00"
    return (
        f"{name} is {offset}: names Etc/GMT±N count west of Greenwich as '+', the opposite of "
        f"ISO 8601; a place's own zone (such as America/Sao_Paulo) says it unambiguously"
    )


def zone(schedule: Schedule) -> ZoneInfo:
    return ZoneInfo(schedule.timezone or "UTC")


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _in_window(window: ChangeWindow, weekday: int, minute: int) -> bool:
    """Whether a local wall time (weekday 0 = Monday, minute of the day) lies in ``window``."""
    opens, closes = _minutes(window.opens), _minutes(window.closes)
    today = DAY_NAMES[weekday] in window.days
    if opens < closes:
        return today and opens <= minute < closes
    yesterday = DAY_NAMES[(weekday - 1) % 7] in window.days
    return (today and minute >= opens) or (yesterday and minute < closes)


def _freeze_on(schedule: Schedule, local_day: date) -> Freeze | None:
    return next((f for f in schedule.freeze or () if f.first_day <= local_day <= f.last_day), None)


def frozen_by(schedule: Schedule | None, now: datetime) -> Freeze | None:
    """The freeze covering ``now``'s local date, if any."""
    if schedule is None:
        return None
    return _freeze_on(schedule, now.astimezone(zone(schedule)).date())


def in_window(schedule: Schedule | None, now: datetime) -> bool:
    """Whether ``now`` lies inside a change window (always, when the schedule gives none)."""
    if schedule is None or not schedule.windows:
        return True
    local = now.astimezone(zone(schedule))
    minute = local.hour * 60 + local.minute
    return any(_in_window(w, local.weekday(), minute) for w in schedule.windows)


def is_open(schedule: Schedule | None, now: datetime) -> bool:
    """Whether a due move may happen at ``now``: inside a window and outside every freeze."""
    return in_window(schedule, now) and frozen_by(schedule, now) is None


def next_opening(schedule: Schedule | None, now: datetime) -> datetime | None:
    """The first instant at or after ``now`` at which :func:`is_open` holds (``now`` itself when it
    does), in UTC; None when none comes within two weeks of the last freeze."""
    if schedule is None or is_open(schedule, now):
        return now
    tz = zone(schedule)
    day = now.astimezone(tz).date()
    last = min(max([day, *(f.last_day for f in schedule.freeze or ())]), LAST_SEARCHED)
    last += timedelta(days=_HORIZON_DAYS)
    while day <= last:
        freeze = _freeze_on(schedule, day)
        if freeze is not None:
            if freeze.last_day >= last:
                break  # frozen "until further notice" (to: 9999-12-31): no opening in sight
            day = freeze.last_day + timedelta(days=1)  # its next midnight is that day's candidate
            continue
        for moment in sorted(m for m in _candidates(schedule, tz, day) if m >= now):
            if is_open(schedule, moment):
                return moment
        day += timedelta(days=1)
    return None


def _candidates(schedule: Schedule, tz: ZoneInfo, local_day: date) -> Iterator[datetime]:
    """The instants of ``local_day`` at which a closed schedule can open: its midnight (a freeze
    ends, or a window runs on from yesterday), each window's start, and a change of the clocks (a
    jump over a window's start, or back into a window)."""
    yield from _instants(tz, local_day, 0)
    for window in schedule.windows or ():
        if DAY_NAMES[local_day.weekday()] in window.days:
            yield from _instants(tz, local_day, _minutes(window.opens))
    change = _clock_change(tz, local_day)
    if change is not None:
        yield change


def _instants(tz: ZoneInfo, local_day: date, minute: int) -> Iterator[datetime]:
    """The UTC instants at which the wall clock shows ``minute`` on ``local_day``: none in a skipped
    hour, two in a repeated one."""
    wall = datetime.combine(local_day, time(minute // 60, minute % 60))
    seen = set()
    for fold in (0, 1):
        moment = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if moment not in seen and moment.astimezone(tz).replace(tzinfo=None) == wall:
            seen.add(moment)
            yield moment


def _clock_change(tz: ZoneInfo, local_day: date) -> datetime | None:
    """The instant the zone's offset from UTC changes during ``local_day`` (at most one), to the
    second; None on a day without a change."""
    start = datetime.combine(local_day, time()).replace(tzinfo=tz).astimezone(UTC) - timedelta(hours=3)
    end = start + timedelta(hours=30)
    before = start.astimezone(tz).utcoffset()
    if end.astimezone(tz).utcoffset() == before:
        return None
    low, high = int(start.timestamp()), int(end.timestamp())  # ``before`` at low, changed at high
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(tz).utcoffset() == before:
            low = middle
        else:
            high = middle
    change = datetime.fromtimestamp(high, UTC)
    return change if change.astimezone(tz).date() == local_day else None


# --- why a due move waits ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Waiting:
    """A due move that waits: for a window (``reason`` ``window``) or the end of a freeze
    (``freeze``), until ``opens_at`` (UTC; None when nothing opens within the horizon)."""

    reason: str
    timezone: str
    opens_at: datetime | None
    windows: bool = True  # the schedule has windows: it waits for "the window", else "the end of the freeze"
    freeze: Freeze | None = None

    @property
    def why(self) -> str:
        """``outside the change windows``, or the freeze in force with its dates and reason."""
        if self.freeze is None:
            return "outside the change windows"
        why = f"frozen {self.freeze.first_day.isoformat()} to {self.freeze.last_day.isoformat()}"
        return why + (f" ({self.freeze.reason})" if self.freeze.reason else "")

    def until(self, now: datetime) -> str:
        """When the next opening is, in the policy's time zone and in UTC, and how far from ``now``:
        ``wait for the window Tue 09:00 Europe/Berlin (08:00 UTC), in 14h``."""
        what = "the window" if self.windows else "the end of the freeze"
        if self.opens_at is None:
            return f"no opening within {_HORIZON_DAYS} days of the last freeze"
        when = _when(self.opens_at, ZoneInfo(self.timezone), now)
        ahead = (self.opens_at - now).total_seconds()
        if ahead > 0:  # rounded up: an opening 20 s away is "in 1m", not one that happened
            return f"wait for {what} {when}, in {format_duration(math.ceil(ahead / 60) * 60)}"
        opened = "opened" if self.windows else "ended"
        minutes = round(-ahead / 60)
        if minutes == 0:
            return f"{what} {opened} {when}, just now; it advances at the next evaluation"
        # Told again later (flagroll status re-tells the last record): no decision came since, and
        # the window may have closed again meanwhile, so nothing is promised about the next one.
        return f"{what} {opened} {when}, {format_duration(minutes * 60)} ago; no decision since"

    def describe(self, now: datetime) -> str:
        """For people: why it waits and until when (:attr:`why`, :meth:`until`)."""
        return f"{self.why}: {self.until(now)}"

    def as_record(self, now: datetime) -> dict[str, Any]:
        """As the decision record and ``flagroll status --json`` show it."""
        tz = ZoneInfo(self.timezone)
        freeze = self.freeze
        frozen: dict[str, str] | None = None
        if freeze is not None:
            frozen = {"from": freeze.first_day.isoformat(), "to": freeze.last_day.isoformat()}
            frozen["reason"] = freeze.reason
        return {
            "reason": self.reason,
            "timezone": self.timezone,
            "opens_at": _iso_utc(self.opens_at) if self.opens_at is not None else None,
            "opens_at_local": self.opens_at.astimezone(tz).isoformat() if self.opens_at is not None else None,
            "windows": self.windows,
            "freeze": frozen,
            "text": self.describe(now),
        }


def waiting(schedule: Schedule | None, now: datetime) -> Waiting | None:
    """Why a due move cannot happen at ``now``; None when it can."""
    if schedule is None or is_open(schedule, now):
        return None
    freeze = frozen_by(schedule, now)
    return Waiting(
        reason=FREEZE if freeze is not None else WINDOW,
        timezone=schedule.timezone or "UTC",
        opens_at=next_opening(schedule, now),
        windows=bool(schedule.windows),
        freeze=freeze,
    )


def waiting_from_record(value: object) -> Waiting | None:
    """A record's ``waiting`` read back; None when absent or not one (an older or damaged record)."""
    if not isinstance(value, Mapping) or value.get("reason") not in REASONS:
        return None
    try:
        timezone = str(value.get("timezone") or "UTC")
        ZoneInfo(timezone)
        opens = value.get("opens_at")
        opens_at = datetime.fromisoformat(opens.replace("Z", "+00:00")) if isinstance(opens, str) else None
        if opens_at is not None and opens_at.utcoffset() is None:
            return None
        frozen = value.get("freeze")
        freeze = Freeze.model_validate(frozen) if isinstance(frozen, Mapping) else None
    except (ValueError, OSError, ZoneInfoNotFoundError):  # pydantic's ValidationError is a ValueError
        return None
    return Waiting(
        reason=str(value["reason"]),
        timezone=timezone,
        opens_at=opens_at.astimezone(UTC) if opens_at is not None else None,
        windows=value.get("windows") is not False,
        freeze=freeze,
    )


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _when(opens_at: datetime, tz: ZoneInfo, now: datetime) -> str:
    """``Tue 09:00 Europe/Berlin (08:00 UTC)``; with the date when it is six days away or more, and
    the UTC day when it differs from the local one. In UTC itself the time is given once."""
    local = opens_at.astimezone(tz)
    utc = opens_at.astimezone(UTC)
    dated = abs(opens_at - now) >= _SHORT_FORM_WITHIN
    day = DAY_NAMES[local.weekday()].title() + (f" {local.date().isoformat()}" if dated else "")
    text = f"{day} {local:%H:%M} {tz.key}"
    if tz.key in ("UTC", "Etc/UTC"):
        return text
    utc_day = "" if utc.date() == local.date() else DAY_NAMES[utc.weekday()].title() + " "
    return f"{text} ({utc_day}{utc:%H:%M} UTC)"
