"""``flagroll diff OLD NEW``: what a policy edit changes, and what it would do to a running rollout.

Pure: two policies (and optionally the flag's current state) in, lines out. The effect on a running
rollout is computed by the same :func:`controller.core.decision.rebase` the controller uses, so the
preview cannot disagree with what will happen.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from controller.core.decision import rebase
from controller.core.policy import Policy, pct
from controller.core.state import RolloutState, Status


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _flatten(inner, f"{path}[{index}]")
    else:
        yield path, value


def revision_line(old: Policy, new: Policy, changes: list[str]) -> str:
    """How the revision moves with an edit whose field changes are ``changes``."""
    if not changes:
        return "no change in meaning"
    if old.revision == new.revision:
        return (
            f"same revision {new.revision}: administrative fields only: not a new revision "
            "(a rolled-back rollout does not restart)"
        )
    return f"revision {old.revision} → {new.revision}"


def field_changes(old: Policy, new: Policy) -> list[str]:
    """Every field that differs, as ``path: old → new`` (``+``/``-`` for added and removed ones)."""
    before = dict(_flatten(old.model_dump(mode="json", by_alias=True, exclude_none=True)))
    after = dict(_flatten(new.model_dump(mode="json", by_alias=True, exclude_none=True)))
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if path not in after:
            lines.append(f"- {path}: {before[path]!r}")
        elif path not in before:
            lines.append(f"+ {path}: {after[path]!r}")
        elif before[path] != after[path]:
            lines.append(f"~ {path}: {before[path]!r} → {after[path]!r}")
    return lines


def schedule_effect(old: Policy, new: Policy, state: RolloutState | None) -> list[str]:
    """What an edit of ``spec.schedule`` does to a rollout that may still move: no restart (it is
    administrative), but its next due move follows the new schedule at once."""
    if old.spec.schedule == new.spec.schedule or state is None:
        return []
    if state.status not in {Status.PROGRESSING, Status.PAUSED}:
        return []
    follows = "a due start, advance or promotion follows the new one from the next evaluation"
    return [f"spec.schedule changed: {follows}"]


def effect(new: Policy, state: RolloutState | None, now: datetime) -> list[str]:
    """What the controller would do with the running rollout once NEW is in place."""
    if state is None:
        return ["the flag has no rollout yet: NEW starts one at its first step"]
    now_at = f"{state.status.value} at {pct(state.percent)} %"
    if new.is_revision(state.revision, owner=state.owner, review=state.review):
        notes = list(rebase(new, state, now).notes)
        if not notes:
            return [f"same revision {new.revision}: nothing changes ({now_at})"]
        restarted = "not restarted" if state.status is Status.ROLLED_BACK else "nothing else changes"
        return [*notes, f"afterwards: {now_at}; {restarted} (same revision {new.revision})"]
    if state.status is Status.STOPPED:
        return [f"stopped by a human: nothing changes until `flagroll resume`; then NEW applies ({now_at})"]
    if state.status is Status.PROMOTED:
        return [f"promoted, which is final: nothing changes ({now_at})"]
    rebased = rebase(new, state, now)
    after = rebased.state
    lines = list(rebased.notes) or [f"policy revision {state.revision} → {after.revision}"]
    step = "not started" if after.step < 0 else f"step {after.step + 1}/{after.steps}"
    lines.append(
        f"afterwards: {after.status.value}, {step} at {pct(after.percent)} % "
        f"(now {state.status.value} at {pct(state.percent)} %)"
    )
    if after.percent < state.percent:
        lines.append(f"exposure is LOWERED from {pct(state.percent)} % to {pct(after.percent)} % (adjust)")
    return lines
