"""Committing a wave of answers, under the lock: read the flag file again, decide each rollout whose
state is unchanged since it was planned, write every change in one atomic write, then record.

The lock is waited for in short slices, so that a shutdown is heard. A store without a lock
(Kubernetes) refuses a write when the object changed since the read (``WriteConflictError``): the
commit then reads again and decides again, up to CONFLICT_ATTEMPTS times. Commits of overlapping
cycles take turns.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from controller.adapters.decisionlog import last_by_flag
from controller.adapters.flagstore import FlagStore, Snapshot, Underlay, underlay
from controller.adapters.policyowners import candidate as candidate_of
from controller.core import approval
from controller.core.decision import Decision, decide
from controller.core.errors import (
    CycleAbandoned,
    FlagFileError,
    LeadershipLostError,
    LockTimeoutError,
    WriteConflictError,
)
from controller.core.flagd import describe_unmanaged, flag_entry, is_managed, read_state, with_state
from controller.core.guarding import Grace, adopted, unjudged
from controller.core.ownership import adoptable, exposure_change
from controller.core.readings import Readings
from controller.core.records import Context, Record
from controller.core.state import ACTIVE, Action
from controller.reconciler.plan import Notice, Orphan, Plan, unexpected
from controller.reconciler.record import Recorder
from controller.reconciler.recovery import Recovery
from controller.reconciler.shared import Clock, CycleResult, Leadership

LOCK_SLICE_SECONDS = 0.25
CONFLICT_ATTEMPTS = 5  # reads and decisions per commit when the store keeps changing under us


class Committer:
    def __init__(
        self,
        *,
        store: FlagStore,
        lock_timeout_seconds: float,
        clock: Clock,
        log: Any,
        leader: Leadership | None,
        dry_run: bool,
        recorder: Recorder,
        recovery: Recovery,
        grace: Grace,
    ) -> None:
        self.store = store
        self.grace = grace
        self.lock_timeout_seconds = lock_timeout_seconds
        self.clock = clock
        self.log = log
        self.leader = leader
        self.dry_run = dry_run
        self.recorder = recorder
        self.recovery = recovery
        self._abandon = threading.Event()
        self._mutex = threading.Lock()

    def _rejection_recorded(self, notice: Notice) -> bool:
        """Whether the decision log's last ``reject`` record of this flag already says this: a
        CronJob's next run, or a restarted controller, does not record (and notify) it again."""
        decision_log = self.recorder.decision_log
        if decision_log is None:
            return False
        try:
            last = last_by_flag(decision_log.path, [notice.key], where=lambda r: r.get("action") == "reject")
        except OSError:
            return False
        return last.get(notice.key, {}).get("reason") == notice.reason

    def abandon(self) -> None:
        """A commit still waiting for the lock gives up; one already writing finishes."""
        self._abandon.set()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store's lock, waited for in short slices so that :meth:`abandon` is heard."""
        deadline = time.monotonic() + self.lock_timeout_seconds
        waited = False
        while True:
            if self._abandon.is_set():
                raise CycleAbandoned("shutting down")
            slice_seconds = max(0.0, min(LOCK_SLICE_SECONDS, deadline - time.monotonic()))
            try:
                lock = self.store.locked(slice_seconds)
                lock.__enter__()
            except LockTimeoutError:
                if not waited:
                    waited = True
                    self.log.info("waiting_for_lock", flags=self.store.location)
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"{self.store.location}: another writer held the lock for more than "
                        f"{self.lock_timeout_seconds:g}s"
                    ) from None
                continue
            break
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    def record_observations(self, records: Sequence[Record]) -> None:
        """Records that change no flag (a verification's outcome), appended under the lock like every
        record, after the commit in progress. If the lock cannot be had they are printed and wait for
        the next append."""
        with self._mutex:
            try:
                with contextlib.nullcontext() if self.dry_run else self.locked():
                    self.recorder.observed(records)
                return
            except (LockTimeoutError, CycleAbandoned) as exc:
                self.log.warning("decision_log_append_deferred", error=str(exc))
            self.recorder.observed(records, append=False)

    def close(self) -> list[Record]:
        """At a clean shutdown, while still the leader: the heartbeats of holds compacted away since
        their flags' last records, appended under the lock like every record (none if the lock
        cannot be had, or the cycle was abandoned)."""
        if self._abandon.is_set():  # the cycle was given up: its commit may still hold the mutex
            return []
        if not self._mutex.acquire(timeout=self.lock_timeout_seconds):  # an abandoned commit's thread
            self.log.warning("closing_heartbeats_not_written", error="a commit is still under way")
            return []
        try:
            if self.leader is not None and not self.leader.is_leader():
                return []
            with contextlib.nullcontext() if self.dry_run else self.locked():
                return self.recorder.closing_heartbeats()
        except (LockTimeoutError, CycleAbandoned) as exc:
            self.log.warning("closing_heartbeats_not_written", error=str(exc))
            return []
        finally:
            self._mutex.release()

    def commit(
        self,
        plans: Sequence[Plan],
        readings: Readings,
        result: CycleResult,
        orphans: Sequence[Orphan] = (),
        notices: Sequence[Notice] = (),
    ) -> None:
        """Decide ``plans`` on ``readings``, act on the flags no policy judges (``orphans``: mark them
        unguarded, hand them over or roll them back), record ``notices``, write and record; also
        records what a dead process or an earlier refusal of the decision log left unrecorded."""
        with self._mutex:  # cycles overlap; their commits take turns
            if not (plans or orphans or notices or self.recorder.backlog or self.recovery.pending):
                return
            problems = len(result.problems)
            for attempt in range(1, CONFLICT_ATTEMPTS + 1):
                try:
                    self._commit_once(plans, readings, result, orphans, notices)
                    return
                except WriteConflictError as exc:
                    del result.problems[problems:]
                    if attempt == CONFLICT_ATTEMPTS:
                        raise
                    self.log.info(
                        "flag_store_conflict", error=str(exc), note="reading again and deciding again"
                    )

    def _commit_once(
        self,
        plans: Sequence[Plan],
        readings: Readings,
        result: CycleResult,
        orphans: Sequence[Orphan],
        notices: Sequence[Notice],
    ) -> None:
        lock = contextlib.nullcontext() if self.dry_run else self.locked()
        with lock:
            now = self.clock()
            recovered, outcomes = self._decide_and_write(plans, readings, result, orphans, notices, now)
            self.recovery.checked = True  # past the write: a conflict retry would have checked again
            try:
                self.recorder.record(recovered, outcomes, now, result)
            except BaseException:
                # What was written may have no record: the next commit of this process looks again,
                # as the next process would, and writes each flag's next record in full (a hold
                # that began here, an alert firing, may be in no record).
                self.recovery.checked = False
                self.recorder.forget()
                raise

    def _decide_and_write(
        self,
        plans: Sequence[Plan],
        readings: Readings,
        result: CycleResult,
        orphans: Sequence[Orphan],
        notices: Sequence[Notice],
        now: datetime,
    ) -> tuple[list[Record], list[tuple[Context, Decision]]]:
        """Under the lock: read the flag file, decide, write every change at once. Returns the
        records of moves a dead process left unrecorded, and what to record for this commit."""
        snapshot = self.store.read()
        draft = _Draft(snapshot, self.dry_run)
        recovered = self.recovery.lost_records(draft.document)
        below = underlay(self.store) if any(plan.adopt for plan in plans) else {}
        for plan in plans:
            with _isolated(plan.loaded.policy.flag_key, result, self.log):
                if plan.adopt:
                    draft.adopt(plan, now, below)
                else:
                    draft.rollout(plan, readings, now, result, self.log)
        for orphan in orphans:
            with _isolated(orphan.key, result, self.log):
                draft.orphan(orphan, now, self.grace, self.log)
        for notice in notices:
            if notice.action is not Action.REJECT or not self._rejection_recorded(notice):
                draft.notice(notice)
        for context, decision in draft.outcomes:
            if decision.action in {Action.ADOPT, Action.ROLLBACK}:
                result.unguarded.pop(context.flag, None)  # handed over, or nobody exposed any more
        if draft.changed and not self.dry_run:
            if self.leader is not None and not self.leader.is_leader():
                raise LeadershipLostError(f"not the leader any more; not writing {self.store.location}")
            self.store.write(draft.document, snapshot, draft.changed)
            result.wrote = True
            for context, decision in draft.outcomes:
                if decision.writes:
                    result.states[context.flag] = decision.after
        return recovered, draft.outcomes


@contextlib.contextmanager
def _isolated(key: str, result: CycleResult, log: Any) -> Iterator[None]:
    """Deciding one flag: whatever its state makes it raise is that flag's problem, logged, and the
    commit goes on with the others (the draft is changed only once a flag's decision is complete)."""
    try:
        yield
    except Exception as exc:
        problem = str(exc) if isinstance(exc, FlagFileError) else unexpected(key, exc)
        result.problems.append(problem)
        log.error("flag_skipped", flag=key, error=problem)


class _Draft:
    """The flag document a commit changes, the flags it changed, and the decisions to record."""

    def __init__(self, snapshot: Snapshot, dry_run: bool) -> None:
        self.document = dict(snapshot.document)  # one copy, its flags set in place: thousands may change
        self.flags: dict[str, Any] = dict(self.document.get("flags", {}))
        self.document["flags"] = self.flags
        self.dry_run = dry_run
        self.changed: list[str] = []
        self.outcomes: list[tuple[Context, Decision]] = []

    def rollout(self, plan: Plan, readings: Readings, now: datetime, result: CycleResult, log: Any) -> None:
        """Decide a planned rollout, unless its state moved since it was planned (say by ``flagroll
        stop``): that one is left for the next cycle. An approval given since changes nothing that
        was asked: the rollout is decided on it at once (a failing guardrail is not put off)."""
        key = plan.loaded.policy.flag_key
        try:
            fresh = read_state(self.document, key)
        except FlagFileError as exc:
            result.problems.append(str(exc))
            return
        if fresh != plan.stored and not approval.only_approved(plan.stored, fresh):
            log.info("flag_changed_during_cycle", flag=key, note="deciding next cycle")
            return
        decision = decide(plan.loaded.policy, fresh, plan.queries, readings, now, freezes=plan.loaded.freezes)
        if decision.after.status not in ACTIVE and not decision.writes:
            return  # an inactive rollout with nothing new: no record
        if decision.writes:
            spec = plan.loaded.policy.spec
            self.flags[key] = flag_entry(
                self.document, key, decision.after, variants=spec.flag.variants, segment=spec.segment
            )
            self.changed.append(key)
        self.outcomes.append((Context(key, policy=plan.loaded.policy, dry_run=self.dry_run), decision))

    def adopt(self, plan: Plan, now: datetime, below: Underlay) -> None:
        """A policy takes a flag that exists and is not flagroll's (in the flag file, or in a source
        below it), if it still may (it may have changed since the plan): at 0 %, the flag serves the
        policy's 'off' value to everyone."""
        policy = plan.loaded.policy
        key = policy.flag_key
        existing = self.flags.get(key)
        if existing is None and not isinstance(below, str):
            existing = below.get(key)
        if existing is None or is_managed(existing):
            return  # gone or taken meanwhile (or a base cannot be read): the next cycle plans again
        found = describe_unmanaged(key, existing)
        candidate = candidate_of(plan.loaded)
        if not adoptable(candidate, found):
            return
        decision = adopted(policy, found.description, exposure_change(candidate, found), now)
        spec = policy.spec
        self.flags[key] = flag_entry(
            self.document, key, decision.after, variants=spec.flag.variants, segment=spec.segment, adopt=True
        )
        self.changed.append(key)
        self.outcomes.append((Context(key, policy=policy, dry_run=self.dry_run), decision))

    def orphan(self, orphan: Orphan, now: datetime, grace: Grace, log: Any) -> None:
        """A flag no policy judges: marked and recorded as unguarded when that changes (and as a
        reminder), handed over, or rolled back, as :func:`controller.core.guarding.unjudged` says.
        A flag that changed owner since the plan (a human hand-over) is left for the next cycle."""
        key = orphan.key
        edited = None
        try:
            fresh = read_state(self.document, key)
        except FlagFileError as exc:  # edited by hand: reported, never overwritten
            edited = str(exc)
            try:
                fresh = read_state(self.document, key, check_layout=False)
            except FlagFileError:
                return  # its state cannot be read: the cycle's problems say so
        if fresh is None:
            return
        if fresh.policy != orphan.owner:
            log.info("flag_changed_during_cycle", flag=key, note="deciding next cycle")
            return
        successor = orphan.successor.policy.name if orphan.successor is not None else None
        why = orphan.unjudged
        move = unjudged(fresh, why.why, why.reason, now, grace, successor, edited=edited)
        if move is None:
            return
        decision = move.decision
        if move.marks_only:
            self.flags[key] = with_state(self.document, key, decision.after)
        else:
            self.flags[key] = flag_entry(self.document, key, decision.after, keep_segment=True)
        self.changed.append(key)
        if move.record:
            unguarded = decision.after.unguarded
            context = Context(key, dry_run=self.dry_run, guarded=not unguarded, reminder=move.reminder)
            self.outcomes.append((context, decision))

    def notice(self, notice: Notice) -> None:
        """A record that changes nothing: why the flag is not judged, or a policy that was rejected."""
        with contextlib.suppress(FlagFileError):
            state = read_state(self.document, notice.key, check_layout=False)
            if state is not None:
                decision = Decision(notice.action, state, state, notice.reason)
                context = Context(notice.key, dry_run=self.dry_run, guarded=notice.guarded)
                self.outcomes.append((context, decision))
