"""Scale benchmark: full reconciliation cycles for N rollouts, shared templates against per-policy queries.

What it does, in one run:

1. starts a synthetic exporter on 127.0.0.1 that serves request counters and a latency histogram per
   flag and variant (the instrumentation kit's labels) for every fleet size N, each fleet under its
   own ``fleet`` label, and a real Prometheus scraping it every ``--scrape`` seconds;
2. for each N and each mode, runs the controller in a child process (so that its peak RSS is its
   own): N policies on a flag file where every rollout is at its first step with a long hold, a first
   cycle to start them, then ``--cycles`` full cycles (read policies and flag file, ask Prometheus,
   judge, commit, append the decision records, print the decision lines);
3. prints per N and mode: cycle wall time (median, p95), Prometheus queries per cycle, peak RSS, and
   the targets; ``--json`` writes the same figures.

Modes: ``templates`` (policies name three MetricTemplates: requests, error ratio, p95 latency; each is
asked once per cycle for every rollout) and ``per-policy`` (the same three queries inline in every
policy, rendered per flag and arm: six queries per rollout per cycle, the way per-rollout canary
controllers ask).

Run: ``python -m bench.scale`` (defaults: N = 10, 100, 1000, 5000). Needs the ``prometheus`` binary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

SIZES = (10, 100, 1000, 5000)
MODES = ("templates", "per-policy")
BUCKETS = ("0.1", "0.25", "0.5", "1.0", "+Inf")
RATE_WINDOW = "1m"
LABELS = "feature_flag_key, feature_flag_result_variant"
MIN_SAMPLES = 100
TARGET_MEDIAN_SECONDS_AT_1000 = 1.0
TARGET_QUERY_RATIO = 50.0
TARGET_PEAK_RSS_MIB_AT_5000 = 150.0


def flag_key(fleet: int, index: int) -> str:
    return f"n{fleet}-flag-{index:05d}"


# --- the synthetic exporter -------------------------------------------------------------------------


class Exporter:
    """Counters that grow at a fixed rate per arm: 20 requests/s, 0.5 % errors, most under 250 ms."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.started = time.monotonic()
        self.arms = [
            (f'fleet="n{n}",feature_flag_key="{flag_key(n, i)}",feature_flag_result_variant="{v}"')
            for n in sizes
            for i in range(n)
            for v in ("on", "control")
        ]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def render(self) -> bytes:
        seconds = time.monotonic() - self.started + 600  # as if the service had run ten minutes
        requests = 20.0 * seconds
        errors = requests * 0.005
        shares = (0.7, 0.97, 0.99, 0.999, 1.0)  # cumulative share under each bucket edge: p95 ≈ 240 ms
        lines = ["# TYPE http_server_requests_total counter"]
        for arm in self.arms:
            lines.append(f'http_server_requests_total{{{arm},code="200"}} {requests - errors:.3f}')
            lines.append(f'http_server_requests_total{{{arm},code="500"}} {errors:.3f}')
        lines.append("# TYPE http_server_request_duration_seconds histogram")
        for arm in self.arms:
            for le, share in zip(BUCKETS, shares, strict=True):
                lines.append(
                    f'http_server_request_duration_seconds_bucket{{{arm},le="{le}"}} {requests * share:.3f}'
                )
        return ("\n".join(lines) + "\n").encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler

    def __enter__(self) -> Exporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- policies ---------------------------------------------------------------------------------------


def _queries(fleet: int, *, per_policy: bool) -> dict[str, str]:
    """The three queries: grouped by flag and variant (templates) or for one flag and arm."""
    if per_policy:
        arm = (
            f'fleet="n{fleet}",feature_flag_key="{{{{flag}}}}",feature_flag_result_variant="{{{{variant}}}}"'
        )
        return {
            "requests": f"sum(increase(http_server_requests_total{{{arm}}}[{RATE_WINDOW}]))",
            "errors": (
                f'sum(rate(http_server_requests_total{{{arm},code="500"}}[{RATE_WINDOW}])) '
                f"/ sum(rate(http_server_requests_total{{{arm}}}[{RATE_WINDOW}]))"
            ),
            "p95": (
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(http_server_request_duration_seconds_bucket{{{arm}}}[{RATE_WINDOW}])))"
            ),
        }
    fleet_only = f'fleet="n{fleet}"'
    return {
        "requests": (
            f"sum by ({LABELS}) (increase(http_server_requests_total{{{fleet_only}}}[{RATE_WINDOW}]))"
        ),
        "errors": (
            f'sum by ({LABELS}) (rate(http_server_requests_total{{{fleet_only},code="500"}}[{RATE_WINDOW}])) '
            f"/ sum by ({LABELS}) (rate(http_server_requests_total{{{fleet_only}}}[{RATE_WINDOW}]))"
        ),
        "p95": (
            f"histogram_quantile(0.95, sum by (le, {LABELS}) "
            f"(rate(http_server_request_duration_seconds_bucket{{{fleet_only}}}[{RATE_WINDOW}])))"
        ),
    }


def templates_file(fleet: int) -> str:
    documents = []
    for name, query in _queries(fleet, per_policy=False).items():
        documents.append(
            f"apiVersion: flagroll/v1\nkind: MetricTemplate\nmetadata: {{name: http-{name}}}\n"
            f"spec:\n  query: {json.dumps(query)}\n"
        )
    return "---\n".join(documents)


def policy(fleet: int, index: int, *, per_policy: bool) -> str:
    key = flag_key(fleet, index)
    if per_policy:
        queries = _queries(fleet, per_policy=True)
        traffic = f"query: {json.dumps(queries['requests'])}"
        errors = f"query: {json.dumps(queries['errors'])}"
        p95 = f"query: {json.dumps(queries['p95'])}"
    else:
        traffic, errors, p95 = "template: http-requests", "template: http-errors", "template: http-p95"
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: {key}}}
spec:
  owner: platform-sre
  aim: Move checkout to the new client without raising p95 above 300ms.
  mechanism: The new client pools connections, which removes a handshake per request.
  flag: {{key: {key}}}
  interval: 30s
  steps:
    - {{percent: 5, hold: 6h}}
    - {{percent: 25, hold: 6h}}
  traffic:
    {traffic}
    minSamples: {MIN_SAMPLES}
  guardrails:
    - name: error-rate
      {errors}
      max: 0.02
    - name: p95-latency
      {p95}
      max: 0.3
      maxIncrease: 0.2
"""


def write_policies(directory: Path, fleet: int, *, per_policy: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if not per_policy:
        (directory / "templates.yaml").write_text(templates_file(fleet))
    for index in range(fleet):
        (directory / f"{flag_key(fleet, index)}.yaml").write_text(policy(fleet, index, per_policy=per_policy))


# --- one measurement, in a child process ------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    rollouts: int
    mode: str
    cycles: int
    median_seconds: float
    p95_seconds: float
    max_seconds: float
    queries_per_cycle: float
    peak_rss_mib: float
    decisions_per_cycle: float
    actions: dict[str, int]
    verdicts: dict[str, int]  # of every check in the measured cycles: pass, fail, no_data, error


class _Tally:
    """Counts what the records of a cycle say, as they are made (the controller keeps none)."""

    def __init__(self) -> None:
        self.actions: dict[str, int] = {}
        self.verdicts: dict[str, int] = {}
        self.reasons: set[str] = set()

    def recorded(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            action = str(record["action"])
            self.actions[action] = self.actions.get(action, 0) + 1
            if action != "advance" and len(self.reasons) < 3:
                self.reasons.add(str(record["reason"]))
            for check in record.get("checks", []):
                self.verdicts[str(check["verdict"])] = self.verdicts.get(str(check["verdict"]), 0) + 1

    def beat(self) -> None: ...

    def cycle_done(self, **_: Any) -> None: ...

    def cycle_failed(self, duration_seconds: float) -> None: ...

    def follower(self) -> None: ...


async def _measure(directory: Path, url: str, fleet: int, mode: str, cycles: int) -> Figures:
    from controller.adapters import logs
    from controller.adapters.decisionlog import DecisionLog
    from controller.adapters.flagstore import FileFlagStore
    from controller.adapters.prometheus import PrometheusClient
    from controller.reconciler import Reconciler

    logs.configure("json")  # decision lines go to stdout, as with `flagroll run`
    tally = _Tally()
    async with PrometheusClient(
        url, timeout_seconds=30, max_concurrency=8, max_body_bytes=64 << 20
    ) as client:
        reconciler = Reconciler(
            policies=directory / "policies",
            store=FileFlagStore(directory / "flags.json"),
            prometheus=client,
            decision_log=DecisionLog(directory / "decisions.jsonl"),
            observer=tally,
            keep_records=False,  # as `flagroll run`: records are written and counted, not kept
        )
        first = await reconciler.cycle()  # starts every rollout (it writes the flag file)
        advanced = tally.actions.get("advance", 0)
        if first.problems or first.policy_errors or advanced != fleet:
            raise SystemExit(
                f"the first cycle started {advanced} of {fleet} rollouts: "
                f"{first.problems[:3]} {first.policy_errors[:3]} {sorted(tally.reasons)}"
            )
        del first
        tally.actions.clear()  # from here on: the measured cycles only
        tally.verdicts.clear()
        times, queries, decisions = [], [], []
        for _ in range(cycles):
            before = client.requests
            started = time.perf_counter()
            result = await reconciler.cycle()
            times.append(time.perf_counter() - started)
            queries.append(client.requests - before)
            decisions.append(result.decisions)
            del result
    ordered = sorted(times)
    return Figures(
        rollouts=fleet,
        mode=mode,
        cycles=cycles,
        median_seconds=statistics.median(times),
        p95_seconds=ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        max_seconds=ordered[-1],
        queries_per_cycle=statistics.mean(queries),
        peak_rss_mib=peak_rss_mib(),
        decisions_per_cycle=statistics.mean(decisions),
        actions=tally.actions,
        verdicts=tally.verdicts,
    )


def peak_rss_mib() -> float:
    """This process's peak resident set size. ``VmHWM`` starts afresh at exec; ``ru_maxrss`` keeps
    the parent's peak across fork and exec on Linux, so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(arguments: Sequence[str]) -> None:
    directory, url, fleet, mode, cycles, out = arguments
    figures = asyncio.run(_measure(Path(directory), url, int(fleet), mode, int(cycles)))
    Path(out).write_text(json.dumps(asdict(figures)))


def run_child(directory: Path, url: str, fleet: int, mode: str, cycles: int) -> Figures:
    write_policies(directory / "policies", fleet, per_policy=mode == "per-policy")
    out = directory / "figures.json"
    with (directory / "controller.log").open("wb") as log:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.scale",
                "--child",
                str(directory),
                url,
                str(fleet),
                mode,
                str(cycles),
                str(out),
            ],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Figures(**json.loads(out.read_text()))


# --- the run ----------------------------------------------------------------------------------------


def wait_until_prometheus_sees(url: str, sizes: Sequence[int], timeout_seconds: float = 120.0) -> None:
    """Until every arm has enough requests in the rate window for its checks to be judged."""
    deadline = time.monotonic() + timeout_seconds
    query = (
        f"count(sum by (fleet, {LABELS}) (increase(http_server_requests_total[{RATE_WINDOW}])) "
        f">= {2 * MIN_SAMPLES})"
    )
    expected = 2 * sum(sizes)
    while time.monotonic() < deadline:
        with_value = httpx.post(f"{url}/api/v1/query", data={"query": query}, timeout=30).json()
        result = with_value.get("data", {}).get("result", [])
        if result and float(result[0]["value"][1]) >= expected:
            return
        time.sleep(1)
    raise SystemExit(f"Prometheus did not see {expected} arms with traffic within {timeout_seconds:g}s")


def cycles_for(fleet: int, mode: str, cycles: int) -> int:
    if mode == "per-policy" and fleet >= 1000:
        return max(2, cycles // 5)  # thousands of queries a cycle: a few cycles tell the story
    return cycles


def table(rows: Sequence[Figures]) -> str:
    head = (
        f"{'rollouts':>8}  {'mode':<10}  {'cycles':>6}  {'median s':>9}  {'p95 s':>8}  "
        f"{'queries/cycle':>13}  {'peak RSS MiB':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.rollouts:>8}  {r.mode:<10}  {r.cycles:>6}  {r.median_seconds:>9.3f}  {r.p95_seconds:>8.3f}  "
            f"{r.queries_per_cycle:>13.0f}  {r.peak_rss_mib:>12.1f}"
        )
    return "\n".join(lines)


def verdicts(rows: Sequence[Figures]) -> list[tuple[str, bool]]:
    by = {(r.rollouts, r.mode): r for r in rows}
    found: list[tuple[str, bool]] = []
    shared = by.get((1000, "templates"))
    alone = by.get((1000, "per-policy"))
    if shared is not None:
        found.append(
            (
                f"1,000 rollouts: median cycle {shared.median_seconds:.3f} s "
                f"≤ {TARGET_MEDIAN_SECONDS_AT_1000:g} s",
                shared.median_seconds <= TARGET_MEDIAN_SECONDS_AT_1000,
            )
        )
        found.append(
            (
                f"1,000 rollouts: {shared.queries_per_cycle:.0f} queries per cycle = 3 templates in use",
                shared.queries_per_cycle == 3,
            )
        )
        if alone is not None:
            ratio = alone.queries_per_cycle / max(shared.queries_per_cycle, 1)
            found.append(
                (
                    f"1,000 rollouts: {ratio:.0f}× fewer queries than per-policy (≥ 50×)",
                    ratio >= TARGET_QUERY_RATIO,
                )
            )
    biggest = by.get((5000, "templates"))
    if biggest is not None:
        found.append(
            (
                f"5,000 rollouts: cycle completes ({biggest.median_seconds:.2f} s); peak RSS "
                f"{biggest.peak_rss_mib:.0f} MiB ≤ {TARGET_PEAK_RSS_MIB_AT_5000:g} MiB",
                biggest.peak_rss_mib <= TARGET_PEAK_RSS_MIB_AT_5000,
            )
        )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), help="rollout counts (default: %(default)s)"
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="default: both")
    parser.add_argument(
        "--cycles", type=int, default=10, help="measured cycles per size and mode (default 10)"
    )
    parser.add_argument(
        "--scrape", type=float, default=5.0, help="Prometheus scrape interval, seconds (default 5)"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0

    from controller.adapters.promserver import PrometheusServer, find_binary

    binary = find_binary()
    rows: list[Figures] = []
    with (
        tempfile.TemporaryDirectory(prefix="flagroll-scale-") as scratch,
        Exporter(args.sizes) as exporter,
        PrometheusServer([exporter.target], binary=binary, scrape_interval_seconds=args.scrape) as prometheus,
    ):
        print(
            f"Prometheus {prometheus.url} scraping {len(exporter.arms)} arms every {args.scrape:g}s",
            flush=True,
        )
        wait_until_prometheus_sees(prometheus.url, args.sizes)
        for fleet in sorted(args.sizes):
            for mode in args.modes:
                directory = Path(scratch) / f"n{fleet}-{mode}"
                figures = run_child(
                    directory, prometheus.url, fleet, mode, cycles_for(fleet, mode, args.cycles)
                )
                rows.append(figures)
                print(
                    f"  {fleet} rollouts, {mode}: median {figures.median_seconds:.3f} s, "
                    f"{figures.queries_per_cycle:.0f} queries/cycle, "
                    f"peak RSS {figures.peak_rss_mib:.1f} MiB, "
                    f"decisions {figures.actions}, checks {figures.verdicts}",
                    flush=True,
                )
    print()
    print(table(rows))
    print()
    results = verdicts(rows)
    for text, met in results:
        print(f"  {'met' if met else 'NOT MET'}: {text}")
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "scrape_seconds": args.scrape}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "machine": machine,
            "rows": [asdict(r) for r in rows],
            "targets": [{"target": text, "met": met} for text, met in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if all(met for _, met in results) else 1


if __name__ == "__main__":
    sys.exit(main())
