"""``flagroll explain FLAG``: a rollout's story for on-call, in plain language.

From the flag's state, its decision records and (when given) its policy: the aim and mechanism, the
steps taken with their times, where it stands now, every check of the last decision with value,
bound, samples per arm and verdict, what would have to change for it to advance, and the exact PromQL
of every check, ready to paste into Prometheus. Pure: text in, text out; ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from controller.core import approval
from controller.core.changewindows import Waiting
from controller.core.checkrecord import describe, fmt
from controller.core.compaction import latest
from controller.core.durations import format_duration
from controller.core.freezes import StandingFreeze, gate, waiting_read
from controller.core.policy import Policy, pct
from controller.core.serving import describes, is_verification, summary
from controller.core.state import RolloutState, Status

MOVES = {
    "advance",
    "rollback",
    "stop",
    "resume",
    "pause",
    "approve",
    "promote",
    "complete",
    "adjust",
    "recover",
}
_OPPOSITE = {"max": "≤", "maxIncrease": "≤", "maxDelta": "≤", "min": "≥", "minIncrease": "≥", "minDelta": "≥"}


def _when(text: Any, now: datetime) -> str:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return str(text)
    seconds = (now - moment).total_seconds()
    ago = (
        f"{format_duration(round(seconds))} ago" if seconds >= 0 else f"in {format_duration(round(-seconds))}"
    )
    return f"{moment.strftime('%Y-%m-%d %H:%M:%SZ')} ({ago})"


def _step(state: RolloutState) -> str:
    return "not started" if state.step < 0 else f"step {state.step + 1}/{state.steps}"


def explain(
    flag: str,
    state: RolloutState,
    records: Sequence[Mapping[str, Any]],
    policy: Policy | None,
    now: datetime,
    unguarded: str | None = None,
    freezes: Sequence[StandingFreeze] = (),
) -> str:
    """``unguarded``: why no policy judges the flag, when none does (then nothing waits). ``freezes``:
    the Freeze documents that may cover the policy's rollout (with ``policy``)."""
    checked = [r for r in records if is_verification(r) and describes(r, state)]
    records = [r for r in records if not is_verification(r)]
    last, beat = latest(records)
    lines = [
        f"{flag}: {state.shown_status}, {_step(state)} at {pct(state.percent)} % "
        f"(control {pct(state.control_percent)} %), policy {state.policy} rev {state.revision}"
    ]
    if unguarded is not None and state.exposed:
        lines.append(f"  {unguarded}")
    if state.status is Status.PROMOTED:
        lines.append(f"  {_unwatched(flag, state)}")
    spec = policy.spec if policy is not None else None
    aim = spec.aim if spec is not None else (last or {}).get("aim")
    mechanism = spec.mechanism if spec is not None else (last or {}).get("mechanism")
    lines.append(f"  Aim        {aim or '—'}")
    lines.append(f"  Mechanism  {mechanism or '—'}")
    owner = f"  Owner      {state.owner or '—'}"
    if state.review is not None:
        owner += f"; review {state.review.isoformat()}"
        if state.is_stale(now.date()):
            owner += " — STALE: still partial past its review date; decide: promote, change or stop"
    lines.append(owner)
    if state.reason:
        lines.append(f"  Note       {state.reason}")
    if checked:
        lines.append(f"  Serving    {summary(checked[-1])} ({_when(checked[-1].get('time'), now)})")

    moves = [r for r in records if r.get("action") in MOVES]
    lines.append("")
    lines.append("Steps taken")
    if not moves:
        lines.append("  none recorded")
    for record in moves[-20:]:
        lines.append(
            f"  {_when(record.get('time'), now):<36} {record.get('action')!s:<9}"
            f"{pct(record.get('from_percent') or 0)} % → {pct(record.get('to_percent') or 0)} %"
            f"  {record.get('reason', '')}"
        )
    if len(moves) > 20:
        lines.append(f"  (and {len(moves) - 20} earlier; flagroll log --flag {flag} shows them all)")

    lines.append("")
    if last is None:
        lines.append("Last decision: none recorded (no decision log, or the log was rotated)")
        return "\n".join(lines)
    lines.append(f"Last decision  {str(last.get('action')).upper()} {_when(last.get('time'), now)}")
    lines.append(f"  Why        {last.get('reason', '')}")
    if beat is not None:
        lines.append(f"  Held       {_held(beat, now)}")
    checks = [c for c in last.get("checks") or [] if isinstance(c, Mapping)]
    for check in checks:
        lines.append(f"  {str(check.get('verdict', '?')).upper():<8} {describe(check)}")

    lines.append("")
    lines.append("To advance")
    waits = (
        (approval.of_state(flag, state) or _waiting(state, last, policy, now, freezes))
        if unguarded is None  # none judges it: nothing waits
        else None
    )
    lines += [f"  - {item}" for item in _what_must_change(flag, state, checks, policy, now, waits)]

    queries = _queries(checks)
    if queries:
        lines.append("")
        lines.append("PromQL (paste into Prometheus)")
        for label, query in queries:
            lines.append(f"  {label}:")
            lines.append(f"    {query}")
    return "\n".join(lines)


def _held(beat: Mapping[str, Any], now: datetime) -> str:
    """``held since T (…ago), N cycles, because …``: a heartbeat's run of identical holds."""
    run = beat.get("heartbeat") or {}
    cycles = run.get("cycles")
    return f"since {_when(run.get('since'), now)}, {cycles} cycles since, because {beat.get('reason', '')}"


def _unwatched(flag: str, state: RolloutState) -> str:
    """A promoted flag is final: the controller asks no query for it and nothing rolls it back."""
    return (
        f"Guardrails NOT evaluated: promoted is final, so its policy's checks no longer run and a "
        f"regression at {pct(state.percent)} % rolls nothing back; "
        f"`flagroll stop {flag} --reason …` takes it to 0 %"
    )


def _waiting(
    state: RolloutState,
    last: Mapping[str, Any],
    policy: Policy | None,
    now: datetime,
    freezes: Sequence[StandingFreeze] = (),
) -> Waiting | None:
    """What keeps a progressing rollout's next move waiting: the Freeze documents covering it and the
    policy's schedule when that move falls due (now, or when the step's hold ends), if the move
    raises exposure (a start, an advance, a promotion: a completion never waits); without the
    policy, what the last decision said (while it still describes the rollout)."""
    if state.status is not Status.PROGRESSING:
        return None
    if policy is not None:
        steps = policy.spec.steps
        checkpoint = policy.spec.checkpoint
        promotes = checkpoint is not None and checkpoint.on_pass == "promote"
        if state.step >= len(steps) - 1 and not promotes:
            return None
        return gate(policy, freezes, max(now, _hold_ends(policy, state) or now))
    recorded = waiting_read(last.get("waiting"))
    return recorded if recorded is not None and last.get("to_percent") == state.percent else None


def _hold_ends(policy: Policy, state: RolloutState) -> datetime | None:
    """When the hold of the step being served ends (exposure below the first step, left by a policy
    edit, holds as long as the first step, as decide has it); None before the ramp has a clock."""
    steps = policy.spec.steps
    index = max(state.step, 0)
    if state.step_started_at is None or index >= len(steps) or not state.exposed:
        return None  # not started: the start is due at once
    return state.step_started_at + timedelta(seconds=steps[index].hold_seconds)


def _what_must_change(
    flag: str,
    state: RolloutState,
    checks: Sequence[Mapping[str, Any]],
    policy: Policy | None,
    now: datetime,
    waits: Waiting | None = None,
) -> list[str]:
    resume = f"`flagroll resume {flag}`"
    if state.status is Status.STOPPED:
        return [f"it was stopped by a human; {resume} restarts the ramp from the first step"]
    if state.status is Status.ROLLED_BACK:
        return [f"it was rolled back; it restarts on a new policy revision or {resume}"]
    if state.status is Status.PAUSED:
        return [f"it is paused by a human; {resume} continues at this step (its hold restarts)"]
    if state.status is Status.COMPLETED:
        return ["nothing: the ramp is completed (guardrails stay armed: a failure still rolls it back)"]
    if state.status is Status.PROMOTED:
        return ["nothing: promoted is final; no policy edit or check moves it again"]
    needs = []
    for check in checks:
        if check.get("shadow"):
            continue  # a dryRun guardrail never blocks an advance
        verdict = check.get("verdict")
        name, arm = check.get("name"), check.get("arm")
        if check.get("kind") == "alert" and verdict == "fail":
            firing = ", ".join(str(f) for f in check.get("firing") or []) or "firing"
            needs.append(f"alert {name} must stop firing ({firing}; onFiring: {check.get('rule')})")
        elif verdict == "fail":
            symbol = _OPPOSITE.get(str(check.get("rule")), "within")
            needs.append(
                f"{name} ({arm}) must be {symbol} {fmt(check.get('bound'))} ({check.get('rule')}); "
                f"it is {fmt(check.get('value'))}"
            )
        elif verdict == "no_data":
            needs.append(f"{name} ({arm}) needs data: {check.get('detail') or 'no value'}")
        elif verdict == "error":
            needs.append(f"{name} ({arm}) needs Prometheus to answer: {check.get('detail') or 'error'}")
        elif check.get("kind") == "traffic" and verdict != "pass":
            needs.append(f"{name} ({arm}) needs {fmt(check.get('bound'))} samples")
    if policy is not None and state.steps and state.step < len(policy.spec.steps):
        step = policy.spec.steps[max(state.step, 0)]
        if state.step_started_at is not None:
            left = step.hold_seconds - (now - state.step_started_at).total_seconds()
            if left > 0:
                needs.append(
                    f"the {format_duration(step.hold_seconds)} hold at {pct(state.percent)} % must pass: "
                    f"{format_duration(round(left))} left"
                )
    if waits is not None:
        ends = _hold_ends(policy, state) if policy is not None else None
        later = " when the hold ends" if ends is not None and ends > now else ""
        needs.append(f"{waits.until(now)}; {waits.why}{later}")
    elif state.approved_step is not None and state.approved_step == state.step:
        needs.append(
            "approved by a human: the move after this step is taken at the next evaluation whose checks pass"
        )
    if state.step + 1 >= state.steps and state.steps:
        needs.append("this is the last step: next comes the checkpoint and completion, not another step")
    return needs or ["nothing: every check passed and the hold is over; it advances at the next cycle"]


def _queries(checks: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    found = []
    for check in checks:
        for label, query in (
            (f"{check.get('name')} ({check.get('arm')})", check.get("query")),
            (f"{check.get('name')} (control)", (check.get("control") or {}).get("query")),
        ):
            if isinstance(query, str) and query not in seen:
                seen.add(query)
                found.append((label, query))
    return found
