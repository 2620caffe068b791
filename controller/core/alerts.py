"""Prometheus alerts as a signal (``spec.alerts``): while an alert matching a selector fires, the
rollout holds, or rolls back.

Each cycle asks for the firing ``ALERTS`` series of every selector
(:func:`controller.core.queries.alerts_query`: one query for all the rollouts sharing a selector).
Each alert of a policy is one check of kind ``alert``: ``pass`` when none fires, ``fail`` when some
do (the check names them), ``error`` when the query could not be answered (it then follows
``onError``, as any check's error does). A firing alert with ``onFiring: rollback`` is a failing
check like a guardrail's and rolls an exposed rollout back; one with ``onFiring: hold`` holds instead
(:func:`holding`), a hold whose ``waiting`` (reason ``alert``) names the firing alerts. Pure: nothing
here reads a clock or asks anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.core.changewindows import Waiting
from controller.core.checkrecord import Check
from controller.core.policy import Policy
from controller.core.printable import printable
from controller.core.queries import (
    Arm,
    PlannedQuery,
    QueryKey,
    Reading,
    ReadingKind,
    Source,
)
from controller.core.readings import PolicyReadings, Readings
from controller.core.state import Outcome

ALERT = "alert"  # the ``waiting`` reason (and the gauge's label) of a rollout held by firing alerts
SHOWN_FIRING = 20  # firing alerts a record names per check; the rest are counted
MAX_NAME = 300  # characters of one firing alert's name in a record (see series_name)
_MAX_VALUE = 120  # characters of one label value in it


def alert_checks(policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> list[Check]:
    """One check per alert of the policy: pass (none firing), fail (firing, named) or error."""
    evidence = PolicyReadings(policy, queries, readings)
    checks = []
    for alert in policy.spec.alerts or ():
        key = QueryKey(Source.ALERT, alert.name, Arm.TREATMENT)
        reading = evidence.reading(key)
        verdict, detail = _judged(reading)
        firing = reading.series if verdict is Outcome.FAIL else ()
        checks.append(
            Check(
                name=alert.name,
                kind=Source.ALERT,
                rule=alert.on_firing,
                limit=0.0,
                arm=Arm.TREATMENT,
                query=evidence.query(key),
                value=reading.value if verdict is not Outcome.ERROR else None,
                bound=0.0,
                samples=None,
                verdict=verdict,
                detail=detail,
                firing=firing[:SHOWN_FIRING],
            )
        )
    return checks


def _judged(reading: Reading) -> tuple[Outcome, str]:
    if reading.kind is ReadingKind.ERROR:
        return Outcome.ERROR, reading.detail
    if reading.kind is not ReadingKind.VALUE or reading.value is None:
        # Prometheus answers an empty list when nothing fires: "no data" is an answer not understood.
        return Outcome.ERROR, f"not a list of alerts: {reading.detail or 'no answer'}"
    if reading.value > 0:
        shown = len(reading.series[:SHOWN_FIRING])
        more = f" (named: {shown})" if reading.value > shown else ""
        return Outcome.FAIL, f"{reading.value:g} firing{more}"
    return Outcome.PASS, ""


def holding(checks: Sequence[Check]) -> list[Check]:
    """The firing alerts that hold (``onFiring: hold``) rather than roll back."""
    return [c for c in checks if c.kind is Source.ALERT and c.verdict is Outcome.FAIL and c.rule == "hold"]


@dataclass(frozen=True, slots=True)
class AlertWaiting(Waiting):
    """Moves held while alerts fire: ``alerts`` are (name in the policy, the alerts firing)."""

    alerts: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def why(self) -> str:
        said = "; ".join(f"{name} ({', '.join(firing) or 'firing'})" for name, firing in self.alerts)
        return f"alert firing: {said}"

    def until(self, now: datetime) -> str:
        return "wait until it stops firing (onFiring: hold)"

    def as_record(self, now: datetime) -> dict[str, Any]:
        return {
            "reason": ALERT,
            "alerts": [{"name": name, "firing": list(firing)} for name, firing in self.alerts],
            "opens_at": None,
            "text": self.describe(now),
        }


def waiting(held: Sequence[Check]) -> AlertWaiting:
    return AlertWaiting(
        reason=ALERT, timezone="UTC", opens_at=None, alerts=tuple((c.name, c.firing) for c in held)
    )


def waiting_read(value: object) -> AlertWaiting | None:
    """A record's ``waiting`` read back when it is an alert's; None otherwise."""
    if not isinstance(value, Mapping) or value.get("reason") != ALERT:
        return None
    found = value.get("alerts")
    alerts = []
    for item in found if isinstance(found, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            firing = item.get("firing")
            names = tuple(str(f) for f in firing) if isinstance(firing, list) else ()
            alerts.append((item["name"], names))
    return AlertWaiting(reason=ALERT, timezone="UTC", opens_at=None, alerts=tuple(alerts))


def series_name(labels: Mapping[str, str]) -> str:
    """A firing alert as records name it: ``alertname{label="value", …}`` without ``alertstate``.
    Labels come from the metrics an alerting rule reads (a request path, a user agent), so values
    are quoted the PromQL way (a quote cannot forge another label), nothing a terminal would act on
    is kept as is (control and format characters are written ``\\xNN``/``\\uNNNN``), and a long
    value is cut: a name is at most :data:`MAX_NAME` characters."""
    inner = ", ".join(
        f'{printable(k)}="{_value(v)}"'
        for k, v in sorted(labels.items())
        if k not in {"__name__", "alertname", "alertstate"}
    )
    name = f"{printable(labels.get('alertname', ''))}{{{inner}}}"
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 2] + "…}"


def _value(value: str) -> str:
    cut = value[:_MAX_VALUE]
    quoted = printable(cut.replace("\\", "\\\\").replace('"', '\\"'))
    return quoted + ("…" if len(value) > _MAX_VALUE else "")
