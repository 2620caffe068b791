"""Backtest benchmark: ``flagroll backtest`` over a week of backfilled history against the naive way.

What it does, in one run:

1. generates a week (``--hours``) of per-variant request and error counters and a latency histogram of
   one flag, one sample every 30 s, with an incident in the treatment arm a day before the end
   (``bench/history.py``), backfills it with ``promtool tsdb create-blocks-from openmetrics`` and starts
   the Debian package's Prometheus on the blocks; prints how long that took, apart from the rest;
2. runs ``flagroll backtest --json`` (the command, in a child process) for a policy with traffic, two
   guardrails (error ratio, p95 latency) and a control arm at a 30 s interval over the whole window:
   its wall time and the HTTP requests it made (from its report);
   then the same for the same guardrails as statistical comparisons with control (errorRatio, latency,
   the sample-ratio check), and the first policy again with ``--html`` (wall time, page size);
3. the naive way: one instant query (``/api/v1/query``) per distinct query per evaluation time, as
   many in flight as the backtest allows (4). Asking all of them would take long, so it is measured on
   the first ``--sample`` evaluation times and extrapolated to the window (said so in the output);
4. prints the figures and the targets with met / NOT MET; ``--json`` writes the same figures.

Run: ``python -m bench.backtest``. Needs ``promtool`` and ``prometheus`` (the Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.history import Shape, backfill, shop_policy, write_openmetrics
from bench.targets import finish
from controller.adapters.policyfile import load_paths
from controller.adapters.promserver import PrometheusServer
from controller.core.backtest import MAX_POINTS_PER_CHUNK, chunks, evaluation_times, fetched_promqls

INTERVAL_SECONDS = 30
CONCURRENCY = 4  # the backtest's default --max-concurrent-queries, for both ways
TARGET_WALL_SECONDS = 10.0
TARGET_REQUEST_FACTOR = 2  # requests ≤ 2 × distinct queries × chunks

POLICY = shop_policy("30s", "2m", control=True, latency=True)
# The same two guardrails as comparisons with control counted since exposure began, and the
# sample-ratio check: their counts come from per-interval growth queries (docs/backtest.md).
STATISTICAL_POLICY = shop_policy("30s", "2m", control=True, latency=True, statistical=True)


@dataclass
class Figures:
    hours: float
    evaluations: int
    distinct_queries: int
    chunks: int
    setup_seconds: float  # generate the OpenMetrics text and backfill it with promtool
    prometheus_start_seconds: float
    backtest_wall_seconds: float
    backtest_requests: int
    first_rollback: str | None
    naive_sample_evaluations: int
    naive_sample_requests: int
    naive_sample_seconds: float
    naive_requests: int  # distinct queries × evaluations
    naive_seconds_extrapolated: float
    statistical_wall_seconds: float  # the statistical policy over the same window
    statistical_requests: int
    statistical_first_rollback: str | None
    html_wall_seconds: float  # the first policy again, with --html
    html_bytes: int


def options(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.backtest", description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, default=168.0, help="length of the window (default 168: a week)")
    p.add_argument("--sample", type=int, default=400, help="evaluation times the naive way is measured on")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    p.add_argument("--dir", type=Path, metavar="DIR", help="keep the history, blocks and policy here")
    return p.parse_args(argv)


def window(hours: float) -> tuple[datetime, datetime, datetime]:
    """The window's start and end (whole minutes, an hour ago) and the incident: a day before the end
    in a week, a quarter of the window before it in a shorter one, between two evaluation times."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(hours=hours)
    before_end = min(timedelta(days=1), timedelta(hours=hours) / 4)
    incident = end - before_end + timedelta(seconds=10)
    return start, end, incident


def run_backtest(
    policies: Path, url: str, start: datetime, end: datetime, *extra: str
) -> tuple[float, dict[str, Any]]:
    """``flagroll backtest --json`` in a child process: its wall time and its report."""
    flagroll = Path(sys.executable).parent / "flagroll"
    command = [str(flagroll), "backtest", "--policies", str(policies), "--prometheus", url]
    command += ["--from", start.isoformat(), "--to", end.isoformat(), "--json", *extra]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"flagroll backtest exited {done.returncode}: {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return wall, report


async def naive(url: str, promqls: Sequence[str], times: Sequence[datetime]) -> tuple[int, float]:
    """One instant query per query per evaluation time, ``CONCURRENCY`` in flight: requests, seconds."""
    limit = asyncio.Semaphore(CONCURRENCY)
    sent = 0

    async def one(client: httpx.AsyncClient, promql: str, at: datetime) -> None:
        nonlocal sent
        async with limit:
            sent += 1
            form = {"query": promql, "time": f"{at.timestamp():.3f}"}
            response = await client.post(f"{url}/api/v1/query", data=form)
            if response.status_code != 200:
                raise RuntimeError(f"instant query refused ({response.status_code}): {response.text[:500]}")

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        for at in times:  # one evaluation after the other, as a controller replaying them would
            await asyncio.gather(*(one(client, q, at) for q in promqls))
    return sent, time.perf_counter() - began


def measure(args: argparse.Namespace, root: Path) -> Figures:
    start, end, incident = window(args.hours)
    began = time.perf_counter()
    source = root / "history.om"
    # The history begins an hour before the window, so that the first rate windows are full.
    write_openmetrics(source, start - timedelta(hours=1), end, incident, Shape(30, 300, 3, 60, latency=True))
    data = root / "data"
    backfill(source, data)
    setup = time.perf_counter() - began
    print(f"history: {args.hours:g} h, generated and backfilled in {setup:.1f} s", flush=True)
    policies = root / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "shop-cache.yaml").write_text(POLICY)
    statistical = root / "statistical"
    statistical.mkdir(exist_ok=True)
    (statistical / "shop-cache.yaml").write_text(STATISTICAL_POLICY)
    page = root / "backtest.html"
    loaded = load_paths([policies])
    (policy,) = loaded.policies
    promqls = sorted(fetched_promqls(policy.policy, policy.templates))
    times = evaluation_times(start, end, INTERVAL_SECONDS)
    began = time.perf_counter()
    with PrometheusServer([], data_dir=data, retention="3650d") as server:
        started = time.perf_counter() - began
        print(f"Prometheus started on the blocks in {started:.1f} s", flush=True)
        wall, report = run_backtest(policies, server.url, start, end)
        print(f"backtest: {wall:.2f} s", flush=True)
        stat_wall, stat_report = run_backtest(statistical, server.url, start, end)
        print(f"statistical backtest: {stat_wall:.2f} s", flush=True)
        html_wall, _ = run_backtest(policies, server.url, start, end, "--html", str(page))
        sample = times[: args.sample]
        sent, seconds = asyncio.run(naive(server.url, promqls, sample))
    replayed: dict[str, Any] = report["policies"][0]
    return Figures(
        hours=args.hours,
        evaluations=len(times),
        distinct_queries=len(promqls),
        chunks=len(chunks(times, MAX_POINTS_PER_CHUNK)),
        setup_seconds=round(setup, 2),
        prometheus_start_seconds=round(started, 2),
        backtest_wall_seconds=round(wall, 3),
        backtest_requests=int(report["http_requests"]),
        first_rollback=replayed["first_rollback"],
        naive_sample_evaluations=len(sample),
        naive_sample_requests=sent,
        naive_sample_seconds=round(seconds, 3),
        naive_requests=len(promqls) * len(times),
        naive_seconds_extrapolated=round(seconds * len(times) / max(1, len(sample)), 1),
        statistical_wall_seconds=round(stat_wall, 3),
        statistical_requests=int(stat_report["http_requests"]),
        statistical_first_rollback=stat_report["policies"][0]["first_rollback"],
        html_wall_seconds=round(html_wall, 3),
        html_bytes=page.stat().st_size,
    )


def verdicts(f: Figures) -> list[tuple[str, bool]]:
    bound = TARGET_REQUEST_FACTOR * f.distinct_queries * f.chunks
    return [
        (
            f"backtest wall time ≤ {TARGET_WALL_SECONDS:g} s: {f.backtest_wall_seconds:.2f} s",
            f.backtest_wall_seconds <= TARGET_WALL_SECONDS,
        ),
        (
            f"HTTP requests ≤ {TARGET_REQUEST_FACTOR} × {f.distinct_queries} distinct queries × "
            f"{f.chunks} chunks = {bound}: {f.backtest_requests}",
            f.backtest_requests <= bound,
        ),
    ]


def report_lines(f: Figures) -> list[str]:
    ratio = f.naive_requests / max(1, f.backtest_requests)
    return [
        f"window: {f.hours:g} h, {f.evaluations} evaluations every {INTERVAL_SECONDS} s, "
        f"{f.distinct_queries} distinct queries, {f.chunks} chunks",
        f"set-up (not in the figures below): history generated and backfilled {f.setup_seconds:.1f} s, "
        f"Prometheus started {f.prometheus_start_seconds:.1f} s",
        f"flagroll backtest: {f.backtest_wall_seconds:.2f} s wall, {f.backtest_requests} HTTP requests, "
        f"first would-be rollback {f.first_rollback}",
        f"naive (one instant query per query per evaluation time): measured on the first "
        f"{f.naive_sample_evaluations} evaluations, {f.naive_sample_requests} requests in "
        f"{f.naive_sample_seconds:.2f} s; extrapolated to the window: {f.naive_requests} requests, "
        f"about {f.naive_seconds_extrapolated:.0f} s",
        f"requests: {ratio:,.0f}× fewer than the naive way",
        f"the same guardrails as comparisons with control (errorRatio, latency) and the sample-ratio "
        f"check: {f.statistical_wall_seconds:.2f} s wall, {f.statistical_requests} HTTP requests, "
        f"first would-be rollback {f.statistical_first_rollback}",
        f"with --html: {f.html_wall_seconds:.2f} s wall, a page of {f.html_bytes:,} bytes",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = options(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        figures = measure(args, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="flagroll-bench-backtest-") as tmp:
            figures = measure(args, Path(tmp))
    for line in report_lines(figures):
        print(line)
    results = verdicts(figures)
    for text, met in results:
        print(f"target {text}: {'met' if met else 'NOT MET'}")
    return finish(args.json, asdict(figures), results)


if __name__ == "__main__":
    sys.exit(main())
