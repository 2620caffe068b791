"""``flagroll backtest --decision-log``: a real past rollout's exposure, from its decision records. Pure.

With a decision log, the replay does not simulate the rollout: the flag's recorded history says
what was exposed when (its percentage, its status, when the exposure began), and the replayed
policy judges that exposure at each evaluation time through the controller's own
:func:`~controller.core.decision.decide`. What the replay can say is when this policy would have
rolled back the rollout that really happened, set against when (and whether) it was rolled back:
its advances are not taken (the recorded exposure is what the readings measured).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from controller.core.decision import initial_state
from controller.core.durations import format_duration
from controller.core.policy import Policy
from controller.core.state import NOT_STARTED, Action, RolloutState, Status

# What a record may say of the exposure: the actions that do not move it are left out (a hold's
# percentage is the one before it; a verification is not a decision).
_NOT_MOVES = frozenset({Action.HOLD.value, Action.VERIFY.value, Action.REJECT.value})
# A rollout taken down: by its guardrails or by a human.
TAKEN_DOWN = frozenset({Action.ROLLBACK, Action.STOP})


@dataclass(frozen=True, slots=True)
class RecordedMove:
    """One recorded decision that moved the flag or its status."""

    at: datetime
    action: Action
    from_percent: float
    to_percent: float
    status: Status
    reason: str
    actor: str | None
    exposed_since: datetime | None  # when the recorded exposure began (None at 0 %)


def _move(record: Mapping[str, Any]) -> tuple[datetime, Action, float, float, Status, str, str | None] | None:
    """The fields of a record that moves the exposure, or None (a hold, a verification, a record
    without what is needed)."""
    try:
        at = datetime.fromisoformat(str(record["time"]))
        action = Action(record["action"])
        status = Status(record["status"])
        to_percent = float(record["to_percent"])
        from_percent = float(record.get("from_percent") or 0.0)
    except (KeyError, ValueError, TypeError):
        return None
    if action.value in _NOT_MOVES or at.tzinfo is None:
        return None
    actor = record.get("actor")
    return (
        at,
        action,
        from_percent,
        to_percent,
        status,
        str(record.get("reason") or ""),
        (actor if isinstance(actor, str) else None),
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    """A flag's recorded exposure over time (every move up to the window's end, those before it
    included: they say what was exposed when the window opens)."""

    flag: str
    moves: tuple[RecordedMove, ...]

    @staticmethod
    def of(flag: str, records: Iterable[Mapping[str, Any]]) -> Recorded:
        found = sorted(
            (m for r in records if r.get("flag") == flag for m in [_move(r)] if m is not None),
            key=lambda m: m[0],
        )
        moves: list[RecordedMove] = []
        since: datetime | None = None
        for at, action, from_percent, to_percent, status, reason, actor in found:
            if to_percent <= 0:
                since = None
            elif since is None:
                since = at
            moves.append(RecordedMove(at, action, from_percent, to_percent, status, reason, actor, since))
        return Recorded(flag, tuple(moves))

    def last_before(self, at: datetime) -> RecordedMove | None:
        """The newest move at or before ``at``."""
        index = bisect.bisect_right([m.at for m in self.moves], at)
        return self.moves[index - 1] if index else None

    def within(self, start: datetime, end: datetime) -> list[RecordedMove]:
        return [m for m in self.moves if start <= m.at <= end]

    def percent_at(self, at: datetime) -> float:
        last = self.last_before(at)
        return last.to_percent if last is not None else 0.0

    def state_at(self, policy: Policy, at: datetime) -> RolloutState:
        """The rollout as recorded at ``at``, in ``policy``'s terms: its percentage, status and
        exposure start, at the policy's last step not above that percentage (so that its holds and
        checkpoint mean what they would have meant)."""
        base = initial_state(policy, at)
        last = self.last_before(at)
        if last is None or last.to_percent <= 0:
            status = last.status if last is not None else Status.PROGRESSING
            return replace(base, status=status)
        percents = [policy.step_percent(i) for i in range(len(policy.spec.steps))]
        step = max((i for i, p in enumerate(percents) if p <= last.to_percent), default=NOT_STARTED)
        return replace(
            base,
            status=last.status,
            step=step,
            percent=last.to_percent,
            step_started_at=last.at,
            exposed_since=last.exposed_since,
        )


def taken_down(moves: Sequence[RecordedMove]) -> RecordedMove | None:
    """The first recorded rollback or stop among ``moves``."""
    return next((m for m in moves if m.action in TAKEN_DOWN), None)


def _time(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def verdict(would: datetime | None, recorded: RecordedMove | None) -> str:
    """The replay's first would-be rollback set against what happened, with both times."""
    if recorded is None:
        if would is None:
            return "neither this policy nor the recorded rollout rolled back in the window"
        return (
            f"this policy would have rolled back at {_time(would)}; the recorded rollout was not taken down"
        )
    what = "rolled back" if recorded.action is Action.ROLLBACK else "stopped"
    who = f" by {recorded.actor}" if recorded.actor else ""
    happened = f"the rollout was {what}{who} at {_time(recorded.at)}"
    if would is None:
        return (
            f"this policy would not have rolled back before {happened} "
            "(it judges the recorded exposure, which ended there)"
        )
    seconds = (recorded.at - would).total_seconds()
    if seconds == 0:
        return f"this policy would have rolled back at the same time: {happened}"
    sooner = "earlier" if seconds > 0 else "later"
    return (
        f"this policy would have rolled back {format_duration(abs(seconds))} {sooner} than what "
        f"happened: this policy at {_time(would)}; {happened}"
    )
