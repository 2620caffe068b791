"""A rollout's state, as stored in its flag's metadata: the vocabulary shared by every module."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum


class Status(StrEnum):
    PROGRESSING = "progressing"  # climbing through its steps (or waiting to start: step -1)
    PAUSED = "paused"  # a human froze progression; guardrails still roll back
    STOPPED = "stopped"  # a human said stop: 0 % until resumed
    ROLLED_BACK = "rolled_back"  # a guardrail or checkpoint failed: 0 % until a new revision or resume
    COMPLETED = "completed"  # ramp finished, checkpoint passed (or none): stays, guardrails armed
    PROMOTED = "promoted"  # checkpoint passed with onPass: promote: 100 %, final


class Action(StrEnum):
    ADVANCE = "advance"
    HOLD = "hold"
    ROLLBACK = "rollback"
    PROMOTE = "promote"
    COMPLETE = "complete"
    ADJUST = "adjust"  # a new policy revision lowered the exposure
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    APPROVE = "approve"  # a human approved the move after a step with approval: required
    RECOVER = "recover"  # the flag file holds a change whose decision record was lost (a crash)
    ADOPT = "adopt"  # a policy takes a flag: an existing flag that was not flagroll's, or a hand-over
    REJECT = "reject"  # a policy naming this flag (or its owner's name) was rejected; nothing changes
    VERIFY = "verify"  # not a decision: the flag server was asked what it serves (core/serving.py)


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"
    ERROR = "error"


NOT_STARTED = -1
AWAITING_APPROVAL = "awaiting_approval"  # shown for a progressing rollout that waits for a human

# Statuses in which the controller queries Prometheus and may act (a guardrail failure rolls back).
ACTIVE = frozenset({Status.PROGRESSING, Status.PAUSED, Status.COMPLETED})


@dataclass(frozen=True, slots=True)
class RolloutState:
    policy: str
    revision: str
    status: Status
    step: int  # index into the policy's steps; NOT_STARTED before the first one
    steps: int  # how many steps the policy had when this was written (for display)
    percent: float  # share of users in the treatment arm
    control: bool  # whether an equal control arm is held out
    step_started_at: datetime | None  # when ``percent`` was written; the hold counts from here
    updated_at: datetime
    owner: str = ""
    review: date | None = None
    reason: str = ""  # why the status last changed (a human's reason for stop/pause)
    # When the first step's percentage was written: the start of the arms' exposure, from which the
    # errorRatio and latency guardrails count. None at 0 % and in states written before it existed.
    exposed_since: datetime | None = None
    rollback_on_delete: bool = False  # the policy said onDelete: rollback
    # Exposed while no valid policy judges it: why (the text of its records), since when, and when a
    # record last said so (a flag file change of flagroll's own marks only: never what it serves).
    unguarded_reason: str = ""
    unguarded_since: datetime | None = None
    unguarded_noticed_at: datetime | None = None
    # The owning policy is certainly gone: since when, and in how many cycles in a row (the grace
    # period before a hand-over or an onDelete rollback counts both).
    absent_since: datetime | None = None
    absent_cycles: int = 0
    # An approval gate (``approval: required`` on the current step): since when the rollout waits for
    # a human (its hold over, every check passing), and the step a human approved (an index, as
    # ``step``). Both are cleared by every move, a rollback, a stop, a restart and a new revision.
    awaiting_approval_since: datetime | None = None
    approved_step: int | None = None

    @property
    def control_percent(self) -> float:
        """The control arm mirrors treatment up to 50 %; a promoted flag has no control arm."""
        if not self.control or self.percent > 50:
            return 0.0
        return self.percent

    @property
    def counting_since(self) -> datetime | None:
        """Where the arms' cumulative counts start: the exposure start, else (a state written
        before flagroll recorded it) the current step's start; None when nobody is exposed."""
        if self.percent <= 0:
            return None
        return self.exposed_since or self.step_started_at

    @property
    def awaiting_approval(self) -> bool:
        """A progressing rollout whose next move waits for ``flagroll approve``."""
        return self.status is Status.PROGRESSING and self.awaiting_approval_since is not None

    @property
    def shown_status(self) -> str:
        """The status as people read it: ``awaiting_approval`` is a progressing rollout that waits
        for a human (stored as ``progressing``, so guardrails and every reader treat it as one)."""
        return AWAITING_APPROVAL if self.awaiting_approval else self.status.value

    @property
    def exposed(self) -> bool:
        """Users are served the treatment and a guardrail should be watching them. A promoted flag is
        final: its policy's work is done."""
        return self.percent > 0 and self.status is not Status.PROMOTED

    @property
    def unguarded(self) -> bool:
        """Marked as exposed while no valid policy judges it (see :mod:`controller.core.guarding`)."""
        return bool(self.unguarded_reason)

    def guarded_again(self) -> RolloutState:
        """The state once a policy judges it again: not unguarded, its policy not counted as gone."""
        return replace(
            self,
            unguarded_reason="",
            unguarded_since=None,
            unguarded_noticed_at=None,
            absent_since=None,
            absent_cycles=0,
        )

    def moved(self, **changes: object) -> RolloutState:
        return replace(self, **changes)  # type: ignore[arg-type]

    def is_stale(self, today: date) -> bool:
        """Past its review date and still partial: a pilot that nobody has decided on."""
        return self.review is not None and today > self.review and 0 < self.percent < 100
