"""A real Kubernetes API server for the tests: etcd and kube-apiserver as child processes on 127.0.0.1
at free ports, built by ``scripts/peer`` (docs/peers.md), with the OpenFeature Operator's
``FeatureFlag`` CRD installed (generated from the operator's API module by ``scripts/peer
featureflag-crd``).

- Authentication: a static token for an administrator (group ``system:masters``), and service-account
  tokens signed with a key generated here (:meth:`KubeApiServer.service_account_token` asks the
  TokenRequest API, as a kubelet would for a pod).
- Authorization: RBAC only, so a Role that is too narrow or too wide shows.
- No kubelet, scheduler or controller manager: nothing here runs pods, and a deleted namespace is never
  emptied (tests use fresh namespaces, :meth:`KubeApiServer.namespace`).
- TLS: the API server's self-signed serving certificate is the kubeconfig's certificate authority, so
  clients verify it as they would a cluster's.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from controller.adapters.promserver import free_port
from tests.support.peers import peer_path

JsonObject = dict[str, Any]
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


class _Child:
    """One server process, its log in the work directory."""

    def __init__(self, name: str, arguments: list[str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                arguments,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def exited(self) -> bool:
        return self.process.poll() is not None

    def tail(self, lines: int = 15) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_seconds: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class KubeApiServer:
    """etcd + kube-apiserver + the FeatureFlag CRD; :meth:`start` and :meth:`stop` (or ``with``)."""

    def __init__(self) -> None:
        self.workdir: Path | None = None
        self.port = 0
        self.admin_token = secrets.token_urlsafe(24)
        self._children: list[_Child] = []
        self._names = itertools.count(1)
        self._context: ssl.SSLContext | None = None
        self.start_seconds = 0.0
        """How long :meth:`start` took, binaries already built (docs/peers.md quotes it)."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "certs" / "apiserver.crt"

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, ready_timeout_seconds: float = 90.0) -> KubeApiServer:
        etcd, apiserver, crd = peer_path("etcd"), peer_path("kube-apiserver"), peer_path("featureflag-crd")
        began = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="flagroll-kubeapi-"))
        try:
            etcd_url = self._start_etcd(etcd, began + ready_timeout_seconds)
            self._start_apiserver(apiserver, etcd_url, began + ready_timeout_seconds)
            self.apply(yaml.safe_load(Path(crd).read_text()))
            self._wait_established("featureflags.core.openfeature.dev", began + ready_timeout_seconds)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _start_etcd(self, binary: str, deadline: float) -> str:
        assert self.workdir is not None
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        self._children.append(
            _Child(
                "etcd",
                [
                    binary,
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={url}",
                    f"--advertise-client-urls={url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=default=http://127.0.0.1:{peer}",
                    "--log-level=warn",
                ],
                self.workdir,
            )
        )
        self._poll(deadline, lambda: httpx.get(f"{url}/health", timeout=1.0).json().get("health") == "true")
        return url

    def _start_apiserver(self, binary: str, etcd_url: str, deadline: float) -> None:
        assert self.workdir is not None
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signing = self.workdir / "sa.key"
        signing.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        public = self.workdir / "sa.pub"
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f"{self.admin_token},admin,admin,system:masters\n")
        self.port = free_port()
        self._children.append(
            _Child(
                "kube-apiserver",
                [
                    binary,
                    f"--etcd-servers={etcd_url}",
                    f"--secure-port={self.port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    # The "kubernetes" Service's endpoints: there is no node network to point them at.
                    "--endpoint-reconciler-type=none",
                    f"--cert-dir={self.workdir / 'certs'}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={public}",
                    f"--service-account-signing-key-file={signing}",
                    f"--token-auth-file={tokens}",
                    "--authorization-mode=RBAC",
                    "--service-cluster-ip-range=10.96.0.0/24",
                ],
                self.workdir,
            )
        )

        def ready() -> bool:
            answer = httpx.get(f"{self.url}/readyz", headers=self._auth(None), verify=False, timeout=2.0)
            return answer.status_code == 200 and answer.text == "ok"

        self._poll(deadline, ready)

    def _poll(self, deadline: float, ready: Any) -> None:
        while time.monotonic() < deadline:
            for child in self._children:
                if child.exited():
                    raise RuntimeError(f"{child.name} exited early:\n{child.tail()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if ready():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the Kubernetes API server did not get ready:\n{self.log_tail()}")

    def _wait_established(self, crd: str, deadline: float) -> None:
        def established() -> bool:
            conditions = (self.get(f"{CRD_PATH}/{crd}").get("status") or {}).get("conditions") or []
            ok = any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
            return ok and self.request("GET", "/apis/core.openfeature.dev/v1beta1").status_code == 200

        self._poll(deadline, established)

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {c.name}\n{c.tail(lines)}" for c in self._children)

    def stop(self) -> None:
        for child in reversed(self._children):
            child.stop()
        self._children.clear()
        self._context = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- as a client ----------------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = ssl.create_default_context(cafile=str(self.ca_path))
        return self._context

    def _auth(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> httpx.Response:
        """One call as the administrator (or as ``token``)."""
        return httpx.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers=self._auth(token),
            verify=self._tls(),
            timeout=10.0,
        )

    def get(self, path: str) -> JsonObject:
        answer = self.request("GET", path)
        answer.raise_for_status()
        result: JsonObject = answer.json()
        return result

    def apply(self, obj: Mapping[str, Any]) -> JsonObject:
        """Create ``obj``, or replace it (at its current resourceVersion) when it exists."""
        path = object_path(obj)
        created = self.request("POST", path.rsplit("/", 1)[0], obj)
        if created.status_code == 409:
            current = self.get(path)
            replaced = dict(obj)
            replaced["metadata"] = {
                **obj["metadata"],
                "resourceVersion": current["metadata"]["resourceVersion"],
            }
            created = self.request("PUT", path, replaced)
        if created.status_code >= 300:
            raise RuntimeError(f"applying {path}: {created.status_code} {created.text}")
        result: JsonObject = created.json()
        return result

    def namespace(self, prefix: str = "test") -> str:
        """A fresh namespace (never deleted: no controller here would empty it)."""
        name = f"{prefix}-{next(self._names)}-{secrets.token_hex(3)}"
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A token for the service account, from the TokenRequest API."""
        answer = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
        answer.raise_for_status()
        return str(answer.json()["status"]["token"])

    def kubeconfig(self, path: Path, *, token: str | None = None, namespace: str = "default") -> Path:
        """A kubeconfig for this server as the administrator (or as ``token``)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)}}
            ],
            "users": [{"name": "user", "user": {"token": token or self.admin_token}}],
            "contexts": [
                {"name": "test", "context": {"cluster": "test", "user": "user", "namespace": namespace}}
            ],
            "current-context": "test",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path


def object_path(obj: Mapping[str, Any]) -> str:
    """The REST path of a (namespaced or cluster-wide) object of the kinds the tests create."""
    kinds = {
        "Namespace": ("/api/v1", "namespaces", False),
        "ConfigMap": ("/api/v1", "configmaps", True),
        "Secret": ("/api/v1", "secrets", True),
        "ServiceAccount": ("/api/v1", "serviceaccounts", True),
        "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
        "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
        "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
        "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
        "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
        "FeatureFlag": ("/apis/core.openfeature.dev/v1beta1", "featureflags", True),
        "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    }
    kind, metadata = obj["kind"], obj["metadata"]
    if kind not in kinds:
        raise ValueError(f"no REST path known for kind {kind!r}")
    prefix, plural, namespaced = kinds[kind]
    if namespaced:
        return f"{prefix}/namespaces/{metadata.get('namespace', 'default')}/{plural}/{metadata['name']}"
    return f"{prefix}/{plural}/{metadata['name']}"


@contextlib.contextmanager
def running() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server
