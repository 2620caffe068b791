"""``flagroll backtest``'s per-interval counts against the controller's own count queries, on a real
Prometheus (the Debian package's 2.x) serving a backfilled counter scraped once a minute, with a
counter reset in one arm: the replay's counts and ``sum(increase(…[Ws]))`` as instant queries at
the same evaluation times."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bench.history import backfill
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promrange import fetch_ranges
from controller.adapters.promserver import PrometheusServer
from controller.core.backtest import chunks, evaluation_times, step_ms
from controller.core.backtestcounts import Counts, count_queries
from controller.core.backtestranges import to_ms
from controller.core.queries import Arm, Part, PlannedQuery, QueryKey, Source, plan
from tests.conftest import prometheus_binary
from tests.core.test_backtest_counts import POLICY, load

SCRAPE = 60  # seconds between samples
OFFSET = 17  # seconds past the minute of each sample
PER_SCRAPE = 600.0  # requests per sample, in each arm


@dataclass(frozen=True)
class Counters:
    server: PrometheusServer
    start: datetime
    end: datetime
    reset: datetime  # the treatment's counter restarts from 0 (a pod restart) just before this sample


def _lines(start: datetime, end: datetime, reset: datetime) -> Iterator[str]:
    # scraped 17 s past each minute: off the evaluation times, so ``increase()`` extrapolates
    stamps = range(int(start.timestamp()) + OFFSET, int(end.timestamp()) + 1, SCRAPE)
    for name in ("requests_total", "errors_total", "exposures_total"):
        family = name.removesuffix("_total")
        yield f"# TYPE {family} counter"
        for arm in ("on", "control"):
            value = 0.0
            for t in stamps:
                per = PER_SCRAPE if name != "errors_total" else PER_SCRAPE / 100
                value = per if arm == "on" and t == int(reset.timestamp()) + OFFSET else value + per
                yield f'{name}{{v="{arm}"}} {value:g} {t}'
    yield "# EOF"


@pytest.fixture(scope="module")
def counters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Counters]:
    root = tmp_path_factory.mktemp("counters")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    end -= timedelta(minutes=end.minute % 5)
    start = end - timedelta(hours=6)
    reset = start + timedelta(hours=3, minutes=2)  # inside the interval ending at 3h05m
    source = root / "counters.om"
    source.write_text("\n".join(_lines(start, end, reset)) + "\n")
    data = root / "data"
    backfill(source, data)
    with PrometheusServer([], data_dir=data, retention="3650d", binary=prometheus_binary("prom2")) as server:
        yield Counters(server, start, end, reset)


async def _both(counters: Counters, windows: list[int]) -> tuple[list[float], list[dict[int, float]]]:
    """The replay's requests count of the treatment over each window at every evaluation time, and
    the controller's ``sum(increase(requests_total{v="on"}[Ws]))`` at the same times."""
    policy = load(POLICY)
    step = step_ms(policy)
    times = evaluation_times(counters.start + timedelta(hours=1), counters.end, policy.spec.interval_seconds)
    key = QueryKey(Source.GUARDRAIL, "errors", Arm.TREATMENT, Part.TOTAL, "cache")
    wanted = count_queries(policy, step)[(key.source, key.name, key.arm, key.part)]
    async with PrometheusClient(counters.server.url) as client:
        answers = await fetch_ranges(client, [wanted], chunks(times), step)
    counts = Counts(policy, [to_ms(t) for t in times], step, answers)
    replayed: list[dict[int, float]] = []
    controller: list[float] = []
    async with httpx.AsyncClient(base_url=counters.server.url) as http:
        for window in windows:
            (own,) = [q for q in plan(policy, with_checkpoint=False, window_seconds=window) if q.key == key]
            got = {}
            for index, at in enumerate(times):
                reading = counts.readings([PlannedQuery(key, own.promql, window)], index)[key]
                got[index] = reading.value if reading.value is not None else float("nan")
                answer = await http.get("/api/v1/query", params={"query": own.promql, "time": at.timestamp()})
                controller.append(float(answer.json()["data"]["result"][0]["value"][1]))
            replayed.append(got)
    return controller, replayed


def test_the_replays_counts_and_the_controllers_differ_by_a_scrape_without_a_reset_an_interval_with_one(
    counters: Counters,
) -> None:
    windows = [1800, 3600]
    controller, replayed = asyncio.run(_both(counters, windows))
    policy = load(POLICY)
    times = evaluation_times(counters.start + timedelta(hours=1), counters.end, policy.spec.interval_seconds)
    worst_clean = 0.0
    worst_reset = 0.0
    for w, window in enumerate(windows):
        for index, at in enumerate(times):
            if at - timedelta(seconds=window) < times[0]:
                continue  # the replay counts from its first evaluation at the earliest
            gap = abs(replayed[w][index] - controller[w * len(times) + index])
            reaches = at - timedelta(seconds=window) < counters.reset <= at
            if reaches:
                worst_reset = max(worst_reset, gap)
            else:
                worst_clean = max(worst_clean, gap)
    assert worst_clean <= PER_SCRAPE  # what the docs promise: at most a scrape interval's worth
    interval = policy.spec.interval_seconds / SCRAPE * PER_SCRAPE
    # a reset loses the treatment's growth over the interval in which it restarted
    assert PER_SCRAPE < worst_reset <= interval + PER_SCRAPE
