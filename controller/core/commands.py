"""Human commands on a rollout's state: ``stop``, ``pause``, ``resume`` and ``approve``, each a pure
function of the state, the reason and ``now`` returning the :class:`~controller.core.decision.Decision`
to commit (the command line's ``flagroll stop|pause|resume|approve``). Nothing here reads a clock or a
file."""

from __future__ import annotations

from datetime import datetime

from controller.core import approval
from controller.core.decision import Decision
from controller.core.errors import NotAwaitingApprovalError, UsageError
from controller.core.policy import pct
from controller.core.state import NOT_STARTED, Action, RolloutState, Status


def stop(state: RolloutState, reason: str, now: datetime) -> Decision:
    if not reason.strip():
        raise UsageError("stop needs --reason: say why, for the people reading the log")
    after = approval.cleared(state).moved(
        status=Status.STOPPED,
        step=NOT_STARTED,
        percent=0.0,
        step_started_at=now,
        updated_at=now,
        reason=reason,
        exposed_since=None,
    )
    return Decision(Action.STOP, state, after, f"stopped by a human: {reason}")


def pause(state: RolloutState, reason: str, now: datetime) -> Decision:
    if state.status is not Status.PROGRESSING:
        raise UsageError(f"cannot pause a rollout that is {state.status.value}; only a progressing one")
    after = state.moved(status=Status.PAUSED, updated_at=now, reason=reason)
    why = f": {reason}" if reason else ""
    return Decision(Action.PAUSE, state, after, f"paused by a human{why}")


def resume(state: RolloutState, reason: str, now: datetime) -> Decision:
    """Paused: continue at the current step, its hold restarting. Stopped or rolled back: start the
    ramp again from the first step at the next cycle."""
    why = f": {reason}" if reason else ""
    if state.status is Status.PAUSED:
        after = state.moved(
            status=Status.PROGRESSING,
            step_started_at=now,
            updated_at=now,
            reason="",
            awaiting_approval_since=None,  # the hold restarts: it waits again once it is over
        )
        return Decision(Action.RESUME, state, after, f"resumed by a human{why}; the step's hold restarts now")
    if state.status in {Status.STOPPED, Status.ROLLED_BACK}:
        after = approval.cleared(state).moved(
            status=Status.PROGRESSING,
            step=NOT_STARTED,
            percent=0.0,
            step_started_at=None,
            updated_at=now,
            reason="",
            exposed_since=None,
        )
        return Decision(
            Action.RESUME,
            state,
            after,
            f"resumed by a human{why}; the ramp restarts from the first step at the next cycle",
        )
    raise UsageError(
        f"cannot resume a rollout that is {state.status.value}; only a paused, stopped or rolled-back one"
    )


def approve(state: RolloutState, reason: str, now: datetime) -> Decision:
    """A human approves the move after the step the rollout awaits approval for: the next evaluation
    whose checks pass makes it. Only a rollout awaiting approval can be approved."""
    if not reason.strip():
        raise UsageError("approve needs --reason: say why, for the people reading the log")
    if not state.awaiting_approval:
        approved = ""
        if state.status is Status.PROGRESSING and state.approved_step == state.step:
            approved = (
                f" (step {state.step + 1}/{state.steps} is approved already: it moves at the next "
                "evaluation whose checks pass)"
            )
        raise NotAwaitingApprovalError(
            f"cannot approve a rollout that is {state.shown_status}{approved}; only one awaiting approval"
        )
    after = state.moved(awaiting_approval_since=None, approved_step=state.step, updated_at=now)
    why = (
        f"approved by a human: {reason}; step {state.step + 1}/{state.steps} at {pct(state.percent)} % "
        "moves on at the next evaluation whose checks pass"
    )
    return Decision(Action.APPROVE, state, after, why)
