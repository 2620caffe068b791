"""An in-process fake of a flag server's OFREP API: a real HTTP server on 127.0.0.1 at a free port that
answers ``POST /ofrep/v1/evaluate/flags/{key}`` by evaluating the real flag file with the pinned
Python flagd evaluator (openfeature-flagd-core), as the flagd daemon would serve it (the daemon
itself cannot be built here). Like the daemon's file sync, it loads the file again when it changes.

Answers have the daemon's shapes: 200 ``{"key", "value", "reason", "variant", "metadata"}``; 404
``{"key", "errorCode": "FLAG_NOT_FOUND", "errorDetails"}`` for an unknown flag, and for a disabled
one (details "flag `KEY` is disabled", as current daemons answer).

It can be told to misbehave: serve a stale copy (never reload), wait before serving a change, answer
an error, hang (the client times out), answer malformed JSON, or serve one variant to everyone.

``python -m tests.support.ofrepfake --flags FILE --port PORT`` runs it in a process of its own, as
the daemon would run (the time-to-rollback benchmark does), until SIGTERM; ``GET /healthz`` answers
200 once it listens.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import FlagNotFoundError, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

PREFIX = "/ofrep/v1/evaluate/flags/"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the client opens its connections at once; 5 would refuse some

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up on a request (a round cut short) is no error of the server's."""


class OfrepFake:
    def __init__(self, flags: Path, port: int = 0) -> None:
        self.flags = flags
        self.stale = False  # True: never load the file again (a daemon whose file sync stopped)
        self.reload_delay_seconds = 0.0  # a change is served only this long after it was noticed
        self.status: tuple[int, bytes] | None = None  # answer every request with this status and body
        self.malformed = False  # answer 200 with a body that is not JSON
        self.variant: str | None = None  # serve this variant to everyone
        self.hang = threading.Event()  # while set, requests wait (until released or the server stops)
        self.requests = 0
        self.bodies: list[Any] = []  # the request bodies, in order (None: the client gave up)
        self.headers: list[dict[str, str]] = []
        self.loads = 0  # how many times the flag file was loaded
        self._lock = threading.Lock()
        self._core = FlagdCore()
        self._document: dict[str, Any] = {"flags": {}}
        self._seen: tuple[int, int, int] | None = None  # the file's (inode, size, mtime) last loaded
        self._noticed: tuple[tuple[int, int, int], float] | None = None  # a change seen, and when
        self._released = threading.Event()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.flags.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def _load(self) -> None:
        """Load the flag file again if it changed (and the delay has passed since the change was
        noticed; the first load is at once, as a daemon's at its start), unless stale."""
        stamp = self._stamp()
        if self.stale or stamp is None or stamp == self._seen:
            return
        if self.reload_delay_seconds > 0 and self._seen is not None:
            if self._noticed is None or self._noticed[0] != stamp:
                self._noticed = (stamp, time.monotonic())
            if time.monotonic() - self._noticed[1] < self.reload_delay_seconds:
                return
        try:
            document = json.loads(self.flags.read_text())
        except (OSError, ValueError):
            return  # caught mid-write by a non-atomic writer: keep the last copy, as the daemon does
        self._core.set_flags(document)
        self._document = document
        self._seen = stamp
        self.loads += 1

    def load(self) -> None:
        """Load the flag file now (the daemon would have, long before anyone asks)."""
        with self._lock:
            self._load()

    def freeze(self) -> None:
        """Load the flag file as it is now, and never again: a daemon whose file sync stopped."""
        with self._lock:
            self._load()
            self.stale = True

    def evaluate(self, key: str, targeting_key: str) -> tuple[int, dict[str, Any]]:
        """The status and JSON body the daemon would answer."""
        with self._lock:
            self._load()
            flag = self._document.get("flags", {}).get(key)
            context = EvaluationContext(targeting_key=targeting_key)
            try:
                details = self._resolve(key, flag, context)
            except FlagNotFoundError:
                return 404, {
                    "key": key,
                    "errorCode": "FLAG_NOT_FOUND",
                    "errorDetails": f"flag `{key}` does not exist",
                }
            except OpenFeatureError as exc:
                return 400, {"key": key, "errorCode": "GENERAL", "errorDetails": str(exc)}
        if details.reason == Reason.DISABLED:
            return 404, {
                "key": key,
                "errorCode": "FLAG_NOT_FOUND",
                "errorDetails": f"flag `{key}` is disabled",
            }
        variant = self.variant or details.variant
        value = flag["variants"].get(variant) if isinstance(flag, dict) and self.variant else details.value
        return 200, {
            "key": key,
            "value": value,
            "reason": str(details.reason),
            "variant": variant,
            "metadata": dict(details.flag_metadata or {}),
        }

    def _resolve(self, key: str, flag: Any, context: EvaluationContext) -> FlagResolutionDetails[Any]:
        """Resolve with the evaluator's typed call that fits the flag's values (the daemon has one
        untyped call; the Python evaluator checks the type)."""
        values = list(flag.get("variants", {}).values()) if isinstance(flag, dict) else [False]
        sample = values[0] if values else False
        if isinstance(sample, bool):
            return self._core.resolve_boolean_value(key, False, context)
        if isinstance(sample, str):
            return self._core.resolve_string_value(key, "", context)
        if isinstance(sample, int):
            return self._core.resolve_integer_value(key, 0, context)
        if isinstance(sample, float):
            return self._core.resolve_float_value(key, 0.0, context)
        return self._core.resolve_object_value(key, {}, context)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits for a delayed ACK (40 ms)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake._lock:
                    fake.requests += 1
                    fake.headers.append(dict(self.headers))
                    fake.bodies.append(json.loads(raw) if raw else None)
                while fake.hang.is_set() and not fake._released.wait(0.05):
                    pass
                if not self.path.startswith(PREFIX):
                    self._send(404, b"404 page not found\n")
                    return
                if fake.status is not None:
                    self._send(*fake.status)
                    return
                if fake.malformed:
                    self._send(200, b'{"key": "half an answer", "variant": ')
                    return
                if not raw:  # the client gave up before sending its body
                    self._send(400, b'{"errorCode": "INVALID_CONTEXT", "errorDetails": "no body"}')
                    return
                body = json.loads(raw)
                targeting_key = str((body.get("context") or {}).get("targetingKey", ""))
                status, answer = fake.evaluate(unquote(self.path[len(PREFIX) :]), targeting_key)
                self._send(status, json.dumps(answer).encode())

            def do_GET(self) -> None:
                self._send(200 if self.path == "/healthz" else 404, b"{}")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> OfrepFake:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.ofrepfake", description=__doc__)
    parser.add_argument("--flags", type=Path, required=True, help="the flag file to serve")
    parser.add_argument("--port", type=int, default=0, help="on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with OfrepFake(args.flags, args.port) as fake:
        print(fake.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
