"""Ask Prometheus for instant values over its HTTP API, and judge each answer's shape.

Every answer becomes a :class:`~controller.queries.Reading`: a number, ``no_data`` (no series, NaN,
±Inf) or ``error`` (unreachable, timeout, non-200, not JSON, truncated, several series where one is
expected, a range vector). Nothing here raises into the caller for a bad answer: an outage is an
``error`` reading, never a pass and never a fail. The transport is injectable for tests.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from controller.promauth import PrometheusAuth
from controller.queries import PlannedQuery, QueryKey, Reading

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
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        return _number(result)
    if kind == "vector":
        if not isinstance(result, list):
            return Reading.error("vector result is not a list")
        if not result:
            return Reading.no_data("empty result: no series matched")
        if len(result) > 1:
            shown = ", ".join(_labels(s.get("metric") if isinstance(s, dict) else None) for s in result[:5])
            more = f" and {len(result) - 5} more" if len(result) > 5 else ""
            return Reading.error(
                f"{len(result)} series where one is expected: {shown}{more}; aggregate them (sum, max…)"
            )
        series = result[0]
        if not isinstance(series, dict):
            return Reading.error("vector element is not an object")
        return _number(series.get("value"))
    if kind == "matrix":
        return Reading.error("query returned a range vector; guardrails need an instant value")
    return Reading.error(f"unexpected result type {kind!r}")


class PrometheusClient:
    """Concurrent instant queries with a per-query timeout and a bound on queries in flight."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 10.0,
        max_concurrency: int = 8,
        auth: PrometheusAuth | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        auth = auth or PrometheusAuth()
        self._base = url.rstrip("/")
        self.url = redact(self._base)  # what logs and readings show: never a password
        self.timeout_seconds = timeout_seconds
        self._semaphore = asyncio.Semaphore(max_concurrency)
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
        endpoint = f"{self._base}/api/v1/query"
        # Prometheus durations take whole numbers of a unit: "2.5s" is refused, "2500ms" is not.
        form = {"query": promql, "timeout": f"{max(1, round(self.timeout_seconds * 1000))}ms"}
        async with self._semaphore:
            try:
                return await asyncio.wait_for(self._post(endpoint, form), self.timeout_seconds + 1)
            except (httpx.TimeoutException, TimeoutError):
                return Reading.error(f"timed out after {self.timeout_seconds:g}s ({self.url})")
            except httpx.ConnectError as exc:
                return Reading.error(f"cannot connect to {self.url}: {_reason(exc)}")
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                return Reading.error(f"request to {self.url} failed: {type(exc).__name__}: {_reason(exc)}")

    async def _post(self, endpoint: str, form: dict[str, str]) -> Reading:
        async with self._client.stream("POST", endpoint, data=form) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_BODY_BYTES:
                    return Reading.error(f"response larger than {MAX_BODY_BYTES} bytes")
            return parse_response(response.status_code, bytes(body))

    async def query_all(self, queries: Sequence[PlannedQuery]) -> dict[QueryKey, Reading]:
        """Run every query concurrently; identical PromQL is asked once."""
        unique = sorted({q.promql for q in queries})
        answers = await asyncio.gather(*(self.query(promql) for promql in unique))
        by_promql = dict(zip(unique, answers, strict=True))
        return {q.key: by_promql[q.promql] for q in queries}


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
