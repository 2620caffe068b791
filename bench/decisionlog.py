"""Decision log size: bytes per day at 100, 1,000 and 5,000 rollouts on a 30 s interval, before
(``--decision-log-heartbeat 0``: every evaluation a full record) and after compaction (the default
heartbeat), in the same run.

What it does: it simulates a day of ``--simulate`` rollouts (default 200), each on its own policy
(three guardrails and traffic, five steps held 30 minutes to 2 hours: a ramp of about 7 hours, then
completed with its guardrails armed), starting at a random time of the day's first 4 hours. Each
rollout's day has its spells of no data (the traffic query empty for 5 to 40 minutes, one to three
times), and one in five has an incident (its error ratio far past the bound) that rolls it back; the
values are noisy every evaluation, and the hold's text counts down. Each evaluation goes through
the real path: ``queries_for`` and ``decide``, ``to_record``, then :func:`compacted` with a
per-flag run as the loop's Recorder keeps it; a rolled-back rollout with nothing new records
nothing, as in the loop. The records of each 30 s cycle are appended to two real decision logs
(``before``: every record; ``after``: what compaction writes) through :class:`DecisionLog`, one
append (and fsync) per cycle.

It then checks that the compacted log lost nothing: the sequence of records that change a flag's
state or its hold key in the full stream equals the compacted log's full records, field for field,
and every heartbeat names the time of a full record of its flag. It prints bytes/day, records/day
and the reduction factor at each fleet size (scaled linearly from the simulated rollouts: rollouts
are independent, one record each per evaluation) and whether the target (≤ 100 MB a day at 1,000
rollouts, after) is met; ``--json`` writes the figures (bench/results/decisionlog.json).

    .venv/bin/python -m bench.decisionlog                     # 200 rollouts simulated, about a minute
    .venv/bin/python -m bench.decisionlog --simulate 20 --json /tmp/d.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.targets import finish
from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.policyfile import load_text
from controller.core.compaction import Run, compacted, hold_key, is_heartbeat, is_plain_hold
from controller.core.decision import decide, queries_for, rebase
from controller.core.policy import Policy
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading
from controller.core.records import Context, Record, to_record
from controller.core.state import ACTIVE, RolloutState

SIZES = (100, 1000, 5000)
INTERVAL_SECONDS = 30
DAY_SECONDS = 86_400
DEFAULT_HEARTBEAT_SECONDS = 1800.0  # flagroll run's default
HEARTBEATS_SECONDS = (600.0, DEFAULT_HEARTBEAT_SECONDS)  # each compacted in the same run
TARGET_BYTES_AT_1000 = 100 * 1000 * 1000
DAY = datetime(2026, 12, 1, tzinfo=UTC)

SELECTOR = 'feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"'
REQUESTS = f"sum(rate(http_server_requests_total{{{SELECTOR}}}[5m]))"
QUERIES = {
    "traffic": f"{REQUESTS} * 300",
    "errors": f'sum(rate(http_server_requests_total{{code=~"5..",{SELECTOR}}}[5m])) / {REQUESTS}',
    "latency": "histogram_quantile(0.95, sum by (le) "
    f"(rate(http_server_request_duration_seconds_bucket{{{SELECTOR}}}[5m])))",
    "cpu": f'max(rate(process_cpu_seconds_total{{job="api",{SELECTOR}}}[5m]))',
}
POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {flag}}}
spec:
  owner: team-{team}
  aim: "Cut p95 of /api/{flag} from 450ms to 250ms without more errors."
  mechanism: "A read-through cache removes repeated database reads on the hot path."
  flag: {{key: {flag}}}
  interval: 30s
  steps:
    - {{percent: 1, hold: 30m}}
    - {{percent: 5, hold: 1h}}
    - {{percent: 10, hold: 1h}}
    - {{percent: 25, hold: 2h}}
    - {{percent: 50, hold: 2h}}
  traffic:
    query: '{traffic}'
    minSamples: 200
  guardrails:
    - name: error-ratio
      query: '{errors}'
      max: 0.02
    - name: p95-latency
      query: '{latency}'
      maxIncrease: 0.25
    - name: saturation
      query: '{cpu}'
      max: 0.9
  onNoData: hold
  onError: hold
"""


@dataclass
class Rollout:
    """One simulated rollout's day: its policy, state, compaction run and scripted troubles."""

    flag: str
    policy: Policy
    start: int  # seconds into the day
    no_data: list[tuple[int, int]]  # spells (from, to), seconds into the day
    incident: int | None  # when its error ratio goes far past the bound
    rng: random.Random
    stored: RolloutState | None = None
    runs: dict[float, Run] = field(default_factory=dict)  # per heartbeat setting


def rollout(index: int, seed: int) -> Rollout:
    rng = random.Random(seed * 1_000_003 + index)
    flag = f"svc-{index:05d}-cache"
    quoted = {name: query.replace("'", "''") for name, query in QUERIES.items()}
    loaded = load_text(POLICY.format(flag=flag, team=index % 40, **quoted), f"{flag}.yaml")
    assert not loaded.errors, loaded.errors
    start = rng.randrange(0, 4 * 3600, INTERVAL_SECONDS)
    spells = []
    for _ in range(rng.randint(1, 3)):
        begin = rng.randrange(start, DAY_SECONDS - 3600)
        spells.append((begin, begin + rng.randrange(300, 2400)))
    incident = rng.randrange(start + 3600, DAY_SECONDS) if rng.random() < 0.2 else None
    return Rollout(flag, loaded.policies[0].policy, start, spells, incident, rng)


def readings(r: Rollout, queries: Sequence[PlannedQuery], second: int) -> dict[QueryKey, Reading]:
    silent = any(a <= second < b for a, b in r.no_data)
    broken = r.incident is not None and second >= r.incident
    found: dict[QueryKey, Reading] = {}
    for query in queries:
        name, treated = query.key.name, query.key.arm is Arm.TREATMENT
        noise = r.rng.uniform(0.9, 1.1)
        if name == "traffic":
            found[query.key] = Reading.no_data("empty result") if silent else Reading.of(round(900 * noise))
        elif name == "error-ratio":
            found[query.key] = Reading.of((0.08 if broken and treated else 0.004) * noise)
        elif name == "p95-latency":
            found[query.key] = Reading.of((0.21 if treated else 0.24) * noise)
        else:
            found[query.key] = Reading.of(0.35 * noise)
    return found


def evaluate(r: Rollout, second: int) -> tuple[Record, bool] | None:
    """The rollout's record at ``second`` of the day and whether it changes the flag's state; None
    when the loop records nothing (not started, or rolled back with nothing new)."""
    if second < r.start:
        return None
    now = DAY + timedelta(seconds=second)
    stored = r.stored
    queries = queries_for(r.policy, rebase(r.policy, stored, now).state, now)  # as the loop plans them
    decision = decide(r.policy, stored, queries, readings(r, queries, second), now)
    if decision.after.status not in ACTIVE and not decision.writes:
        return None
    if decision.writes:
        r.stored = decision.after
    return to_record(decision, Context(r.flag, policy=r.policy), now), decision.writes


@dataclass
class Stream:
    """What the full stream must keep: each record that changes a flag's state or its hold key."""

    kept: list[Record] = field(default_factory=list)
    keys: dict[str, Any] = field(default_factory=dict)

    def add(self, record: Record, writes: bool) -> None:
        plain = is_plain_hold(record) and not writes
        key = hold_key(record) if plain else None
        flag = str(record["flag"])
        if not plain or flag not in self.keys or self.keys[flag] != key:
            self.kept.append(record)
        self.keys[flag] = key


@dataclass
class Compacted:
    """The compacted log of one heartbeat setting."""

    heartbeat_seconds: float
    bytes: int
    records: int
    full: int
    heartbeats: int
    lost: int


@dataclass
class Figures:
    simulated: int
    evaluations: int
    before_bytes: int
    before_records: int
    changes: int
    seconds: float
    after: list[Compacted] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)


def simulate(count: int, seed: int, root: Path) -> Figures:
    started = time.monotonic()
    rollouts = [rollout(i, seed) for i in range(count)]
    before = DecisionLog(root / "before.jsonl", max_bytes=0)
    after = {s: DecisionLog(root / f"after-{s:g}.jsonl", max_bytes=0) for s in HEARTBEATS_SECONDS}
    stream = Stream()
    evaluations = 0
    for second in range(0, DAY_SECONDS, INTERVAL_SECONDS):
        full: list[Record] = []
        written: dict[float, list[Record]] = {s: [] for s in HEARTBEATS_SECONDS}
        now = DAY + timedelta(seconds=second)
        for r in rollouts:
            evaluated = evaluate(r, second)
            if evaluated is None:
                continue
            record, writes = evaluated
            evaluations += 1
            full.append(record)
            stream.add(record, writes)
            for seconds in HEARTBEATS_SECONDS:  # what the loop's Recorder does, per setting
                out, r.runs[seconds] = compacted(
                    record, r.runs.get(seconds), now, changes_state=writes, heartbeat_seconds=seconds
                )
                if out is not None:
                    written[seconds].append(out)
        before.append(full)
        for seconds, log in after.items():
            log.append(written[seconds])
    figures = Figures(
        simulated=count,
        evaluations=evaluations,
        before_bytes=before.path.stat().st_size,
        before_records=sum(1 for _ in read_records(before.path)),
        changes=len(stream.kept),
        seconds=0.0,
    )
    for seconds, log in after.items():
        kept = list(read_records(log.path))
        beats = sum(1 for r in kept if is_heartbeat(r))
        size = log.path.stat().st_size
        lost = _lost(stream.kept, kept)
        figures.after.append(Compacted(seconds, size, len(kept), len(kept) - beats, beats, lost))
    figures.seconds = time.monotonic() - started
    return figures


def _lost(must: list[Record], kept: list[Record]) -> int:
    """How many of the full stream's changes are not, in order and field for field, the compacted
    log's full records; and every heartbeat names a full record of its flag (else counted lost)."""
    full = [r for r in kept if not is_heartbeat(r)]
    wanted = [json.loads(json.dumps(r)) for r in must]
    lost = sum(1 for a, b in zip(wanted, full, strict=False) if a != b) + abs(len(wanted) - len(full))
    times = {(r["flag"], r["time"]) for r in full}
    lost += sum(1 for r in kept if is_heartbeat(r) and (r["flag"], r["heartbeat"]["since"]) not in times)
    return lost


def rows(figures: Figures, sizes: Sequence[int]) -> Iterator[dict[str, float]]:
    for size in sizes:
        scale = size / figures.simulated
        for after in figures.after:
            yield {
                "rollouts": size,
                "heartbeat_seconds": after.heartbeat_seconds,
                "before_bytes_per_day": figures.before_bytes * scale,
                "after_bytes_per_day": after.bytes * scale,
                "before_records_per_day": figures.before_records * scale,
                "after_records_per_day": after.records * scale,
                "reduction": figures.before_bytes / max(1, after.bytes),
            }


def verdicts(figures: Figures) -> list[tuple[str, bool]]:
    at_1000 = next(
        r
        for r in figures.rows
        if r["rollouts"] == 1000 and r["heartbeat_seconds"] == DEFAULT_HEARTBEAT_SECONDS
    )
    lost = sum(a.lost for a in figures.after)
    return [
        (
            f"after (heartbeat {DEFAULT_HEARTBEAT_SECONDS:g} s, the default) "
            f"≤ {TARGET_BYTES_AT_1000 / 1e6:.0f} MB a day at 1,000 rollouts: "
            f"{at_1000['after_bytes_per_day'] / 1e6:.1f} MB",
            at_1000["after_bytes_per_day"] <= TARGET_BYTES_AT_1000,
        ),
        (
            f"no state change or hold-key change lost: {figures.changes} in the full stream, "
            f"{lost} missing or different in the compacted logs",
            lost == 0 and figures.changes > 0,
        ),
    ]


def report(figures: Figures) -> str:
    lines = [
        f"decision log, one day at a {INTERVAL_SECONDS} s interval; {figures.simulated} rollouts simulated "
        f"({figures.evaluations:,} evaluations, {figures.seconds:.0f} s), scaled linearly to each size",
        *(
            f"compacted, heartbeat {a.heartbeat_seconds:g} s: {a.full:,} full records and "
            f"{a.heartbeats:,} heartbeats (simulated rollouts)"
            for a in figures.after
        ),
        "",
        f"{'rollouts':>9}  {'heartbeat':>9}  {'before MB/day':>13}  {'after MB/day':>12}  "
        f"{'before rec/day':>14}  {'after rec/day':>13}  {'reduction':>9}",
    ]
    for row in figures.rows:
        lines.append(
            f"{row['rollouts']:>9,.0f}  {row['heartbeat_seconds']:>8g}s  "
            f"{row['before_bytes_per_day'] / 1e6:>13,.1f}  {row['after_bytes_per_day'] / 1e6:>12,.1f}  "
            f"{row['before_records_per_day']:>14,.0f}  "
            f"{row['after_records_per_day']:>13,.0f}  {row['reduction']:>8.1f}x"
        )
    lines.append("")
    lines += [f"{'MET   ' if met else 'MISSED'}  {text}" for text, met in verdicts(figures)]
    return "\n".join(lines)


def options(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.decisionlog", description=__doc__.split("\n")[0])
    p.add_argument("--simulate", type=int, default=200, help="rollouts simulated (default 200)")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = options(argv)
    with tempfile.TemporaryDirectory(prefix="flagroll-bench-decisionlog-") as root:
        figures = simulate(args.simulate, args.seed, Path(root))
    figures.rows = list(rows(figures, SIZES))
    print(report(figures))
    results = verdicts(figures)
    return finish(args.json, asdict(figures), results)


if __name__ == "__main__":
    sys.exit(main())
