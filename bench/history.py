"""Past data for ``flagroll backtest``: per-variant request and error counters (and, if asked, a latency
histogram) of one flag, one sample per scrape, with an incident in the treatment arm from a known
time; written as OpenMetrics and backfilled into TSDB blocks with ``promtool tsdb create-blocks-from
openmetrics``. Shared by the backtest benchmark (``bench/backtest.py``) and the tests on backfilled
history (``tests/system/test_backtest_history.py``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

FLAG = "shop-cache"
VARIANTS = ("on", "control")
# Upper bounds of the latency buckets (seconds); the healthy path answers in 0.1-0.25 s, the incident's
# treatment in 0.5-1 s.
BUCKETS_SECONDS = ("0.1", "0.25", "0.5", "1", "+Inf")


@dataclass(frozen=True)
class Shape:
    """What each arm serves per scrape. Healthy: ``healthy_errors`` of ``requests_per_scrape`` fail;
    during the incident the treatment fails ``incident_errors`` and (with ``latency``) is slow."""

    scrape_seconds: int = 60
    requests_per_scrape: int = 600
    healthy_errors: int = 6  # 1 %
    incident_errors: int = 120  # 20 %
    latency: bool = False


def _stamps(start: datetime, end: datetime, shape: Shape) -> range:
    return range(int(start.timestamp()), int(end.timestamp()) + 1, shape.scrape_seconds)


def _bucket_share(le: str, slow: bool) -> float:
    """The share of requests at or under ``le`` seconds: healthy 90 % under 0.1 s, all under 0.25 s;
    slow 90 % in 0.5-1 s."""
    healthy = {"0.1": 0.9, "0.25": 1.0, "0.5": 1.0, "1": 1.0, "+Inf": 1.0}
    regressed = {"0.1": 0.0, "0.25": 0.05, "0.5": 0.1, "1": 1.0, "+Inf": 1.0}
    return (regressed if slow else healthy)[le]


def openmetrics_lines(start: datetime, end: datetime, incident: datetime, shape: Shape) -> Iterator[str]:
    """The OpenMetrics text, line by line (a week at 30 s is a few hundred thousand lines)."""
    stamps = _stamps(start, end, shape)
    per = shape.requests_per_scrape
    yield "# TYPE shop_requests counter"
    for variant in VARIANTS:
        labels = f'{{flag="{FLAG}",variant="{variant}"}}'
        for i, t in enumerate(stamps):
            yield f"shop_requests_total{labels} {i * per} {t}"
    yield "# TYPE shop_errors counter"
    for variant in VARIANTS:
        labels = f'{{flag="{FLAG}",variant="{variant}"}}'
        total = 0
        for t in stamps:
            failing = variant == "on" and t >= incident.timestamp()
            total += shape.incident_errors if failing else shape.healthy_errors
            yield f"shop_errors_total{labels} {total} {t}"
    if shape.latency:
        yield "# TYPE shop_latency_seconds histogram"
        for variant in VARIANTS:
            yield from _histogram(variant, stamps, incident, per)
    yield "# EOF"


def _histogram(variant: str, stamps: range, incident: datetime, per: int) -> Iterator[str]:
    base = f'flag="{FLAG}",variant="{variant}"'
    for le in BUCKETS_SECONDS:
        total = 0
        for t in stamps:
            slow = variant == "on" and t >= incident.timestamp()
            yield f'shop_latency_seconds_bucket{{{base},le="{le}"}} {total} {t}'
            total += round(per * _bucket_share(le, slow))
    for suffix, each_slow, each_fast in (("count", per, per), ("sum", per * 0.75, per * 0.08)):
        total_f = 0.0
        for t in stamps:
            slow = variant == "on" and t >= incident.timestamp()
            yield f"shop_latency_seconds_{suffix}{{{base}}} {total_f:g} {t}"
            total_f += each_slow if slow else each_fast


def write_openmetrics(path: Path, start: datetime, end: datetime, incident: datetime, shape: Shape) -> None:
    with path.open("w") as out:
        for line in openmetrics_lines(start, end, incident, shape):
            out.write(line + "\n")


def backfill(source: Path, data_dir: Path, timeout_seconds: float = 600) -> None:
    """``promtool tsdb create-blocks-from openmetrics SOURCE DATA_DIR``."""
    done = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"promtool create-blocks-from failed (exit {done.returncode}): {done.stderr[-2000:]}"
        )


def shop_policy(
    interval: str,
    rate_window: str,
    *,
    control: bool = False,
    latency: bool = False,
    statistical: bool = False,
) -> str:
    """The policy that reads this history: traffic and an error-rate guardrail (and, with ``latency``,
    a p95 guardrail on the histogram), over ``rate_window``, at ``interval``. With ``statistical``,
    the guardrails are comparisons with control counted since exposure began (errorRatio, and with
    ``latency`` the share slower than 100 ms), and the arms' requests are their exposures for the
    sample-ratio check."""
    of = '{flag="{{flag}}",variant="{{variant}}"}' + f"[{rate_window}]"  # the arm's series, over the window
    lines = [
        "apiVersion: flagroll/v1",
        "kind: RolloutPolicy",
        "metadata:",
        "  name: shop-cache",
        "spec:",
        "  owner: shop-sre",
        "  aim: Cut p95 of /shop from 450ms to 250ms.",
        "  mechanism: A cache removes repeated I/O.",
        "  flag:",
        "    key: shop-cache",
        *(["  control: true"] if control else []),
        f"  interval: {interval}",
        "  steps:",
        "    - {percent: 5, hold: 1h}",
        "    - {percent: 20, hold: 1h}",
        "    - {percent: 50, hold: 2h}",
        "  traffic:",
        f"    query: sum(increase(shop_requests_total{of}))",
        "    minSamples: 100",
        "  guardrails:",
        "    - name: error-rate",
        "      query: >-",
        f"        sum(rate(shop_errors_total{of}))",
        f"        / sum(rate(shop_requests_total{of}))",
        "      max: 0.05",
    ]
    if statistical:
        guardrails = lines.index("  guardrails:")
        lines = [
            *lines[: guardrails + 1],
            *_statistical_lines('{flag="{{flag}}",variant="{{variant}}"}', latency),
        ]
        if not control:  # the comparison needs the control arm
            lines.insert(lines.index("  flag:") + 2, "  control: true")
        return "\n".join(lines) + "\n"
    if latency:
        lines += [
            "    - name: p95-latency",
            "      query: >-",
            "        histogram_quantile(0.95, sum by (le)",
            f"        (rate(shop_latency_seconds_bucket{of})))",
            "      max: 0.4",
        ]
    return "\n".join(lines) + "\n"


def _statistical_lines(arm: str, latency: bool) -> list[str]:
    slow = [
        "    - name: slow-requests",
        "      latency:",
        f"        histogram: shop_latency_seconds{arm}",
        "        slowerThan: 100ms",
        "      maxIncrease: 0.5",
    ]
    return [
        "    - name: error-rate",
        "      errorRatio:",
        f"        errors: shop_errors_total{arm}",
        f"        requests: shop_requests_total{arm}",
        "      maxDelta: 0.01",
        *(slow if latency else []),
        "  statistics:",
        f"    exposure: shop_requests_total{arm}",
    ]
