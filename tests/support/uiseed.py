"""A flag store and decision log that show the web UI's every kind of row (rolled back with its
guardrails crossing their bounds, awaiting approval, paused, progressing, completed, unguarded, and a
hostile key and aim), seeded relative to now, and ``flagroll ui`` serving them as a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from controller.adapters.promserver import free_port
from controller.core.state import RolloutState, Status
from tests.support.uidata import HOSTILE_KEY, check, document, record, state
from tests.support.waiting import wait_for

ROLLED_BACK = "checkout-cache"
AWAITING = "search-ranking"
PAUSED = "new-pricing"
PROGRESSING = "recommendations"
COMPLETED = "dark-mode"
UNGUARDED = "legacy-banner"
HOSTILE_TEXT = "<script>document.title='pwned';alert('pwned')</script>"
PROMETHEUS_UI = "https://prometheus.example.com"

# The overview's order: what needs a human first, then by key (docs/ui.md).
ORDER = (UNGUARDED, ROLLED_BACK, AWAITING, PAUSED, PROGRESSING, HOSTILE_KEY, COMPLETED)
GUARDRAILS = ("errors", "latency_p95")
LATENCY_QUERY = 'histogram_quantile(0.95, sum by (le) (rate(latency_seconds_bucket{variant="on"}[5m])))'


def _checks(errors: float, latency: float, verdict: str = "pass") -> list[dict[str, Any]]:
    return [
        check(errors, 0.01, "fail" if errors > 0.01 else "pass"),
        check(latency, 0.25, "fail" if latency > 0.25 else verdict, name="latency_p95", query=LATENCY_QUERY),
    ]


def _states(now: datetime) -> list[tuple[str, RolloutState]]:
    review = (now + timedelta(days=60)).date()  # never stale, whenever the tests run

    def one(key: str, status: Status, percent: float, step: int, **more: Any) -> tuple[str, RolloutState]:
        return key, state(key, status, percent, step, review=review, updated_at=now, **more)

    return [
        one(ROLLED_BACK, Status.ROLLED_BACK, 0.0, 2, reason="guardrail errors failed"),
        one(AWAITING, Status.PROGRESSING, 5.0, 1, awaiting_approval_since=now - timedelta(minutes=3)),
        one(PAUSED, Status.PAUSED, 5.0, 1, reason="waiting for the pricing review"),
        one(PROGRESSING, Status.PROGRESSING, 5.0, 1),
        one(COMPLETED, Status.COMPLETED, 100.0, 3),
        one(UNGUARDED, Status.PROGRESSING, 10.0, 2, unguarded_reason="its policy was deleted"),
        one(HOSTILE_KEY, Status.PROGRESSING, 5.0, 1),
    ]


def _rolled_back(start: datetime, count: int) -> list[dict[str, Any]]:
    """A ramp 1 → 5 → 10 % whose error ratio and p95 latency drift up through their bounds, then the
    rollback."""
    found = []
    percent = 1.0
    for i in range(count):
        before = percent
        if i in (count // 3, 2 * count // 3):
            percent = {1.0: 5.0, 5.0: 10.0}[percent]
        errors, latency = 0.002 + 0.0003 * i, 0.12 + 0.004 * i
        action = "advance" if percent != before else "hold"
        found.append(
            record(ROLLED_BACK, start + timedelta(minutes=3 * i), action, percent, before,
                   from_step=STEP[before], to_step=STEP[percent],
                   checks=_checks(min(errors, 0.0095), min(latency, 0.24)))
        )  # fmt: skip
    found.append(
        record(
            ROLLED_BACK, start + timedelta(minutes=3 * count), "rollback", 0.0, percent,
            from_step=STEP[percent], to_step=STEP[percent], status="rolled_back",
            reason="guardrail errors failed: 0.031 > 0.01", checks=_checks(0.031, 0.29),
        )
    )  # fmt: skip
    return found


STEP = {1.0: 0, 5.0: 1, 10.0: 2, 25.0: 2, 50.0: 3, 100.0: 3}  # the step (an index) of each percent seeded


def _ramp(key: str, start: datetime, percents: Sequence[float], **more: Any) -> list[dict[str, Any]]:
    found = []
    before = percents[0]
    for i, percent in enumerate(percents):
        action = "advance" if percent != before else "hold"
        found.append(
            record(key, start + timedelta(minutes=5 * i), action, percent, before,
                   from_step=STEP[before], to_step=STEP[percent], checks=_checks(0.002, 0.15), **more)
        )  # fmt: skip
        before = percent
    return found


def seed_records(now: datetime) -> list[dict[str, Any]]:
    """Every flag's records, oldest first, the newest a minute before ``now``."""
    start = now - timedelta(hours=2)
    records = [
        *_rolled_back(now - timedelta(minutes=80), 24),  # rolled back 8 minutes ago
        *_ramp(AWAITING, start, [1, 1, 1, 5, 5, 5]),
        *_ramp(PAUSED, start, [1, 1, 5, 5]),
        record(PAUSED, now - timedelta(minutes=20), "pause", 5.0, actor="on-call", reason="pricing review"),
        *_ramp(PROGRESSING, start, [1, 1, 1, 5, 5, 5, 5]),
        *_ramp(COMPLETED, start, [1, 5, 25, 50, 100]),
        *_ramp(UNGUARDED, start, [1, 5, 10]),
        *_ramp(HOSTILE_KEY, start, [1, 1, 5], aim=HOSTILE_TEXT, reason=HOSTILE_TEXT),
    ]
    records.sort(key=lambda r: str(r["time"]))
    return records


def write_seed(directory: Path, now: datetime) -> tuple[Path, Path]:
    """The flag document and the decision log, in ``directory``."""
    flags, log = directory / "flags.json", directory / "decisions.jsonl"
    flags.write_text(json.dumps(document(_states(now)), ensure_ascii=False))
    write_records(log, seed_records(now))
    return flags, log


def write_records(log: Path, records: Sequence[dict[str, Any]], *, append: bool = False) -> None:
    with log.open("a" if append else "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def now() -> datetime:
    return datetime.now(UTC)


def answering(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


@dataclass(frozen=True, slots=True)
class ServedUI:
    base: str  # http://127.0.0.1:PORT
    flags: Path
    log: Path


@contextmanager
def flagroll_ui(flags: Path, log: Path, *options: str) -> Iterator[ServedUI]:
    """``flagroll ui`` on a free port of 127.0.0.1, answering before this yields; stopped with SIGTERM
    (and its exit status checked) after. It runs in the files' directory, given their names only, so
    that the overview names the flag store ``flags.json`` (as in the screenshots)."""
    assert flags.parent == log.parent, (flags, log)
    port = free_port()
    out = log.with_name(f"ui-{port}.out")
    with out.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "controller", "ui", "--flags", flags.name, "--decision-log", log.name,
                "--listen", f"127.0.0.1:{port}", *options,
            ],
            cwd=flags.parent,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answering(base + "/healthz"), timeout_seconds=30, what="flagroll ui to answer")
        yield ServedUI(base, flags, log)
    finally:
        if process.poll() is None:
            process.terminate()
        assert process.wait(timeout=30) == 0, out.read_text(errors="replace")
