"""Flag documents and decision records for the web UI's tests, built in-process, and a page parsed
into its tags and text."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from controller.core.flagd import empty_document, write_flag
from controller.core.state import RolloutState, Status

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
HOSTILE_KEY = 'x"<&/ü café'  # a quote, markup, an ampersand, a slash and unicode
HOSTILE_AIM = "<script>alert(1)</script>"
TERMINAL_REASON = "held \x1b[31mRED\x1b[0m \x07 by a guardrail"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def state(
    key: str,
    status: Status = Status.PROGRESSING,
    percent: float = 5.0,
    step: int = 1,
    **changes: Any,
) -> RolloutState:
    base = RolloutState(
        policy=f"policy-{key}",
        revision="rev1",
        status=status,
        step=step,
        steps=4,
        percent=percent,
        control=True,
        step_started_at=NOW - timedelta(minutes=10),
        updated_at=NOW - timedelta(minutes=10),
        owner="team-a",
        review=date(2027, 1, 1),
    )
    return base.moved(**changes) if changes else base


def document(states: Iterable[tuple[str, RolloutState]]) -> dict[str, Any]:
    doc = empty_document()
    for key, one in states:
        doc = write_flag(doc, key, one, variants={"on": True, "off": False})
    doc["flags"]["unmanaged"] = {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}
    return doc


def check(value: float | None, bound: float = 0.01, verdict: str = "pass", **more: Any) -> dict[str, Any]:
    return {
        "name": "errors",
        "kind": "guardrail",
        "rule": "max",
        "arm": "treatment",
        "value": value,
        "bound": bound,
        "limit": bound,
        "samples": 500,
        "verdict": verdict,
        "query": 'sum(rate(errors_total{variant="on"}[5m])) / sum(rate(requests_total{variant="on"}[5m]))',
    } | more


def record(
    key: str,
    at: datetime,
    action: str = "hold",
    to_percent: float = 5.0,
    from_percent: float | None = None,
    **more: Any,
) -> dict[str, Any]:
    return {
        "time": iso(at),
        "policy": f"policy-{key}",
        "flag": key,
        "revision": "rev1",
        "action": action,
        "from_percent": to_percent if from_percent is None else from_percent,
        "to_percent": to_percent,
        "from_step": 0,
        "to_step": 1,
        "steps": 4,
        "status": "progressing",
        "reason": "all checks pass",
        "notes": [],
        "checks": [check(0.002)],
        "aim": "Cut p95 from 450ms to 250ms.",
        "mechanism": "A cache removes repeated I/O.",
        "owner": "team-a",
        "actor": "controller",
        "guarded": True,
    } | more


def ramp(
    key: str, start: datetime, count: int, every: timedelta = timedelta(seconds=30)
) -> list[dict[str, Any]]:
    """A ramp 1 → 5 → 10 % with holds between, and an error ratio drifting up."""
    found = []
    percent = 1.0
    for i in range(count):
        at = start + i * every
        action = "hold"
        before = percent
        if i and i % max(1, count // 3) == 0 and percent < 10:
            percent = {1.0: 5.0, 5.0: 10.0}[percent]
            action = "advance"
        found.append(record(key, at, action, percent, before, checks=[check(0.001 + 0.00001 * i)]))
    return found


class Page(HTMLParser):
    """The tags of a page (name, attributes) in order, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.cells: list[list[str]] = []  # the text of each <td>, row by row
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.cells.append([])
        if tag == "td" and self.cells:
            self.cells[-1].append("")
        self._in.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.cells and self.cells[-1] and "td" in self._in:
            self.cells[-1][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            while self._in and self._in.pop() != tag:
                pass

    def having(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and all(attrs.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]

    def all_text(self) -> str:
        return "".join(self.text)
