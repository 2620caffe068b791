"""Judging ``/api/v1/query_range`` answers, and one HTTP edge case the real server does not produce
on demand (a truncated body), with respx."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import respx

from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promrange import fetch_ranges, merged, parse_range
from controller.core.backtestranges import RangeAnswer, Series, reading_at
from controller.core.queries import ReadingKind


def _matrix(*series: object) -> bytes:
    return json.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": list(series)}}
    ).encode()


def test_a_matrix_becomes_series_keyed_by_millisecond() -> None:
    body = _matrix(
        {"metric": {"__name__": "x", "v": "on"}, "values": [[1700000000, "0.5"], [1700000030.5, "NaN"]]}
    )
    answer = parse_range(200, body, 0, 1)
    assert answer.failures == ()
    (series,) = answer.series
    assert series.labels == {"v": "on"}
    assert series.points[1_700_000_000_000] == 0.5
    assert reading_at(answer, 1_700_000_030_500).kind is ReadingKind.NO_DATA


def test_a_refused_or_malformed_answer_is_a_failure_of_the_whole_chunk() -> None:
    refused = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode()
    for status, body in (
        (400, refused),
        (200, b"<html>"),
        (200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()),
        (200, _matrix({"metric": {}, "values": [[1, 2]]})),
        (200, _matrix({"metric": {}, "values": [["x", "1"]]})),
    ):
        answer = parse_range(status, body, 10, 20)
        (failure,) = answer.failures
        assert (failure.start_ms, failure.end_ms) == (10, 20)
        assert reading_at(answer, 15).kind is ReadingKind.ERROR
        assert reading_at(answer, 21).kind is ReadingKind.NO_DATA


def test_chunks_merge_by_series() -> None:
    first = RangeAnswer((Series({"v": "on"}, {1: 1.0}),))
    second = RangeAnswer((Series({"v": "on"}, {2: 2.0}), Series({"v": "control"}, {2: 3.0})))
    whole = merged([first, second])
    assert {tuple(s.labels.items()): dict(s.points) for s in whole.series} == {
        (("v", "on"),): {1: 1.0, 2: 2.0},
        (("v", "control"),): {2: 3.0},
    }


@respx.mock
def test_a_truncated_body_is_an_error_for_its_chunk_only() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    windows = [
        (start, start + timedelta(minutes=5)),
        (start + timedelta(minutes=10), start + timedelta(minutes=15)),
    ]
    good = _matrix({"metric": {}, "values": [[start.timestamp() + 600, "1"]]})
    route = respx.post("http://prom.test/api/v1/query_range").mock(
        side_effect=[httpx.Response(200, content=b'{"status": "succ'), httpx.Response(200, content=good)]
    )

    async def fetch() -> dict[str, RangeAnswer]:
        async with PrometheusClient("http://prom.test", max_concurrency=1) as client:
            return await fetch_ranges(client, ["up"], windows, 300_000)

    answer = asyncio.run(fetch())["up"]
    assert route.call_count == 2
    assert reading_at(answer, round(start.timestamp() * 1000)).kind is ReadingKind.ERROR
    assert reading_at(answer, round((start.timestamp() + 600) * 1000)).value == 1.0
