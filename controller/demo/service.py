"""The demo's service: prices quotes for simulated users behind the flag that flagroll rolls out.

It is a small ASGI app instrumented with :mod:`controller.instrumentation`. Each request evaluates
the flag for its user through OpenFeature and the flagd provider in FILE mode (reading the flag file
the controller writes): treatment takes the cached path, everyone else the database path. A load
generator inside the process calls the app at a steady rate for users drawn from a fixed population.
SIGUSR1 injects a regression into the treatment path (errors and latency), SIGUSR2 clears it again
(the time-to-rollback benchmark heals the service between runs); SIGTERM stops the service.
``--regressed`` starts it with the regression in place (``flagroll demo``: the code behind the flag
is faulty from its first user). The error ratios, the added latency and the seed are options; their
defaults are the time-to-rollback benchmark's.

Run: ``python -m controller.demo.service --flags FILE --port PORT [--rps N] [--error-ratio R]
[--regression-error-ratio R] [--regression-latency-ms MS] [--regressed] [--seed N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
from collections.abc import MutableMapping
from typing import Any

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from prometheus_client import CollectorRegistry, start_http_server

from controller.instrumentation import (
    ExposureHook,
    FlagMetrics,
    FlagMetricsMiddleware,
    Receive,
    Send,
)

FLAG = "price-quote-cache"
ROUTE = "/price/quote"
USERS = 20_000
ERROR_RATIO = 0.001  # both paths, normally
REGRESSION_ERROR_RATIO = 0.2  # the treatment path, once the regression is injected
REGRESSION_LATENCY_SECONDS = 0.2


class Behaviour:
    """How each path behaves; the regression switch flips the treatment path. Every request fails
    independently with its path's error ratio, so the arms' error ratios differ by chance."""

    def __init__(
        self,
        seed: int = 7,
        *,
        error_ratio: float = ERROR_RATIO,
        regression_error_ratio: float = REGRESSION_ERROR_RATIO,
        regression_latency_seconds: float = REGRESSION_LATENCY_SECONDS,
        regression: bool = False,
    ) -> None:
        self.random = random.Random(seed)
        self.error_ratio = error_ratio
        self.regression_error_ratio = regression_error_ratio
        self.regression_latency_seconds = regression_latency_seconds
        self.regression = regression

    def treatment(self) -> tuple[float, bool]:
        """Latency (seconds) and whether it fails, on the cached path."""
        latency = self.random.lognormvariate(-3.4, 0.35)  # median ≈ 33 ms
        failed = self.random.random() < self.error_ratio
        if self.regression:
            latency += self.regression_latency_seconds
            failed = self.random.random() < self.regression_error_ratio
        return latency, failed

    def baseline(self) -> tuple[float, bool]:
        """Latency and failure on the database path (control and everyone else)."""
        latency = self.random.lognormvariate(-2.5, 0.35)  # median ≈ 82 ms
        return latency, self.random.random() < self.error_ratio


def make_app(behaviour: Behaviour) -> Any:
    client = api.get_client("demo-service")

    async def price_quote(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        user = scope["query_string"].decode().removeprefix("user=")
        cached = client.get_boolean_value(FLAG, False, EvaluationContext(targeting_key=user))
        latency, failed = behaviour.treatment() if cached else behaviour.baseline()
        await asyncio.sleep(latency)
        status = 500 if failed else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return price_quote


async def generate_load(app: Any, rps: float, stop: asyncio.Event, seed: int = 11) -> None:
    """Poisson arrivals at ``rps`` for random users, each request a task calling the ASGI app."""
    chooser = random.Random(seed)
    tasks: set[asyncio.Task[None]] = set()

    async def one(user: int) -> None:
        scope = {"type": "http", "method": "GET", "path": ROUTE, "query_string": f"user=u{user}".encode()}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            return None

        await app(scope, receive, send)

    while not stop.is_set():
        task = asyncio.create_task(one(chooser.randrange(USERS)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=chooser.expovariate(rps))
    for task in list(tasks):
        task.cancel()


async def serve(flags: str, port: int, rps: float, behaviour: Behaviour, seed: int = 11) -> None:
    registry = CollectorRegistry()
    metrics = FlagMetrics(registry)
    api.add_hooks([ExposureHook(metrics)])
    api.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=flags, deadline_ms=200)
    )
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def inject() -> None:
        behaviour.regression = True
        print("regression injected into the treatment path", flush=True)

    def heal() -> None:
        behaviour.regression = False
        print("regression cleared from the treatment path", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, inject)
    loop.add_signal_handler(signal.SIGUSR2, heal)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    app = FlagMetricsMiddleware(make_app(behaviour), metrics=metrics, flag_key=FLAG, route=lambda s: ROUTE)
    print(f"serving metrics on 127.0.0.1:{port}", flush=True)
    try:
        await generate_load(app, rps, stop, seed)
    finally:
        server.shutdown()
        api.shutdown()


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a ratio must be between 0 and 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.demo.service", description=__doc__)
    parser.add_argument("--flags", required=True, help="the flag file flagroll writes")
    parser.add_argument("--port", type=int, required=True, help="port of the /metrics endpoint")
    parser.add_argument("--rps", type=float, default=150.0, help="requests per second (default 150)")
    parser.add_argument(
        "--error-ratio", type=_ratio, default=ERROR_RATIO, help=f"both paths (default {ERROR_RATIO:g})"
    )
    parser.add_argument(
        "--regression-error-ratio",
        type=_ratio,
        default=REGRESSION_ERROR_RATIO,
        help=f"the treatment path under the regression (default {REGRESSION_ERROR_RATIO:g})",
    )
    parser.add_argument(
        "--regression-latency-ms",
        type=float,
        default=REGRESSION_LATENCY_SECONDS * 1000,
        help="added to the treatment path under the regression "
        f"(default {REGRESSION_LATENCY_SECONDS * 1000:g})",
    )
    parser.add_argument("--regressed", action="store_true", help="start with the regression in place")
    parser.add_argument("--seed", type=int, default=7, help="seed of the service's random draws (default 7)")
    args = parser.parse_args(argv)
    behaviour = Behaviour(
        args.seed,
        error_ratio=args.error_ratio,
        regression_error_ratio=args.regression_error_ratio,
        regression_latency_seconds=args.regression_latency_ms / 1000,
        regression=args.regressed,
    )
    # The load generator draws users from its own stream (11 by default, as before the option).
    asyncio.run(serve(args.flags, args.port, args.rps, behaviour, args.seed + 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
