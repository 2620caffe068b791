"""The reconciler: load policies, ask Prometheus, decide, write the flag file, log each decision.

One cycle, for the policies that are due:

1. load and validate every policy file (an invalid policy is reported and skipped; its flag is not
   touched);
2. read the flag file without the lock, work out each rollout's queries, and run them all
   concurrently (this is the slow part, so nobody waits on the lock meanwhile);
3. take the lock, read the flag file again, and decide each rollout whose state is unchanged since
   step 2 (a rollout that moved meanwhile, say by ``flagroll stop``, is left for the next cycle);
4. write every change in one atomic write, then append the decision records, then release the lock.

The flag file holds all state, so a cycle can be re-run or run by two processes at once: the lock and
the re-read make the second one see the first one's step and hold instead of advancing twice.

A store without a lock (Kubernetes) refuses a write when the object changed since step 3's read
(``WriteConflictError``); step 3 then starts again from a fresh read, so a rollout that moved meanwhile
is left alone and the others are decided from what is there now. With a ``leader`` (a Lease), only
the leader runs cycles, and every write first checks that it still leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog

from controller.adapters.decisionlog import DecisionLog, last_by_flag
from controller.adapters.flagstore import FlagStore
from controller.adapters.policyfile import LoadedPolicy, PolicySet, load_paths
from controller.core import ownership
from controller.core.checks import Readings
from controller.core.decision import Decision, decide, deleted, queries_for, rebase
from controller.core.errors import (
    CycleAbandoned,
    FlagFileError,
    FlagrollError,
    Issue,
    LeadershipLostError,
    LockTimeoutError,
    WriteConflictError,
    WriteError,
)
from controller.core.flagd import flag_entry, managed_keys, owners, read_state
from controller.core.queries import MetricsSource, PlannedQuery, QueryKey, Reading, ReadingKind
from controller.core.records import Context, Record, to_record
from controller.core.state import ACTIVE, Action, RolloutState

Clock = Callable[[], datetime]
LOCK_SLICE_SECONDS = 0.25
ORPHAN_CHECK_SECONDS = 10.0  # how often flags whose policy was deleted are looked at
MAX_UNLOGGED_RECORDS = 10_000  # records kept in memory while the decision log cannot be written
RECORD_CHUNK = 250  # records built, printed and appended at a time
WAVE_GATHER_SECONDS = 0.05  # how long a commit waits for answers landing just after the first one
CONFLICT_ATTEMPTS = 5  # reads and decisions per commit when the store keeps changing under us
NOT_LEADER_WAIT_SECONDS = 1.0


class CycleObserver(Protocol):
    """Told about every cycle (metrics, health): see :class:`controller.adapters.telemetry.Telemetry`."""

    def beat(self) -> None: ...

    def recorded(self, records: Sequence[Record]) -> None:
        """Records as each commit makes them (from a worker thread), a chunk at a time."""

    def cycle_done(
        self,
        *,
        ok: bool,
        policy_errors: int,
        prometheus_answered: bool,
        duration_seconds: float,
        states: Mapping[str, RolloutState] | None = None,
    ) -> None: ...

    def cycle_failed(self, duration_seconds: float) -> None: ...

    def follower(self) -> None: ...


@runtime_checkable
class Refreshing(Protocol):
    """A store with derived output to keep current between writes (the merged file of an overlay)."""

    def refresh(self, *, force: bool = False) -> bool: ...


class Leadership(Protocol):
    """Who may write: consulted before each cycle and before each write."""

    def is_leader(self) -> bool: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def _recorded_since(record: Record | None, updated_at: datetime) -> bool:
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


@dataclass
class CycleResult:
    records: list[Record] = field(default_factory=list)  # only with keep_records (tests, the demo)
    decisions: int = 0  # records made (kept or not)
    problems: list[str] = field(default_factory=list)  # flags that could not be reconciled
    policy_errors: list[Issue] = field(default_factory=list)
    wrote: bool = False
    prometheus_answered: bool = True  # False when every query of the cycle was an error
    states: dict[str, RolloutState] = field(default_factory=dict)  # every managed flag, as written

    @property
    def ok(self) -> bool:
        return not self.problems and not self.policy_errors


@dataclass(frozen=True)
class _Plan:
    loaded: LoadedPolicy
    stored: RolloutState | None
    queries: list[PlannedQuery]


class Reconciler:
    def __init__(
        self,
        *,
        policies: Path,
        store: FlagStore,
        prometheus: MetricsSource,
        decision_log: DecisionLog | None,
        dry_run: bool = False,
        lock_timeout_seconds: float = 30.0,
        clock: Clock = utc_now,
        log: Any = None,
        leader: Leadership | None = None,
        observer: CycleObserver | None = None,
        keep_records: bool = True,
    ) -> None:
        """``keep_records``: keep each cycle's records in its :class:`CycleResult`. ``flagroll run``
        does not: records go to stdout, the decision log and the observer a chunk at a time, so that
        thousands of rollouts never have all their records in memory at once."""
        self.policies_path = policies
        self.store = store
        self.prometheus = prometheus
        self.decision_log = decision_log
        self.dry_run = dry_run
        self.lock_timeout_seconds = lock_timeout_seconds
        self.clock = clock
        self.log = log if log is not None else structlog.get_logger("flagroll")
        self._reported: set[str] = set()
        self.leader = leader
        self.observer = observer
        self.keep_records = keep_records
        self._abandon = threading.Event()
        self._log_checked = False
        self._unlogged: list[Record] = []
        self._commit_mutex = threading.Lock()

    def abandon(self) -> None:
        """Shutting down: a cycle still waiting for the lock gives up; one already writing finishes."""
        self._abandon.set()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
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

    # Reporting each distinct problem once keeps a broken policy from flooding the log every cycle.
    def _once(self, key: str, event: str, **fields: Any) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.log.error(event, **fields)

    def load_policies(self, document: Mapping[str, Any] | None = None) -> PolicySet:
        """Load every policy; ``document`` (the flag file) tells which policy owns which flag."""
        policies = load_paths([self.policies_path], owners(document) if document is not None else None)
        if not policies.files and not policies.issues:
            self._once(f"empty:{self.policies_path}", "no_policies", path=str(self.policies_path))
        for issue in policies.issues:
            if issue.severity == "error":
                self._once(f"issue:{issue}", "policy_rejected", issue=str(issue), file=issue.file)
        return policies

    async def cycle(
        self, only: set[str] | None = None, decided: Callable[[Collection[str]], None] | None = None
    ) -> CycleResult:
        """One reconciliation of the policies named in ``only`` (all when None).

        Each rollout is decided as soon as its own answers are in: rollouts whose queries return
        together are committed together (a template's answer serves all of them at once), and one
        whose query is slow is committed on its own when it returns or times out, without holding
        the others back. ``decided`` is told the names of the policies of each commit.
        """
        result = CycleResult()
        snapshot = await asyncio.to_thread(self.store.read)
        plans, notices, deletions = self._plan(snapshot.document, only, result)
        del snapshot  # the commits read the flag file again: one parsed copy at a time, not two
        answered: list[bool] = []
        waves = self._answered(plans)
        first = True
        async for wave, readings in waves:
            answered.extend(r.kind is not ReadingKind.ERROR for r in readings.values())
            await asyncio.to_thread(
                self._commit, wave, readings, result, notices if first else None, deletions if first else ()
            )
            first = False
            if decided is not None:
                decided([plan.loaded.policy.name for plan in wave])
        if answered:
            result.prometheus_answered = any(answered)
        return result

    def _plan(
        self, document: Mapping[str, Any], only: set[str] | None, result: CycleResult
    ) -> tuple[list[_Plan], dict[str, str], list[str]]:
        """The rollouts to decide (with their queries), the notices about rejected policies, and the
        flags to roll back because their policy was deleted, as the flag file ``document`` says."""
        policies = self.load_policies(document)
        result.policy_errors = policies.errors
        for key in managed_keys(document):
            with contextlib.suppress(FlagFileError):
                if (read := read_state(document, key, check_layout=False)) is not None:
                    result.states[key] = read
        now = self.clock()
        plans: list[_Plan] = []
        for loaded in policies.policies:
            if only is not None and loaded.policy.name not in only:
                continue
            key = loaded.policy.flag_key
            try:
                stored = read_state(document, key)
            except FlagFileError as exc:
                result.problems.append(str(exc))
                self._once(f"flag:{exc}", "flag_skipped", flag=key, policy=loaded.policy.name, error=str(exc))
                continue
            state = rebase(loaded.policy, stored, now).state
            if state.status not in ACTIVE and state == stored:
                continue  # stopped, rolled back, completed or promoted, and no new revision
            plans.append(_Plan(loaded, stored, queries_for(loaded.policy, state, now, loaded.templates)))
        deletions = self._report_orphans(document, policies, now)
        return plans, self._unguarded(document, policies), deletions

    async def _answered(self, plans: Sequence[_Plan]) -> AsyncIterator[tuple[list[_Plan], Readings]]:
        """The plans with their readings, in waves: those whose answers came back together. Always
        yields at least once, so that a cycle with nothing to ask still commits its notices."""

        async def ask(group: list[_Plan]) -> tuple[list[_Plan], Mapping[QueryKey, Reading]]:
            queries = [q for plan in group for q in plan.queries]
            return group, await self.prometheus.query_all(queries) if queries else {}

        # Plans asking the same queries (those reading only templates) get their answers at the same
        # moment anyway: one call for the lot, not one task and one dict per rollout.
        groups: dict[frozenset[str], list[_Plan]] = {}
        for plan in plans:
            groups.setdefault(frozenset(q.promql for q in plan.queries), []).append(plan)
        pending = {asyncio.ensure_future(ask(group)) for group in groups.values()}
        if not pending:
            yield [], {}
            return
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if pending:  # answers that land a moment later join this wave
                    more, pending = await asyncio.wait(pending, timeout=WAVE_GATHER_SECONDS)
                    done |= more
                wave = [task.result() for task in done]
                readings: dict[QueryKey, Reading] = {}
                for _, answers in wave:
                    readings.update(answers)
                yield [plan for group, _ in wave for plan in group], readings
        finally:
            for task in pending:
                task.cancel()

    def _unguarded(self, document: Mapping[str, Any], policies: PolicySet) -> dict[str, str]:
        """Managed flags whose policy was rejected: their guardrails are not evaluated. Each new
        problem gets one decision record, so that status and the log say so."""
        guarded = {p.policy.flag_key for p in policies.policies}
        notices = {}
        for key, reason in ownership.unguarded(managed_keys(document), guarded, policies.errors).items():
            if f"notice:{key}:{reason}" not in self._reported:
                self._reported.add(f"notice:{key}:{reason}")
                notices[key] = reason
        return notices

    def _report_orphans(self, document: Mapping[str, Any], policies: PolicySet, now: datetime) -> list[str]:
        """Managed flags that no policy names: those to roll back (``onDelete: rollback``, still
        exposed); the others are reported once and left as they are."""
        guarded = {p.policy.flag_key for p in policies.policies}
        found = ownership.orphans(document, guarded, errors=policies.errors, files=policies.files, now=now)
        for key in found.left:
            self._once(
                f"orphan:{key}",
                "flag_without_policy",
                flag=key,
                note="managed by flagroll but no policy names it; left as it is",
            )
        return found.roll_back

    def _commit(
        self,
        plans: Sequence[_Plan],
        readings: Readings,
        result: CycleResult,
        notices: Mapping[str, str] | None = None,
        deletions: Sequence[str] = (),
    ) -> None:
        with self._commit_mutex:  # cycles overlap; their commits take turns
            self._commit_serialised(plans, readings, result, notices, deletions)

    def _commit_serialised(
        self,
        plans: Sequence[_Plan],
        readings: Readings,
        result: CycleResult,
        notices: Mapping[str, str] | None = None,
        deletions: Sequence[str] = (),
    ) -> None:
        recovery_pending = not (self._log_checked or self.decision_log is None or self.dry_run)
        if not plans and not notices and not deletions and not self._unlogged and not recovery_pending:
            return
        problems = len(result.problems)
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                self._commit_once(plans, readings, result, notices, deletions)
                return
            except WriteConflictError as exc:
                del result.problems[problems:]
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                self.log.info("flag_store_conflict", error=str(exc), note="reading again and deciding again")

    def _commit_once(
        self,
        plans: Sequence[_Plan],
        readings: Readings,
        result: CycleResult,
        notices: Mapping[str, str] | None,
        deletions: Sequence[str] = (),
    ) -> None:
        lock = contextlib.nullcontext() if self.dry_run else self._locked()
        with lock:
            now = self.clock()
            recovered, outcomes = self._decide_and_write(plans, readings, result, notices, deletions, now)
            self._log_checked = True  # past the write: a conflict retry would have checked again
            self._record(recovered, outcomes, now, result)

    def _decide_and_write(
        self,
        plans: Sequence[_Plan],
        readings: Readings,
        result: CycleResult,
        notices: Mapping[str, str] | None,
        deletions: Sequence[str],
        now: datetime,
    ) -> tuple[list[Record], list[tuple[Context, Decision]]]:
        """Under the lock: read the flag file, decide, write every change at once. Returns the
        records of moves a dead process left unrecorded, and what to record for this commit."""
        snapshot = self.store.read()
        document = dict(snapshot.document)  # one copy, its flags set in place: thousands may change
        flags = document["flags"] = dict(document.get("flags", {}))
        recovered = self._lost_records(document)
        outcomes: list[tuple[Context, Decision]] = []
        changed: list[str] = []
        for plan in plans:
            key = plan.loaded.policy.flag_key
            try:
                fresh = read_state(document, key)
            except FlagFileError as exc:
                result.problems.append(str(exc))
                continue
            if fresh != plan.stored:
                self.log.info("flag_changed_during_cycle", flag=key, note="deciding next cycle")
                continue
            decision = decide(plan.loaded.policy, fresh, plan.queries, readings, now)
            if decision.after.status not in ACTIVE and not decision.writes:
                continue  # an inactive rollout with nothing new: no record
            if decision.writes:
                spec = plan.loaded.policy.spec
                flags[key] = flag_entry(
                    document, key, decision.after, variants=spec.flag.variants, segment=spec.segment
                )
                changed.append(key)
            outcomes.append((Context(key, policy=plan.loaded.policy, dry_run=self.dry_run), decision))
        for key in deletions:
            with contextlib.suppress(FlagFileError):
                fresh = read_state(document, key, check_layout=False)
                gone = deleted(fresh, now) if fresh is not None else None
                if gone is not None:
                    flags[key] = flag_entry(document, key, gone.after, keep_segment=True)
                    changed.append(key)
                    outcomes.append((Context(key, dry_run=self.dry_run), gone))
        for key, reason in (notices or {}).items():
            with contextlib.suppress(FlagFileError):
                state = read_state(document, key, check_layout=False)
                if state is not None:
                    outcomes.append(
                        (Context(key, dry_run=self.dry_run), Decision(Action.HOLD, state, state, reason))
                    )
        if changed and not self.dry_run:
            if self.leader is not None and not self.leader.is_leader():
                raise LeadershipLostError(f"not the leader any more; not writing {self.store.location}")
            self.store.write(document, snapshot, changed)
            result.wrote = True
            for context, decision in outcomes:
                if decision.writes:
                    result.states[context.flag] = decision.after
        return recovered, outcomes

    def _record(
        self,
        recovered: Sequence[Record],
        outcomes: Sequence[tuple[Context, Decision]],
        now: datetime,
        result: CycleResult,
    ) -> None:
        """Record the flag file's changes, RECORD_CHUNK at a time: each chunk is built, printed,
        appended to the decision log and handed to the observer, then dropped, so that a cycle of
        thousands of rollouts never holds all its records at once (unless ``keep_records``).

        The flag file is written: each record goes to stdout before the decision log, so that a move
        is never unrecorded even if the decision log cannot be appended to."""
        records = itertools.chain(recovered, (to_record(d, context, now) for context, d in outcomes))
        decision_log = self.decision_log if not self.dry_run else None
        appending = decision_log is not None
        dropped = 0
        while chunk := list(itertools.islice(records, RECORD_CHUNK)):
            for record in chunk:
                self.log.info("decision", **record)
            if decision_log is not None:
                if appending:
                    try:
                        self._append(decision_log, chunk)
                    except WriteError as exc:  # the moves are made and printed; notify and count them too
                        result.problems.append(str(exc))
                        appending = False  # the rest wait with the unlogged ones, without a retry each
                else:
                    batch = [*self._unlogged, *chunk]
                    self._unlogged = batch[-MAX_UNLOGGED_RECORDS:]
                    dropped += len(batch) - len(self._unlogged)
            if self.keep_records:
                result.records.extend(chunk)
            result.decisions += len(chunk)
            if self.observer is not None:
                try:
                    self.observer.recorded(chunk)
                except Exception as exc:  # metrics or notifications must never cost a record
                    self.log.exception("observer_failed", error=str(exc), error_type=type(exc).__name__)
        if decision_log is not None and appending and self._unlogged:
            try:  # nothing new to record: still append what earlier commits could not
                self._append(decision_log, [])
            except WriteError as exc:
                result.problems.append(str(exc))
        if dropped:
            self.log.error(
                "decision_log_records_dropped",
                dropped=dropped,
                pending=len(self._unlogged),
                note="each dropped record is on stdout only",
            )

    def _append(self, decision_log: DecisionLog, records: Sequence[Record]) -> None:
        """Append, together with any records an earlier cycle could not append (disk full, read-only):
        a record is kept in memory until it is in the log, so none is lost while the process lives."""
        batch = [*self._unlogged, *records]
        if not batch:
            return
        try:
            decision_log.append(batch)
        except WriteError as exc:
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

    def _lost_records(self, document: Mapping[str, Any]) -> list[Record]:
        """Once per process (checked again until a commit gets past its write), under the lock: a flag
        whose file state is newer than its last decision record was changed by a process that died
        between writing the flag file and appending the record. Say so in the log, with the state the
        flag file holds, so that no move goes unrecorded.
        """
        if self._log_checked or self.decision_log is None or self.dry_run:
            return []
        keys = list(managed_keys(document))
        try:
            last = last_by_flag(self.decision_log.path, keys)
        except OSError as exc:
            self.log.error("decision_log_unreadable", path=str(self.decision_log.path), error=str(exc))
            return []
        lost: list[Record] = []
        for key in keys:
            try:
                state = read_state(document, key, check_layout=False)
            except FlagFileError:
                continue
            if state is None or _recorded_since(last.get(key), state.updated_at):
                continue
            reason = (
                f"the flag file shows a change at {state.updated_at.isoformat()} that has no decision "
                "record (the process that made it stopped before logging it, or the log was rotated); "
                "this is the state the flag file holds"
            )
            decision = Decision(Action.RECOVER, state, state, reason)
            lost.append(to_record(decision, Context(key), state.updated_at))
            self.log.warning("decision_record_recovered", flag=key, updated_at=state.updated_at.isoformat())
        return lost

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> bool:
        """Reconcile each policy at its own interval until ``stop`` is set (or once). Returns whether
        the last cycle had no problems.

        Policies that fall due together are reconciled in one cycle (so a template is asked once for
        all of them). A cycle runs as a task: while one waits on a slow query, policies that fall
        due meanwhile get their own cycle, and a policy is due again one interval after its last
        cycle started, once that cycle has decided it.
        """
        stop = stop or asyncio.Event()
        next_due: dict[str, float] = {}
        busy: set[str] = set()  # policies whose cycle has not decided them yet
        cycles: set[asyncio.Task[bool]] = set()
        woken = asyncio.Event()
        next_orphan_check = -math.inf
        outcome = {"ok": True}
        loop = asyncio.get_running_loop()

        def decided(names: Collection[str]) -> None:
            busy.difference_update(names)
            woken.set()

        async def run_cycle(only: set[str] | None) -> bool:
            started = time.monotonic()
            try:
                result = await self.cycle(only, decided)
            except FlagrollError as exc:
                self._failed(started)
                self.log.error("cycle_failed", error=str(exc), error_type=type(exc).__name__)
                return False
            except Exception as exc:  # a bug must not disarm every guardrail: log it, go on
                self._failed(started)
                self.log.exception("cycle_crashed", error=str(exc), error_type=type(exc).__name__)
                if once:
                    raise
                return False
            finally:
                busy.difference_update(only or ())
                woken.set()
            if self.observer is not None:
                self.observer.cycle_done(
                    ok=result.ok,
                    policy_errors=len(result.policy_errors),
                    prometheus_answered=result.prometheus_answered,
                    duration_seconds=time.monotonic() - started,
                    states=result.states,
                )
            return result.ok

        def finished(task: asyncio.Task[bool]) -> None:
            cycles.discard(task)
            if not task.cancelled() and task.exception() is None:
                outcome["ok"] = task.result()

        while not stop.is_set():
            if self.observer is not None:
                self.observer.beat()
            if self.leader is not None and not self.leader.is_leader():
                if "follower" not in self._reported:
                    self._reported.add("follower")
                    self.log.info("not_leader", note="another replica leads; waiting for the Lease")
                if self.observer is not None:
                    self.observer.follower()
                if once:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=NOT_LEADER_WAIT_SECONDS)
                continue
            self._reported.discard("follower")
            woken.clear()  # decisions from here on wake the wait below
            await self._refresh()
            loop_now = loop.time()
            policies = await self._scheduled_policies()
            due = {
                p.policy.name
                for p in policies
                if next_due.get(p.policy.name, -math.inf) <= loop_now and p.policy.name not in busy
            }
            orphans_due = loop_now >= next_orphan_check  # a deleted policy's flag needs a cycle too
            if orphans_due:
                next_orphan_check = loop_now + ORPHAN_CHECK_SECONDS
            if once:
                outcome["ok"] = await run_cycle(None)
                break
            if due or orphans_due:
                busy |= due
                task = asyncio.ensure_future(run_cycle(due))
                cycles.add(task)
                task.add_done_callback(finished)
            names = {loaded.policy.name for loaded in policies}
            next_due = {name: due_at for name, due_at in next_due.items() if name in names}
            for loaded in policies:
                if loaded.policy.name in due:
                    next_due[loaded.policy.name] = loop_now + loaded.policy.spec.interval_seconds
            wait = min(next_due.values(), default=loop_now + 5.0) - loop.time()
            if busy:  # a policy decided late may be overdue: look again when a cycle decides
                await self._wait_any(stop, woken, max(0.05, min(wait, 5.0)))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.05, min(wait, 5.0)))
        if cycles:  # shutting down: cycles still asking Prometheus finish (or are abandoned)
            await asyncio.gather(*cycles, return_exceptions=True)
        return outcome["ok"]

    async def _scheduled_policies(self) -> list[LoadedPolicy]:
        """The valid policies, for scheduling (the flag file's copy is not kept while cycles run)."""
        try:
            document: Mapping[str, Any] | None = (await asyncio.to_thread(self.store.read)).document
        except FlagrollError:
            document = None  # the cycle will say what is wrong with the flag file
        return self.load_policies(document).policies

    @staticmethod
    async def _wait_any(stop: asyncio.Event, woken: asyncio.Event, timeout_seconds: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(woken.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _failed(self, started: float) -> None:
        if self.observer is not None:
            self.observer.cycle_failed(time.monotonic() - started)

    def _refresh_locked(self, store: Refreshing) -> bool:
        with self._locked():  # so that a stale read never overwrites what a writer just wrote
            return store.refresh()

    async def _refresh(self) -> None:
        if self.dry_run or not isinstance(self.store, Refreshing):
            return
        try:
            if await asyncio.to_thread(self._refresh_locked, self.store):
                self.log.info("merged_file_written", flags=self.store.location)
            self._reported.discard("refresh")
        except Exception as exc:  # a merged file that cannot follow must never stop the guardrails
            if "refresh" not in self._reported:
                self._reported.add("refresh")
                self.log.error(
                    "merged_file_not_written", error=str(exc), note="the old merged file is intact"
                )
