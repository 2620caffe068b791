"""Instrument a Python service so that flagroll can judge treatment against control.

Three pieces, all on a ``prometheus_client`` registry of your choice:

- :class:`ExposureHook`, an OpenFeature hook that counts evaluations by flag key and variant
  (``feature_flag_evaluations_total``) and remembers, for the current request, which variant was
  served;
- :class:`FlagMetricsMiddleware`, an ASGI middleware that counts requests
  (``http_server_requests_total``, with ``code``) and times them
  (``http_server_request_duration_seconds``), labelled with the variant the request was served;
- :func:`observe`, the same for code that is not an ASGI app (a context manager; :func:`observed`
  is its decorator form).

Label names follow the OpenTelemetry feature-flag conventions in Prometheus spelling:
``feature_flag_key`` and ``feature_flag_result_variant``. A request that did not evaluate the flag is
labelled with the variant ``none``. Keep ``route`` a template (``/price/quote``, not the raw path
with ids), or the number of series grows with your traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from openfeature.flag_evaluation import FlagEvaluationDetails, FlagValueType
from openfeature.hook import Hook, HookContext, HookHints
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

FLAG_KEY_LABEL = "feature_flag_key"
VARIANT_LABEL = "feature_flag_result_variant"
ROUTE_LABEL = "route"
CODE_LABEL = "code"
# The names the metrics are exported under (what policies query; `flagroll init` writes them).
EVALUATIONS_METRIC = "feature_flag_evaluations_total"
REQUESTS_METRIC = "http_server_requests_total"
DURATION_METRIC = "http_server_request_duration_seconds"  # a histogram: _bucket, _count, _sum
NOT_EVALUATED = "none"
CLIENT_CLOSED = "499"
EVALUATION_ERROR = "error"
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)

# The variants served within the current request (or unit of work), by flag key.
_served: ContextVar[dict[str, str] | None] = ContextVar("flagroll_served_variants", default=None)

P = ParamSpec("P")
R = TypeVar("R")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FlagMetrics:
    """The metrics flagroll's policies query, registered once per registry.

    The first time a (route, flag, variant) is seen, its ``code="500"`` series is created at zero,
    so that an error ratio reads 0 rather than "no data" before the first error happens.
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        *,
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.evaluations = Counter(
            EVALUATIONS_METRIC.removesuffix("_total"),
            "Feature flag evaluations, by flag key and the variant served.",
            [FLAG_KEY_LABEL, VARIANT_LABEL],
            registry=registry,
        )
        self.requests = Counter(
            REQUESTS_METRIC.removesuffix("_total"),
            "Requests handled, by route, status code and the flag variant served.",
            [ROUTE_LABEL, CODE_LABEL, FLAG_KEY_LABEL, VARIANT_LABEL],
            registry=registry,
        )
        self.duration = Histogram(
            DURATION_METRIC,
            "Request duration, by route and the flag variant served.",
            [ROUTE_LABEL, FLAG_KEY_LABEL, VARIANT_LABEL],
            buckets=buckets,
            registry=registry,
        )
        self._seen: set[tuple[str, str, str]] = set()

    def record(self, route: str, code: str, flag_key: str, variant: str, seconds: float) -> None:
        if (route, flag_key, variant) not in self._seen:
            self._seen.add((route, flag_key, variant))
            self.requests.labels(route, "500", flag_key, variant)
        self.requests.labels(route, code, flag_key, variant).inc()
        self.duration.labels(route, flag_key, variant).observe(seconds)


def served_variant(flag_key: str) -> str | None:
    """The variant of ``flag_key`` served so far in the current request, if it was evaluated."""
    served = _served.get()
    return served.get(flag_key) if served is not None else None


class ExposureHook(Hook):
    """Counts each evaluation and remembers the variant for the request being handled."""

    def __init__(self, metrics: FlagMetrics) -> None:
        self.metrics = metrics

    def after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[FlagValueType],
        hints: HookHints,
    ) -> None:
        variant = details.variant or NOT_EVALUATED
        self.metrics.evaluations.labels(hook_context.flag_key, variant).inc()
        served = _served.get()
        if served is not None:
            served[hook_context.flag_key] = variant

    def error(self, hook_context: HookContext, exception: Exception, hints: HookHints) -> None:
        self.metrics.evaluations.labels(hook_context.flag_key, EVALUATION_ERROR).inc()


@dataclass
class Observation:
    """What :func:`observe` records; set ``code`` to the outcome (``"200"``, ``"503"`` …)."""

    code: str = "200"


@contextlib.contextmanager
def observe(
    metrics: FlagMetrics, flag_key: str, route: str, *, variant: str | None = None
) -> Iterator[Observation]:
    """Time and count one unit of work, labelled with the variant of ``flag_key`` it was served.

    The variant is ``variant`` if given, else what :class:`ExposureHook` saw during the block, else
    ``none``. An exception escaping the block is counted with code ``500`` (``499`` when the task was
    cancelled, as when a client disconnects) and re-raised.
    """
    token = _served.set({})
    observation = Observation()
    started = time.perf_counter()
    try:
        yield observation
    except asyncio.CancelledError:
        observation.code = CLIENT_CLOSED  # the client went away: not the service's error
        raise
    except BaseException:
        observation.code = "500"
        raise
    finally:
        elapsed = time.perf_counter() - started
        chosen = variant or served_variant(flag_key) or NOT_EVALUATED
        _served.reset(token)
        metrics.record(route, observation.code, flag_key, chosen, elapsed)


def observed(metrics: FlagMetrics, flag_key: str, route: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator form of :func:`observe` for plain or ``async`` functions."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with observe(metrics, flag_key, route):
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with observe(metrics, flag_key, route):
                return function(*args, **kwargs)

        return run

    return decorate


class FlagMetricsMiddleware:
    """ASGI middleware: each HTTP request is observed under the variant of ``flag_key`` it got.

    ``route`` maps the ASGI scope to a route label (default: the path); return a template such as
    ``/price/quote`` for paths that carry ids.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: FlagMetrics,
        flag_key: str,
        route: Callable[[Scope], str] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.flag_key = flag_key
        self.route = route or (lambda scope: str(scope.get("path", "")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        with observe(self.metrics, self.flag_key, self.route(scope)) as observation:

            async def send_and_note_status(message: Message) -> None:
                if message.get("type") == "http.response.start":
                    observation.code = str(message.get("status", 200))
                await send(message)

            await self.app(scope, receive, send_and_note_status)
