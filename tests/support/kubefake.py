"""An in-process fake of the Kubernetes API endpoints flagroll uses, for what a real API server cannot be
made to do on demand (answer 500 or 429 to the next request, stall a Lease renewal at a chosen moment,
move a clock) and for fast unit tests; the real one runs in tests/kubeapi (tests/support/kubeapi.py).

It stores objects as JSON, gives every write a new ``resourceVersion`` from one counter (as etcd
does), answers a replace carrying a stale resourceVersion with 409 Conflict, a missing object with
404, and injected faults (403 Forbidden, 500, …) with proper ``Status`` bodies. It serves:

- ConfigMaps (``/api/v1``), Leases (``coordination.k8s.io/v1``) and OpenFeature ``FeatureFlag``s
  (``core.openfeature.dev/v1beta1``): get, create (POST), replace (PUT), ``dryRun=All``;
- a ``FeatureFlag`` schema as the operator's CRD (API v0.2.45) declares it, checked against the real
  API server (tests/kubeapi): ``spec.flagSpec`` keeps ``flags`` and ``$evaluators``; each flag keeps
  ``state``, ``variants``, ``defaultVariant`` and ``targeting`` (anything else, a flag's ``metadata``
  included, is pruned) and needs the first three (``state`` ENABLED or DISABLED; 422 otherwise);
  ``kept_flag_fields`` changes what a flag keeps (a CRD that keeps ``metadata``, or one that would
  drop ``targeting``);
- a Lease's ``acquireTime`` and ``renewTime`` parsed as strictly as the API server does
  (RFC 3339 with exactly six fractional digits; 400 otherwise);
- bearer-token authentication when ``token`` is set (401 otherwise).

Two ways in: :attr:`FakeKubeApi.transport` (an httpx2 transport for lightkube's ``Client``, fastest)
and :meth:`FakeKubeApi.serve` (a real HTTP server on 127.0.0.1 for a kubeconfig, as the CLI uses).

Its limits, on purpose: no watch, list, patch or delete; no RBAC (403 only when injected); no
admission webhooks, no managedFields, no generation, no server-side apply; no TLS (``serve`` speaks
plain HTTP); pruning and validation only for the FeatureFlag fields named above; ConfigMap size
limits are not enforced.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from lightkube import Client, KubeConfig

JsonObject = dict[str, Any]
KINDS = {  # (api prefix, plural) -> (apiVersion, kind)
    ("/api/v1", "configmaps"): ("v1", "ConfigMap"),
    ("/apis/coordination.k8s.io/v1", "leases"): ("coordination.k8s.io/v1", "Lease"),
    ("/apis/core.openfeature.dev/v1beta1", "featureflags"): ("core.openfeature.dev/v1beta1", "FeatureFlag"),
}
GROUPS = {"configmaps": "", "leases": "coordination.k8s.io", "featureflags": "core.openfeature.dev"}
FLAG_FIELDS = frozenset({"state", "variants", "defaultVariant", "targeting"})
FLAGSPEC_FIELDS = {"flags", "$evaluators"}
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")  # RFC3339Micro, strict


@dataclass
class Fault:
    method: str
    plural: str
    status: int
    times: int
    message: str = ""


@dataclass
class Hook:
    method: str
    plural: str
    action: Callable[[], None]
    times: int


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: JsonObject | None
    resource_version: str | None = None
    status: int | None = None  # what the fake answered


@dataclass
class FakeKubeApi:
    token: str | None = None
    kept_flag_fields: frozenset[str] = FLAG_FIELDS
    objects: dict[tuple[str, str, str], JsonObject] = field(default_factory=dict)  # (plural, ns, name)
    requests: list[Request] = field(default_factory=list)
    revision: int = 1000
    faults: list[Fault] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()

    # --- what tests call --------------------------------------------------------------------

    def add(self, plural: str, namespace: str, name: str, body: JsonObject) -> JsonObject:
        """Create an object directly, as someone else would; returns it as stored."""
        api_version, kind = next(v for (p, pl), v in KINDS.items() if pl == plural)
        obj = {"apiVersion": api_version, "kind": kind, **copy.deepcopy(body)}
        obj.setdefault("metadata", {}).update(name=name, namespace=namespace)
        with self._lock:
            return copy.deepcopy(self._store(plural, namespace, name, obj, create=True))

    def get(self, plural: str, namespace: str, name: str) -> JsonObject:
        with self._lock:
            return copy.deepcopy(self.objects[(plural, namespace, name)])

    def edit(
        self, plural: str, namespace: str, name: str, change: Callable[[JsonObject], None]
    ) -> JsonObject:
        """Change an object as another writer would (kubectl edit): a new resourceVersion."""
        with self._lock:
            obj = copy.deepcopy(self.objects[(plural, namespace, name)])
            change(obj)
            return copy.deepcopy(self._store(plural, namespace, name, obj))

    def fail(self, method: str, plural: str, status: int, *, times: int = 1, message: str = "") -> None:
        """Answer the next ``times`` matching requests with ``status``."""
        with self._lock:
            self.faults.append(Fault(method.upper(), plural, status, times, message))

    def before(self, method: str, plural: str, action: Callable[[], None], *, times: int = 1) -> None:
        """Run ``action`` just before the next ``times`` matching requests are handled: a concurrent
        edit landing between a client's read and its write."""
        with self._lock:
            self.hooks.append(Hook(method.upper(), plural, action, times))

    def writes(self, plural: str | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.method in ("PUT", "POST")
            and "dryRun" not in r.query
            and (plural is None or plural in r.path)
        ]

    @property
    def transport(self) -> httpx2.MockTransport:
        def handler(request: httpx2.Request) -> httpx2.Response:
            query = {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}
            status, body = self.handle(
                request.method, request.url.path, query, request.headers.get("authorization"), request.content
            )
            return httpx2.Response(status, json=body)

        return httpx2.MockTransport(handler)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve the fake over plain HTTP on 127.0.0.1 (a free port); yields the base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, answer = fake.handle(
                    self.command, parts.path, query, self.headers.get("Authorization"), body
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="kubefake", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    def client(self, namespace: str = "default") -> Client:
        """A lightkube client wired to the fake through its transport (the real auth code runs)."""
        config = KubeConfig.from_dict(self._config("https://kube.fake.invalid", namespace))
        return connect_with(config, self.transport)

    def kubeconfig(self, path: Path, url: str, *, namespace: str = "default") -> Path:
        path.write_text(json.dumps(self._config(url, namespace)))  # JSON is YAML
        return path

    def _config(self, url: str, namespace: str) -> JsonObject:
        user: JsonObject = {"token": self.token} if self.token else {"username": "nobody", "password": "x"}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "flagroll", "user": user}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "flagroll", "namespace": namespace}}
            ],
            "current-context": "fake",
        }

    # --- the API ----------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], authorization: str | None, content: bytes
    ) -> tuple[int, JsonObject]:
        request = Request(method.upper(), path, query, json.loads(content) if content else None)
        status, answer = self._handle(request, authorization)
        request.status = status
        return status, answer

    def conflicts(self, plural: str) -> list[Request]:
        """The writes answered 409 (dry runs included)."""
        return [r for r in self.requests if r.status == 409 and plural in r.path]

    def _handle(self, request: Request, authorization: str | None) -> tuple[int, JsonObject]:
        method, path, query, body = request.method, request.path, request.query, request.body
        if isinstance(body, dict):
            request.resource_version = (body.get("metadata") or {}).get("resourceVersion")
        with self._lock:
            self.requests.append(request)
        route = self._route(path)
        plural = route[1] if route else ""
        for hook in self._take(self.hooks, method, plural):
            hook.action()
        with self._lock:
            if self.token is not None and authorization != f"Bearer {self.token}":
                return _status(401, "Unauthorized", "Unauthorized")
            if route is None:
                return _status(404, "NotFound", "the server could not find the requested resource")
            _, plural, namespace, name = route
            for fault in self._take(self.faults, method, plural):
                return self._fault(fault, method, plural, namespace, name)
            dry_run = query.get("dryRun") == "All"
            if method == "GET" and name:
                obj = self.objects.get((plural, namespace, name))
                if obj is None:
                    return _not_found(plural, name)
                return 200, copy.deepcopy(obj)
            if method == "POST" and not name:
                return self._create(plural, namespace, body, dry_run)
            if method == "PUT" and name:
                return self._replace(plural, namespace, name, body, dry_run)
            return _status(405, "MethodNotAllowed", f"the fake does not support {method} {path}")

    def _route(self, path: str) -> tuple[str, str, str, str] | None:
        for prefix, plural in KINDS:
            head = f"{prefix}/namespaces/"
            if not path.startswith(head):
                continue
            rest = path[len(head) :].split("/")
            if len(rest) in (2, 3) and rest[1] == plural:
                return prefix, plural, rest[0], rest[2] if len(rest) == 3 else ""
        return None

    def _take(self, items: list[Any], method: str, plural: str) -> list[Any]:
        with self._lock:
            for item in items:
                if item.method == method and item.plural == plural and item.times > 0:
                    item.times -= 1
                    return [item]
        return []

    def _fault(
        self, fault: Fault, method: str, plural: str, namespace: str, name: str
    ) -> tuple[int, JsonObject]:
        verb = {"GET": "get", "PUT": "update", "POST": "create"}.get(method, method.lower())
        if fault.status == 403:
            message = fault.message or (
                f'{plural} "{name}" is forbidden: User "system:serviceaccount:{namespace}:flagroll" '
                f'cannot {verb} resource "{plural}" in API group "{GROUPS[plural]}" in the namespace '
                f'"{namespace}"'
            )
            return _status(403, "Forbidden", message)
        if fault.status == 409:
            return _conflict(plural, name)
        reasons = {
            404: "NotFound",
            422: "Invalid",
            429: "TooManyRequests",
            500: "InternalError",
            503: "ServiceUnavailable",
        }
        return _status(fault.status, reasons.get(fault.status, "Unknown"), fault.message or "injected fault")

    def _create(self, plural: str, namespace: str, body: Any, dry_run: bool) -> tuple[int, JsonObject]:
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            return _status(422, "Invalid", "metadata.name: Required value")
        name = body["metadata"]["name"]
        if (plural, namespace, name) in self.objects:
            return _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
        problem = self._invalid(plural, body)
        if problem:
            return _invalid_status(problem)
        obj = copy.deepcopy(body)
        if dry_run:
            return 201, self._shaped(plural, obj)
        return 201, copy.deepcopy(self._store(plural, namespace, name, obj, create=True))

    def _replace(
        self, plural: str, namespace: str, name: str, body: Any, dry_run: bool
    ) -> tuple[int, JsonObject]:
        current = self.objects.get((plural, namespace, name))
        if current is None:
            return _not_found(plural, name)
        if not isinstance(body, dict) or (body.get("metadata") or {}).get("name") != name:
            return _status(400, "BadRequest", "the name of the object does not match the name in the URL")
        sent = body["metadata"].get("resourceVersion")
        if sent is not None and sent != current["metadata"]["resourceVersion"]:
            return _conflict(plural, name)
        problem = self._invalid(plural, body)
        if problem:
            return _invalid_status(problem)
        obj = copy.deepcopy(body)
        obj["metadata"]["uid"] = current["metadata"]["uid"]
        obj["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"]
        if dry_run:
            shaped = self._shaped(plural, obj)
            shaped["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return 200, shaped
        return 200, copy.deepcopy(self._store(plural, namespace, name, obj))

    def _invalid(self, plural: str, body: JsonObject) -> str:
        if plural == "leases":
            for name in ("acquireTime", "renewTime"):
                value = (body.get("spec") or {}).get(name)
                if value is not None and not MICRO_TIME.match(str(value)):
                    return f'spec.{name}: parsing time "{value}" as "2006-01-02T15:04:05.000000Z07:00"'
            return ""
        if plural != "featureflags":
            return ""
        flags = ((body.get("spec") or {}).get("flagSpec") or {}).get("flags")
        if flags is None:
            return ""
        if not isinstance(flags, dict):
            return "spec.flagSpec.flags: Invalid value: must be of type object"
        for key, flag in flags.items():
            if not isinstance(flag, dict):
                return f"spec.flagSpec.flags.{key}: Invalid value: must be of type object"
            for required in ("state", "variants", "defaultVariant"):
                if required not in flag:
                    return f"spec.flagSpec.flags.{key}.{required}: Required value"
            if flag["state"] not in ("ENABLED", "DISABLED"):
                return f'spec.flagSpec.flags.{key}.state: Unsupported value: "{flag["state"]}"'
        return ""

    def _shaped(self, plural: str, obj: JsonObject) -> JsonObject:
        """Structural pruning, as the API server applies a CRD's schema."""
        obj = copy.deepcopy(obj)
        if plural == "featureflags":
            flag_spec = (obj.get("spec") or {}).get("flagSpec")
            if isinstance(flag_spec, dict):
                for extra in set(flag_spec) - FLAGSPEC_FIELDS:
                    del flag_spec[extra]
                for flag in (flag_spec.get("flags") or {}).values():
                    for extra in set(flag) - self.kept_flag_fields:
                        del flag[extra]
        return obj

    def _store(
        self, plural: str, namespace: str, name: str, obj: JsonObject, create: bool = False
    ) -> JsonObject:
        self.revision += 1
        obj = self._shaped(plural, obj)
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.revision)
        if create:
            meta["uid"] = f"uid-{self.revision}"
            meta["creationTimestamp"] = "2026-11-21T12:00:00Z"
        self.objects[(plural, namespace, name)] = obj
        return obj


def _status(code: int, reason: str, message: str) -> tuple[int, JsonObject]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _not_found(plural: str, name: str) -> tuple[int, JsonObject]:
    return _status(404, "NotFound", f'{plural} "{name}" not found')


def _conflict(plural: str, name: str) -> tuple[int, JsonObject]:
    return _status(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; please apply '
        "your changes to the latest version and try again",
    )


def connect_with(config: KubeConfig, transport: httpx2.BaseTransport) -> Client:
    return Client(config, transport=transport, field_manager="flagroll")


def _invalid_status(problem: str) -> tuple[int, JsonObject]:
    if "parsing time" in problem:  # the body cannot even be decoded
        return _status(400, "BadRequest", problem)
    return _status(422, "Invalid", problem)
