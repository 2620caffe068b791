"""A real HTTP server that receives webhooks: it records every POST and answers what the test says."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []  # (path, JSON body)
        self.answers: list[int] = []  # status codes to answer first, in order; then 200
        self.gate = threading.Event()  # while clear (and ``hold`` is set), requests wait: a slow receiver
        self.gate.set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def bodies(self, path: str | None = None) -> list[Any]:
        with self._lock:
            return [body for p, body in self.received if path is None or p == path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.gate.wait(30)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    code = receiver.answers.pop(0) if receiver.answers else 200
                    if code < 300:
                        receiver.received.append((self.path, json.loads(body)))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()


def receiving() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver
