"""A synthetic service that exports request metrics per flag variant, as the instrumentation does
(requests, their durations and flag evaluations, under the kit's metric and label names).

Each arm (route, flag, variant) has a request rate, an error ratio and a latency; counters grow by
rate × elapsed time, computed when Prometheus scrapes, so the series are smooth and deterministic.
Tests change an arm's behaviour (inject a regression) with :meth:`SyntheticService.set`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _escaped(value: str) -> str:
    """A label value as the text exposition format writes it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class _Arm:
    rps: float
    error_ratio: float
    latency_seconds: float
    requests: float = 0.0
    errors: float = 0.0
    latency_sum: float = 0.0
    buckets: tuple[float, ...] = tuple(0.0 for _ in BUCKETS)
    updated: float = 0.0

    def advance(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        new = self.rps * elapsed
        self.requests += new
        self.errors += new * self.error_ratio
        self.latency_sum += new * self.latency_seconds
        self.buckets = tuple(
            count + (new if self.latency_seconds <= le else 0.0)
            for count, le in zip(self.buckets, BUCKETS, strict=True)
        )


class SyntheticService:
    def __init__(self) -> None:
        self._arms: dict[tuple[str, str, str], _Arm] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.scrapes = 0

    @property
    def target(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def set(
        self,
        route: str,
        flag: str,
        variant: str,
        *,
        rps: float = 20.0,
        error_ratio: float = 0.0,
        latency_seconds: float = 0.02,
    ) -> None:
        """Set how one arm behaves from now on; its counters keep their totals."""
        now = time.monotonic()
        with self._lock:
            arm = self._arms.get((route, flag, variant))
            if arm is None:
                self._arms[(route, flag, variant)] = _Arm(rps, error_ratio, latency_seconds, updated=now)
                return
            arm.advance(now)
            arm.rps, arm.error_ratio, arm.latency_seconds = rps, error_ratio, latency_seconds

    def render(self) -> str:
        now = time.monotonic()
        lines = [
            "# TYPE http_server_requests_total counter",
            "# TYPE http_server_request_duration_seconds histogram",
        ]
        evaluations: dict[tuple[str, str], float] = {}
        with self._lock:
            self.scrapes += 1
            for (route, flag, variant), arm in sorted(self._arms.items()):
                arm.advance(now)
                evaluations[(flag, variant)] = evaluations.get((flag, variant), 0.0) + arm.requests
                labels = (
                    f'route="{_escaped(route)}",feature_flag_key="{_escaped(flag)}",'
                    f'feature_flag_result_variant="{_escaped(variant)}"'
                )
                lines.append(f'http_server_requests_total{{{labels},code="200"}} {arm.requests - arm.errors}')
                lines.append(f'http_server_requests_total{{{labels},code="500"}} {arm.errors}')
                for le, count in zip(BUCKETS, arm.buckets, strict=True):
                    lines.append(f'http_server_request_duration_seconds_bucket{{{labels},le="{le}"}} {count}')
                lines.append(
                    f'http_server_request_duration_seconds_bucket{{{labels},le="+Inf"}} {arm.requests}'
                )
                lines.append(f"http_server_request_duration_seconds_count{{{labels}}} {arm.requests}")
                lines.append(f"http_server_request_duration_seconds_sum{{{labels}}} {arm.latency_sum}")
        # One evaluation per request, without the route label (as the kit's OpenFeature hook counts).
        lines.append("# TYPE feature_flag_evaluations_total counter")
        for (flag, variant), count in sorted(evaluations.items()):
            lines.append(
                f'feature_flag_evaluations_total{{feature_flag_key="{_escaped(flag)}",'
                f'feature_flag_result_variant="{_escaped(variant)}"}} {count}'
            )
        return "\n".join(lines) + "\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = service.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler

    def start(self) -> SyntheticService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> SyntheticService:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
