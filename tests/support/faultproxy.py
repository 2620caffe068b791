"""A real HTTP proxy in front of a real Prometheus that injects faults on request.

The controller talks to it over TCP exactly as it talks to Prometheus. A test switches the fault with
:meth:`FaultProxy.inject` (``None`` passes requests through untouched) and reads what arrived in
``requests``. Faults:

- ``Status(code, body)``: answer with this status and body instead of asking Prometheus;
- ``Body(bytes)``: answer 200 with these bytes (HTML, truncated JSON, a crafted Prometheus answer);
- ``Rewrite(fn)``: ask Prometheus, then answer ``fn(upstream body)`` (e.g. turn a value into NaN);
- ``Delay(seconds)``: hold the request that long before passing it on (slower than the query timeout);
- ``Refuse()``: close the listening socket, so that connections are refused until :meth:`inject` is
  called with another fault.

``inject(fault, only=predicate)`` applies the fault only to requests whose body the predicate accepts
(e.g. the queries of Prometheus's ``ALERTS``); the others pass through.

``require_bearer`` makes it answer 401 to any request without that bearer token, like an
authenticating gateway does. ``require_headers`` (name -> value) makes it answer 401 to a request
missing one of those headers and 403 to one carrying a wrong value, like the gateway of a
multi-tenant store checking its tenant header.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx


@dataclass(frozen=True)
class Status:
    code: int
    body: bytes = b""
    content_type: str = "text/plain"


@dataclass(frozen=True)
class Body:
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True)
class Rewrite:
    change: Callable[[bytes], bytes]


@dataclass(frozen=True)
class Delay:
    seconds: float


@dataclass(frozen=True)
class Refuse:
    pass


Fault = Status | Body | Rewrite | Delay | Refuse


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        require_bearer: str | None = None,
        require_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.require_bearer = require_bearer
        self.require_headers = dict(require_headers or {})
        self.fault: Fault | None = None
        self.only: Callable[[bytes], bool] | None = None
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._released = threading.Event()  # set to cut every pending Delay short (at stop)
        self._port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def inject(self, fault: Fault | None, *, only: Callable[[bytes], bool] | None = None) -> None:
        with self._lock:
            self.fault = fault
            self.only = only
        if isinstance(fault, Refuse):
            self._close()
        elif self._server is None:
            self._open()

    def _open(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler(), bind_and_activate=False)
        server.allow_reuse_address = True
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.server_bind()
        server.server_activate()
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self._serve("POST")

            def do_GET(self) -> None:
                self._serve("GET")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests.append(Seen(self.path, dict(self.headers.items()), body))
                    fault = proxy.fault
                    if proxy.only is not None and not proxy.only(body):
                        fault = None
                if proxy.require_bearer is not None and (
                    self.headers.get("Authorization") != f"Bearer {proxy.require_bearer}"
                ):
                    self._answer(401, b'{"status":"error","error":"unauthorized"}', "application/json")
                    return
                refused = proxy._refusal(self.headers)
                if refused is not None:
                    self._answer(*refused)
                    return
                if isinstance(fault, Status):
                    self._answer(fault.code, fault.body, fault.content_type)
                    return
                if isinstance(fault, Body):
                    self._answer(200, fault.body, fault.content_type)
                    return
                if isinstance(fault, Delay) and proxy._released.wait(fault.seconds):
                    return  # the proxy is stopping
                try:
                    upstream = httpx.request(
                        method,
                        proxy.upstream + self.path,
                        content=body,
                        headers={"Content-Type": self.headers.get("Content-Type", "")},
                        timeout=30.0,
                    )
                except httpx.HTTPError as exc:
                    self._answer(502, str(exc).encode(), "text/plain")
                    return
                content = upstream.content
                if isinstance(fault, Rewrite):
                    content = fault.change(content)
                self._answer(upstream.status_code, content, upstream.headers.get("Content-Type", ""))

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): that is the point of a Delay

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _refusal(self, headers: Message[str, str]) -> tuple[int, bytes, str] | None:
        """401 for a required header missing, 403 for one with a wrong value (the gateway's answer)."""
        for name, value in self.require_headers.items():
            given = headers.get(name)
            if given is None:
                return 401, f"missing header {name}\n".encode(), "text/plain"
            if given != value:
                return 403, f"header {name}: no such tenant\n".encode(), "text/plain"
        return None

    def start(self) -> FaultProxy:
        self._open()
        return self

    def stop(self) -> None:
        self._released.set()
        self._close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
