"""The web UI's decision log (``/log``): the records, filtered and paged, newest first. Pure.

The filters are GET query parameters: ``flag`` (a key, exactly), ``action`` (one of the record
actions), ``since`` and ``until`` (ISO 8601 times with a zone, ``2026-12-04T10:00:00Z``, or dates,
meaning midnight UTC; ``since`` included, ``until`` not), ``page`` (from 1) and ``size`` (records
per page, 1 to :data:`MOST_SIZE`, default :data:`DEFAULT_SIZE`). A parameter that is unknown, given
twice or wrong is a :class:`BadParameter` naming it (the page answers 400).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from controller.core.charts import escape
from controller.core.compaction import held_since, is_heartbeat
from controller.core.policy import pct
from controller.core.state import Action
from controller.core.uipage import REFRESH_SECONDS, Page, flag_href, log_href, parse_time, render_page

DEFAULT_SIZE = 50
MOST_SIZE = 500
PARAMETERS = ("flag", "action", "since", "until", "page", "size")
ACTIONS = tuple(a.value for a in Action)


class BadParameter(ValueError):
    """A query parameter of ``/log`` that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class LogFilter:
    flag: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page: int = 1
    size: int = DEFAULT_SIZE

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.flag is not None and record.get("flag") != self.flag:
            return False
        if self.action is not None and record.get("action") != self.action:
            return False
        if self.since is None and self.until is None:
            return True
        at = parse_time(record.get("time"))
        if at is None:
            return False
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)

    def href(self, page: int) -> str:
        return log_href(
            flag=self.flag or "",
            action=self.action or "",
            since=_shown(self.since),
            until=_shown(self.until),
            page=page if page != 1 else "",
            size=self.size if self.size != DEFAULT_SIZE else "",
        )


def _shown(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_filters(query: Mapping[str, Sequence[str]]) -> LogFilter:
    """The filter from the parsed query string (``urllib.parse.parse_qs`` with blank values kept);
    an empty value is no filter. Raises :class:`BadParameter`."""
    for name, values in query.items():
        if name not in PARAMETERS:
            raise BadParameter(f"unknown parameter {name!r}: the log takes {', '.join(PARAMETERS)}")
        if len(values) > 1:
            raise BadParameter(f"parameter {name!r} is given {len(values)} times: give it once")
    given = {  # a flag key is taken as it is (" a" is not "a"); the other values without spaces around
        name: values[0] if name == "flag" else values[0].strip()
        for name, values in query.items()
        if values and values[0].strip()
    }
    action = given.get("action")
    if action is not None and action not in ACTIONS:
        raise BadParameter(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    since, until = _time(given, "since"), _time(given, "until")
    if since is not None and until is not None and until <= since:
        raise BadParameter(f"until {_shown(until)} is not after since {_shown(since)}")
    return LogFilter(
        flag=given.get("flag"),
        action=action,
        since=since,
        until=until,
        page=_whole(given, "page", 1, None, 1),
        size=_whole(given, "size", DEFAULT_SIZE, MOST_SIZE, 1),
    )


def _time(given: Mapping[str, str], name: str) -> datetime | None:
    text = given.get(name)
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        # A "+" in a query string reads as a space: ``+01:00`` comes back as `` 01:00``.
        moment = datetime.fromisoformat(re.sub(r" (\d\d:?\d\d)$", r"+\1", text).replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(
            f"{name} {text!r} is not a date or an ISO 8601 time (2026-12-04T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise BadParameter(f"{name} {text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return moment


def _whole(given: Mapping[str, str], name: str, default: int, most: int | None, least: int) -> int:
    text = given.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise BadParameter(f"{name} {text!r} is not a whole number")
    value = int(text)
    if value < least or (most is not None and value > most):
        limit = f"from {least} to {most}" if most is not None else f"at least {least}"
        raise BadParameter(f"{name} {value} is out of range: give a number {limit}")
    return value


def render_log(
    chosen: LogFilter,
    matched: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    refresh_seconds: int = REFRESH_SECONDS,
) -> Page:
    """The page of ``matched`` (the records the filter let through, oldest first, as in the log)."""
    total = len(matched)
    pages = max(1, -(-total // chosen.size))
    first = (chosen.page - 1) * chosen.size
    shown = [matched[total - 1 - i] for i in range(first, min(total, first + chosen.size))]
    said = f"{total} records match" + ("" if total else " (none)")
    if total:
        said += f"; page {chosen.page} of {pages}, newest first, {chosen.size} a page"
    body = [*_form(chosen), f'<p id="count">{escape(said)}.</p>', *_pager(chosen, pages)]
    body.append(
        '<table class="log"><tr><th>time (UTC)</th><th>flag</th><th>action</th><th>from → to</th>'
        "<th>status</th><th>by</th><th>reason</th></tr>"
    )
    body.extend(_row(record) for record in shown)
    if not shown:
        body.append('<tr><td colspan="7">no records on this page</td></tr>')
    body.append("</table>")
    body.extend(_pager(chosen, pages))
    return render_page("Decision log", body, now, refresh_seconds=refresh_seconds)


def _form(chosen: LogFilter) -> Iterator[str]:
    yield '<form class="filters" method="get" action="/log">'
    yield f'<label>flag <input name="flag" value="{escape(chosen.flag or "")}"></label>'
    yield '<label>action <select name="action"><option value="">any</option>'
    for action in ACTIONS:
        selected = " selected" if action == chosen.action else ""
        yield f'<option value="{action}"{selected}>{action}</option>'
    yield "</select></label>"
    since = escape(_shown(chosen.since))
    yield f'<label>since <input name="since" value="{since}" placeholder="2026-12-04T10:00:00Z"></label>'
    yield f'<label>until <input name="until" value="{escape(_shown(chosen.until))}"></label>'
    yield f'<label>per page <input name="size" value="{chosen.size}" size="4"></label>'
    yield '<button type="submit">filter</button></form>'


def _pager(chosen: LogFilter, pages: int) -> Iterator[str]:
    links = []
    if chosen.page > 1:
        links.append(f'<a rel="prev" href="{escape(chosen.href(min(chosen.page - 1, pages)))}">newer</a>')
    if chosen.page < pages:
        links.append(f'<a rel="next" href="{escape(chosen.href(chosen.page + 1))}">older</a>')
    if links:
        yield '<p class="pager">' + " · ".join(links) + "</p>"


def _row(record: Mapping[str, Any]) -> str:
    flag = str(record.get("flag"))
    action = str(record.get("action"))
    moved = f"{_pct(record.get('from_percent'))}% → {_pct(record.get('to_percent'))}%"
    reason = held_since(record) if is_heartbeat(record) else str(record.get("reason") or "")
    notes = [n for n in record.get("notes") or [] if isinstance(n, str)]
    said = escape(reason) + "".join(f'<br><span class="muted">note: {escape(n)}</span>' for n in notes)
    css = "attention" if action == Action.ROLLBACK.value else ""
    return (
        f'<tr class="{css}" data-flag="{escape(flag)}" data-action="{escape(action)}">'
        f"<td>{escape(str(record.get('time')))}</td>"
        f'<td><a href="{escape(flag_href(flag))}">{escape(flag)}</a></td>'
        f"<td>{escape(action)}</td><td>{escape(moved)}</td><td>{escape(str(record.get('status')))}</td>"
        f"<td>{escape(str(record.get('actor') or ''))}</td><td>{said}</td></tr>"
    )


def _pct(value: Any) -> str:
    return pct(float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else "?"
