"""Readings in bulk for ``flagroll backtest``: each distinct query evaluated over the window by
``/api/v1/query_range``, in chunks within Prometheus's point limit, the chunks concurrently (as many
in flight as the client allows). The requests made are distinct queries × chunks, whatever the
number of evaluation times.

A chunk Prometheus refuses, or whose answer is not a well-formed matrix, becomes a
:class:`~controller.core.backtest.Failure`: every evaluation time in it reads as an ``error``, never
as a pass.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from controller.adapters.prometheus import Answer, PrometheusClient, response_result
from controller.core.backtestranges import Failure, RangeAnswer, Series, to_ms


def parse_range(status_code: int, body: bytes, start_ms: int, end_ms: int) -> RangeAnswer:
    """Judge one ``/api/v1/query_range`` response for the chunk [start_ms, end_ms]. Pure."""
    answer = response_result(status_code, body)
    if not isinstance(answer, tuple):
        return RangeAnswer(failures=(Failure(start_ms, end_ms, answer.detail),))
    kind, result = answer
    if kind != "matrix" or not isinstance(result, list):
        return _failed(start_ms, end_ms, f"expected a matrix from query_range, got {kind!r}")
    series = []
    for item in result:
        parsed = _series(item)
        if isinstance(parsed, str):
            return _failed(start_ms, end_ms, parsed)
        series.append(parsed)
    return RangeAnswer(tuple(series))


def _failed(start_ms: int, end_ms: int, detail: str) -> RangeAnswer:
    return RangeAnswer(failures=(Failure(start_ms, end_ms, detail),))


def _series(item: Any) -> Series | str:
    """One series of a matrix, or why it is malformed."""
    if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
        return "matrix element has no 'metric' object"
    values = item.get("values")
    if not isinstance(values, list):
        return "matrix element has no 'values' list"
    points: dict[int, float] = {}
    for sample in values:
        if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str)):
            return f'malformed sample {str(sample)[:120]!r}: expected [time, "value"]'
        stamp = sample[0]
        if not isinstance(stamp, int | float) or isinstance(stamp, bool) or not math.isfinite(stamp):
            return f"malformed sample time {str(stamp)[:120]!r}"
        try:
            points[round(stamp * 1000)] = float(sample[1])
        except ValueError:
            return f"sample value {sample[1][:120]!r} is not a number"
    labels = {str(k): str(v) for k, v in item["metric"].items() if k != "__name__"}
    return Series(labels, points)


def merged(parts: Sequence[RangeAnswer]) -> RangeAnswer:
    """One query's chunks as one answer: a series's points joined by its labels."""
    by_labels: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
    failures: list[Failure] = []
    for part in parts:
        failures.extend(part.failures)
        for s in part.series:
            by_labels.setdefault(tuple(sorted(s.labels.items())), {}).update(s.points)
    series = tuple(Series(dict(labels), points) for labels, points in by_labels.items())
    return RangeAnswer(series, tuple(failures))


async def fetch_ranges(
    client: PrometheusClient,
    promqls: Sequence[str],
    windows: Sequence[tuple[datetime, datetime]],
    step_ms: int,
) -> dict[str, RangeAnswer]:
    """Every query over every chunk, concurrently: one request per query and chunk."""

    async def one(promql: str, start: datetime, end: datetime) -> RangeAnswer:
        start_ms, end_ms = to_ms(start), to_ms(end)
        answer = await client.query_range(promql, start_ms, end_ms, step_ms)
        if isinstance(answer, Answer):
            return parse_range(answer.status_code, answer.body, start_ms, end_ms)
        return _failed(start_ms, end_ms, answer.detail)

    unique = sorted({q for q in promqls if q})
    tasks = [one(q, start, end) for q in unique for start, end in windows]
    results = await asyncio.gather(*tasks)
    per_query = len(windows)
    return {q: merged(results[i * per_query : (i + 1) * per_query]) for i, q in enumerate(unique)}
