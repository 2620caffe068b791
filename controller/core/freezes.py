"""Which ``kind: Freeze`` documents cover a rollout at a moment, and why a due move waits for them.

A freeze covers a rollout when its selector matches the policy's ``metadata.labels`` (every pair of
``matchLabels`` held with an equal value; no selector: every rollout) and ``now`` lies in
``[from, to)`` (no ``to``: until the document is removed). A Freeze document that does not validate
is **fail-safe**: it covers every rollout from now until it is fixed or removed, as flagroll cannot
tell what it was meant to cover, and says so in every hold (:func:`invalid`).

The gate the decision asks (:func:`gate`) joins the freezes with the policy's own ``spec.schedule``:
a wait for a freeze runs until the first instant at which no covering freeze is in force and the
schedule is open. Pure: the only time read is the ``now`` passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.core.changewindows import (
    FREEZE,
    LAST_SEARCHED,
    Waiting,
    next_opening,
    waiting,
    waiting_from_record,
)
from controller.core.freezedoc import FreezeDocument
from controller.core.policy import Policy


@dataclass(frozen=True, slots=True)
class StandingFreeze:
    """A Freeze document as the gate sees it: ``labels`` to match (None: every rollout), the instants
    it runs between (``ends`` None: until removed), and where it is written. ``problem``: why the
    document does not validate (it then covers everything, always)."""

    name: str
    reason: str
    begins: datetime | None
    ends: datetime | None
    labels: Mapping[str, str] | None = field(default=None, hash=False)
    where: str = ""
    problem: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None

    def selects(self, policy: Policy) -> bool:
        """Whether the freeze is for this policy's rollout, whenever it is in force."""
        if self.labels is None:
            return True
        have = policy.metadata.labels or {}
        return all(have.get(key) == value for key, value in self.labels.items())

    def in_force(self, now: datetime) -> bool:
        return (self.begins is None or self.begins <= now) and (self.ends is None or now < self.ends)

    def as_record(self) -> dict[str, Any]:
        """As the decision record, ``flagroll status --json`` and ``waiting`` show it."""
        return {
            "name": self.name,
            "reason": self.reason,
            "from": _iso(self.begins) if self.begins is not None else None,
            "to": _iso(self.ends) if self.ends is not None else None,
            "where": self.where,
            "valid": self.valid,
            "selector": {"matchLabels": dict(self.labels)} if self.labels is not None else None,
        }

    def describe(self) -> str:
        """``Freeze holiday-freeze (holiday freeze), until 2027-01-03 00:00 UTC``."""
        if self.problem is not None:
            return (
                f"Freeze {self.name} at {self.where} does not validate ({self.problem}): it holds every "
                "rollout until it is fixed or removed"
            )
        why = f" ({self.reason})" if self.reason else ""
        until = f"until {self.ends:%Y-%m-%d %H:%M} UTC" if self.ends is not None else "until removed"
        return f"Freeze {self.name}{why}, {until}"


def standing(document: FreezeDocument, where: str = "") -> StandingFreeze:
    selector = document.spec.selector
    return StandingFreeze(
        name=document.name,
        reason=document.spec.reason,
        begins=document.begins_at,
        ends=document.ends_at,
        labels=dict(selector.match_labels) if selector is not None else None,
        where=where,
    )


def invalid(where: str, problem: str, name: str | None = None) -> StandingFreeze:
    """A Freeze document that does not validate (or a file that cannot be read through and names
    the kind): it covers every rollout, from always to until fixed."""
    return StandingFreeze(
        name=name or "(unnamed)",
        reason=f"invalid Freeze document: {problem}",
        begins=None,
        ends=None,
        labels=None,
        where=where,
        problem=problem,
    )


def selecting(policy: Policy, freezes: Iterable[StandingFreeze]) -> tuple[StandingFreeze, ...]:
    """The freezes for this policy's rollout, in force or not (a function of the labels only)."""
    return tuple(f for f in freezes if f.selects(policy))


def covering(policy: Policy, freezes: Iterable[StandingFreeze], now: datetime) -> tuple[StandingFreeze, ...]:
    """The freezes that stop this policy's advances at ``now``."""
    return tuple(f for f in freezes if f.selects(policy) and f.in_force(now))


def active(freezes: Iterable[StandingFreeze], now: datetime) -> list[StandingFreeze]:
    """The freezes in force at ``now``, whatever they cover, invalid ones first."""
    return sorted((f for f in freezes if f.in_force(now)), key=lambda f: (f.valid, f.name, f.where))


@dataclass(frozen=True, slots=True)
class FreezeWaiting(Waiting):
    """A due move held by Freeze documents: ``documents`` name them; ``opens_at`` is when none covers
    it and the schedule is open (None: a freeze without an end, or an invalid one)."""

    documents: tuple[StandingFreeze, ...] = ()

    @property
    def why(self) -> str:
        return "frozen by " + "; ".join(f.describe() for f in self.documents)

    def until(self, now: datetime) -> str:
        if self.opens_at is None:
            endless = [f for f in self.documents if f.ends is None] or list(self.documents)
            names = " and ".join(f"Freeze {f.name}" for f in endless)
            fixed = " or fixed" if any(not f.valid for f in endless) else ""
            verb = "is" if len(endless) == 1 else "are"
            return f"wait until {names} {verb} removed{fixed}, then it advances at the next evaluation"
        return Waiting.until(self, now)

    def as_record(self, now: datetime) -> dict[str, Any]:
        record = Waiting.as_record(self, now)
        record["documents"] = [f.as_record() for f in self.documents]
        record["until_removed"] = self.opens_at is None
        return record


def gate(
    policy: Policy, freezes: Sequence[StandingFreeze], now: datetime, horizon: int = 64
) -> Waiting | None:
    """Why a due move that raises exposure cannot happen at ``now``: the Freeze documents covering
    it, else the policy's schedule (:func:`controller.core.changewindows.waiting`); None when it can."""
    held = covering(policy, freezes, now)
    if not held:
        return waiting(policy.spec.schedule, now)
    schedule = policy.spec.schedule
    opens: datetime | None = now
    thawed: datetime | None = None  # the last end of a freeze passed
    for _ in range(horizon):  # each turn passes a freeze's end or a schedule opening
        if opens is None:
            break
        if opens.date() > LAST_SEARCHED:  # frozen to the end of the calendar: no opening to name
            opens = None
            break
        blocking = covering(policy, freezes, opens)
        if blocking:
            ends = [f.ends for f in blocking]
            opens = thawed = None if None in ends else max(e for e in ends if e is not None)
            continue
        scheduled = next_opening(schedule, opens)
        if scheduled == opens:
            break
        opens = scheduled
    else:
        opens = None
    return FreezeWaiting(
        reason=FREEZE,
        timezone=(schedule.timezone if schedule is not None else None) or "UTC",
        opens_at=opens,
        windows=opens is not None and opens != thawed,  # it waits for a window, or for the thaw
        documents=held,
    )


def waiting_read(value: object) -> Waiting | None:
    """A record's ``waiting`` read back, with the Freeze documents it names; None when absent or
    not one (see :func:`controller.core.changewindows.waiting_from_record`)."""
    waits = waiting_from_record(value)
    if waits is None or not isinstance(value, Mapping) or not isinstance(value.get("documents"), list):
        return waits
    documents = tuple(d for d in (_from_record(item) for item in value["documents"]) if d is not None)
    if not documents:
        return waits
    return FreezeWaiting(
        reason=waits.reason,
        timezone=waits.timezone,
        opens_at=waits.opens_at,
        windows=waits.windows,
        documents=documents,
    )


def _from_record(item: object) -> StandingFreeze | None:
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        return None
    try:
        begins = _instant(item.get("from"))
        ends = _instant(item.get("to"))
    except ValueError:
        return None
    valid = item.get("valid") is not False
    reason = str(item.get("reason") or "")
    selector = item.get("selector")
    labels = selector.get("matchLabels") if isinstance(selector, Mapping) else None
    return StandingFreeze(
        name=str(item["name"]),
        reason=reason,
        begins=begins,
        ends=ends,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else None,
        where=str(item.get("where") or ""),
        problem=None if valid else reason.removeprefix("invalid Freeze document: "),
    )


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.utcoffset() is None:
        raise ValueError("no offset")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
