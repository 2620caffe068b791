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


_Fields = tuple[datetime, Action, float, float, Status, str, str | None]


def _move(record: Mapping[str, Any]) -> _Fields | None:
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

    dry_runs: int = 0  # moves of a dry run passed over: they exposed nobody
    times: tuple[datetime, ...] = ()  # each move's time, for the look-ups of every evaluation

    @staticmethod
    def of(flag: str, records: Iterable[Mapping[str, Any]]) -> Recorded:
        return recorded_flags([flag], records)[flag]

    @staticmethod
    def _built(flag: str, found: list[_Fields], dry_runs: int) -> Recorded:
        found.sort(key=lambda m: m[0])  # stable: records of one time keep the log's order
        moves: list[RecordedMove] = []
        since: datetime | None = None
        for at, action, from_percent, to_percent, status, reason, actor in found:
            if to_percent <= 0:
                since = None
            elif since is None:
                since = at
            moves.append(RecordedMove(at, action, from_percent, to_percent, status, reason, actor, since))
        return Recorded(flag, tuple(moves), dry_runs, tuple(m.at for m in moves))

    def last_before(self, at: datetime, *, inclusive: bool = True) -> RecordedMove | None:
        """The newest move at or before ``at`` (strictly before it, not ``inclusive``)."""
        index = (bisect.bisect_right if inclusive else bisect.bisect_left)(self.times, at)
        return self.moves[index - 1] if index else None

    def within(self, start: datetime, end: datetime) -> list[RecordedMove]:
        return [m for m in self.moves if start <= m.at <= end]

    def percent_at(self, at: datetime) -> float:
        last = self.last_before(at)
        return last.to_percent if last is not None else 0.0

    def state_at(self, policy: Policy, at: datetime) -> RolloutState:
        """The rollout an evaluation at ``at`` judges, in ``policy``'s terms: its percentage, status
        and exposure start, at the policy's last step not above that percentage (so that its holds
        and checkpoint mean what they would have meant). A record is stamped with its cycle's time
        and says what that cycle decided: the evaluation at that very time judged the exposure
        before it, so the moves counted are those strictly before ``at``."""
        base = initial_state(policy, at)
        last = self.last_before(at, inclusive=False)
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


def recorded_flags(flags: Iterable[str], records: Iterable[Mapping[str, Any]]) -> dict[str, Recorded]:
    """Each of ``flags``' recorded exposure, in one pass over ``records``: only the moves are kept
    (a long log is mostly holds and verifications), so a log of any size costs the memory of its
    moves."""
    found: dict[str, list[_Fields]] = {flag: [] for flag in flags}
    dry_runs = dict.fromkeys(found, 0)
    for record in records:
        flag = record.get("flag")
        if not isinstance(flag, str) or flag not in found:
            continue
        move = _move(record)
        if move is None:
            continue
        if record.get("dry_run") is True:  # ``flagroll run --dry-run`` writes no flag: nobody was exposed
            dry_runs[flag] += 1
        else:
            found[flag].append(move)
    return {flag: Recorded._built(flag, moves, dry_runs[flag]) for flag, moves in found.items()}


def taken_down(moves: Sequence[RecordedMove], would: datetime | None = None) -> RecordedMove | None:
    """The recorded rollback or stop that a would-be rollback at ``would`` is set against: the first
    among ``moves`` at or after it (an earlier one took down an earlier exposure, which this policy
    let run); without a would-be rollback, the first."""
    return next((m for m in moves if m.action in TAKEN_DOWN and (would is None or m.at >= would)), None)


def _happened(recorded: RecordedMove) -> str:
    what = "rolled back" if recorded.action is Action.ROLLBACK else "stopped"
    who = f" by {recorded.actor}" if recorded.actor else ""
    return f"the rollout was {what}{who} at {_time(recorded.at)}"


def judged(would: datetime | None, moves: Sequence[RecordedMove]) -> str:
    """The verdict over the window's recorded ``moves``, which may take the rollout down and expose
    it again (resumed, or restarted by a new revision): a would-be rollback is set against the
    takedown of the exposure it would have ended, and an earlier takedown is said to be one this
    policy would not have made."""
    downs = [m for m in moves if m.action in TAKEN_DOWN]
    before = [m for m in downs if would is None or m.at < would]
    if not before:
        return verdict(would, taken_down(moves, would))
    again = next((m for m in moves if m.at > before[-1].at and m.to_percent > 0), None)
    if again is None:  # nobody was exposed after it: the would-be rollback can only be None
        return verdict(would, before[0])
    more = f" (and {len(before) - 1} earlier takedowns)" if len(before) > 1 else ""
    head = (
        f"this policy would not have rolled back before {_happened(before[-1])}{more}; "
        f"the rollout was exposed again from {_time(again.at)}"
    )
    if would is None:
        return f"{head}, and this policy would not have rolled that exposure back in the window either"
    return f"{head}, and then: {verdict(would, taken_down(moves, would))}"


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
    happened = _happened(recorded)
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
