"""Ask Prometheus for instant values over its HTTP API, and judge each answer's shape.

Every answer becomes a :class:`~controller.core.queries.Reading`: a number, ``no_data`` (no series, NaN,
±Inf) or ``error`` (unreachable, timeout, non-200, not JSON, truncated, several series where one is
expected, a range vector). Nothing here raises into the caller for a bad answer: an outage is an
``error`` reading, never a pass and never a fail. The transport is injectable for tests.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from controller.adapters.promauth import PrometheusAuth
from controller.core.alerts import series_name
from controller.core.queries import PlannedQuery, QueryKey, Reading, Split

MAX_BODY_BYTES = 8 * 1024 * 1024
_SNIPPET = 120


def _snippet(body: bytes) -> str:
    text = body[:_SNIPPET].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text + ("…" if len(body) > _SNIPPET else "")


def _labels(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "{?}"
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return str(metric.get("__name__", "")) + "{" + inner + "}"


def _number(sample: Any) -> Reading:
    """Judge a ``[timestamp, "value"]`` pair."""
    if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str)):
        return Reading.error(f'malformed sample {str(sample)[:_SNIPPET]!r}: expected [time, "value"]')
    try:
        value = float(sample[1])
    except ValueError:
        return Reading.error(f"sample value {sample[1][:_SNIPPET]!r} is not a number")
    if math.isnan(value):
        return Reading.no_data("NaN (e.g. 0/0: nothing in the window)")
    if math.isinf(value):
        return Reading.no_data(f"{'+' if value > 0 else '-'}Inf (division by zero?)")
    return Reading.of(value)


def parse_response(status_code: int, body: bytes) -> Reading:
    """Judge one ``/api/v1/query`` response. Pure: bytes in, reading out."""
    answer = _result(status_code, body)
    if isinstance(answer, Reading):
        return answer
    kind, result = answer
    if kind == "scalar":
        return _number(result)
    if kind == "vector":
        if not isinstance(result, list):
            return Reading.error("vector result is not a list")
        if not result:
            return Reading.no_data("empty result: no series matched")
        if len(result) > 1:
            return Reading.error(
                f"{len(result)} series where one is expected: {_several(result)}; aggregate them (sum, max…)"
            )
        series = result[0]
        if not isinstance(series, dict):
            return Reading.error("vector element is not an object")
        return _number(series.get("value"))
    if kind == "matrix":
        return Reading.error("query returned a range vector; guardrails need an instant value")
    return Reading.error(f"unexpected result type {kind!r}")


def _several(result: Sequence[Any]) -> str:
    shown = ", ".join(_labels(s.get("metric") if isinstance(s, dict) else None) for s in result[:5])
    more = f" and {len(result) - 5} more" if len(result) > 5 else ""
    return f"{shown}{more}"


@dataclass(frozen=True, slots=True)
class Several:
    """More than one series for one flag and variant: how many, and their labels for the message."""

    count: int
    labels: str


@dataclass(frozen=True, slots=True)
class SeriesIndex:
    """A template's answer by (flag, variant): each arm's reading, not the parsed response, which
    for thousands of rollouts is many times larger."""

    arms: dict[tuple[str, str], Reading | Several]
    size: int  # series in the answer


def split_response(
    status_code: int, body: bytes, *, flag_label: str, variant_label: str
) -> Reading | SeriesIndex:
    """Judge a template's response and index its series by (flag, variant) label values. A bad
    answer is one ``error`` reading for every rollout; series without both labels belong to none."""
    answer = _result(status_code, body)
    if isinstance(answer, Reading):
        return answer
    kind, result = answer
    if kind != "vector":
        return Reading.error(
            f"a template must return one series per flag and variant, not a {kind}; "
            f"group it by ({flag_label}, {variant_label})"
        )
    if not isinstance(result, list):
        return Reading.error("vector result is not a list")
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for series in result:
        metric = series.get("metric") if isinstance(series, dict) else None
        if not isinstance(metric, dict):
            return Reading.error("vector element has no 'metric' object")
        flag, variant = metric.get(flag_label), metric.get(variant_label)
        if isinstance(flag, str) and isinstance(variant, str):
            found.setdefault((flag, variant), []).append(series)
    if result and not found:
        return Reading.error(
            f"none of the {len(result)} series has both labels {flag_label} and {variant_label} "
            f"(e.g. {_labels(result[0].get('metric'))}); "
            f"group the template by ({flag_label}, {variant_label})"
        )
    arms: dict[tuple[str, str], Reading | Several] = {
        key: _number(group[0].get("value")) if len(group) == 1 else Several(len(group), _several(group))
        for key, group in found.items()
    }
    return SeriesIndex(arms, sum(len(group) for group in found.values()))


def pick(index: SeriesIndex, split: Split) -> Reading:
    """This arm's value from a template's indexed answer."""
    found = index.arms.get((split.flag, split.variant))
    if found is None:
        return Reading.no_data(
            f"no series {split.selector()} among the {index.size} of template {split.template!r} "
            "(nobody in this arm yet, or its metrics carry other labels)"
        )
    if isinstance(found, Several):
        return Reading.error(
            f"{found.count} series where one is expected for {split.selector()} in template "
            f"{split.template!r}: {found.labels}; group it by the flag and variant labels only"
        )
    return found


def parse_listing(status_code: int, body: bytes) -> Reading:
    """Judge a listing's response (the firing alerts of a selector): how many series, each named
    ``alertname{labels}`` (:func:`~controller.core.alerts.series_name`). An empty vector is an
    answer (nothing fires), not missing data; anything but a vector of labelled series is an error."""
    answer = _result(status_code, body)
    if isinstance(answer, Reading):
        return answer
    kind, result = answer
    if kind != "vector":
        return Reading.error(f"the firing alerts are a vector of series, not a {kind}")
    if not isinstance(result, list):
        return Reading.error("vector result is not a list")
    names = []
    for series in result:
        metric = series.get("metric") if isinstance(series, dict) else None
        if not isinstance(metric, dict) or not all(isinstance(v, str) for v in metric.values()):
            return Reading.error("vector element has no 'metric' object of label values")
        names.append(series_name(metric))
    return Reading.listed(sorted(names))


def response_result(status_code: int, body: bytes) -> Reading | tuple[Any, Any]:
    """The ``(resultType, result)`` of a successful response of any query API, or the error it is."""
    return _result(status_code, body)


def _result(status_code: int, body: bytes) -> Reading | tuple[Any, Any]:
    """The ``(resultType, result)`` of a successful response, or the error it is."""
    unreadable = object()
    try:
        payload: Any = json.loads(body)
    except (ValueError, RecursionError):
        payload = unreadable
    if status_code != 200:
        detail = f"HTTP {status_code}"
        if isinstance(payload, dict) and "error" in payload:
            detail += f" {payload.get('errorType', 'error')}: {str(payload['error'])[:300]}"
        elif body:
            detail += f": {_snippet(body)}"
        return Reading.error(detail)
    if payload is unreadable:
        if not body:
            return Reading.error("empty response body")
        return Reading.error(f"response is not JSON (truncated or HTML?): {_snippet(body)}")
    if not isinstance(payload, dict):
        return Reading.error(f"response is not a JSON object: {_snippet(body)}")
    if payload.get("status") != "success":
        return Reading.error(
            f"Prometheus says {payload.get('status')!r}: "
            f"{payload.get('errorType', '')} {str(payload.get('error', ''))[:300]}".rstrip()
        )
    data = payload.get("data")
    if not isinstance(data, dict):
        return Reading.error("response has no 'data' object")
    return data.get("resultType"), data.get("result")


class PrometheusClient:
    """Concurrent instant queries with a per-query timeout and a bound on queries in flight."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 10.0,
        max_concurrency: int = 8,
        max_body_bytes: int | None = None,
        auth: PrometheusAuth | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        auth = auth or PrometheusAuth()
        self._auth = auth
        self._base = url.rstrip("/")
        self.url = redact(self._base)  # what logs and readings show: never a password
        self.timeout_seconds = timeout_seconds
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self.max_body_bytes = max_body_bytes
        self.requests = 0  # how many queries were sent, for benchmarks and tests
        self._in_flight: dict[str, asyncio.Future[Reading | Answer]] = {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            headers={**(headers or {}), **auth.headers()},
            auth=auth.httpx_auth(),
            transport=transport,
            verify=auth.ssl_context(),
            follow_redirects=False,
        )

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def query(self, promql: str) -> Reading:
        answer = await self._fetch(promql)
        return self._shown(answer if isinstance(answer, Reading) else answer.whole())

    def _shown(self, reading: Reading) -> Reading:
        """The reading as records and logs may show it: no credential echoed back by the server."""
        if not reading.detail:
            return reading
        detail = self._auth.redact(reading.detail)
        return reading if detail == reading.detail else replace(reading, detail=detail)

    async def _fetch(self, promql: str) -> Reading | Answer:
        """Prometheus's answer to ``promql``. A query already in flight is joined, not asked again:
        rollouts judged at the same moment share one request (and one parse) per distinct query."""
        running = self._in_flight.get(promql)
        if running is None:
            running = asyncio.ensure_future(self._request(promql))
            self._in_flight[promql] = running
            running.add_done_callback(lambda _: self._in_flight.pop(promql, None))
        return await asyncio.shield(running)

    async def _request(self, promql: str) -> Reading | Answer:
        return await self._send("query", {"query": promql})

    async def query_range(self, promql: str, start_ms: int, end_ms: int, step_ms: int) -> Reading | Answer:
        """``/api/v1/query_range``: ``promql`` evaluated from ``start_ms`` to ``end_ms`` (milliseconds
        since the epoch) every ``step_ms``. The answer is judged by the caller (a matrix)."""
        form = {
            "query": promql,
            "start": f"{start_ms / 1000:.3f}",
            "end": f"{end_ms / 1000:.3f}",
            "step": f"{step_ms}ms",
        }
        return self._shown_answer(await self._send("query_range", form))

    def _shown_answer(self, answer: Reading | Answer) -> Reading | Answer:
        return self._shown(answer) if isinstance(answer, Reading) else answer

    async def _send(self, api: str, form: dict[str, str]) -> Reading | Answer:
        endpoint = f"{self._base}/api/v1/{api}"
        # Prometheus durations take whole numbers of a unit: "2.5s" is refused, "2500ms" is not.
        form = {**form, "timeout": f"{max(1, round(self.timeout_seconds * 1000))}ms"}
        async with self._semaphore:
            self.requests += 1
            try:
                return await asyncio.wait_for(self._post(endpoint, form), self.timeout_seconds + 1)
            except (httpx.TimeoutException, TimeoutError):
                return Reading.error(f"timed out after {self.timeout_seconds:g}s ({self.url})")
            except httpx.ConnectError as exc:
                return Reading.error(f"cannot connect to {self.url}: {_reason(exc)}")
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                return Reading.error(f"request to {self.url} failed: {type(exc).__name__}: {_reason(exc)}")

    async def _post(self, endpoint: str, form: dict[str, str]) -> Reading | Answer:
        async with self._client.stream("POST", endpoint, data=form) as response:
            body = bytearray()
            limit = self.max_body_bytes or MAX_BODY_BYTES
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > limit:
                    return Reading.error(f"response larger than {limit} bytes")
            return Answer(response.status_code, bytes(body))

    async def query_all(self, queries: Sequence[PlannedQuery]) -> dict[QueryKey, Reading]:
        """Run every query concurrently; identical PromQL is asked once. A template's query is
        asked once for every rollout that uses it, and each arm gets its own series of the answer."""
        unique = sorted({q.promql for q in queries if q.promql})
        fetched = await asyncio.gather(*(self._fetch(promql) for promql in unique))
        answers = dict(zip(unique, fetched, strict=True))
        readings: dict[QueryKey, Reading] = {}
        for q in queries:
            answer = answers.get(q.promql)
            if q.split is not None and not q.promql:
                readings[q.key] = Reading.error(f"template {q.split.template!r} is not defined")
            elif answer is None or isinstance(answer, Reading):
                readings[q.key] = answer or Reading.error("the query is empty")
            elif q.listing:
                readings[q.key] = answer.listed()
            else:
                readings[q.key] = answer.whole() if q.split is None else answer.pick(q.split)
        return {key: self._shown(reading) for key, reading in readings.items()}


class Answer:
    """One response from Prometheus, judged once however many rollouts read it."""

    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body
        self._whole: Reading | None = None
        self._listed: Reading | None = None
        self._indexes: dict[tuple[str, str], Reading | SeriesIndex] = {}

    def whole(self) -> Reading:
        """The answer as one number (a plain query)."""
        if self._whole is None:
            self._whole = parse_response(self.status_code, self.body)
        return self._whole

    def listed(self) -> Reading:
        """The answer as a list of series (the firing alerts of a selector)."""
        if self._listed is None:
            self._listed = parse_listing(self.status_code, self.body)
        return self._listed

    def pick(self, split: Split) -> Reading:
        """One arm's series of a template's answer."""
        labels = (split.flag_label, split.variant_label)
        if labels not in self._indexes:
            self._indexes[labels] = split_response(
                self.status_code, self.body, flag_label=split.flag_label, variant_label=split.variant_label
            )
        index = self._indexes[labels]
        return index if isinstance(index, Reading) else pick(index, split)


def redact(url: str) -> str:
    """The URL without a password in its user-info part."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    if not parsed.userinfo:
        return url
    return str(parsed.copy_with(password=None, username="***"))


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
