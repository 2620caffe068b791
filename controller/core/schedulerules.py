"""The rules of ``spec.schedule`` (:func:`schedule_is_sound`), one of the cross-field rules that
:mod:`controller.core.policyrules` runs: each finding carries the path of the field at fault."""

from __future__ import annotations

from controller.core.changewindows import zone_problem, zone_warning
from controller.core.durations import format_duration
from controller.core.policy import ChangeWindow, Path, Policy
from controller.core.querytext import Findings, error, warning


def schedule_is_sound(policy: Policy) -> Findings:
    """A schedule's time zone is an IANA zone and given with windows, each window has a length and
    starts before the end of the day, each freeze ends on or after its first day (overlaps are
    allowed: windows are their union). Warned: a zone whose name misleads (``Etc/GMT+1`` is UTC-1)
    and freeze dates without a zone (UTC dates, which a team in another zone may not mean)."""
    schedule = policy.spec.schedule
    if schedule is None:
        return
    at: Path = ("spec", "schedule")
    if not schedule.windows and not schedule.freeze:
        yield warning(at, "the schedule has neither windows nor freeze: it changes nothing")
    if schedule.timezone is not None:
        problem = zone_problem(schedule.timezone)
        if problem is not None:
            yield error((*at, "timezone"), problem)
        elif (surprise := zone_warning(schedule.timezone)) is not None:
            yield warning((*at, "timezone"), surprise)
    elif schedule.windows:
        yield error(
            (*at, "windows"),
            "windows need a time zone: set spec.schedule.timezone to an IANA name such as Europe/Berlin",
        )
    elif schedule.freeze:
        yield warning(
            (*at, "freeze"),
            "without a timezone the freeze dates are UTC dates (in Berlin a frozen day runs from 01:00 "
            "to 01:00 the next day): set spec.schedule.timezone, UTC included, to say which",
        )
    interval = policy.spec.interval_seconds
    for i, window in enumerate(schedule.windows or ()):
        repeated = sorted({d for d in window.days if window.days.count(d) > 1})
        if repeated:
            yield warning(
                (*at, "windows", i, "days"),
                f"{', '.join(repeated)} given more than once: a day is in the window or not; "
                "was another day meant?",
            )
        if window.opens == "24:00":
            yield error((*at, "windows", i, "from"), "24:00 ends a day: a window starts at 00:00 to 23:59")
        elif window.opens == window.closes:
            yield error(
                (*at, "windows", i, "to"),
                f"'to' is the same time as 'from' ({window.opens}): a window needs a length; "
                "a whole day is from: '00:00', to: '24:00'",
            )
        elif (length := _length_seconds(window)) < interval:
            yield warning(
                (*at, "windows", i, "to"),
                f"the window lasts {format_duration(length)}, less than spec.interval "
                f"({format_duration(interval)}): evaluations come one interval apart, so many days none "
                "falls inside it and a due move waits on; make it longer than the interval",
            )
    for i, freeze in enumerate(schedule.freeze or ()):
        if freeze.first_day > freeze.last_day:
            yield error(
                (*at, "freeze", i, "to"),
                f"the freeze ends ({freeze.last_day.isoformat()}) before it starts "
                f"({freeze.first_day.isoformat()})",
            )


def _length_seconds(window: ChangeWindow) -> int:
    """How long a window lasts (one across midnight runs into the next day)."""
    opens, closes = (int(t[:2]) * 60 + int(t[3:]) for t in (window.opens, window.closes))
    return ((closes - opens) % (24 * 60) or 24 * 60) * 60
