"""Leader election on a ``coordination.k8s.io/v1`` Lease, for several replicas of ``flagroll run``.

Only the holder of the Lease reconciles. The rules follow Kubernetes' own leader election (client-go):

- **acquire**: a missing Lease is created with us as holder; a Lease with no holder is taken;
- **renew**: the holder writes ``renewTime`` every ``retry_period_seconds``;
- **take over**: another holder's Lease is taken once its record has not changed for
  ``leaseDurationSeconds`` *as measured on our own clock since we first saw that record*, so clock
  skew between nodes does not matter (a newly started replica therefore waits one lease duration);
- **lose**: a failed renewal, or another holder in the Lease, ends leadership at once; and even
  without news, leadership lapses ``renew_deadline_seconds`` after the last successful renewal began,
  before any other replica may take over. Every write is guarded by :meth:`LeaseElector.is_leader`;
- **give up**: on shutdown the holder clears ``holderIdentity`` so another replica takes over at once.

Every change is a replace carrying the resourceVersion read, so two replicas taking over at the same
moment cannot both win: the second gets a 409 and stays a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from lightkube import Client
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from controller.adapters.kube.errors import KubeNotFoundError, api_call
from controller.adapters.kube.objects import ObjectRef
from controller.core.errors import FlagrollError, PermanentError

LEASE_DURATION_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10.0
RETRY_PERIOD_SECONDS = 2.0
RESOURCE = "leases.coordination.k8s.io"


def _record(spec: Any) -> tuple[object, ...]:
    if spec is None:
        return ()
    return (
        spec.holderIdentity,
        spec.leaseDurationSeconds,
        spec.acquireTime,
        spec.renewTime,
        spec.leaseTransitions,
    )


class LeaseElector:
    def __init__(
        self,
        client: Client,
        ref: ObjectRef,
        identity: str,
        *,
        lease_duration_seconds: int = LEASE_DURATION_SECONDS,
        renew_deadline_seconds: float = RENEW_DEADLINE_SECONDS,
        retry_period_seconds: float = RETRY_PERIOD_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: Any = None,
    ) -> None:
        if not 0 < retry_period_seconds < renew_deadline_seconds < lease_duration_seconds:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")
        self.client = client
        self.ref = ref
        self.identity = identity
        self.lease_duration_seconds = lease_duration_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.retry_period_seconds = retry_period_seconds
        self.monotonic = monotonic
        self.wall = wall
        self.log = log if log is not None else structlog.get_logger("flagroll")
        self._guard = threading.Lock()
        self._valid_until = -float("inf")  # monotonic time until which we may write
        self._observed: tuple[object, ...] = ()
        self._observed_at = 0.0
        self._was_leader = False
        self._last_error = ""

    def is_leader(self) -> bool:
        """Whether this replica may write now: a local check, no API call (safe from any thread)."""
        with self._guard:
            return self.monotonic() < self._valid_until

    def _set(self, valid_until: float) -> None:
        with self._guard:
            self._valid_until = valid_until

    def _lose(self, why: str, **fields: Any) -> bool:
        self._set(-float("inf"))
        if self._was_leader:
            self.log.warning(
                "leadership_lost", lease=str(self.ref), identity=self.identity, why=why, **fields
            )
        self._was_leader = False
        return False

    def _won(self, started: float, how: str) -> bool:
        self._set(started + self.renew_deadline_seconds)
        if not self._was_leader:
            self.log.info("leadership_acquired", lease=str(self.ref), identity=self.identity, how=how)
        self._was_leader = True
        self._last_error = ""
        return True

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards. API errors end leadership at once;
        permanent ones (403: RBAC) are raised after that, temporary ones are logged."""
        started = self.monotonic()
        try:
            return self._attempt(started)
        except FlagrollError as exc:
            self._lose("the Lease could not be read or written", error=str(exc))
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                self.log.error("leader_election_failed", lease=str(self.ref), error=str(exc))
            if isinstance(exc, PermanentError):
                raise
            return False

    def _now(self) -> datetime:
        """The wall time for ``renewTime`` and ``acquireTime``. The API server parses these MicroTime
        fields with exactly six fractional digits, and the client leaves the fraction out when it is
        zero: a whole second is nudged by a microsecond so that it always has one."""
        now = self.wall()
        return now + timedelta(microseconds=1) if now.microsecond == 0 else now

    def _attempt(self, started: float) -> bool:
        now = self._now()
        try:
            with api_call("get", RESOURCE, self.ref):
                lease = self.client.get(Lease, self.ref.name, namespace=self.ref.namespace)
        except KubeNotFoundError:
            return self._create(started, now)
        answered = self.monotonic()
        spec = lease.spec or LeaseSpec()
        record = _record(spec)
        if record != self._observed:
            # From when the answer arrived, not when the read was sent: a slow answer can carry a
            # renewal begun long after the read left, and the holder may write until 10 s after it.
            self._observed, self._observed_at = record, answered
        holder = spec.holderIdentity or ""
        if holder and holder != self.identity:
            duration = spec.leaseDurationSeconds or self.lease_duration_seconds
            if self._observed_at + duration > answered:
                return self._lose("another replica holds the Lease", holder=holder)
        renewing = holder == self.identity
        lease.spec = LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=self.lease_duration_seconds,
            acquireTime=spec.acquireTime if renewing and spec.acquireTime else now,
            renewTime=now,
            leaseTransitions=(spec.leaseTransitions or 0) + (0 if renewing else 1),
            preferredHolder=spec.preferredHolder,
            strategy=spec.strategy,
        )
        with api_call("update", RESOURCE, self.ref):
            stored = self.client.replace(lease)
        self._observed, self._observed_at = _record(stored.spec), started
        return self._won(started, "renewed" if renewing else f"took over from {holder or 'nobody'}")

    def _create(self, started: float, now: datetime) -> bool:
        lease = Lease(
            metadata=ObjectMeta(name=self.ref.name, namespace=self.ref.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=self.lease_duration_seconds,
                acquireTime=now,
                renewTime=now,
                leaseTransitions=0,
            ),
        )
        with api_call("create", RESOURCE, self.ref):
            stored = self.client.create(lease)
        self._observed, self._observed_at = _record(stored.spec), started
        return self._won(started, "created the Lease")

    def release(self) -> None:
        """Give the Lease up (on shutdown) so another replica need not wait for it to expire."""
        was_leader = self.is_leader()
        self._set(-float("inf"))
        self._was_leader = False
        if not was_leader:
            return
        try:
            with api_call("get", RESOURCE, self.ref):
                lease = self.client.get(Lease, self.ref.name, namespace=self.ref.namespace)
            if lease.spec is None or lease.spec.holderIdentity != self.identity:
                return
            now = self._now()
            lease.spec.holderIdentity = None
            lease.spec.leaseDurationSeconds = 1
            lease.spec.renewTime = now
            with api_call("update", RESOURCE, self.ref):
                self.client.replace(lease)
            self.log.info("leadership_released", lease=str(self.ref), identity=self.identity)
        except FlagrollError as exc:  # it expires by itself
            self.log.warning("lease_release_failed", lease=str(self.ref), error=str(exc))

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire and renew every retry period until ``stop``; permanent errors are logged and retried
        too (RBAC may be fixed without a restart)."""
        while not stop.is_set():
            with contextlib.suppress(PermanentError):
                await asyncio.to_thread(self.try_acquire_or_renew)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.retry_period_seconds)
