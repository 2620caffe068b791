"""The reconciler: load policies, ask Prometheus, decide, write the flag file, log each decision.

One cycle (:meth:`Reconciler.cycle`, in :mod:`.cycle`), for the policies that are due:

1. read the flag file without the lock, load and validate every policy file (an invalid policy is
   reported and skipped; its flag is not touched), and plan (:mod:`.plan`): which rollouts to
   decide, with their queries, and which flags the policy set leaves unguarded or orphaned
   (:mod:`controller.core.ownership`);
2. run every rollout's queries concurrently (:mod:`.ask`; this is the slow part, so nobody waits on
   the lock meanwhile), handing the answers on in waves as they come back;
3. for each wave, take the lock, read the flag file again, and decide each rollout whose state is
   unchanged since step 1 (a rollout that moved meanwhile, say by ``flagroll stop``, is left for the
   next cycle) (:mod:`.commit`);
4. write every change in one atomic write, then append the decision records a chunk at a time
   (:mod:`.record`), then release the lock. The first commit of a process also records the moves a
   dead process left unrecorded (:mod:`.recovery`).

The flag file holds all state, so a cycle can be re-run or run by two processes at once: the lock and
the re-read make the second one see the first one's step and hold instead of advancing twice.

A store without a lock (Kubernetes) refuses a write when the object changed since step 3's read
(``WriteConflictError``); step 3 then starts again from a fresh read, so a rollout that moved meanwhile
is left alone and the others are decided from what is there now. With a ``leader`` (a Lease), only
the leader runs cycles, and every write first checks that it still leads.

:meth:`Reconciler.run` (:mod:`.schedule`) runs cycles, each policy at its own interval. What the
phases share is in :mod:`.shared`. The tunables (``RECORD_CHUNK``, ``LOCK_SLICE_SECONDS``, …) live
in, and are read from, the module of their phase: patch them there
(``controller.reconciler.record.RECORD_CHUNK``). Only ``CONFLICT_ATTEMPTS`` is exported here, to
be read (a patch here would change nothing).
"""

from controller.reconciler.commit import CONFLICT_ATTEMPTS
from controller.reconciler.cycle import Reconciler
from controller.reconciler.shared import Clock, CycleObserver, CycleResult, Leadership, Refreshing, utc_now

__all__ = [
    "CONFLICT_ATTEMPTS",
    "Clock",
    "CycleObserver",
    "CycleResult",
    "Leadership",
    "Reconciler",
    "Refreshing",
    "utc_now",
]
