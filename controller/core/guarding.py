"""What happens to a managed flag that no policy judges this cycle, and to a flag a policy takes.

:func:`controller.core.ownership.assign` says which flags nobody judges and why; here, pure functions of
the flag's state and ``now`` say what to write and record:

- **Unguarded is loud.** A flag that serves the treatment to someone while no valid policy judges it is
  marked unguarded in its metadata (why, and since when), and a ``hold`` record says so when the
  reason changes and again every :data:`NOTICE_REPEAT_SECONDS` (a reminder, which notifications skip).
- **Grace before acting on a missing policy.** When the owner is certainly gone (``ABSENT``), the flag
  counts the cycles and the time it has been gone. Once both reach the :class:`Grace` period, the one
  policy that names the flag takes it over (``adopt``), or, with none, a flag whose policy said
  ``onDelete: rollback`` rolls back. A policy file that is moved, or broken for a cycle, is back long
  before. While the owner may still be in a file that failed (``BLOCKED``), nothing is counted.
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
class Noticed:
    """The last unguarded record of a flag: what it said, and when."""

    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Move:
    """What to do with a flag no policy judges: the decision (written when it changes the state) and
    whether to record it (an unchanged unguarded flag is recorded only when a notice is due)."""

    decision: Decision
    record: bool = True


def unjudged(
    state: RolloutState,
    why: Why,
    reason: str,
    now: datetime,
    grace: Grace,
    successor: str | None = None,
    noticed: Noticed | None = None,
) -> Move | None:
    """What to do with a managed flag that no policy judges this cycle; None: nothing. ``successor``
    names the one policy waiting to take an ABSENT flag over; ``noticed`` is the flag's last
    unguarded record, if any.

    Only an ABSENT flag's state changes (the grace period is counted in its metadata): a policy file
    that failed never changes a flag, so a BLOCKED one is only recorded."""
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
    if not state.exposed:
        return Move(Decision(Action.HOLD, state, marked, reason), record=False) if marked != state else None
    text = unguarded_reason(state, reason)
    due = _due(noticed, text, now)
    if marked == state and not due:
        return None
    return Move(Decision(Action.HOLD, state, marked, text), record=due)


def unguarded_reason(state: RolloutState, reason: str) -> str:
    return (
        f"UNGUARDED: {state.percent:g} % exposed and guardrails NOT evaluated, because no policy judges "
        f"this flag: {reason}"
    )


def _due(noticed: Noticed | None, text: str, now: datetime) -> bool:
    """A new unguarded record is due: the reason changed, or the last record is old."""
    return (
        noticed is None
        or noticed.reason != text
        or (now - noticed.at).total_seconds() >= NOTICE_REPEAT_SECONDS
    )


def is_reminder(decision: Decision, noticed: Noticed | None) -> bool:
    """An unguarded record that repeats what the last one said (notifications skip it)."""
    return noticed is not None and noticed.reason == decision.reason


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


def adopted(policy: Policy, served: str, changes_exposure: bool, now: datetime) -> Decision:
    """A policy takes an existing flag that was not flagroll's. ``served``: what the flag served (for
    the record); ``changes_exposure``: whether serving the policy's 'off' value to everyone changes
    what some users get (an opt-in with ``flag.adopt: replace``)."""
    change = (
        "it now serves the policy's 'off' value to everyone: users who were served anything else are "
        "switched to 'off'"
        if changes_exposure
        else "nobody's exposure changes"
    )
    reason = (
        f"adopted flag {policy.flag_key!r} for policy {policy.name!r}: it served {served}; {change}; the "
        "ramp starts at the next cycle"
    )
    return Decision(Action.ADOPT, None, initial_state(policy, now), reason)
