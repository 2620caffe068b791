"""Poll a condition until it holds or a deadline passes: synchronisation without blind sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout_seconds: float,
    interval_seconds: float = 0.05,
    what: str = "condition",
) -> T:
    """Return the first truthy result of ``probe``; fail the test if none comes before the deadline."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_seconds:g}s waiting for {what}")
        time.sleep(interval_seconds)
