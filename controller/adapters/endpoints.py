"""The controller's own HTTP endpoints (``flagroll run --listen HOST:PORT``).

- ``GET /healthz``: 200 while the reconcile loop is alive, 503 when it has not been heard from;
- ``GET /readyz``: 200 once policies are loaded and Prometheus has answered, 503 before;
- ``GET /metrics``: flagroll's metrics in the Prometheus text format
  (see :mod:`controller.adapters.telemetry`);
- with a :class:`~controller.adapters.webui.WebUI`, its read-only pages at ``/``, ``/flags/<key>`` and
  ``/log``.

Every path answers GET and HEAD; any other method is 405 (``Allow: GET, HEAD``).

A small threaded server in the background: a slow scraper never delays a cycle.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from prometheus_client import CONTENT_TYPE_LATEST

from controller.adapters.telemetry import Telemetry
from controller.adapters.webui import WebUI, is_ui_path, not_allowed, send
from controller.core.errors import UsageError


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[::1]:PORT``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen {text!r}: give HOST:PORT, e.g. 0.0.0.0:8080 or 127.0.0.1:8080")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Endpoints:
    def __init__(self, telemetry: Telemetry, host: str, port: int, ui: WebUI | None = None) -> None:
        self.telemetry = telemetry
        self.ui = ui
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, port), self._handler())
        except OSError as exc:
            raise UsageError(f"--listen {host}:{port}: cannot listen: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="flagroll-endpoints", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        telemetry = self.telemetry
        ui = self.ui

        class Handler(BaseHTTPRequestHandler):
            head = False

            def do_HEAD(self) -> None:
                self.head = True
                self._get()

            def _not_allowed(self) -> None:
                send(self, not_allowed(self.command), head=False)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

            def __getattr__(self, name: str) -> Callable[[], None]:
                if name.startswith("do_"):  # any other method (TRACE, PROPFIND…): 405 too, not 501
                    return self._not_allowed
                raise AttributeError(name)

            def do_GET(self) -> None:
                self.head = False
                self._get()

            def _get(self) -> None:
                path = self.path.split("?", 1)[0]
                if ui is not None and is_ui_path(path):
                    send(self, ui.reply(self.command, self.path), head=self.head)
                elif path == "/metrics":
                    self._send(200, telemetry.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    alive = telemetry.alive
                    self._send(
                        200 if alive else 503, b"ok\n" if alive else b"reconcile loop not heard from\n"
                    )
                elif path == "/readyz":
                    ready = telemetry.ready
                    self._send(
                        200 if ready else 503,
                        b"ready\n"
                        if ready
                        else b"waiting for the first cycle with an answer from Prometheus\n",
                    )
                else:
                    pages = ", /, /log" if ui is not None else ""
                    self._send(404, f"not found: try /metrics, /healthz or /readyz{pages}\n".encode())

            def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not self.head:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes and probes are not news

        return Handler

    def start(self) -> Endpoints:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
