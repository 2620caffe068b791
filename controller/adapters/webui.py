"""The read-only web UI over HTTP: ``/`` (the rollouts), ``/flags/<key>`` (one rollout), ``/log``.

Each request reads the flag store afresh (and the policy files, when given), brings the index of the
decision log up to date with what was appended since the last request
(:mod:`controller.adapters.logindex`), and hands them to the pure pages of
:mod:`controller.core.uioverview`, :mod:`controller.core.uirollout` and :mod:`controller.core.uilog`.
Nothing here writes: only GET and HEAD are answered (anything else is
405 with ``Allow: GET, HEAD``), and every page is served with a Content-Security-Policy that allows no
script (:func:`controller.core.uipage.security_headers`).

:class:`WebUI` answers one request as a :class:`Reply`; :func:`send` writes it through a
``BaseHTTPRequestHandler``. ``flagroll run --listen`` serves it beside its endpoints
(:mod:`controller.adapters.endpoints`); ``flagroll ui`` serves it alone (:class:`UIServer`).
"""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from controller.adapters.decisionlog import last_by_flag, read_records
from controller.adapters.flagstore import FlagStore
from controller.adapters.logindex import LogIndex, View
from controller.adapters.policyfile import load_paths, policy_files
from controller.core.errors import FlagrollError, UsageError
from controller.core.flagd import managed_keys, read_state
from controller.core.policy import Policy
from controller.core.serving import is_verification
from controller.core.uilog import BadParameter, parse_filters, render_log
from controller.core.uioverview import ExposurePoint, overview_rows, render_overview
from controller.core.uipage import REFRESH_SECONDS, Page, error_page, parse_time, security_headers
from controller.core.uirollout import Rollout, render_rollout

ALLOWED = "GET, HEAD"
HTML = "text/html; charset=utf-8"
PolicyStamp = tuple[tuple[str, int, int, int, int, int], ...]  # see policy_stamp


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = HTML


def is_ui_path(path: str) -> bool:
    return path in {"/", "/log"} or path.startswith("/flags/")


class WebUI:
    """The pages of one flag store and decision log (and policy files, if given)."""

    def __init__(
        self,
        store: FlagStore,
        decision_log: Path | None,
        clock: Callable[[], datetime],
        *,
        policies: Path | None = None,
        prometheus_ui: str | None = None,
        refresh_seconds: int = REFRESH_SECONDS,
        indexed: bool = True,
    ) -> None:
        """``indexed`` False: every request reads the whole log (the reference the index is held to)."""
        self.store = store
        self.decision_log = decision_log
        self.index = LogIndex(decision_log) if decision_log is not None and indexed else None
        self._policies_cache: tuple[PolicyKey, tuple[dict[str, str] | None, dict[str, Policy]]] | None = None
        self.clock = clock
        self.policies = policies
        self.prometheus_ui = prometheus_ui
        self.refresh_seconds = refresh_seconds

    def reply(self, method: str, target: str) -> Reply:
        """The answer to ``method`` on ``target`` (path and query string, as the request line has it)."""
        if method not in {"GET", "HEAD"}:
            return self._page(
                error_page(
                    405,
                    "Method not allowed",
                    f"{method}: this UI is read-only; it answers GET and HEAD only",
                    self.clock(),
                ),
                [("Allow", ALLOWED)],
            )
        split = urlsplit(target)
        with self.index.lock if self.index is not None else contextlib.nullcontext():
            return self._answer(split.path, split.query, self.clock())  # the time it is drawn at

    def warm(self) -> None:
        """Bring the index up to date now: ``flagroll ui`` does at its start, so that the first page
        asked for does not wait for a large log to be read (29 s for 1 GB)."""
        if self.index is not None:
            with self.index.lock:
                self.index.view()

    def _answer(self, path: str, query: str, now: datetime) -> Reply:
        try:
            if path == "/":
                return self._page(self._overview(now))
            if path == "/log":
                return self._page(self._log(query, now))
            if path.startswith("/flags/") and "/" not in path[len("/flags/") :]:
                return self._page(self._rollout(unquote(path[len("/flags/") :], errors="replace"), now))
        except FlagrollError as exc:
            return self._page(error_page(503, "Cannot read", str(exc), now))
        except OSError as exc:  # the decision log or a policy file cannot be read
            return self._page(error_page(503, "Cannot read", f"{exc.filename}: {exc.strerror or exc}", now))
        return self._page(error_page(404, "Not found", f"no page at {path}: try / or /log", now))

    def _page(self, page: Page, extra: list[tuple[str, str]] | None = None) -> Reply:
        return Reply(page.status, page.html.encode("utf-8"), [*security_headers(), *(extra or [])])

    def _records(self, *, decisions_only: bool = True) -> list[dict[str, Any]]:
        """The decision log's records; ``decisions_only``: without the verifications of what the flag
        server serves (they are not decisions, and the log page lists them)."""
        if self.decision_log is None:
            return []
        return [r for r in read_records(self.decision_log) if not (decisions_only and is_verification(r))]

    def _unjudged(
        self, document: Mapping[str, Any], version: str | None
    ) -> tuple[dict[str, str] | None, dict[str, Policy]]:
        """Which flags no valid policy judges, and the policies by flag: loaded again only when the
        policy files (their names, sizes and modification times) or the flag store's version changed."""
        if self.policies is None:
            return None, {}
        key = (policy_stamp(self.policies), version)
        cached = self._policies_cache
        if cached is not None and cached[0] == key and version is not None:
            return cached[1]
        found = self._load_policies(document)
        self._policies_cache = (key, found)
        return found

    def _load_policies(self, document: Mapping[str, Any]) -> tuple[dict[str, str] | None, dict[str, Policy]]:
        assert self.policies is not None
        loaded = load_paths([self.policies], document)
        ownership = loaded.ownership
        unjudged = {key: u.reason for key, u in ownership.unjudged.items()} if ownership is not None else {}
        return unjudged, {entry.policy.flag_key: entry.policy for entry in loaded.policies}

    def _view(self) -> View | None:
        return self.index.view() if self.index is not None else None

    def _overview(self, now: datetime) -> Page:
        snapshot = self.store.read()
        document = snapshot.document
        keys = list(managed_keys(document))
        view = self._view()
        if view is not None:
            exposures, last = view.exposures(keys), view.last_by_flag(keys)
        else:
            exposures, last = self._exposures(keys), self._last(keys)
        unjudged, _ = self._unjudged(document, snapshot.version)
        rows = overview_rows(document, last, exposures, now, unjudged)
        return render_overview(rows, now, source=self.store.location, refresh_seconds=self.refresh_seconds)

    def _exposures(self, keys: list[str]) -> dict[str, list[ExposurePoint]]:
        wanted = set(keys)
        exposures: dict[str, list[ExposurePoint]] = {}
        for record in self._records():
            flag, at, percent = record.get("flag"), parse_time(record.get("time")), record.get("to_percent")
            if flag in wanted and at is not None and isinstance(percent, int | float):
                seen = exposures.setdefault(str(flag), [])
                if not seen or seen[-1][1] != percent:
                    seen.append((at, float(percent)))
        return exposures

    def _last(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if self.decision_log is None:
            return {}
        return last_by_flag(self.decision_log, keys, where=lambda r: not is_verification(r))

    def _rollout(self, key: str, now: datetime) -> Page:
        snapshot = self.store.read()
        document = snapshot.document
        managed = key in set(managed_keys(document))
        view = self._view()
        if view is not None:
            records: list[dict[str, Any]] = view.slim_records(key)
        else:
            records = [r for r in self._records() if r.get("flag") == key]
        if not managed and not records:
            return error_page(
                404,
                "No such rollout",
                f"flag {key!r} is not managed by flagroll and has no decision records",
                now,
            )
        state, problem = None, None
        if managed:
            try:
                state = read_state(document, key)
            except FlagrollError as exc:
                problem = str(exc)
        else:
            problem = "not managed by flagroll in the flag store now (its records remain)"
        _, policies = self._unjudged(document, snapshot.version)
        full = view.whole if view is not None else None
        rollout = Rollout(key, state, records, policies.get(key), problem, full)
        return render_rollout(
            rollout, now, prometheus_ui=self.prometheus_ui, refresh_seconds=self.refresh_seconds
        )

    def _log(self, query: str, now: datetime) -> Page:
        try:
            chosen = parse_filters(parse_qs(query, keep_blank_values=True))
        except BadParameter as exc:
            return error_page(400, "Bad filter", str(exc), now)
        view = self._view()
        if view is not None:
            matched: Sequence[Mapping[str, Any]] = view.matching(chosen)
        else:
            matched = [r for r in self._records(decisions_only=False) if chosen.matches(r)]
        return render_log(chosen, matched, now, refresh_seconds=self.refresh_seconds)


PolicyKey = tuple[PolicyStamp, str | None]


def policy_stamp(policies: Path) -> PolicyStamp:
    """Each policy file's name, size, modification and change times, device and inode (-1 for one
    that cannot be read): what tells whether the files changed since they were loaded (the change
    time and inode catch an edit that kept the size and the modification time: `cp -p`, a
    ConfigMap volume's swap of its files)."""
    found = []
    for path in policy_files([policies]):
        try:
            st = path.stat()
            found.append((str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino))
        except OSError:
            found.append((str(path), -1, -1, -1, -1, -1))
    return tuple(found)


COLLECTOR_FIRST_THRESHOLD = 50_000  # objects allocated between two young collections


def tune_collector() -> None:
    """For a process that serves only the pages (``flagroll ui``): the cyclic garbage collector runs
    its young collection every 50,000 allocations instead of 700. A rollout page of 10,000 records
    allocates about a million objects that die with the request (none in cycles), and the default
    spends about a quarter of the page's time scanning them (docs/ui.md, "Performance")."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(COLLECTOR_FIRST_THRESHOLD, middle, oldest)


def send(handler: BaseHTTPRequestHandler, reply: Reply, *, head: bool) -> None:
    """Write ``reply`` (without its body for a HEAD request: the same headers and length)."""
    handler.send_response(reply.status)
    handler.send_header("Content-Type", reply.content_type)
    handler.send_header("Content-Length", str(len(reply.body)))
    for name, value in reply.headers:
        handler.send_header(name, value)
    handler.end_headers()
    if not head:
        handler.wfile.write(reply.body)


def not_allowed(method: str) -> Reply:
    body = f"{method} is not allowed: this server is read-only (GET, HEAD)\n".encode()
    return Reply(405, body, [("Allow", ALLOWED), *security_headers()], "text/plain; charset=utf-8")


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
    try:
        server = server_class((host, port), handler)
    except OSError as exc:
        raise UsageError(f"--listen {host}:{port}: cannot listen: {exc.strerror or exc}") from None
    server.daemon_threads = True
    return server


class UIServer:
    """The UI alone (``flagroll ui``): its pages, and ``/healthz`` for a probe."""

    def __init__(self, ui: WebUI, host: str, port: int) -> None:
        self.ui = ui
        self._server = make_server(host, port, self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="flagroll-ui", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        ui = self.ui

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                head = self.command == "HEAD"
                if self.path.split("?", 1)[0] == "/healthz" and self.command in {"GET", "HEAD"}:
                    send(self, Reply(200, b"ok\n", content_type="text/plain; charset=utf-8"), head=head)
                else:
                    send(self, ui.reply(self.command, self.path), head=head)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

            def __getattr__(self, name: str) -> Callable[[], None]:
                if name.startswith("do_"):  # any other method (TRACE, PROPFIND…): 405 too, not 501
                    return self._answer
                raise AttributeError(name)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def start(self) -> UIServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`shutdown` (from another thread or a signal handler)."""
        self._server.serve_forever()

    def shutdown(self) -> None:
        self._server.shutdown()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> UIServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
