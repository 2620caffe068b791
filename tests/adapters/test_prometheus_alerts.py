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
from controller.core import alerts
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading, ReadingKind, Source, alerts_query
from controller.core.records import Context, to_record
from controller.core.state import Action
from tests.core.test_decision import T0, at_step, run
from tests.core.test_decision_alerts import alerted, firing

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


HOSTILE = {
    "alertname": "Paged\x1b[2J",
    "route": '/a", forged="1\nINJECTED \x1b[31mred\\',
    "zone": "eu\u202ewest\x00",
}


def test_hostile_label_values_are_escaped_not_printed_raw() -> None:
    """An alert's labels come from the metrics its rule reads (a request path, a user agent): the
    name a record gives it is quoted the PromQL way, with no control character that a terminal,
    `flagroll log` or a notification would act on, and no quote that forges another label."""
    (name,) = parse_listing(200, answer("vector", [series(**HOSTILE)])).series
    assert name.isprintable()
    assert name == (
        r'Paged\x1b[2J{route="/a\", forged=\"1\nINJECTED \x1b[31mred\\", zone="eu\u202ewest\x00"}'
    )


def test_thousands_of_alerts_with_huge_labels_keep_the_record_bounded() -> None:
    """Many alerts, each with a long label: the reading counts them all, each name is cut short and
    the record names at most SHOWN_FIRING of them."""
    body = answer("vector", [series(alertname=f"A{i:04d}", detail="x" * 50_000) for i in range(100)])
    many = answer("vector", [series(alertname=f"B{i:05d}", pod=f"p-{i}") for i in range(5000)])
    for reading in (parse_listing(200, body), parse_listing(200, many)):
        assert reading.value == len(reading.series)
        assert all(len(n) <= alerts.MAX_NAME for n in reading.series)
        assert reading.series[0].startswith(("A0000{", "B00000{"))
    (cut,) = {n[-4:] for n in parse_listing(200, body).series}
    assert cut == 'x…"}'
    decision = run(alerted(), at_step(alerted(), 1), T0, firing(*parse_listing(200, body).series))
    record = json.dumps(to_record(decision, Context("cache", policy=alerted()), T0))
    assert len(record) < alerts.SHOWN_FIRING * alerts.MAX_NAME + 20_000


def test_an_answer_larger_than_the_client_reads_is_an_error_that_follows_on_error() -> None:
    """Tens of thousands of alerts firing for one selector: the answer is larger than flagroll reads
    (8 MB by default), which is an error check, never a pass; with ``onError: hold`` the rollout holds
    even with ``onFiring: rollback`` (docs: narrow the selector)."""
    key = QueryKey(Source.ALERT, "checkout-pages", Arm.TREATMENT, flag="cache")
    body = answer("vector", [series(alertname=f"A{i:05d}", pod=f"p-{i}") for i in range(2000)])

    async def run_query() -> Reading:
        async with PrometheusClient(URL, max_body_bytes=len(body) - 1) as client:
            return (await client.query_all([PlannedQuery(key, QUERY, listing=True)]))[key]

    with respx.mock() as router:
        router.post(f"{URL}/api/v1/query").mock(return_value=httpx.Response(200, content=body))
        reading = asyncio.run(run_query())
    assert reading.kind is ReadingKind.ERROR
    assert reading.detail == f"response larger than {len(body) - 1} bytes"
    p = alerted("rollback")
    decision = run(p, at_step(p, 1), T0, {("checkout-pages", Arm.TREATMENT): reading})
    assert decision.action is Action.HOLD
    assert decision.reason.startswith("error: alert checkout-pages: error (response larger than")
