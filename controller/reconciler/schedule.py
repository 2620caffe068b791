"""The loop of ``flagroll run``: each policy reconciled at its own interval, until told to stop.

Policies that fall due together are reconciled in one cycle (so a template is asked once for all of
them). A cycle runs as a task: while one waits on a slow query, policies that fall due meanwhile get
their own cycle, and a policy is due again one interval after its last cycle started, once that cycle
has decided it. Flags whose policy was deleted get a cycle every ORPHAN_CHECK_SECONDS. Only the leader
runs cycles; before each round, a store with a merged file (an overlay) brings it up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from controller.adapters.policyfile import LoadedPolicy
from controller.core.errors import FlagrollError
from controller.reconciler.shared import Refreshing

if TYPE_CHECKING:
    from controller.reconciler.cycle import Reconciler

ORPHAN_CHECK_SECONDS = 10.0  # how often flags whose policy was deleted are looked at
NOT_LEADER_WAIT_SECONDS = 1.0
LONGEST_WAIT_SECONDS = 5.0  # the loop looks at the policy files at least this often
SHORTEST_WAIT_SECONDS = 0.05


class Schedule:
    """One run of the loop: which policies are due when, and the cycles still running."""

    def __init__(self, reconciler: Reconciler, *, once: bool, stop: asyncio.Event) -> None:
        self.reconciler = reconciler
        self.once = once
        self.stop = stop
        self.loop = asyncio.get_running_loop()
        self.next_due: dict[str, float] = {}  # policy name → loop time
        self.busy: set[str] = set()  # policies whose cycle has not decided them yet
        self.cycles: set[asyncio.Task[bool]] = set()
        self.woken = asyncio.Event()  # a cycle decided some policies
        self.next_orphan_check = -math.inf
        self.ok = True  # the last cycle had no problems

    async def run(self) -> bool:
        while not self.stop.is_set():
            self._beat()
            if not self._leading():
                if self.once:
                    break
                await self._sleep(NOT_LEADER_WAIT_SECONDS)
                continue
            self.woken.clear()  # decisions from here on wake the wait below
            await self._refresh()
            now = self.loop.time()
            policies = await self._policies()
            due = self._due(policies, now)
            orphans_due = self._orphans_due(now)  # a deleted policy's flag needs a cycle too
            if self.once:
                self.ok = await self._cycle(None)
                break
            if due or orphans_due:
                self._start(due)
            self._reschedule(policies, due, now)
            await self._wait(now)
        if self.cycles:  # shutting down: cycles still asking Prometheus finish (or are abandoned)
            await asyncio.gather(*self.cycles, return_exceptions=True)
        if self.reconciler.verifier is not None:  # a CronJob's run waits for them; a shutdown does not
            await self.reconciler.verifier.close(wait=self.once)
        return self.ok

    def _beat(self) -> None:
        if self.reconciler.observer is not None:
            self.reconciler.observer.beat()

    def _leading(self) -> bool:
        r = self.reconciler
        if r.leader is None or r.leader.is_leader():
            r.reported.forget("follower")
            return True
        if r.reported.first("follower"):
            r.log.info("not_leader", note="another replica leads; waiting for the Lease")
        r.forget_runs()
        if r.observer is not None:
            r.observer.follower()
        return False

    async def _policies(self) -> list[LoadedPolicy]:
        """The valid policies, for scheduling (the flag file's copy is not kept while cycles run)."""
        r = self.reconciler
        try:
            document: Mapping[str, Any] | None = (await asyncio.to_thread(r.store.read)).document
        except FlagrollError:
            document = None  # the cycle will say what is wrong with the flag file
        return r.load_policies(document).policies

    def _due(self, policies: list[LoadedPolicy], now: float) -> set[str]:
        return {
            p.policy.name
            for p in policies
            if self.next_due.get(p.policy.name, -math.inf) <= now and p.policy.name not in self.busy
        }

    def _orphans_due(self, now: float) -> bool:
        if now < self.next_orphan_check:
            return False
        self.next_orphan_check = now + ORPHAN_CHECK_SECONDS
        return True

    def _start(self, due: set[str]) -> None:
        self.busy |= due
        task = asyncio.ensure_future(self._cycle(due))
        self.cycles.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[bool]) -> None:
        self.cycles.discard(task)
        if not task.cancelled() and task.exception() is None:
            self.ok = task.result()

    def _decided(self, names: Collection[str]) -> None:
        self.busy.difference_update(names)
        self.woken.set()

    async def _cycle(self, only: set[str] | None) -> bool:
        """One cycle of the policies in ``only`` (all when None): whether it had no problems. A
        failure is logged and the loop goes on (a bug must not disarm every guardrail)."""
        r = self.reconciler
        started = time.monotonic()
        try:
            result = await r.cycle(only, self._decided)
        except FlagrollError as exc:
            self._failed(started)
            r.log.error("cycle_failed", error=str(exc), error_type=type(exc).__name__)
            return False
        except Exception as exc:
            self._failed(started)
            r.log.exception("cycle_crashed", error=str(exc), error_type=type(exc).__name__)
            if self.once:
                raise
            return False
        finally:
            self.busy.difference_update(only or ())
            self.woken.set()
        if r.observer is not None:
            r.observer.cycle_done(
                ok=result.ok,
                policy_errors=len(result.policy_errors),
                prometheus_answered=result.prometheus_answered,
                duration_seconds=time.monotonic() - started,
                states=result.states,
                unguarded=result.unguarded,
                unjudged=result.unjudged,
            )
        # With --once (a CronJob, which serves no metrics) an exposed flag no policy judges fails the
        # run, so that the Job says so; the loop's health (ok) is about reconciling, not about it.
        return result.ok and not (self.once and result.unguarded)

    def _failed(self, started: float) -> None:
        if self.reconciler.observer is not None:
            self.reconciler.observer.cycle_failed(time.monotonic() - started)

    def _reschedule(self, policies: list[LoadedPolicy], due: set[str], now: float) -> None:
        """Forget removed policies; each one started now is due again one interval from now."""
        names = {loaded.policy.name for loaded in policies}
        self.next_due = {name: due_at for name, due_at in self.next_due.items() if name in names}
        for loaded in policies:
            if loaded.policy.name in due:
                self.next_due[loaded.policy.name] = now + loaded.policy.spec.interval_seconds

    async def _wait(self, now: float) -> None:
        """Until the next policy is due, or stop; while a cycle runs, also until it decides (a policy
        decided late may be overdue)."""
        wait = min(self.next_due.values(), default=now + LONGEST_WAIT_SECONDS) - self.loop.time()
        timeout = max(SHORTEST_WAIT_SECONDS, min(wait, LONGEST_WAIT_SECONDS))
        if not self.busy:
            await self._sleep(timeout)
            return
        waiters = [asyncio.ensure_future(self.stop.wait()), asyncio.ensure_future(self.woken.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Until stop, for at most ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _refresh(self) -> None:
        """Bring the merged file of an overlay up to date, under the lock (so that a stale read never
        overwrites what a writer just wrote). A failure is reported once and never stops the loop."""
        r = self.reconciler
        store = r.store
        if r.dry_run or not isinstance(store, Refreshing):
            return
        try:
            if await asyncio.to_thread(self._refresh_locked, store):
                r.log.info("merged_file_written", flags=store.location)
            r.reported.forget("refresh")
        except Exception as exc:  # a merged file that cannot follow must never stop the guardrails
            if r.reported.first("refresh"):
                r.log.error("merged_file_not_written", error=str(exc), note="the old merged file is intact")

    def _refresh_locked(self, store: Refreshing) -> bool:
        with self.reconciler.locked():
            return store.refresh()
