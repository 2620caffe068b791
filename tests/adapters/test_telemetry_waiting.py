"""``flagroll_rollout_waiting{flag,reason}``: 1 while a due move waits for a change window (``window``),
the end of a freeze (``freeze``), a human's approval (``approval``) or firing alerts (``alert``), from the records of each
cycle; 0 once it moves or stops; gone with the flag, and not shown by a replica that does not lead."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.telemetry import Telemetry
from controller.core.state import RolloutState, Status

MOMENT = datetime(2026, 11, 21, 12, tzinfo=UTC)
GAUGE = "flagroll_rollout_waiting"


def _waiting(telemetry: Telemetry) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            if sample.name == GAUGE:
                found[(sample.labels["flag"], sample.labels["reason"])] = sample.value
    return found


def _record(
    flag: str, waiting: str | None, action: str = "hold", status: str = "progressing"
) -> dict[str, Any]:
    return {
        "flag": flag,
        "action": action,
        "to_percent": 5.0,
        "status": status,
        "waiting": {"reason": waiting, "opens_at": "2026-11-23T08:00:00Z"} if waiting else None,
    }


def _state(status: Status = Status.PROGRESSING) -> RolloutState:
    return RolloutState("p", "r", status, 0, 2, 5.0, True, MOMENT, MOMENT)


def _done(telemetry: Telemetry, states: dict[str, RolloutState]) -> None:
    telemetry.cycle_done(
        ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states=states
    )


def test_the_gauge_says_what_each_rollout_waits_for() -> None:
    telemetry = Telemetry(clock=MOMENT.timestamp)
    states = {"cache": _state(), "search": _state(), "quiet": _state(), "paged": _state()}
    telemetry.recorded(
        [
            _record("cache", "window"),
            _record("search", "freeze"),
            _record("quiet", None),
            _record("paged", "alert"),
        ]
    )
    _done(telemetry, states)
    reasons = ("window", "freeze", "approval", "alert")
    waits = {"cache": "window", "search": "freeze", "quiet": None, "paged": "alert"}
    assert _waiting(telemetry) == {
        (flag, reason): 1.0 if reason == waited else 0.0
        for flag, waited in waits.items()
        for reason in reasons
    }
    _done(telemetry, states)  # a cycle without records for them (not due): unchanged
    assert _waiting(telemetry)[("cache", "window")] == 1.0
    telemetry.recorded([_record("cache", None, action="advance")])
    _done(telemetry, states)
    assert _waiting(telemetry)[("cache", "window")] == 0.0


def test_a_reject_record_leaves_the_gauge_alone_and_an_inactive_rollout_waits_for_nothing() -> None:
    telemetry = Telemetry(clock=MOMENT.timestamp)
    telemetry.recorded([_record("cache", "window")])
    _done(telemetry, {"cache": _state()})
    telemetry.recorded([{"flag": "cache", "action": "reject", "reason": "policy rejected"}])
    _done(telemetry, {"cache": _state()})
    assert _waiting(telemetry)[("cache", "window")] == 1.0
    _done(telemetry, {"cache": _state(Status.STOPPED)})  # stopped by a human, no record in the cycle
    assert _waiting(telemetry)[("cache", "window")] == 0.0


def test_a_flag_that_leaves_the_file_leaves_the_gauge_and_a_follower_shows_none() -> None:
    telemetry = Telemetry(clock=MOMENT.timestamp)
    telemetry.recorded([_record("cache", "window")])
    _done(telemetry, {"cache": _state()})
    _done(telemetry, {})
    assert _waiting(telemetry) == {}
    telemetry.recorded([_record("cache", "freeze")])
    _done(telemetry, {"cache": _state()})
    telemetry.follower()
    assert _waiting(telemetry) == {}
