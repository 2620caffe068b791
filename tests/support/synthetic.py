"""A synthetic service that exports request metrics per flag variant, as the instrumentation does
(requests, their durations and flag evaluations, under the kit's metric and label names).

Each arm (route, flag, variant) has a request rate, an error ratio and a latency; counters grow by
rate × elapsed time, computed when Prometheus scrapes, so the series are smooth and deterministic.
Tests change an arm's behaviour (inject a regression) with :meth:`SyntheticService.set`.

An arm set with ``otel_names=True`` is exported instead as an OpenTelemetry SDK's Prometheus exporter
does: one histogram ``http.server.request.duration`` with the attributes as labels (``http.route``,
``feature_flag.key``, ``feature_flag.result.variant``, ``http.response.status_code``) and bucket edges
spelled as Go writes them (``le="1"``). Those names are sent as they are only to a scraper that accepts
UTF-8 names (Prometheus 3 asks with ``escaping=allow-utf-8``); to any other, every character that is not
allowed becomes ``_`` (``http_server_request_duration``), as the Go client's default escaping does.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _escaped(value: str) -> str:
    """A label value as the text exposition format writes it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _go_float(value: float) -> str:
    """A bucket edge as Go's client writes it in the text format (``1``, ``2.5``, ``0.005``)."""
    return f"{value:g}"


def _underscored(name: str) -> str:
    """A UTF-8 name escaped for a scraper without UTF-8 support: the Go client's underscores."""
    return re.sub(r"[^A-Za-z0-9_:]", "_", name)


def _utf8_label(name: str) -> str:
    """A label name in the UTF-8 exposition: quoted unless it is a classic one (``le``)."""
    return name if name == _underscored(name) else '"' + name + '"'


OTEL_HISTOGRAM = "http.server.request.duration"


@dataclass
class _Arm:
    rps: float
    error_ratio: float
    latency_seconds: float
    otel_names: bool = False
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
        otel_names: bool = False,
    ) -> None:
        """Set how one arm behaves from now on; its counters keep their totals. ``otel_names``: export
        it under OpenTelemetry's names (see the module's description), fixed when it is first set."""
        now = time.monotonic()
        with self._lock:
            arm = self._arms.get((route, flag, variant))
            if arm is None:
                self._arms[(route, flag, variant)] = _Arm(
                    rps, error_ratio, latency_seconds, otel_names=otel_names, updated=now
                )
                return
            arm.advance(now)
            arm.rps, arm.error_ratio, arm.latency_seconds = rps, error_ratio, latency_seconds

    @staticmethod
    def _otel_lines(route: str, flag: str, variant: str, arm: _Arm, utf8: bool) -> list[str]:
        def series(name: str, labels: list[tuple[str, str]], value: float) -> str:
            if not utf8:
                pairs = ",".join(f'{_underscored(k)}="{_escaped(v)}"' for k, v in labels)
                return f"{_underscored(name)}{{{pairs}}} {value}"
            pairs = ",".join(f'{_utf8_label(k)}="{_escaped(v)}"' for k, v in labels)
            return f'{{"{name}",{pairs}}} {value}'

        base = [("http.route", route), ("feature_flag.key", flag), ("feature_flag.result.variant", variant)]
        lines = []
        for code, share in (("200", 1 - arm.error_ratio), ("500", arm.error_ratio)):
            labels = [*base, ("http.response.status_code", code)]
            edges: list[tuple[str, float]] = [
                (_go_float(le), n) for le, n in zip(BUCKETS, arm.buckets, strict=True)
            ]
            for le, count in [*edges, ("+Inf", arm.requests)]:
                lines.append(series(f"{OTEL_HISTOGRAM}_bucket", [*labels, ("le", le)], count * share))
            lines.append(series(f"{OTEL_HISTOGRAM}_count", labels, arm.requests * share))
            lines.append(series(f"{OTEL_HISTOGRAM}_sum", labels, arm.latency_sum * share))
        return lines

    def render(self, utf8: bool = False) -> str:
        """The exposition; ``utf8``: the scraper accepts UTF-8 names (else they are escaped)."""
        now = time.monotonic()
        lines = [
            "# TYPE http_server_requests_total counter",
            "# TYPE http_server_request_duration_seconds histogram",
        ]
        evaluations: dict[tuple[str, str], float] = {}
        otel: list[str] = []
        with self._lock:
            self.scrapes += 1
            for (route, flag, variant), arm in sorted(self._arms.items()):
                arm.advance(now)
                if arm.otel_names:
                    otel.extend(self._otel_lines(route, flag, variant, arm, utf8))
                    continue
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
        if otel:  # one family: one TYPE line, then all its series
            name = f'"{OTEL_HISTOGRAM}"' if utf8 else _underscored(OTEL_HISTOGRAM)
            lines += [f"# TYPE {name} histogram", *otel]
        return "\n".join(lines) + "\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # UTF-8 names only for a scraper that asks for them (text format 1.0.0 with
                # escaping=allow-utf-8 among its accepted types), as the Go client negotiates.
                utf8 = any(
                    kind.split(";")[0].strip() == "text/plain"
                    and "escaping=allow-utf-8" in kind.replace(" ", "")
                    for kind in self.headers.get("Accept", "").split(",")
                )
                body = service.render(utf8).encode()
                self.send_response(200)
                kind = (
                    "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
                    if utf8
                    else "text/plain; version=0.0.4"
                )
                self.send_header("Content-Type", kind)
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
