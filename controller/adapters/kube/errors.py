"""Kubernetes API failures, sorted into flagroll's error tree: temporary (retried next cycle) or
permanent (a human must act: RBAC, a missing object, a rejected write).

===========================  ======================================  =========================
API answer                   flagroll error                           what happens
===========================  ======================================  =========================
409 Conflict                 WriteConflictError (temporary)           read again, decide again
403 Forbidden                KubePermissionError (permanent)          names verb, resource, object
401 Unauthorized             KubeCredentialsError (permanent)         check the token / kubeconfig
404 Not Found                KubeNotFoundError (permanent)            create the object / the CRD
400, 413, 422                KubeRejectedError (permanent)            the server refused the object
429, 5xx, network, timeout   KubeUnavailableError (temporary)         next cycle tries again
===========================  ======================================  =========================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx2
from lightkube import ApiError, ConfigError

from controller.adapters.kube.objects import ObjectRef
from controller.core.errors import PermanentError, TemporaryError, WriteConflictError


class KubePermissionError(PermanentError):
    """RBAC forbids a verb flagroll needs on an object."""


class KubeCredentialsError(PermanentError):
    """No usable credentials: the token was refused or no configuration was found."""


class KubeNotFoundError(PermanentError):
    """The object (or its resource type, for a custom resource) does not exist."""


class KubeRejectedError(PermanentError):
    """The API server refused what flagroll sent (validation, size, immutability)."""


class KubeUnavailableError(TemporaryError):
    """The API server could not be reached or answered with a server error; the next cycle retries."""


@contextlib.contextmanager
def api_call(verb: str, resource: str, ref: ObjectRef) -> Iterator[None]:
    """Translate what the client raises during ``verb`` on ``resource`` ``ref`` into flagroll's errors.

    ``resource`` is the RBAC spelling (``configmaps``, ``featureflags.core.openfeature.dev``,
    ``leases.coordination.k8s.io``), so a 403 names the exact permission to grant.
    """
    what = f"{resource} {ref.name!r} in namespace {ref.namespace!r}"
    try:
        yield
    except httpx2.HTTPStatusError as exc:  # lightkube's ApiError, or an answer that is not a Status
        code = exc.response.status_code
        said = _said(exc)
        if code == 409:
            raise WriteConflictError(
                f"{verb} {what}: it changed since it was read (resourceVersion conflict: {said}); "
                "nothing was overwritten"
            ) from exc
        if code == 403:
            raise KubePermissionError(
                f"forbidden: cannot {verb} {what}: the identity flagroll runs as lacks the RBAC "
                f"permission verb {verb!r} on resource {resource!r} in namespace {ref.namespace!r}; "
                f"grant it in a Role bound to flagroll's service account (API server: {said})"
            ) from exc
        if code == 401:
            raise KubeCredentialsError(
                f"unauthorized: the API server refused flagroll's credentials to {verb} {what}: "
                f"check the service-account token or the kubeconfig (API server: {said})"
            ) from exc
        if code == 404:
            hint = (
                "is the OpenFeature Operator (its FeatureFlag CRD) installed?"
                if "." in resource and not resource.startswith("leases.")
                else "create it first"
            )
            raise KubeNotFoundError(f"{what} not found: {hint} (API server: {said})") from exc
        if code in (400, 413, 422):
            raise KubeRejectedError(f"the API server refused to {verb} {what}: {said}") from exc
        raise KubeUnavailableError(f"cannot {verb} {what}: HTTP {code}: {said}; retrying next cycle") from exc
    except httpx2.HTTPError as exc:  # no answer: connection refused, timeout, TLS
        raise KubeUnavailableError(
            f"cannot {verb} {what}: {type(exc).__name__}: {exc or 'no answer'}; retrying next cycle"
        ) from exc
    except ConfigError as exc:
        raise KubeCredentialsError(f"cannot {verb} {what}: {exc}") from exc


def _said(exc: httpx2.HTTPStatusError) -> str:
    if isinstance(exc, ApiError) and exc.status.message:
        return str(exc.status.message)
    try:
        text = exc.response.text.strip()
    except httpx2.ResponseNotRead:
        text = ""
    return text[:200] or exc.response.reason_phrase or "no message"
