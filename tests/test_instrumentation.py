"""The instrumentation kit in a small ASGI app, with the real OpenFeature flagd provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.core.flagd import empty_document, write_flag
from controller.core.state import RolloutState, Status
from controller.instrumentation import (
    ExposureHook,
    FlagMetrics,
    FlagMetricsMiddleware,
    Receive,
    Send,
    observe,
    observed,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FLAG = "checkout-v2"


@pytest.fixture
def metrics(tmp_path: Path) -> Iterator[tuple[FlagMetrics, CollectorRegistry]]:
    state = RolloutState(
        policy="checkout",
        revision="r",
        status=Status.PROGRESSING,
        step=0,
        steps=1,
        percent=25,
        control=True,
        step_started_at=NOW,
        updated_at=NOW,
    )
    flags = tmp_path / "flags.json"
    flags.write_text(
        json.dumps(write_flag(empty_document(), FLAG, state, variants={"on": True, "off": False}))
    )
    registry = CollectorRegistry()
    kit = FlagMetrics(registry)
    api.add_hooks([ExposureHook(kit)])
    api.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(flags))
    )
    try:
        yield kit, registry
    finally:
        api.clear_hooks()
        api.shutdown()


def samples(registry: CollectorRegistry, name: str) -> list[tuple[dict[str, str], float]]:
    text = generate_latest(registry).decode()
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


async def checkout(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    user = scope["query_string"].decode().removeprefix("user=")
    new = api.get_client().get_boolean_value(FLAG, False, EvaluationContext(targeting_key=user))
    status = 503 if user == "u-broken" else 200
    if user == "u-crash":
        raise RuntimeError("boom")
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"new" if new else b"old"})


async def health(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def call(app: Any, path: str, user: str) -> int:
    scope = {"type": "http", "method": "GET", "path": path, "query_string": f"user={user}".encode()}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return statuses[0]


def test_requests_are_counted_and_timed_by_the_variant_they_were_served(
    metrics: tuple[FlagMetrics, CollectorRegistry],
) -> None:
    kit, registry = metrics
    app = FlagMetricsMiddleware(checkout, metrics=kit, flag_key=FLAG, route=lambda scope: "/checkout")
    for i in range(2000):
        assert call(app, f"/checkout/{i}", f"u{i}") == 200
    requests = samples(registry, "http_server_requests_total")
    assert {frozenset(labels) for labels, _ in requests} == {
        frozenset({"route", "code", "feature_flag_key", "feature_flag_result_variant"})
    }
    served = {
        labels["feature_flag_result_variant"]: value for labels, value in requests if labels["code"] == "200"
    }
    assert set(served) == {"on", "off", "control"}
    assert sum(served.values()) == 2000
    assert abs(served["on"] / 2000 - 0.25) < 0.04
    assert abs(served["control"] / 2000 - 0.25) < 0.04
    assert all(labels["route"] == "/checkout" for labels, _ in requests)
    # Error series exist at zero from the first request, so an error ratio reads 0, not "no data".
    errors = {lab["feature_flag_result_variant"]: v for lab, v in requests if lab["code"] == "500"}
    assert errors == {"on": 0.0, "off": 0.0, "control": 0.0}
    counts = {
        labels["feature_flag_result_variant"]: value
        for labels, value in samples(registry, "http_server_request_duration_seconds_count")
    }
    assert counts == served
    buckets = samples(registry, "http_server_request_duration_seconds_bucket")
    assert {labels["le"] for labels, _ in buckets} >= {"0.25", "0.3", "+Inf"}
    evaluations = {
        labels["feature_flag_result_variant"]: value
        for labels, value in samples(registry, "feature_flag_evaluations_total")
    }
    assert evaluations == served


def test_status_codes_and_crashes_are_recorded(metrics: tuple[FlagMetrics, CollectorRegistry]) -> None:
    kit, registry = metrics
    app = FlagMetricsMiddleware(checkout, metrics=kit, flag_key=FLAG, route=lambda scope: "/checkout")
    assert call(app, "/checkout", "u-broken") == 503
    with pytest.raises(RuntimeError):
        call(app, "/checkout", "u-crash")
    codes = {
        (labels["code"], value) for labels, value in samples(registry, "http_server_requests_total") if value
    }
    assert codes == {("503", 1.0), ("500", 1.0)}


def test_a_request_that_never_evaluated_the_flag_is_labelled_none(
    metrics: tuple[FlagMetrics, CollectorRegistry],
) -> None:
    kit, registry = metrics
    app = FlagMetricsMiddleware(health, metrics=kit, flag_key=FLAG)
    call(app, "/healthz", "anyone")
    [(labels, value)] = [s for s in samples(registry, "http_server_requests_total") if s[1]]
    assert labels == {
        "route": "/healthz",
        "code": "200",
        "feature_flag_key": FLAG,
        "feature_flag_result_variant": "none",
    }
    assert value == 1


def test_non_http_scopes_pass_through(metrics: tuple[FlagMetrics, CollectorRegistry]) -> None:
    kit, registry = metrics
    seen: list[str] = []

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    asyncio.run(FlagMetricsMiddleware(app, metrics=kit, flag_key=FLAG)({"type": "lifespan"}, receive, send))
    assert seen == ["lifespan"]
    assert not [s for s in samples(registry, "http_server_requests_total") if s[1]]


def test_the_context_manager_and_the_decorator(metrics: tuple[FlagMetrics, CollectorRegistry]) -> None:
    kit, registry = metrics
    client = api.get_client()

    with observe(kit, FLAG, "batch/reprice") as observation:
        client.get_boolean_value(FLAG, False, EvaluationContext(targeting_key="u1"))
        observation.code = "200"
    with observe(kit, FLAG, "batch/reprice", variant="control"):
        pass

    @observed(kit, FLAG, "worker/sync")
    def work(user: str) -> bool:
        return client.get_boolean_value(FLAG, False, EvaluationContext(targeting_key=user))

    @observed(kit, FLAG, "worker/async")
    async def work_async(user: str) -> bool:
        return client.get_boolean_value(FLAG, False, EvaluationContext(targeting_key=user))

    work("u2")
    asyncio.run(work_async("u3"))
    expected = {
        "u1": client.get_boolean_details(FLAG, False, EvaluationContext(targeting_key="u1")).variant,
        "u2": client.get_boolean_details(FLAG, False, EvaluationContext(targeting_key="u2")).variant,
        "u3": client.get_boolean_details(FLAG, False, EvaluationContext(targeting_key="u3")).variant,
    }
    counted = {
        (labels["route"], labels["feature_flag_result_variant"])
        for labels, value in samples(registry, "http_server_requests_total")
        if value
    }
    assert counted == {
        ("batch/reprice", str(expected["u1"])),
        ("batch/reprice", "control"),
        ("worker/sync", str(expected["u2"])),
        ("worker/async", str(expected["u3"])),
    }


def test_a_cancelled_request_is_not_counted_as_a_server_error(
    metrics: tuple[FlagMetrics, CollectorRegistry],
) -> None:
    kit, registry = metrics

    async def abandoned() -> None:
        with observe(kit, FLAG, "/checkout", variant="on"):
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(abandoned())
    codes = {labels["code"] for labels, value in samples(registry, "http_server_requests_total") if value}
    assert codes == {"499"}
