"""Approval gates (``approval: required`` on a step): the next move after that step waits for a human.

After such a step's hold, with every check passing (and the checkpoint passed, after the last step),
the move that is due (an advance, a completion or a promotion) is not taken: the rollout waits,
**awaiting approval**, until ``flagroll approve FLAG --reason TEXT`` records an approval for that step
(:func:`controller.core.decision.approve`). The state stays ``progressing`` (so guardrails stay armed
and every reader treats it as a progressing rollout); ``awaiting_approval_since`` marks the wait, and
``approved_step`` the step a human approved. An approval is for its step only: every move, rollback,
stop, restart and new revision clears it. Pure: nothing here reads a clock or a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.core.alerts import ALERT
from controller.core.alerts import waiting_read as alerts_waiting_read
from controller.core.changewindows import Waiting
from controller.core.durations import format_duration
from controller.core.freezes import waiting_read as schedule_waiting_read
from controller.core.policy import Policy, pct
from controller.core.state import RolloutState

APPROVAL = "approval"  # the ``waiting`` reason (and the gauge's label) of a rollout awaiting approval


def required(policy: Policy, step: int) -> bool:
    """Whether the move after step ``step`` (an index) needs a human's approval."""
    steps = policy.spec.steps
    return 0 <= step < len(steps) and steps[step].needs_approval


def missing(policy: Policy, state: RolloutState) -> bool:
    """Whether the move after the current step needs an approval that has not been given."""
    return required(policy, state.step) and state.approved_step != state.step


def noted(policy: Policy, state: RolloutState, why: str) -> str:
    """``why`` of a move a human approved, saying so: the move's record then tells why it was taken
    even when the ``approve`` record was lost (a process that died between its write and its append)."""
    if not required(policy, state.step) or state.approved_step != state.step:
        return why
    return f"{why} (step {state.step + 1}/{len(policy.spec.steps)} approved by a human)"


def only_approved(planned: RolloutState | None, fresh: RolloutState | None) -> bool:
    """Whether ``fresh`` is ``planned`` but for a human's approval (``flagroll approve`` since the
    cycle read it): nothing a cycle asks about changed, so it may decide on ``fresh`` at once."""
    if planned is None or fresh is None:
        return False
    approved = fresh.moved(
        awaiting_approval_since=planned.awaiting_approval_since,
        approved_step=planned.approved_step,
        updated_at=planned.updated_at,
    )
    return approved == planned


def cleared(state: RolloutState) -> RolloutState:
    """``state`` without any wait or approval: what every move, rollback, stop or restart leaves."""
    if state.awaiting_approval_since is None and state.approved_step is None:
        return state
    return state.moved(awaiting_approval_since=None, approved_step=None)


def current(policy: Policy, state: RolloutState) -> RolloutState:
    """``state`` as the current policy sees it: a wait (or an approval) for a step whose ``approval``
    an edit removed, or for another step than the current one, no longer stands."""
    waiting = state.awaiting_approval_since is not None and not required(policy, state.step)
    stale = state.approved_step is not None and state.approved_step != state.step
    if not (waiting or stale):
        return state
    return state.moved(
        awaiting_approval_since=None if waiting else state.awaiting_approval_since,
        approved_step=None if stale else state.approved_step,
    )


def command(flag: str) -> str:
    return f"`flagroll approve {flag} --reason …`"


@dataclass(frozen=True, slots=True)
class ApprovalWaiting(Waiting):
    """A due move that waits for a human's approval of step ``step`` (an index), since ``since``."""

    flag: str = ""
    step: int = 0
    steps: int = 0
    percent: float = 0.0
    since: datetime | None = None
    began: bool = False  # the wait begins with this decision (the notification is sent once, then)

    @property
    def why(self) -> str:
        return f"awaiting approval of step {self.step + 1}/{self.steps} at {pct(self.percent)} %"

    def until(self, now: datetime) -> str:
        waited = ""
        if self.since is not None:
            waited = f" (waiting {format_duration(max(0, round((now - self.since).total_seconds())))})"
        return f"approve with {command(self.flag)}{waited}"

    def as_record(self, now: datetime) -> dict[str, Any]:
        return {
            "reason": APPROVAL,
            "step": self.step,
            "steps": self.steps,
            "percent": self.percent,
            "flag": self.flag,
            "since": _iso(self.since) if self.since is not None else None,
            "opens_at": None,
            "began": self.began,
            "text": self.describe(now),
        }


def awaiting(policy: Policy, state: RolloutState, since: datetime, *, began: bool = False) -> ApprovalWaiting:
    return ApprovalWaiting(
        reason=APPROVAL,
        timezone="UTC",
        opens_at=None,
        flag=policy.flag_key,
        step=state.step,
        steps=len(policy.spec.steps),
        percent=state.percent,
        since=since,
        began=began,
    )


def of_state(flag: str, state: RolloutState) -> ApprovalWaiting | None:
    """What a rollout's stored state says it awaits: an approval, or None."""
    if not state.awaiting_approval:
        return None
    return ApprovalWaiting(
        reason=APPROVAL,
        timezone="UTC",
        opens_at=None,
        flag=flag,
        step=state.step,
        steps=state.steps,
        percent=state.percent,
        since=state.awaiting_approval_since,
    )


def waiting_read(value: object) -> Waiting | None:
    """A record's ``waiting`` read back: an approval wait, firing alerts
    (:func:`controller.core.alerts.waiting_read`), else what the schedule or the Freeze documents
    held (:func:`controller.core.freezes.waiting_read`); None when absent or not one."""
    if isinstance(value, Mapping) and value.get("reason") == ALERT:
        return alerts_waiting_read(value)
    if not isinstance(value, Mapping) or value.get("reason") != APPROVAL:
        return schedule_waiting_read(value)
    step, steps, percent = value.get("step"), value.get("steps"), value.get("percent")
    if not (_whole(step) and _whole(steps) and isinstance(percent, int | float)):
        return None
    since = _instant(value.get("since"))
    return ApprovalWaiting(
        reason=APPROVAL,
        timezone="UTC",
        opens_at=None,
        flag=str(value.get("flag") or "FLAG"),
        step=int(step),  # type: ignore[arg-type]
        steps=int(steps),  # type: ignore[arg-type]
        percent=float(percent),
        since=since,
    )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.utcoffset() is not None else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
