"""What an identity may do on a real Kubernetes API server, as the server's RBAC authorizer answers it.

- :func:`allowed` asks one ``SelfSubjectAccessReview`` per :class:`Access` (verb, resource, name,
  namespace) as the identity of a token, and returns those allowed: compared with an explicit table,
  a verb added to a Role, or removed from it, shows as a difference.
- :func:`rules_review` asks ``SelfSubjectRulesReview`` for every rule the identity has in a namespace;
  less :func:`baseline_rules`, those every authenticated identity has, a rule on a resource that no
  table probes shows too.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.kubeapi import KubeApiServer

REVIEWS = "/apis/authorization.k8s.io/v1"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
"""Every verb RBAC knows for an object or a collection of a resource."""


@dataclass(frozen=True, order=True)
class Access:
    """One request: ``resource`` is ``PLURAL`` (core group) or ``PLURAL.GROUP``; ``name`` "" is the
    collection."""

    verb: str
    resource: str
    name: str
    namespace: str

    @property
    def group(self) -> str:
        return self.resource.partition(".")[2]

    @property
    def plural(self) -> str:
        return self.resource.partition(".")[0]

    def __str__(self) -> str:
        return f"{self.verb} {self.resource} {self.name or '(all)'} in {self.namespace}"


def every(
    resources: Iterable[str], names: Iterable[str], namespaces: Iterable[str], verbs: Iterable[str] = VERBS
) -> list[Access]:
    """Every combination: the requests an access table is checked over."""
    return sorted(Access(*c) for c in itertools.product(verbs, resources, names, namespaces))


def _client(api: KubeApiServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=api.url,
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=str(api.ca_path)),
        timeout=10.0,
    )


def allowed(api: KubeApiServer, token: str, accesses: Iterable[Access]) -> set[Access]:
    """Those of ``accesses`` the identity of ``token`` is allowed, each asked of the API server."""
    granted = set()
    with _client(api, token) as client:
        for access in accesses:
            attributes = {
                "verb": access.verb,
                "group": access.group,
                "resource": access.plural,
                "namespace": access.namespace,
            }
            if access.name:
                attributes["name"] = access.name
            answer = client.post(
                f"{REVIEWS}/selfsubjectaccessreviews",
                json={
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attributes},
                },
            )
            answer.raise_for_status()
            if answer.json()["status"].get("allowed"):
                granted.add(access)
    return granted


Rule = tuple[str, str, str, str]
"""(verb, group, resource, name) of one resource rule, one verb and name each; name "" is any."""


def rules_review(api: KubeApiServer, token: str, namespace: str) -> set[Rule]:
    """Every resource rule the identity of ``token`` has in ``namespace``, one verb and name each."""
    with _client(api, token) as client:
        answer = client.post(
            f"{REVIEWS}/selfsubjectrulesreviews",
            json={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectRulesReview",
                "spec": {"namespace": namespace},
            },
        )
    answer.raise_for_status()
    status = answer.json()["status"]
    assert not status.get("incomplete"), status.get("evaluationError")
    return expand(status.get("resourceRules") or [])


def expand(rules: Iterable[Mapping[str, Any]]) -> set[Rule]:
    """RBAC rules (of a Role, or of a rules review), one verb, group, resource and name each."""
    found: set[Rule] = set()
    for rule in rules:
        found.update(
            itertools.product(
                rule["verbs"],
                rule.get("apiGroups") or [""],
                rule.get("resources") or [""],
                rule.get("resourceNames") or [""],
            )
        )
    return found


def baseline_rules(api: KubeApiServer, namespace: str) -> set[Rule]:
    """The rules every authenticated identity has in ``namespace``: those of a new service account
    without any binding."""
    nobody = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "nobody", "namespace": namespace},
    }
    api.apply(nobody)
    return rules_review(api, api.service_account_token(namespace, "nobody"), namespace)
