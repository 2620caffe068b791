"""The :class:`Reconciler`: one cycle (plan, ask, commit), and the loop that runs cycles."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import structlog

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FlagStore, underlay
from controller.adapters.policyfile import PolicySet
from controller.core.guarding import DEFAULT_GRACE, Grace
from controller.core.queries import MetricsSource, ReadingKind
from controller.core.records import Record
from controller.reconciler.ask import answered
from controller.reconciler.commit import Committer
from controller.reconciler.plan import load_policies, plan
from controller.reconciler.record import Recorder
from controller.reconciler.recovery import Recovery
from controller.reconciler.schedule import Schedule
from controller.reconciler.shared import Clock, CycleObserver, CycleResult, Leadership, Reported, utc_now
from controller.reconciler.verify import ServingSettings, ServingVerifier


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
        grace: Grace = DEFAULT_GRACE,
        serving: ServingSettings | None = None,
        heartbeat_seconds: float = 0.0,
    ) -> None:
        """``keep_records``: keep each cycle's records in its :class:`CycleResult`. ``flagroll run``
        does not: records go to stdout, the decision log and the observer a chunk at a time, so that
        thousands of rollouts never have all their records in memory at once.

        ``heartbeat_seconds``: compact runs of identical holds into a heartbeat at most this often
        (:mod:`controller.core.compaction`); 0, the default here: every record in full.

        ``serving``: verify that the flag server serves what each change writes (not with ``dry_run``).

        The settings are fixed here: the phases are built from them, so they are read-only after."""
        self._policies_path = policies
        self._store = store
        self._prometheus = prometheus
        self._dry_run = dry_run
        self._clock = clock
        self._log = log if log is not None else structlog.get_logger("flagroll")
        self._leader = leader
        self._observer = observer
        self.reported = Reported(self._log)  # each distinct problem is logged once per process
        writing_log = decision_log if not dry_run else None
        self._committer = Committer(
            store=store,
            lock_timeout_seconds=lock_timeout_seconds,
            clock=clock,
            log=self._log,
            leader=leader,
            dry_run=dry_run,
            recorder=Recorder(
                decision_log=writing_log,
                log=self._log,
                observer=observer,
                keep_records=keep_records,
                heartbeat_seconds=heartbeat_seconds,
            ),
            recovery=Recovery(writing_log, self._log),
            grace=grace,
        )
        self.verifier = (
            ServingVerifier(
                serving,
                read=lambda: self._store.read().document,
                record=self._committer.record_observations,
                clock=clock,
                log=self._log,
            )
            if serving is not None and not dry_run
            else None
        )

    def close(self) -> list[Record]:
        """At a clean shutdown: write the heartbeats of holds compacted away since their flags' last
        records (see :meth:`Recorder.closing_heartbeats`); returns them."""
        return self._committer.close()

    def forget_runs(self) -> None:
        """Another replica may write records now: each flag's next record is written in full."""
        self._committer.recorder.forget()

    @property
    def store(self) -> FlagStore:
        return self._store

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def log(self) -> Any:
        return self._log

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @property
    def leader(self) -> Leadership | None:
        return self._leader

    @property
    def observer(self) -> CycleObserver | None:
        return self._observer

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The store's lock, waited for in short slices so that :meth:`abandon` is heard."""
        return self._committer.locked()

    def abandon(self) -> None:
        """Shutting down: a cycle still waiting for the lock gives up; one already writing finishes."""
        self._committer.abandon()

    def load_policies(self, document: Mapping[str, Any] | None = None) -> PolicySet:
        """Load every policy; ``document`` (the flag file) tells which policy owns which flag."""
        below = underlay(self._store) if document is not None else None
        return load_policies(self._policies_path, document, self.reported, below)

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
        snapshot = await asyncio.to_thread(self._store.read)
        policies = self.load_policies(snapshot.document)
        planned = plan(snapshot.document, policies, only, self._clock(), result, self.reported)
        del snapshot, policies  # the commits read the flag file again: one parsed copy at a time, not two
        if self.verifier is not None:
            self.verifier.seen(result.states)  # changes made by others since the last cycle
        answers: list[bool] = []
        first = True
        async for wave, readings in answered(self._prometheus, planned.plans):
            answers.extend(r.kind is not ReadingKind.ERROR for r in readings.values())
            await asyncio.to_thread(
                self._committer.commit,
                wave,
                readings,
                result,
                planned.orphans if first else (),
                planned.notices if first else (),
            )
            first = False
            if self.verifier is not None:
                self.verifier.seen(result.states)  # this commit's writes
            if decided is not None:
                decided([done.loaded.policy.name for done in wave])
        if answers:
            result.prometheus_answered = any(answers)
        return result

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> bool:
        """Reconcile each policy at its own interval until ``stop`` is set (or once): see
        :mod:`controller.reconciler.schedule`. Returns whether the last cycle had no problems."""
        return await Schedule(self, once=once, stop=stop or asyncio.Event()).run()
