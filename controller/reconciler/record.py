"""Recording a commit's decisions, a chunk at a time: each chunk is built, printed, appended to the
decision log and handed to the observer, then dropped, so that a cycle of thousands of rollouts never
holds all its records at once (unless ``keep_records``).

A run of identical holds is compacted (:mod:`controller.core.compaction`): the log and stdout get its
first record in full, then a heartbeat at most every ``heartbeat_seconds``; the observer (metrics,
notifications) still gets every full record, every cycle. What compaction needs is kept per flag,
per process: a restarted controller writes each flag's first record in full.

A record the decision log refuses (disk full, read-only) stays in memory, up to MAX_UNLOGGED_RECORDS,
and is appended before the next ones once the log is writable again: none is lost while the process
lives, and every one is on stdout meanwhile.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from controller.adapters.decisionlog import DecisionLog, PartialAppendError, last_by_flag
from controller.core.compaction import Run, compacted, heartbeat
from controller.core.decision import Decision
from controller.core.errors import WriteError
from controller.core.records import Context, Record, to_record
from controller.reconciler.shared import CycleObserver, CycleResult

MAX_UNLOGGED_RECORDS = 10_000  # records kept in memory while the decision log cannot be written
RECORD_CHUNK = 250  # records built, printed and appended at a time


class Recorder:
    def __init__(
        self,
        *,
        decision_log: DecisionLog | None,
        log: Any,
        observer: CycleObserver | None,
        keep_records: bool,
        heartbeat_seconds: float = 0.0,
    ) -> None:
        """``decision_log`` None (no log, or a dry run): records go to stdout and the observer only.
        ``heartbeat_seconds`` 0: every record is written in full (no compaction)."""
        self.decision_log = decision_log
        self.log = log
        self.observer = observer
        self.keep_records = keep_records
        self.heartbeat_seconds = heartbeat_seconds
        self._unlogged: list[Record] = []
        self._runs: dict[str, Run] = {}  # each flag's compaction memory
        self._unwritten: dict[str, Record] = {}  # each flag's last evaluation, when compacted away
        self._written: dict[str, tuple[Any, Any]] = {}  # each flag's last written record: time, action

    def forget(self) -> None:
        """Forget every flag's run (another process may write records meanwhile): each flag's next
        record is written in full."""
        self._runs.clear()
        self._unwritten.clear()
        self._written.clear()

    def closing_heartbeats(self) -> list[Record]:
        """At a clean shutdown: a heartbeat for each hold evaluated since its flag's last written
        record (or heartbeat), printed and appended, so that the log counts every cycle this process
        held; none for a flag whose newest record in the log is not the one this process wrote last
        (a human's pause or approval since: a hold appended after it would pass for the newer one).
        A refusal of the decision log is logged (the heartbeats are on stdout)."""
        pending = self._unwritten
        if self.decision_log is not None and pending:  # none where another record came after ours
            newest = last_by_flag(self.decision_log.path, list(pending))
            pending = {
                flag: record
                for flag, record in pending.items()
                if (found := newest.get(flag)) is not None
                and (found.get("time"), found.get("action")) == self._written.get(flag)
            }
        beats = [
            heartbeat(record, run.since, run.cycles)
            for flag, record in pending.items()
            if (run := self._runs.get(flag)) is not None and run.key is not None
        ]
        self._unwritten.clear()
        for beat in beats:
            self.log.info("decision", **beat)
        if self.decision_log is not None and beats:
            with contextlib.suppress(WriteError):  # _append logged it
                self._append(self.decision_log, beats)
        return beats

    @property
    def backlog(self) -> bool:
        """Whether records wait for the decision log to be writable again."""
        return bool(self._unlogged)

    def record(
        self,
        recovered: Sequence[Record],
        outcomes: Sequence[tuple[Context, Decision]],
        now: datetime,
        result: CycleResult,
    ) -> None:
        """Record the flag file's changes, RECORD_CHUNK at a time. The flag file is written: each
        record goes to stdout before the decision log, so that a move is never unrecorded even if the
        decision log cannot be appended to. A compacted hold is written as a heartbeat, or not at
        all; the observer gets every full record."""
        built = self._built(recovered, outcomes, now)
        decision_log = self.decision_log
        appending = decision_log is not None
        dropped = 0
        while pairs := list(itertools.islice(built, RECORD_CHUNK)):
            chunk = [written for _, written in pairs if written is not None]
            for record in chunk:
                self.log.info("decision", **record)
            if decision_log is not None:
                if appending:
                    appending = self._appended(decision_log, chunk, result)
                else:  # the rest wait with the unlogged ones, without a retry each
                    dropped += self._hold(chunk)
            if self.keep_records:  # what was written: heartbeats, not the holds they stand for
                result.records.extend(chunk)
            result.decisions += len(pairs)
            self._observe([full for full, _ in pairs])
        if decision_log is not None and appending and self._unlogged:  # what earlier commits could not
            self._appended(decision_log, [], result)
        if dropped:
            self.log.error(
                "decision_log_records_dropped",
                dropped=dropped,
                pending=len(self._unlogged),
                note="each dropped record is on stdout only",
            )

    def _built(
        self, recovered: Sequence[Record], outcomes: Sequence[tuple[Context, Decision]], now: datetime
    ) -> Iterator[tuple[Record, Record | None]]:
        """Each full record, with what is written for it (itself, a heartbeat, or None)."""
        for record in recovered:
            yield record, self._compacted(record, now, changes_state=True)
        for context, decision in outcomes:
            record = to_record(decision, context, now)
            yield record, self._compacted(record, now, changes_state=decision.writes)

    def _compacted(self, record: Record, now: datetime, *, changes_state: bool) -> Record | None:
        flag = str(record.get("flag"))
        written, self._runs[flag] = compacted(
            record,
            self._runs.get(flag),
            now,
            changes_state=changes_state,
            heartbeat_seconds=self.heartbeat_seconds,
        )
        if written is None:
            self._unwritten[flag] = record
        else:
            self._unwritten.pop(flag, None)
            self._written[flag] = (written.get("time"), written.get("action"))
        return written

    def observed(self, records: Sequence[Record], *, append: bool = True) -> None:
        """Records that change no flag (a verification's outcome): printed, appended to the decision
        log (with any backlog), handed to the observer. Without ``append`` (the lock could not be
        had) they wait with the backlog for the next append."""
        for record in records:
            self.log.info("decision", **record)
        if self.decision_log is not None:
            if append:
                self._appended(self.decision_log, records, CycleResult())
            else:
                dropped = self._hold(records)
                if dropped:
                    pending = len(self._unlogged)
                    self.log.error("decision_log_records_dropped", dropped=dropped, pending=pending)
        self._observe(records)

    def _appended(self, decision_log: DecisionLog, records: Sequence[Record], result: CycleResult) -> bool:
        """Whether the decision log took ``records`` (and the backlog); a refusal is the cycle's problem."""
        try:
            self._append(decision_log, records)
        except WriteError as exc:  # the moves are made and printed; notify and count them too
            result.problems.append(str(exc))
            return False
        return True

    def _append(self, decision_log: DecisionLog, records: Sequence[Record]) -> None:
        """Append, together with any records an earlier cycle could not append: a record is kept in
        memory until it is in the log."""
        batch = [*self._unlogged, *records]
        if not batch:
            return
        try:
            decision_log.append(batch)
        except WriteError as exc:
            if isinstance(exc, PartialAppendError):  # those before a rotation are in the log
                batch = batch[exc.written :]
            self._unlogged = batch[-MAX_UNLOGGED_RECORDS:]
            self.log.error(
                "decision_log_write_failed",
                error=str(exc),
                pending=len(self._unlogged),
                dropped=len(batch) - len(self._unlogged),
                note="each record is on stdout; pending ones are appended once the log is writable",
            )
            raise
        if self._unlogged:
            self.log.info("decision_log_caught_up", appended=len(self._unlogged))
        self._unlogged = []

    def _hold(self, records: Sequence[Record]) -> int:
        """Keep ``records`` for a later append; returns how many of the oldest had to be dropped."""
        batch = [*self._unlogged, *records]
        self._unlogged = batch[-MAX_UNLOGGED_RECORDS:]
        return len(batch) - len(self._unlogged)

    def _observe(self, records: Sequence[Record]) -> None:
        if self.observer is None:
            return
        try:
            self.observer.recorded(records)
        except Exception as exc:  # metrics or notifications must never cost a record
            self.log.exception("observer_failed", error=str(exc), error_type=type(exc).__name__)
