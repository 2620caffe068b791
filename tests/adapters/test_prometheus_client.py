"""Prometheus answers judged for shape: a number, no data, or an error; never a silent zero.

``parse_response`` is pure and tested directly. ``PrometheusClient`` is tested over faked HTTP
(respx) for transport edge cases, and once against a real closed port.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

import controller.adapters.prometheus
from controller.adapters.prometheus import PrometheusClient, parse_response
from controller.adapters.promserver import free_port
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading, ReadingKind, Source

BASE = "http://prom.example"
ENDPOINT = f"{BASE}/api/v1/query"


def _vector(*series: tuple[dict[str, str], Any]) -> bytes:
    result = [{"metric": metric, "value": value} for metric, value in series]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def _one(value: str) -> bytes:
    return _vector(({"job": "api"}, [1700000000.123, value]))


def _data(result_type: Any, result: Any) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}).encode()


T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _query(promql: str = "up", url: str = BASE, **kwargs: Any) -> Reading:
    async def go() -> Reading:
        async with PrometheusClient(url, **kwargs) as client:
            return await client.query(promql)

    return _run(go())


def _assert_error(reading: Reading, *fragments: str) -> None:
    assert reading.kind is ReadingKind.ERROR, reading
    assert reading.value is None
    for fragment in fragments:
        assert fragment in reading.detail, (fragment, reading.detail)


# --------------------------------------------------------------------------- parse_response: values


def test_one_series_vector_is_its_value() -> None:
    reading = parse_response(200, _one("0.0042"))
    assert reading.kind is ReadingKind.VALUE
    assert reading.value == 0.0042


def test_zero_is_a_value_not_no_data() -> None:
    reading = parse_response(200, _one("0"))
    assert reading.kind is ReadingKind.VALUE
    assert reading.value == 0.0


def test_negative_and_exponent_values_are_read() -> None:
    assert parse_response(200, _one("-3.5")).value == -3.5
    assert parse_response(200, _one("1.5e+03")).value == 1500.0


def test_scalar_result_is_its_value() -> None:
    reading = parse_response(200, _data("scalar", [1700000000.5, "17"]))
    assert reading.kind is ReadingKind.VALUE
    assert reading.value == 17.0


# --------------------------------------------------------------------------- parse_response: no data


def test_empty_vector_is_no_data_not_zero() -> None:
    reading = parse_response(200, _data("vector", []))
    assert reading.kind is ReadingKind.NO_DATA
    assert reading.value is None
    assert "no series" in reading.detail


@pytest.mark.parametrize("nan", ["NaN", "nan"])
def test_nan_is_no_data_not_zero(nan: str) -> None:
    reading = parse_response(200, _one(nan))
    assert reading.kind is ReadingKind.NO_DATA
    assert reading.value is None
    assert "NaN" in reading.detail


def test_scalar_nan_is_no_data() -> None:
    reading = parse_response(200, _data("scalar", [1700000000, "NaN"]))
    assert reading.kind is ReadingKind.NO_DATA
    assert "NaN" in reading.detail


@pytest.mark.parametrize(("text", "shown"), [("+Inf", "+Inf"), ("-Inf", "-Inf"), ("Inf", "+Inf")])
def test_infinity_is_no_data_with_its_sign(text: str, shown: str) -> None:
    reading = parse_response(200, _one(text))
    assert reading.kind is ReadingKind.NO_DATA
    assert reading.value is None
    assert shown in reading.detail


# --------------------------------------------------------------------------- parse_response: errors


def test_several_series_is_an_error_naming_every_series() -> None:
    body = _vector(
        ({"__name__": "http_errors", "instance": "a:9090", "job": "api"}, [1, "0.1"]),
        ({"__name__": "http_errors", "instance": "b:9090", "job": "api"}, [1, "0.2"]),
    )
    reading = parse_response(200, body)
    _assert_error(
        reading,
        "2 series where one is expected",
        'http_errors{instance="a:9090", job="api"}',
        'http_errors{instance="b:9090", job="api"}',
        "aggregate",
    )


def test_many_series_are_listed_up_to_five_then_counted() -> None:
    body = _vector(*(({"pod": f"p{i}"}, [1, "1"]) for i in range(8)))
    reading = parse_response(200, body)
    _assert_error(reading, "8 series", '{pod="p0"}', '{pod="p4"}', "and 3 more")
    assert 'pod="p5"' not in reading.detail


def test_several_series_with_odd_metric_fields_is_still_an_error() -> None:
    body = _data("vector", [{"metric": None, "value": [1, "1"]}, 7])
    _assert_error(parse_response(200, body), "2 series", "{?}")


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_without_body_names_the_status(status: int) -> None:
    reading = parse_response(status, b"")
    _assert_error(reading, f"HTTP {status}")


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_with_text_body_shows_a_snippet(status: int) -> None:
    reading = parse_response(status, b"<html><body>Service\n   Unavailable</body></html>")
    _assert_error(reading, f"HTTP {status}", "Service Unavailable")


@pytest.mark.parametrize(
    ("status", "error_type", "error"),
    [
        (400, "bad_data", "parse error"),
        (422, "execution", "many-to-many matching not allowed"),
        (503, "timeout", "query timed out in expression evaluation"),
        (500, "internal", "out of memory"),
    ],
)
def test_prometheus_json_error_body_names_status_type_and_text(
    status: int, error_type: str, error: str
) -> None:
    body = json.dumps({"status": "error", "errorType": error_type, "error": error}).encode()
    _assert_error(parse_response(status, body), f"HTTP {status}", f"{error_type}: {error}")


def test_non_200_is_an_error_even_with_a_well_formed_value() -> None:
    _assert_error(parse_response(500, _one("1")), "HTTP 500")


def test_redirect_status_is_an_error() -> None:
    _assert_error(parse_response(302, b""), "HTTP 302")


def test_long_error_body_is_cut_short() -> None:
    reading = parse_response(502, b"<html>" + b"x" * 10_000 + b"</html>")
    _assert_error(reading, "HTTP 502", "…")
    assert len(reading.detail) < 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<!DOCTYPE html><html><body>Login required</body></html>", "not JSON"),
        (_one("1")[:-7], "not JSON"),
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"success"', "not a JSON object"),
        (b'{"status": "success"}', "no 'data'"),
        (b'{"status": "success", "data": null}', "no 'data'"),
        (b'{"status": "success", "data": [1]}', "no 'data'"),
        (b'{"data": {"resultType": "vector", "result": []}}', "None"),
        (_data("matrix", [{"metric": {}, "values": [[1, "1"]]}]), "range vector"),
        (_data("string", [1, "hello"]), "unexpected result type 'string'"),
        (_data(None, []), "unexpected result type None"),
        (_data("vector", {"metric": {}}), "not a list"),
        (_data("vector", [[1, "1"]]), "not an object"),
        (_data("vector", [{"metric": {}}]), "malformed sample"),
        (_vector(({}, [1, "1", "2"])), "malformed sample"),
        (_vector(({}, "1")), "malformed sample"),
        (_vector(({}, [1700000000, 0.5])), "malformed sample"),
        (_vector(({}, [1700000000, None])), "malformed sample"),
        (_vector(({}, [1700000000, "fast"])), "'fast' is not a number"),
        (_vector(({}, [1700000000, ""])), "is not a number"),
        (_data("scalar", "1"), "malformed sample"),
        (_data("scalar", [1, "one"]), "not a number"),
    ],
)
def test_malformed_200_answers_are_errors(body: bytes, fragment: str) -> None:
    _assert_error(parse_response(200, body), fragment)


def test_json_null_body_is_an_error() -> None:
    # ``null`` is JSON, but not an answer; the detail shows what came back.
    _assert_error(parse_response(200, b"null"), "null")


def test_status_error_with_200_repeats_prometheus_error() -> None:
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode()
    _assert_error(parse_response(200, body), "'error'", "bad_data", "parse error")


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    _assert_error(parse_response(200, body), "not JSON")


# --------------------------------------------------------------------------- parse_response: properties

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children),
    max_leaves=20,
)
_number_texts = st.sampled_from(["0", "1", "-2.5", "1e3", "NaN", "+Inf", "-Inf", "1e999", "", "x", " 7 "])
_samples = st.one_of(
    st.tuples(st.floats(allow_nan=False) | st.integers() | st.text(max_size=3), _number_texts).map(list),
    st.lists(_number_texts, max_size=3),
    _json_values,
)
_series = st.one_of(
    st.fixed_dictionaries(
        {"metric": st.dictionaries(st.sampled_from(["__name__", "job", "pod"]), st.text(max_size=5))},
        optional={"value": _samples},
    ),
    _json_values,
)
_prometheus_like = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["success", "error", "SUCCESS"]) | _json_values,
        "errorType": _json_values,
        "error": _json_values,
        "data": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "resultType": st.sampled_from(["vector", "scalar", "matrix", "string"]) | _json_values,
                    "result": st.one_of(_samples, st.lists(_series, max_size=3), _json_values),
                },
            ),
            _json_values,
        ),
    },
)
_statuses = st.sampled_from([200, 200, 200, 204, 301, 400, 422, 500, 503]) | st.integers(100, 599)


def _finite(sample: Any) -> float | None:
    if isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str):
        try:
            value = float(sample[1])
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def _non_finite(sample: Any) -> bool:
    if isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str):
        try:
            return not math.isfinite(float(sample[1]))
        except ValueError:
            return False
    return False


def _expected(status: int, body: bytes) -> tuple[ReadingKind, float | None]:
    """An independent statement of the contract: what kind of reading this answer must give."""
    if status != 200:
        return ReadingKind.ERROR, None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return ReadingKind.ERROR, None
    if not isinstance(payload, dict) or payload.get("status") != "success":
        return ReadingKind.ERROR, None
    data = payload.get("data")
    if not isinstance(data, dict):
        return ReadingKind.ERROR, None
    kind, result = data.get("resultType"), data.get("result")
    sample: Any
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return ReadingKind.NO_DATA, None
        if len(result) != 1 or not isinstance(result[0], dict):
            return ReadingKind.ERROR, None
        sample = result[0].get("value")
    else:
        return ReadingKind.ERROR, None
    value = _finite(sample)
    if value is not None:
        return ReadingKind.VALUE, value
    if _non_finite(sample):
        return ReadingKind.NO_DATA, None
    return ReadingKind.ERROR, None


def _check_contract(status: int, body: bytes) -> None:
    reading = parse_response(status, body)
    assert isinstance(reading, Reading)
    kind, value = _expected(status, body)
    assert reading.kind is kind, (status, body[:300], reading)
    assert reading.value == value
    if kind is not ReadingKind.VALUE:
        assert reading.detail, reading
    if reading.value is not None:
        assert math.isfinite(reading.value)


@given(status=_statuses, body=st.binary(max_size=300))
def test_any_bytes_never_raise(status: int, body: bytes) -> None:
    _check_contract(status, body)


@given(status=_statuses, payload=_json_values)
def test_any_json_never_raises(status: int, payload: Any) -> None:
    _check_contract(status, json.dumps(payload).encode())


@given(status=_statuses, payload=_prometheus_like)
def test_prometheus_shaped_json_is_value_only_when_well_formed(status: int, payload: Any) -> None:
    _check_contract(status, json.dumps(payload).encode())


@given(body=_prometheus_like.map(lambda p: json.dumps(p).encode()), cut=st.integers(min_value=1))
def test_truncated_answers_are_never_values(body: bytes, cut: int) -> None:
    truncated = body[: max(0, len(body) - 1 - cut % len(body))]
    reading = parse_response(200, truncated)
    assert reading.kind is ReadingKind.ERROR, (truncated, reading)


# --------------------------------------------------------------------------- PrometheusClient.query


def test_query_posts_the_promql_as_a_form_to_the_query_endpoint() -> None:
    promql = 'sum(rate(http_requests_total{variant="on", code=~"5.."}[5m]))'
    with respx.mock() as router:
        route = router.post(ENDPOINT).mock(return_value=httpx.Response(200, content=_one("0.5")))
        reading = _query(promql, timeout_seconds=2.5)
    assert reading == Reading.of(0.5)
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url == ENDPOINT
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode(), strict_parsing=True)
    assert form == {"query": [promql], "timeout": ["2500ms"]}


def test_query_sends_configured_headers() -> None:
    with respx.mock() as router:
        route = router.post(ENDPOINT).mock(return_value=httpx.Response(200, content=_one("1")))
        _query(headers={"Authorization": "Bearer s3cret", "X-Scope-OrgID": "team-a"})
    headers = route.calls.last.request.headers
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-scope-orgid"] == "team-a"


@pytest.mark.parametrize(
    "base",
    ["http://prom.example/prometheus/", "http://prom.example/prometheus", "http://prom.example/prometheus//"],
)
def test_base_url_with_path_prefix_is_joined(base: str) -> None:
    with respx.mock() as router:
        route = router.post("http://prom.example/prometheus/api/v1/query").mock(
            return_value=httpx.Response(200, content=_one("3"))
        )
        reading = _query(url=base)
    assert reading == Reading.of(3.0)
    assert route.call_count == 1


def test_base_url_with_trailing_slash_is_joined() -> None:
    with respx.mock() as router:
        route = router.post(ENDPOINT).mock(return_value=httpx.Response(200, content=_one("3")))
        assert _query(url=BASE + "/").kind is ReadingKind.VALUE
    assert route.call_count == 1


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.WriteTimeout, httpx.PoolTimeout]
)
def test_timeout_is_an_error_saying_timed_out(exc: type[Exception]) -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(side_effect=exc)
        reading = _query(timeout_seconds=3)
    _assert_error(reading, "timed out", "3s", BASE)


def test_overall_deadline_is_an_error_saying_timed_out() -> None:
    # asyncio.wait_for raises the builtin TimeoutError when the whole exchange overruns.
    with respx.mock() as router:
        router.post(ENDPOINT).mock(side_effect=TimeoutError)
        reading = _query(timeout_seconds=4)
    _assert_error(reading, "timed out", "4s")


def test_connection_refused_is_an_error_naming_the_url() -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
        reading = _query()
    _assert_error(reading, "cannot connect", BASE, "Connection refused")


@pytest.mark.parametrize("exc", [httpx.RemoteProtocolError, httpx.ReadError, httpx.DecodingError])
def test_other_transport_failures_are_errors_naming_the_url(exc: type[Exception]) -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(side_effect=exc)
        reading = _query()
    _assert_error(reading, "failed", BASE, exc.__name__)


def test_real_closed_port_is_an_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    reading = _query(url=url, timeout_seconds=5)
    _assert_error(reading, "cannot connect", url)


@pytest.mark.parametrize(
    ("response", "fragments"),
    [
        (httpx.Response(503, content=b"upstream connect error"), ("HTTP 503", "upstream connect error")),
        (
            httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"}),
            ("HTTP 400", "bad_data: parse error"),
        ),
        (httpx.Response(200, html="<html><body>Sign in</body></html>"), ("not JSON", "Sign in")),
        (httpx.Response(200, content=_one("1")[:20]), ("not JSON",)),
        (httpx.Response(200, content=b""), ("empty",)),
        (httpx.Response(302, headers={"Location": "http://login.example/"}), ("HTTP 302",)),
    ],
)
def test_bad_http_answers_are_errors(response: httpx.Response, fragments: tuple[str, ...]) -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=response)
        reading = _query()
    _assert_error(reading, *fragments)


def test_nan_over_http_is_no_data() -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=httpx.Response(200, content=_one("NaN")))
        reading = _query()
    assert reading.kind is ReadingKind.NO_DATA


def test_body_larger_than_the_limit_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller.adapters.prometheus, "MAX_BODY_BYTES", 64)
    body = _vector(*(({"pod": f"p{i}"}, [1, "1"]) for i in range(10)))
    assert len(body) > 64
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=httpx.Response(200, content=body))
        reading = _query()
    _assert_error(reading, "larger than 64 bytes")


def test_body_exactly_at_the_limit_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _one("42")
    monkeypatch.setattr(controller.adapters.prometheus, "MAX_BODY_BYTES", len(body))
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=httpx.Response(200, content=body))
        reading = _query()
    assert reading == Reading.of(42.0)


class _EndlessChunks(httpx.AsyncByteStream):
    """A response body that never ends; counts how many chunks were pulled."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.pulled += 1
            yield b"x" * 1000


def test_oversized_body_is_abandoned_while_streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller.adapters.prometheus, "MAX_BODY_BYTES", 2500)
    stream = _EndlessChunks()
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=httpx.Response(200, stream=stream))
        reading = _query()
    _assert_error(reading, "larger than 2500 bytes")
    assert stream.pulled == 3


# --------------------------------------------------------------------------- PrometheusClient.query_all


def _key(name: str, arm: Arm = Arm.TREATMENT, source: Source = Source.GUARDRAIL) -> QueryKey:
    return QueryKey(source, name, arm)


def _respond_by_query(answers: dict[str, httpx.Response]) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        (promql,) = parse_qs(request.content.decode())["query"]
        return answers[promql]

    return respond


def test_query_all_asks_identical_promql_once_and_maps_every_key() -> None:
    shared = "sum(rate(requests_total[5m]))"
    queries = [
        PlannedQuery(_key("traffic", Arm.TREATMENT, Source.TRAFFIC), shared),
        PlannedQuery(_key("traffic", Arm.CONTROL, Source.TRAFFIC), shared),
        PlannedQuery(_key("error-rate", Arm.TREATMENT), "errors_on"),
        PlannedQuery(_key("error-rate", Arm.CONTROL), "errors_control"),
        PlannedQuery(_key("p95", Arm.TREATMENT), "latency"),
        PlannedQuery(_key("p95", Arm.TREATMENT, Source.CHECKPOINT), "latency"),
    ]
    answers = {
        shared: httpx.Response(200, content=_one("1200")),
        "errors_on": httpx.Response(200, content=_one("NaN")),
        "errors_control": httpx.Response(503, content=b"overloaded"),
        "latency": httpx.Response(200, content=_one("0.25")),
    }

    async def go() -> dict[QueryKey, Reading]:
        async with PrometheusClient(BASE) as client:
            return await client.query_all(queries)

    with respx.mock() as router:
        route = router.post(ENDPOINT).mock(side_effect=_respond_by_query(answers))
        readings = _run(go())

    assert route.call_count == 4
    asked = sorted(parse_qs(call.request.content.decode())["query"][0] for call in route.calls)
    assert asked == sorted(answers)
    assert set(readings) == {q.key for q in queries}
    assert readings[_key("traffic", Arm.TREATMENT, Source.TRAFFIC)] == Reading.of(1200.0)
    assert readings[_key("traffic", Arm.CONTROL, Source.TRAFFIC)] == Reading.of(1200.0)
    assert readings[_key("error-rate", Arm.TREATMENT)].kind is ReadingKind.NO_DATA
    _assert_error(readings[_key("error-rate", Arm.CONTROL)], "HTTP 503", "overloaded")
    assert readings[_key("p95", Arm.TREATMENT)] == Reading.of(0.25)
    assert readings[_key("p95", Arm.TREATMENT, Source.CHECKPOINT)] == Reading.of(0.25)


def test_query_all_of_nothing_asks_nothing() -> None:
    async def go() -> dict[QueryKey, Reading]:
        async with PrometheusClient(BASE) as client:
            return await client.query_all([])

    with respx.mock(assert_all_called=False) as router:
        route = router.post(ENDPOINT)
        assert _run(go()) == {}
    assert route.call_count == 0


def test_query_all_keeps_at_most_max_concurrency_queries_in_flight() -> None:
    in_flight = 0
    peak = 0

    async def respond(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)  # yield to the event loop (no wall-clock wait) so others may start
        in_flight -= 1
        return httpx.Response(200, content=_one("1"))

    queries = [PlannedQuery(_key(f"g{i}"), f"q{i}") for i in range(7)]

    async def go() -> dict[QueryKey, Reading]:
        async with PrometheusClient(BASE, max_concurrency=2) as client:
            return await client.query_all(queries)

    with respx.mock() as router:
        route = router.post(ENDPOINT).mock(side_effect=respond)
        readings = _run(go())
    assert route.call_count == 7
    assert all(r == Reading.of(1.0) for r in readings.values())
    assert peak == 2


def test_a_password_in_the_url_never_reaches_a_reading() -> None:
    url = f"http://reader:s3cret@127.0.0.1:{free_port()}"

    async def ask() -> Reading:
        async with PrometheusClient(url, timeout_seconds=2) as client:
            assert "s3cret" not in client.url
            return await client.query("up")

    reading = asyncio.run(ask())
    assert reading.kind is ReadingKind.ERROR
    assert "s3cret" not in reading.detail
    assert "127.0.0.1" in reading.detail
