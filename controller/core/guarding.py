"""What happens to a managed flag that no policy judges this cycle, and to a flag a policy takes.

:func:`controller.core.ownership.assign` says which flags nobody judges and why; here, pure functions of
the flag's state and ``now`` say what to write and record:

- **Unguarded is loud.** A flag that serves the treatment to someone while no valid policy judges it is
  marked unguarded in its metadata (why, since when, when last recorded: flagroll's own marks, never
  what the flag serves), and a ``hold`` record says so when the reason changes and again every
  :data:`NOTICE_REPEAT_SECONDS` (a reminder, which notifications skip). The marks live with the flag,
  so a restart, a second replica or a CronJob's next run does not tell the same spell twice.
- **Grace before acting on a missing policy.** When the owner is certainly gone (``ABSENT``), the flag
  counts the cycles and the time it has been gone. Once both reach the :class:`Grace` period, the one
  policy that names the flag takes it over (``adopt``), or, with none, a flag whose policy said
  ``onDelete: rollback`` rolls back. A policy file that is moved, or broken for a cycle, is back long
  before. While the owner may still be in a file that failed (``BLOCKED``), the count starts again:
  it counts absences in a row. A flag edited by hand is reported and never counted or moved.
- **Adoption.** A policy takes a flag that was not flagroll's with an ``adopt`` record saying what the
  flag served and whose exposure changes; the ramp starts at the next cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from controller.core.decision import Decision, deleted, initial_state
from controller.core.durations import format_duration
from controller.core.ownership import Why
from controller.core.policy import Policy
from controller.core.state import Action, RolloutState

NOTICE_REPEAT_SECONDS = 600.0  # an unguarded flag is recorded again at least this often


@dataclass(frozen=True, slots=True)
class Grace:
    """How long a policy must be gone before its flag is handed over or rolled back: this many cycles
    in a row and this long, whichever ends later."""

    cycles: int = 3
    seconds: float = 120.0

    def over(self, state: RolloutState, now: datetime) -> bool:
        if state.absent_since is None:
            return False
        return (
            state.absent_cycles >= self.cycles and (now - state.absent_since).total_seconds() >= self.seconds
        )

    def describe(self) -> str:
        return f"{self.cycles} cycles and {format_duration(self.seconds)}"


DEFAULT_GRACE = Grace()


@dataclass(frozen=True, slots=True)
class Move:
    """What to do with a flag no policy judges: the decision (written when it changes the state; a
    HOLD changes only flagroll's marks in the flag's metadata, never what it serves) and whether to
    record it (an unguarded flag is recorded when that changes and as a reminder)."""

    decision: Decision
    record: bool = True

    @property
    def marks_only(self) -> bool:
        return self.decision.action is Action.HOLD

    @property
    def reminder(self) -> bool:
        """A record repeating what the last one said (notifications skip it)."""
        before = self.decision.before
        return before is not None and before.unguarded_reason == self.decision.after.unguarded_reason != ""


def unjudged(
    state: RolloutState,
    why: Why,
    reason: str,
    now: datetime,
    grace: Grace,
    successor: str | None = None,
    *,
    edited: str | None = None,
) -> Move | None:
    """What to do with a managed flag that no policy judges this cycle; None: nothing. ``successor``
    names the one policy waiting to take an ABSENT flag over; ``edited``: why the flag's targeting
    does not serve what its state records (edited by hand): then nothing is counted or moved.

    While the owner may still be in a file that failed (BLOCKED), the count of a missing policy starts
    again: the grace period counts absences in a row."""
    if edited is not None:
        why, reason = Why.BLOCKED, f"{reason}; and {edited}"
    marked = state
    if why is Why.ABSENT:
        pending = successor is not None or (state.rollback_on_delete and state.exposed)
        if pending or state.exposed:
            marked = state.moved(
                absent_since=state.absent_since or now,
                absent_cycles=min(state.absent_cycles + 1, grace.cycles),
            )
        if grace.over(marked, now):
            if successor is not None:
                return Move(handover(marked, successor, now, _gone(marked, grace)))
            gone = deleted(marked, now)
            if gone is not None:
                why_text = f"{gone.reason}: {reason}; gone for {_gone(marked, grace)}"
                return Move(Decision(Action.ROLLBACK, state, gone.after.guarded_again(), why_text))
        if pending:
            reason = f"{reason}; {_pending(marked, grace, successor)}"
    else:
        marked = state.moved(absent_since=None, absent_cycles=0)
    if state.exposed or edited is not None:
        served = "exposed as edited by hand" if edited is not None else f"{state.percent:g} % exposed"
        text = unguarded_reason(state, reason, served)
        if state.unguarded_reason != text or _due(state, now):
            marked = marked.moved(
                unguarded_reason=text,
                unguarded_since=state.unguarded_since or now,
                unguarded_noticed_at=now,
            )
            return Move(Decision(Action.HOLD, state, marked, text))
    elif state.unguarded:
        marked = marked.moved(unguarded_reason="", unguarded_since=None, unguarded_noticed_at=None)
    if marked == state:
        return None
    return Move(Decision(Action.HOLD, state, marked, marked.unguarded_reason or reason), record=False)


def unguarded_reason(state: RolloutState, reason: str, served: str | None = None) -> str:
    shown = served if served is not None else f"{state.percent:g} % exposed"
    return f"UNGUARDED: {shown} and guardrails NOT evaluated, because no policy judges this flag: {reason}"


def _due(state: RolloutState, now: datetime) -> bool:
    """A reminder is due: the last unguarded record is old."""
    noticed = state.unguarded_noticed_at
    return noticed is None or (now - noticed).total_seconds() >= NOTICE_REPEAT_SECONDS


def _gone(state: RolloutState, grace: Grace) -> str:
    since = state.absent_since.isoformat() if state.absent_since is not None else "?"
    return f"{state.absent_cycles} cycles since {since} (grace {grace.describe()})"


def _pending(state: RolloutState, grace: Grace, successor: str | None) -> str:
    what = f"policy {successor!r} takes it over" if successor is not None else "it is rolled back (onDelete)"
    since = state.absent_since.isoformat() if state.absent_since is not None else "now"
    return (
        f"{what} once its policy has been gone for {grace.describe()} (gone since {since}) unless it returns"
    )


def handover(state: RolloutState, policy: str, now: datetime, why: str, *, by: str = "") -> Decision:
    """Flag ``state`` changes owner to ``policy``, which judges it from the next cycle (continuing from
    its step under the new policy's revision). ``by``: the human who handed it over, if one did."""
    after = state.guarded_again().moved(policy=policy, updated_at=now)
    who = f"by {by}" if by else f"after its policy {state.policy!r} was gone for {why}"
    reason = (
        f"handed over from policy {state.policy!r} to policy {policy!r} {who}; {policy!r} judges it from "
        f"the next cycle, at {state.percent:g} %"
    )
    return Decision(Action.ADOPT, state, after, reason)


def adopted(policy: Policy, served: str, change: str, now: datetime) -> Decision:
    """A policy takes an existing flag that was not flagroll's. ``served``: what the flag served;
    ``change``: what adopting it changes for its users (see
    :func:`controller.core.ownership.exposure_change`). Both go in the record."""
    reason = (
        f"adopted flag {policy.flag_key!r} for policy {policy.name!r}: it served {served}; {change}; the "
        "ramp starts at the next cycle"
    )
    return Decision(Action.ADOPT, None, initial_state(policy, now), reason)
