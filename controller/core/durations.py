"""Durations as policies write them (``90s``, ``5m``, ``1h30m``) and as people read them."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+")
_MAX_SECONDS = 366 * 86400.0


def parse_duration(text: str) -> float:
    """Return the number of seconds in ``text``.

    Accepts one or more ``<number><unit>`` parts with units ``ms``, ``s``, ``m``, ``h``, ``d``
    (``90s``, ``5m``, ``1h30m``, ``1.5h``). A bare number is refused: a unit is always required so
    that ``30`` is never silently read as seconds when minutes were meant.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as '30s' or '5m', not {text!r}")
    compact = text.strip()
    if not compact:
        raise ValueError("a duration must not be empty; write e.g. '30s' or '5m'")
    if _WHOLE.fullmatch(compact) is None:
        if re.fullmatch(r"[0-9]+(\.[0-9]+)?", compact):
            raise ValueError(f"duration {text!r} has no unit; write e.g. '{compact}s' or '{compact}m'")
        raise ValueError(f"invalid duration {text!r}; use a number and a unit: 90s, 5m, 1h, 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(compact))
    if not math.isfinite(seconds) or seconds > _MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than a year")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds for a human: ``45s``, ``5m``, ``3m12s``, ``1h2m``, ``2d3h``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
