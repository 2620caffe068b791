"""Recovery of records a dead process left unwritten: once per process, under the lock, a flag whose
state in the flag file is newer than its last decision record was changed by a process that died
between writing the flag file and appending the record; so was a flag whose unguarded marks say it
was noticed after its last record. The first commit says so in the log, with the state the flag file
holds (``guarded: false`` for an unguarded flag), so that no move and no unguarded spell goes
unrecorded. A verification record (``action: verify``) records no move: it never stands in for one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from controller.adapters.decisionlog import DecisionLog, last_by_flag
from controller.core import approval
from controller.core.decision import Decision
from controller.core.errors import FlagFileError
from controller.core.flagd import managed_keys, read_state
from controller.core.records import Context, Record, to_record
from controller.core.serving import is_verification
from controller.core.state import Action, RolloutState


def recorded_since(record: Record | None, updated_at: datetime) -> bool:
    if record is None:
        return False
    try:
        logged = datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return False
    # Records carry milliseconds; the flag file's time may carry more.
    return logged.tzinfo is not None and logged >= updated_at.replace(
        microsecond=updated_at.microsecond // 1000 * 1000
    )


class Recovery:
    def __init__(self, decision_log: DecisionLog | None, log: Any) -> None:
        """``decision_log`` None (no log, or a dry run): nothing to recover."""
        self.decision_log = decision_log
        self.log = log
        self.checked = False  # set once a commit got past its write (a conflict retry checks again)

    @property
    def pending(self) -> bool:
        return not self.checked and self.decision_log is not None

    def lost_records(self, document: Mapping[str, Any]) -> list[Record]:
        """Until :attr:`checked`: a record for each flag of the flag ``document`` changed since its
        last decision record."""
        decision_log = self.decision_log
        if self.checked or decision_log is None:
            return []
        keys = list(managed_keys(document))
        try:
            last = last_by_flag(decision_log.path, keys, where=lambda r: not is_verification(r))
        except OSError as exc:
            self.log.error("decision_log_unreadable", path=str(decision_log.path), error=str(exc))
            return []
        lost: list[Record] = []
        for key in keys:
            try:
                state = read_state(document, key, check_layout=False)
            except FlagFileError:
                continue
            if state is None:
                continue
            record = _lost_record(key, state, last.get(key))
            if record is not None:
                lost.append(record)
                self.log.warning("decision_record_recovered", flag=key, time=str(record["time"]))
        return lost


def _lost_record(key: str, state: RolloutState, last: Record | None) -> Record | None:
    """The record a dead process owed for ``state``: a move (the flag file's change is newer than the
    flag's last record) or an unguarded notice (its marks say it was noticed after that record)."""
    moved = not recorded_since(last, state.updated_at)
    noticed = state.unguarded_noticed_at
    unnoticed = state.unguarded and noticed is not None and not recorded_since(last, noticed)
    if not (moved or unnoticed):
        return None
    when = max(state.updated_at, noticed) if unnoticed and noticed is not None else state.updated_at
    reason = (
        f"the flag file shows a change at {when.isoformat()} that has no decision record (the process "
        "that made it stopped before logging it, or the log was rotated); this is the state the flag "
        "file holds"
    )
    if state.unguarded:
        reason = f"{state.unguarded_reason}; {reason}"
    decision = Decision(Action.RECOVER, state, state, reason, waiting=_lost_wait(key, state, last))
    return to_record(decision, Context(key, guarded=not state.unguarded), when)


def _lost_wait(key: str, state: RolloutState, last: Record | None) -> approval.ApprovalWaiting | None:
    """A wait for approval that began after the flag's last record: the record that began it (and so
    its notification) was lost, and the recovered record begins it instead."""
    waits = approval.of_state(key, state)
    since = state.awaiting_approval_since
    if waits is None or since is None or recorded_since(last, since):
        return None
    return replace(waits, began=True)
