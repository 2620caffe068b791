"""Connecting to the Kubernetes API: a kubeconfig file, or the pod's service account.

lightkube does the hard part (kubeconfig contexts, client certificates, exec plugins, the in-cluster
token that the kubelet rotates, the cluster CA). Every request has a timeout, so a hung API server
costs one cycle, not the controller.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
from lightkube import Client, ConfigError, KubeConfig

from controller.adapters.kube.errors import KubeCredentialsError

REQUEST_TIMEOUT_SECONDS = 10.0
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def load_config(kubeconfig: Path | None, service_account: Path = SERVICE_ACCOUNT) -> KubeConfig:
    """``kubeconfig`` when given; else the service account when running in a pod; else
    ``~/.kube/config``."""
    try:
        if kubeconfig is not None:
            return KubeConfig.from_file(kubeconfig)
        return KubeConfig.from_env(service_account=service_account)
    except ConfigError as exc:
        raise KubeCredentialsError(
            f"no Kubernetes configuration: {exc}. Outside a pod, pass --kubeconfig FILE (or set "
            "KUBECONFIG); inside a pod, mount the service-account token"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        where = kubeconfig if kubeconfig is not None else "the Kubernetes configuration"
        raise KubeCredentialsError(f"cannot read {where}: {exc}") from exc


def connect(
    kubeconfig: Path | None = None,
    *,
    service_account: Path = SERVICE_ACCOUNT,
    transport: httpx2.BaseTransport | None = None,
    timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
) -> Client:
    """A client for the configured cluster; ``transport`` lets tests answer in-process."""
    config = load_config(kubeconfig, service_account)
    try:
        return Client(
            config,
            timeout=httpx2.Timeout(timeout_seconds),
            field_manager="flagroll",
            transport=transport,
        )
    except (ConfigError, AssertionError, OSError) as exc:
        raise KubeCredentialsError(f"cannot use the Kubernetes configuration: {exc}") from exc


def default_namespace(client: Client) -> str:
    """The namespace of the kubeconfig context, or the pod's own namespace in a cluster."""
    return str(client.namespace or "default")
