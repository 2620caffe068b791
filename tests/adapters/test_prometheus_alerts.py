"""The firing alerts of a selector as Prometheus answers them (``spec.alerts``): each answer's shape
judged (respx for the edge cases; the real server in tests/system/test_alerts_prometheus.py). An
empty list is an answer (nothing fires); anything else that is not a list of labelled series is an
``error``, never a pass."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx

from controller.adapters.prometheus import PrometheusClient, parse_listing
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading, ReadingKind, Source, alerts_query

URL = "http://prometheus.test:9090"
QUERY = alerts_query('{service="checkout"}')


def answer(result_type: str, result: Any) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}).encode()


def series(**labels: str) -> dict[str, Any]:
    return {"metric": {"__name__": "ALERTS", "alertstate": "firing", **labels}, "value": [1.0, "1"]}


def test_firing_alerts_are_counted_and_named_sorted() -> None:
    body = answer("vector", [series(alertname="B", service="checkout"), series(alertname="A", pod="p-1")])
    reading = parse_listing(200, body)
    assert reading == Reading.listed(['A{pod="p-1"}', 'B{service="checkout"}'])
    assert reading.value == 2


def test_nothing_firing_is_zero_not_missing_data() -> None:
    assert parse_listing(200, answer("vector", [])) == Reading.listed([])


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (200, answer("matrix", []), "the firing alerts are a vector of series, not a matrix"),
        (200, answer("scalar", [1, "0"]), "the firing alerts are a vector of series, not a scalar"),
        (200, answer("vector", {"a": 1}), "vector result is not a list"),
        (
            200,
            answer("vector", [{"value": [1, "1"]}]),
            "vector element has no 'metric' object of label values",
        ),
        (
            200,
            answer("vector", [{"metric": {"a": 1}}]),
            "vector element has no 'metric' object of label values",
        ),
        (200, b"<html>", "response is not JSON (truncated or HTML?): <html>"),
        (503, b"", "HTTP 503"),
    ],
)
def test_a_malformed_answer_is_an_error(status: int, body: bytes, detail: str) -> None:
    reading = parse_listing(status, body)
    assert reading.kind is ReadingKind.ERROR
    assert reading.detail == detail


def test_the_client_reads_a_listing_as_a_list_and_other_queries_as_numbers() -> None:
    planned = [
        PlannedQuery(QueryKey(Source.ALERT, "pages", Arm.TREATMENT, flag="a"), QUERY, listing=True),
        PlannedQuery(QueryKey(Source.ALERT, "pages", Arm.TREATMENT, flag="b"), QUERY, listing=True),
        PlannedQuery(QueryKey(Source.GUARDRAIL, "g", Arm.TREATMENT, flag="a"), "vector(1)"),
    ]

    def reply(request: httpx.Request) -> httpx.Response:
        query = httpx.QueryParams(request.content.decode())["query"]
        if query == QUERY:
            return httpx.Response(200, content=answer("vector", [series(alertname="Paged")]))
        return httpx.Response(200, content=answer("vector", [{"metric": {}, "value": [1, "1"]}]))

    async def run() -> dict[QueryKey, Reading]:
        async with PrometheusClient(URL) as client:
            return await client.query_all(planned)

    with respx.mock() as router:
        route = router.post(f"{URL}/api/v1/query").mock(side_effect=reply)
        readings = asyncio.run(run())
    assert route.call_count == 2  # the selector once for both rollouts
    assert readings[planned[0].key] == readings[planned[1].key] == Reading.listed(["Paged{}"])
    assert readings[planned[2].key] == Reading.of(1.0)
