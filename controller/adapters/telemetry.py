"""flagroll's own metrics and health, fed by the reconciler after every cycle.

Metric names (a public contract: alerting rules and dashboards use them):

==============================================  =========  ==========================================
``flagroll_flag_percent{flag}``                 gauge      treatment percent after the last decision
``flagroll_rollout_status{flag,status}``        gauge      1 for the rollout's current status, else 0
``flagroll_rollout_stale{flag}``                gauge      1 while partial past the policy's review date
``flagroll_rollout_unguarded{flag}``            gauge      1 while exposed and no valid policy judges it
``flagroll_rollout_waiting{flag,reason}``       gauge      1 while a due move waits for ``window`` or
                                                           ``freeze`` (``spec.schedule``), for a
                                                           human's ``approval``, or while an ``alert``
                                                           of ``spec.alerts`` fires, else 0
``flagroll_decisions_total{flag,action}``       counter    decisions taken (holds included)
``flagroll_guardrail_value{flag,guardrail,rule}`` gauge    the treatment value a guardrail rule judged
``flagroll_guardrail_bound{flag,guardrail,rule}`` gauge    the bound it was judged against
``flagroll_cycle_duration_seconds``             histogram  wall time of a reconciliation cycle
``flagroll_cycles_total{result}``               counter    cycles by result: ``ok`` or ``failed``
``flagroll_last_cycle_success_timestamp_seconds`` gauge    unix time of the last cycle without problems
``flagroll_query_errors_total{flag}``           counter    checks whose Prometheus answer was an error
``flagroll_policy_errors``                      gauge      policy problems (errors) at the last load
``flagroll_leader``                             gauge      1 while this replica leads, else 0
``flagroll_serving_unverified{flag}``           gauge      1 while the flag server does not serve what
                                                           flagroll last wrote (``--verify-ofrep``)
``flagroll_serving_verified_seconds{check}``    histogram  flagroll's write → the flag server serving it
``flagroll_serving_verifications_total{check,outcome}`` counter  verifications: confirmed or unverified
==============================================  =========  ==========================================

Only the leader describes rollouts: a replica that does not hold the Lease (``leading`` says so at
every scrape, and the loop tells :meth:`Telemetry.follower`) shows no ``flagroll_flag_percent``,
``flagroll_rollout_*``, ``flagroll_guardrail_*``, ``flagroll_serving_unverified`` or
``flagroll_policy_errors``, so that a demoted
replica cannot keep an alert firing with what it saw last. What the process itself did (cycles,
decisions, query errors, the last good cycle) stays. A flag that left the flag file leaves every
series, counters included.

Health: the loop is *alive* while it has been heard from recently (:meth:`Telemetry.beat`), and
*ready* once a cycle has loaded the policies and Prometheus has answered (or nothing needed asking).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.core.alerts import ALERT
from controller.core.approval import APPROVAL
from controller.core.changewindows import REASONS
from controller.core.serving import Check, Outcome, is_verification
from controller.core.state import RolloutState, Status

WAITING_REASONS = (*REASONS, APPROVAL, ALERT)
STATUSES = ("progressing", "paused", "stopped", "rolled_back", "completed", "promoted")
CYCLE_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SERVING_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
ALIVE_WITHIN_SECONDS = 120.0  # the loop wakes at least every 5 s; a cycle may wait on timeouts


class Telemetry:
    def __init__(
        self, *, clock: Callable[[], float] = time.time, leading: Callable[[], bool] | None = None
    ) -> None:
        """``leading``: whether this replica holds the leader Lease now (asked at every scrape and
        cycle; a local check); None when there is no Lease (this replica always leads)."""
        self._clock = clock
        self._leading = leading
        self._lock = threading.Lock()
        self._rollouts = threading.RLock()  # leadership checked and rollout series changed as one
        self._heard = clock()
        self._ready = False
        self._known: set[str] = set()  # flags with series (gauges or counters)
        self._guardrails: dict[str, set[tuple[str, str]]] = {}  # flag → (guardrail, rule) shown
        self._actions: dict[str, set[str]] = {}  # flag → actions counted
        self._recorded: set[str] = set()  # flags with a record since the last cycle was done
        self._standing_by = False  # the rollout series are cleared: another replica leads
        self._policy_errors_shown = True
        self._followed = False  # the loop said this replica follows (see _leads)
        self._unverified: dict[str, tuple[float, float]] = {}  # flag → the shares not seen served
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.percent = Gauge(
            "flagroll_flag_percent", "Treatment percent after the last decision", ["flag"], registry=r
        )
        self.status = Gauge(
            "flagroll_rollout_status", "1 for the rollout's current status", ["flag", "status"], registry=r
        )
        self.stale = Gauge(
            "flagroll_rollout_stale", "1 while partial past the review date", ["flag"], registry=r
        )
        self.unguarded = Gauge(
            "flagroll_rollout_unguarded",
            "1 while the flag serves the treatment to someone and no valid policy judges it",
            ["flag"],
            registry=r,
        )
        self.waiting = Gauge(
            "flagroll_rollout_waiting",
            "1 while a due move waits for a change window (reason window), the end of a freeze "
            "(reason freeze), a human's approval (reason approval) or firing alerts to stop (reason alert)",
            ["flag", "reason"],
            registry=r,
        )
        self.decisions = Counter("flagroll_decisions", "Decisions taken", ["flag", "action"], registry=r)
        self.guardrail_value = Gauge(
            "flagroll_guardrail_value",
            "Treatment value a guardrail rule judged",
            ["flag", "guardrail", "rule"],
            registry=r,
        )
        self.guardrail_bound = Gauge(
            "flagroll_guardrail_bound",
            "Bound a guardrail rule was judged against",
            ["flag", "guardrail", "rule"],
            registry=r,
        )
        self.cycle_duration = Histogram(
            "flagroll_cycle_duration_seconds",
            "Wall time of a reconciliation cycle",
            buckets=CYCLE_BUCKETS_SECONDS,
            registry=r,
        )
        self.cycles = Counter("flagroll_cycles", "Cycles by result", ["result"], registry=r)
        self.last_success = Gauge(
            "flagroll_last_cycle_success_timestamp_seconds",
            "Unix time of the last cycle without problems",
            registry=r,
        )
        self.query_errors = Counter(
            "flagroll_query_errors", "Checks whose Prometheus answer was an error", ["flag"], registry=r
        )
        self.policy_errors = Gauge("flagroll_policy_errors", "Policy problems at the last load", registry=r)
        self.leader = Gauge(
            "flagroll_leader", "1 while this replica leads (holds the Lease, or runs without one)", registry=r
        )
        self.serving_unverified, self.serving_seconds, self.verifications = _serving_metrics(r)
        for result in ("ok", "failed"):
            self.cycles.labels(result)

    # -- health -------------------------------------------------------------------------------------

    def beat(self) -> None:
        with self._lock:
            self._heard = self._clock()

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._clock() - self._heard <= ALIVE_WITHIN_SECONDS

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready

    # -- cycles -------------------------------------------------------------------------------------

    def follower(self) -> None:
        """A replica waiting for the leader Lease is ready: it is alive and standing by, and shows no
        rollout (the leader does)."""
        with self._lock:
            self._ready = True
            self._heard = self._clock()
        with self._rollouts:
            self._followed = True
            self._stand_by()

    def cycle_failed(self, duration_seconds: float) -> None:
        self.cycle_duration.observe(duration_seconds)
        self.cycles.labels("failed").inc()
        self.beat()

    def recorded(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Decision records, as each commit makes them. Until the cycle is done, its records have
        the last word on their flags' gauges (with --dry-run, what the decision would have set)."""
        for record in records:
            flag = str(record.get("flag", ""))
            if is_verification(record):
                self._verified(flag, record)
                continue
            with self._rollouts:
                self._followed = False  # a commit made it: the loop leads
                self._count(flag, record)
                if self._leads():
                    self._record(flag, record)
            with self._lock:
                self._recorded.add(flag)

    def cycle_done(
        self,
        *,
        ok: bool,
        policy_errors: int,
        prometheus_answered: bool,
        duration_seconds: float,
        states: Mapping[str, RolloutState] | None = None,
        unguarded: Collection[str] = (),
        unjudged: Collection[str] = (),
    ) -> None:
        """``states``: every managed flag as the cycle left it, so that the gauges describe all of
        them (inactive ones too, and after a restart), and forget flags that are gone. ``unguarded``:
        the exposed flags that no policy judged this cycle (whether or not a record said so);
        ``unjudged``: every managed flag no policy judged, exposed or not (none waits for a window)."""
        self.cycle_duration.observe(duration_seconds)
        with self._lock:
            recorded, self._recorded = self._recorded, set()
        with self._rollouts:
            self._followed = False  # only the leader runs cycles (a late one is caught by leading)
            if states is not None:
                for flag in self._known - set(states) - recorded:
                    self._forget(flag)  # it left the flag file
            if self._leads():
                if states is not None:
                    self._states(states, recorded, set(unjudged))
                    self._moved_since_unverified(states)
                    for flag in states:
                        self.unguarded.labels(flag).set(1.0 if flag in unguarded else 0.0)
                self.policy_errors.set(policy_errors)
                if not self._policy_errors_shown:
                    self.registry.register(self.policy_errors)
                    self._policy_errors_shown = True
        self.cycles.labels("ok" if ok else "failed").inc()
        if ok:
            self.last_success.set(self._clock())
        with self._lock:
            if prometheus_answered:
                self._ready = True
            self._heard = self._clock()

    # -- rollout series (the caller holds self._rollouts) ----------------------------------------------

    def _leads(self) -> bool:
        """Whether this replica leads now (without ``leading``, the loop's last word: it follows from
        :meth:`follower` until its next cycle); when it does not, its rollout series are cleared."""
        leads = self._leading() if self._leading is not None else not self._followed
        if leads:
            self._standing_by = False
            self.leader.set(1.0)
            return True
        self._stand_by()
        return False

    def _stand_by(self) -> None:
        self.leader.set(0.0)
        if self._standing_by:
            return
        self._standing_by = True
        for gauge in (
            self.percent,
            self.status,
            self.stale,
            self.unguarded,
            self.waiting,
            self.guardrail_value,
            self.guardrail_bound,
            self.serving_unverified,
        ):
            gauge.clear()
        self._guardrails.clear()
        self._unverified.clear()
        if self._policy_errors_shown:  # a gauge without labels: hidden by taking it out
            self.registry.unregister(self.policy_errors)
            self._policy_errors_shown = False

    def _forget(self, flag: str) -> None:
        """Every series of ``flag``, counters included: it left the flag file."""
        self._known.discard(flag)
        self.percent.remove(flag)
        self.stale.remove(flag)
        self.unguarded.remove(flag)
        for reason in WAITING_REASONS:
            self.waiting.remove(flag, reason)
        for name in STATUSES:
            self.status.remove(flag, name)
        for guardrail, rule in self._guardrails.pop(flag, set()):
            self.guardrail_value.remove(flag, guardrail, rule)
            self.guardrail_bound.remove(flag, guardrail, rule)
        for action in self._actions.pop(flag, set()):
            self.decisions.remove(flag, action)
        self.query_errors.remove(flag)
        self._unverified.pop(flag, None)
        self.serving_unverified.remove(flag)

    def _states(self, states: Mapping[str, RolloutState], recorded: set[str], unjudged: set[str]) -> None:
        today = datetime.fromtimestamp(self._clock(), UTC).date()
        for flag, state in states.items():
            self._known.add(flag)
            if flag in recorded:
                continue  # its record this cycle set these
            self.percent.labels(flag).set(state.percent)
            self.stale.labels(flag).set(1.0 if state.is_stale(today) else 0.0)
            for name in STATUSES:
                self.status.labels(flag, name).set(1.0 if name == state.status.value else 0.0)
            for reason in WAITING_REASONS:
                # An active rollout a policy judges keeps its record's word (its policy may simply
                # not have been due this cycle); one no policy judges waits for nothing.
                waits = self.waiting.labels(flag, reason)
                if state.status is not Status.PROGRESSING or flag in unjudged:
                    waits.set(0.0)

    def _count(self, flag: str, record: Mapping[str, Any]) -> None:
        """The counters of a record: what this process did, whether it leads or not."""
        self._known.add(flag)
        action = str(record.get("action", ""))
        self.decisions.labels(flag, action).inc()
        self._actions.setdefault(flag, set()).add(action)
        for check in record.get("checks") or []:
            if isinstance(check, Mapping) and check.get("verdict") == "error":
                self.query_errors.labels(flag).inc()

    def _record(self, flag: str, record: Mapping[str, Any]) -> None:
        if isinstance(record.get("to_percent"), int | float):
            self.percent.labels(flag).set(float(record["to_percent"]))
        status = record.get("status")
        if status in STATUSES:
            for name in STATUSES:
                self.status.labels(flag, name).set(1.0 if name == status else 0.0)
        if isinstance(record.get("stale"), bool):
            self.stale.labels(flag).set(1.0 if record["stale"] else 0.0)
        if isinstance(record.get("guarded"), bool) and record.get("action") != "reject":
            self.unguarded.labels(flag).set(0.0 if record["guarded"] else 1.0)
        if "waiting" in record and record.get("action") != "reject":
            waiting = record["waiting"]
            reason = waiting.get("reason") if isinstance(waiting, Mapping) else None
            for name in WAITING_REASONS:
                self.waiting.labels(flag, name).set(1.0 if name == reason else 0.0)
        for check in record.get("checks") or []:
            if not isinstance(check, Mapping) or check.get("kind") != "guardrail":
                continue
            labels = (flag, str(check.get("name", "")), str(check.get("rule", "")))
            self._guardrails.setdefault(flag, set()).add(labels[1:])
            if isinstance(check.get("value"), int | float):
                self.guardrail_value.labels(*labels).set(float(check["value"]))
            if isinstance(check.get("bound"), int | float):
                self.guardrail_bound.labels(*labels).set(float(check["bound"]))

    # -- verified serving ------------------------------------------------------------------------------

    def _verified(self, flag: str, record: Mapping[str, Any]) -> None:
        """A verification's outcome: counted, its seconds observed; the flag's gauge (leader only)
        says whether the server serves what flagroll last wrote."""
        serving = record.get("serving")
        if not isinstance(serving, Mapping):
            return
        check, outcome = str(serving.get("check")), str(serving.get("outcome"))
        if check not in {c.value for c in Check} or outcome not in {o.value for o in Outcome}:
            return
        self.verifications.labels(check, outcome).inc()
        seconds = _number(serving.get("seconds"))
        if outcome == Outcome.CONFIRMED and seconds is not None:
            self.serving_seconds.labels(check).observe(seconds)
        with self._rollouts:
            if not self._leads():
                return
            self._known.add(flag)
            if outcome == Outcome.UNVERIFIED:
                self._unverified[flag] = (
                    _number(serving.get("percent")) or 0.0,
                    _number(serving.get("control_percent")) or 0.0,
                )
                self.serving_unverified.labels(flag).set(1.0)
            else:
                self._unverified.pop(flag, None)
                self.serving_unverified.labels(flag).set(0.0)

    def _moved_since_unverified(self, states: Mapping[str, RolloutState]) -> None:
        """A flag written anew since its verification failed: that failure no longer describes it."""
        for flag, shares in list(self._unverified.items()):
            state = states.get(flag)
            if state is not None and (state.percent, state.control_percent) != shares:
                del self._unverified[flag]
                self.serving_unverified.labels(flag).set(0.0)

    def exposition(self) -> bytes:
        """The metrics as served on /metrics; leadership is asked now, so a replica that lost the
        Lease shows no rollout from its very next scrape on."""
        with self._rollouts:
            self._leads()
            return generate_latest(self.registry)


def _serving_metrics(r: CollectorRegistry) -> tuple[Gauge, Histogram, Counter]:
    """The metrics of verified serving (``--verify-ofrep``)."""
    unverified = Gauge(
        "flagroll_serving_unverified",
        "1 while the flag server does not serve what flagroll last wrote (its last verification failed)",
        ["flag"],
        registry=r,
    )
    seconds = Histogram(
        "flagroll_serving_verified_seconds",
        "Seconds from flagroll's write to the flag server serving it, when confirmed",
        ["check"],
        buckets=SERVING_BUCKETS_SECONDS,
        registry=r,
    )
    verifications = Counter(
        "flagroll_serving_verifications",
        "Verifications of what the flag server serves, by check and outcome",
        ["check", "outcome"],
        registry=r,
    )
    return unverified, seconds, verifications


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
