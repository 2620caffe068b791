"""The reconciler in-process, faked at the project's own seam (the metrics source), with real files:
a policy template, a clock the test moves, metrics answered from a function of the PromQL, and an
``Environment`` holding a policies directory, a flag file and a decision log under one root."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.flagstore import FileFlagStore
from controller.core.flagd import read_state
from controller.core.guarding import DEFAULT_GRACE
from controller.core.queries import PlannedQuery, QueryKey, Reading
from controller.reconciler import CycleObserver, Reconciler
from controller.reconciler.verify import ServingSettings

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {name}}}
spec:
  owner: sre-lead
  aim: Cut p95 from 450ms to 250ms.
  mechanism: A cache removes repeated I/O.
  flag: {{key: {key}}}
  interval: 10s
  steps:
    - {{percent: 1, hold: 1m}}
    - {{percent: 5, hold: 1m}}
  traffic:
    query: sum(requests{{v="{{{{variant}}}}"}})
    minSamples: 10
  guardrails:
    - name: errors
      query: sum(errors{{v="{{{{variant}}}}",flag="{{{{flag}}}}"}})
      max: 0.01
"""


# ``cache`` with steps of 20 and 50 %: arms large enough to see in a few hundred sampled keys.
RAMP = (
    POLICY.format(name="cache", key="cache")
    .replace("{percent: 1, hold: 1m}", "{percent: 20, hold: 1m}")
    .replace("{percent: 5, hold: 1m}", "{percent: 50, hold: 1m}")
)


class Clock:
    """A clock that stands still at ``T0`` until a test moves ``now``."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FakeMetrics:
    """Answers every query from a function of its PromQL; counts what was asked."""

    def __init__(self, answer: Callable[[str], Reading] | None = None) -> None:
        self.answer = answer or healthy
        self.asked: list[str] = []
        self.during: Callable[[], None] | None = None

    async def query_all(self, queries: Sequence[PlannedQuery]) -> dict[QueryKey, Reading]:
        self.asked.extend(q.promql for q in queries)
        if self.during is not None:
            self.during()
        return {q.key: self.answer(q.promql) for q in queries}


def healthy(promql: str) -> Reading:
    return Reading.of(100.0 if promql.startswith("sum(requests") else 0.001)


def failing(promql: str) -> Reading:
    if promql.startswith("sum(errors") and 'v="on"' in promql:
        return Reading.of(0.5)
    return healthy(promql)


def down(promql: str) -> Reading:
    return Reading.error("cannot connect to http://127.0.0.1:9: connection refused")


class Environment:
    """A policies directory (holding ``cache``), a flag file and a decision log under ``root``, and a
    reconciler on them with the fake clock and metrics."""

    def __init__(self, root: Path) -> None:
        self.policies = root / "policies"
        self.policies.mkdir()
        self.flags = root / "flags.json"
        self.log = root / "decisions.jsonl"
        self.clock = Clock()
        self.metrics = FakeMetrics()
        self.grace = DEFAULT_GRACE
        self.add_policy("cache", "cache")

    def add_policy(self, name: str, key: str, text: str | None = None) -> None:
        body = text if text is not None else POLICY.format(name=name, key=key)
        (self.policies / f"{name}.yaml").write_text(body)

    def reconciler(
        self,
        *,
        dry_run: bool = False,
        store: FileFlagStore | None = None,
        serving: ServingSettings | None = None,
        observer: CycleObserver | None = None,
        heartbeat_seconds: float = 0.0,
    ) -> Reconciler:
        return Reconciler(
            policies=self.policies,
            store=store or FileFlagStore(self.flags),
            prometheus=self.metrics,
            decision_log=DecisionLog(self.log),
            dry_run=dry_run,
            clock=self.clock,
            grace=self.grace,
            serving=serving,
            observer=observer,
            heartbeat_seconds=heartbeat_seconds,
        )

    def cycle(self, *, dry_run: bool = False) -> list[dict[str, object]]:
        return asyncio.run(self.reconciler(dry_run=dry_run).cycle()).records

    def percent(self, key: str = "cache") -> float:
        state = read_state(json.loads(self.flags.read_text()), key)
        assert state is not None
        return state.percent

    def actions(self) -> list[str]:
        return [str(r["action"]) for r in read_records(self.log)]
