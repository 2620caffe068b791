"""Naming Kubernetes objects: ``NAMESPACE/NAME`` as the command line spells them; the default ConfigMap
key."""

from __future__ import annotations

import re
from dataclasses import dataclass

from controller.core.errors import UsageError

# RFC 1123 labels (namespaces) and subdomains (object names), as the API server checks them.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# The ConfigMap key holding the flagd JSON unless told otherwise. Here, beside the names, so that the
# command line can show it without loading the Kubernetes client.
DEFAULT_CONFIGMAP_KEY = "flags.flagd.json"


@dataclass(frozen=True)
class ObjectRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_ref(text: str, option: str, default_namespace: str | None = None) -> ObjectRef:
    """``NAMESPACE/NAME``, or ``NAME`` alone in ``default_namespace`` (the pod's or the kubeconfig's)."""
    namespace, slash, name = text.strip().rpartition("/")
    if not slash:
        namespace = default_namespace or ""
        if not namespace:
            raise UsageError(f"{option} {text!r}: give NAMESPACE/NAME")
    if not _LABEL.match(namespace) or len(namespace) > 63:
        raise UsageError(f"{option} {text!r}: {namespace!r} is not a valid namespace name")
    if not _SUBDOMAIN.match(name) or len(name) > 253:
        raise UsageError(f"{option} {text!r}: {name!r} is not a valid object name")
    return ObjectRef(namespace, name)
