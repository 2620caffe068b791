"""Flag stores kept in Kubernetes: a ConfigMap key, or an OpenFeature Operator ``FeatureFlag``.

Both implement :class:`controller.adapters.flagstore.FlagStore` with optimistic concurrency instead of a lock:

- ``read()`` returns the document and the object's ``resourceVersion`` as the snapshot's version;
- ``write(document, expected, changed)`` replaces (HTTP PUT) the object exactly as ``expected`` read
  it, with only the flag document changed, carrying ``expected.version`` as its resourceVersion. If
  anyone wrote the object since, the API server answers 409 and nothing is overwritten:
  :class:`~controller.core.errors.WriteConflictError` tells the caller to read again and decide again
  from what is there now (the reconciler and the human commands do);
- ``locked()`` takes no lock. Its block is the read-decide-write unit whose write only lands if
  nothing changed since the read in the block: a lock that is checked at the end rather than held
  throughout. (Leader election, not this, keeps two controllers from deciding at once.)

``changed`` names the flags flagroll changed: they must load in the flagd evaluator before anything is
sent, and in a ConfigMap only their text is replaced, so every other flag keeps its bytes.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from lightkube import Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import ConfigMap

from controller.adapters.flagstore import Snapshot, check_loadable
from controller.adapters.kube.errors import KubeRejectedError, api_call
from controller.adapters.kube.jsontext import splice_flags
from controller.adapters.kube.objects import DEFAULT_CONFIGMAP_KEY, ObjectRef
from controller.core.errors import FlagFileError, WriteConflictError
from controller.core.flagd import is_managed, managed_keys, parse_document, parse_targeting, render_document

FEATUREFLAG_GROUP, FEATUREFLAG_VERSION = "core.openfeature.dev", "v1beta1"
FeatureFlag = create_namespaced_resource(
    FEATUREFLAG_GROUP, FEATUREFLAG_VERSION, "FeatureFlag", "featureflags"
)
_REMEMBERED = 8  # objects kept by resourceVersion, for the write that follows a read
METADATA_ANNOTATION = "flagroll/flag-metadata"
"""The FeatureFlag annotation that keeps the metadata (rollout state) of the flags flagroll manages."""


class _KubeFlagStore:
    """What both stores share: the snapshot bookkeeping and the optimistic write."""

    resource = ""  # the RBAC spelling, named in a 403

    def __init__(self, client: Client, ref: ObjectRef) -> None:
        self.client = client
        self.ref = ref
        self._seen: OrderedDict[str, Any] = OrderedDict()

    @property
    def location(self) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    def locked(self, timeout_seconds: float = 30.0) -> Iterator[None]:
        """No lock: the write in this block carries the resourceVersion read in it (see the module)."""
        yield

    def read(self) -> Snapshot:
        with api_call("get", self.resource, self.ref):
            obj = self._get()
        version = obj.metadata.resourceVersion if obj.metadata is not None else None
        if not version:
            raise FlagFileError(f"{self.location}: the API server sent no resourceVersion")
        document = self._document(obj)
        self._seen[version] = obj
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        return Snapshot(document, version)

    def write(self, document: Mapping[str, Any], expected: Snapshot, changed: Collection[str]) -> None:
        """Replace the object read as ``expected`` with ``document`` in it, if nobody wrote it since."""
        try:
            render_document(document)
        except ValueError as exc:  # a number JSON cannot hold (1e999 read as infinity)
            raise FlagFileError(f"{self.location}: cannot write the document back: {exc}") from exc
        check_loadable(document, changed, self.location)
        obj = self._seen.get(expected.version or "")
        if obj is None:
            raise WriteConflictError(
                f"{self.location}: version {expected.version} was not read here; read it again"
            )
        updated = self._updated(copy.deepcopy(obj), document, changed)
        self._check_kept(updated, document, changed)
        with api_call("update", self.resource, self.ref):
            stored = self.client.replace(updated)
        version = stored.metadata.resourceVersion if stored.metadata is not None else None
        if version:  # what we wrote is the next snapshot's base if it is read again unchanged
            self._seen[version] = stored

    def _check_kept(self, updated: Any, document: Mapping[str, Any], changed: Collection[str]) -> None:
        """Subclasses may ask the server whether it would keep what flagroll writes."""

    def _get(self) -> Any:
        raise NotImplementedError

    def _document(self, obj: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _updated(self, obj: Any, document: Mapping[str, Any], changed: Collection[str]) -> Any:
        raise NotImplementedError


class ConfigMapFlagStore(_KubeFlagStore):
    """The flagd document as text under one key of a ConfigMap (flagd reads it as a mounted file).

    Other keys, ``binaryData``, labels and annotations are sent back as read. A missing key reads
    as an empty document and is added by the first write; a missing ConfigMap is an error (create
    it, and mount it into flagd, first).
    """

    resource = "configmaps"

    def __init__(self, client: Client, ref: ObjectRef, key: str = DEFAULT_CONFIGMAP_KEY) -> None:
        super().__init__(client, ref)
        self.key = key

    @property
    def location(self) -> str:
        return f"configmap {self.ref} key {self.key}"

    def _get(self) -> Any:
        return self.client.get(ConfigMap, self.ref.name, namespace=self.ref.namespace)

    def _document(self, obj: Any) -> dict[str, Any]:
        if self.key in (obj.binaryData or {}):
            raise FlagFileError(f"{self.location}: the key is binaryData; flagd needs the JSON as text data")
        return parse_document((obj.data or {}).get(self.key, ""), self.location)

    def _updated(self, obj: Any, document: Mapping[str, Any], changed: Collection[str]) -> Any:
        old = (obj.data or {}).get(self.key, "")
        text = splice_flags(old, document, changed) if old.strip() else render_document(document)
        obj.data = {**(obj.data or {}), self.key: text}
        return obj


class FeatureFlagStore(_KubeFlagStore):
    """The flags under ``spec.flagSpec`` of an OpenFeature Operator ``FeatureFlag``
    (``core.openfeature.dev/v1beta1``), which flagd reads through its Kubernetes sync.

    The operator's CRD (API v0.2.45, the newest its module offers) has ``flags`` (each with
    ``state``, ``variants``, ``defaultVariant`` and ``targeting``) and ``$evaluators``, and prunes
    anything else: a flag's ``metadata``, where flagroll keeps a rollout's state, would be dropped. So
    the metadata of each flag flagroll manages is also written, in the same replace, to the object's
    annotation :data:`METADATA_ANNOTATION` (a JSON object: flag key -> metadata), and read back from
    it; where the CRD keeps a flag's metadata, both copies are the same. The first write of each
    process is a server-side dry run: if reading the server's answer back would not give every changed
    flag exactly as written, nothing is written and the error says what would be lost.
    """

    resource = f"featureflags.{FEATUREFLAG_GROUP}"

    def __init__(self, client: Client, ref: ObjectRef, *, braking: Collection[str] | None = None) -> None:
        """``braking``: the flags a human ``stop`` or ``pause`` acts on. A flag that lost its state
        refuses the whole object, except to a brake on other flags (which changes nobody's exposure
        but theirs, towards less): on-call's brake keeps working while the object is broken."""
        super().__init__(client, ref)
        self._kept_checked = False
        self._braking = None if braking is None else frozenset(braking)

    @property
    def location(self) -> str:
        return f"featureflag {self.ref} spec.flagSpec"

    def _get(self) -> Any:
        return self.client.get(FeatureFlag, self.ref.name, namespace=self.ref.namespace)

    def _document(self, obj: Any) -> dict[str, Any]:
        spec = obj.get("spec") or {}
        flag_spec = spec.get("flagSpec") if isinstance(spec, dict) else None
        if flag_spec is None:
            flag_spec = {}
        if not isinstance(flag_spec, dict):
            raise FlagFileError(f"{self.location}: must be an object")
        document = copy.deepcopy(flag_spec)
        flags = document.setdefault("flags", {})
        if not isinstance(flags, dict):
            raise FlagFileError(f"{self.location}: 'flags' must be an object")
        for key, metadata in self._kept_metadata(obj).items():
            if isinstance(flags.get(key), dict):
                flags[key]["metadata"] = metadata
        self._refuse_stateless_rollouts(flags)
        return document

    def _refuse_stateless_rollouts(self, flags: Mapping[str, Any]) -> None:
        """A flag serving flagroll's layout with treatment exposed but no rollout state: another client
        dropped or rewrote the annotation, or renamed the flag. Taken for hand-made, it would be
        exposed with nobody judging it (and a policy would start its flag anew beside it), so the
        whole object is refused, loudly, and nothing is written until the state is restored."""
        lost = []
        for key, flag in flags.items():
            if not isinstance(flag, dict) or is_managed(flag):
                continue
            if self._braking is not None and key not in self._braking:
                continue  # a brake on another flag: this one is left exactly as it is
            try:
                layout = parse_targeting(flag.get("targeting"), key)
            except FlagFileError:
                continue  # not flagroll's layout: a hand-made flag
            if layout.percent > 0:
                lost.append(f"{key!r} ({layout.percent:g} % treatment)")
        if lost:
            raise FlagFileError(
                f"{self.location}: UNGUARDED: flag {', '.join(lost)} serves flagroll's rollout layout "
                f"but annotation {METADATA_ANNOTATION} holds no rollout state for it (another client "
                "removed or rewrote the annotation, or renamed the flag), so no guardrail judges it. "
                "Nothing is written to this object until it is fixed: restore the annotation's entry for "
                "the flag, or serve it off to everyone in spec.flagSpec (defaultVariant off, no targeting) "
                "and let its policy adopt it"
            )

    def _kept_metadata(self, obj: Any) -> dict[str, dict[str, Any]]:
        """The flags' metadata as the annotation keeps it (empty without the annotation)."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        text = annotations.get(METADATA_ANNOTATION)
        if text is None:
            return {}
        where = f"featureflag {self.ref} annotation {METADATA_ANNOTATION}"
        try:
            kept = json.loads(text)
        except ValueError as exc:
            raise FlagFileError(f"{where}: not JSON ({exc}); restore it from the flag's history") from exc
        if not isinstance(kept, dict) or not all(isinstance(v, dict) for v in kept.values()):
            raise FlagFileError(f"{where}: must be a JSON object of flag key -> metadata object")
        return kept

    def _updated(self, obj: Any, document: Mapping[str, Any], changed: Collection[str]) -> Any:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            spec = obj["spec"] = {}
        # "$schema" belongs to flag files; the CRD has no such field.
        spec["flagSpec"] = {k: copy.deepcopy(v) for k, v in document.items() if k != "$schema"}
        kept = {key: copy.deepcopy(document["flags"][key]["metadata"]) for key in managed_keys(document)}
        # A generic resource serializes its dict, not the typed ``obj.metadata`` view of it.
        metadata = obj["metadata"]
        annotations = dict(metadata.get("annotations") or {})
        if kept:
            annotations[METADATA_ANNOTATION] = json.dumps(kept, sort_keys=True, separators=(",", ":"))
        else:
            annotations.pop(METADATA_ANNOTATION, None)
        if annotations:
            metadata["annotations"] = annotations
        else:
            metadata.pop("annotations", None)
        return obj

    def _check_kept(self, updated: Any, document: Mapping[str, Any], changed: Collection[str]) -> None:
        if self._kept_checked or not changed:
            return
        with api_call("update", self.resource, self.ref):
            echoed = self.client.replace(updated, dry_run=True)
        flags = self._document(echoed)["flags"]
        for key in changed:
            if flags.get(key) != document["flags"][key]:
                raise KubeRejectedError(
                    f"{self.location}: the FeatureFlag CRD in this cluster would not keep flag {key!r} as "
                    f"written (sent {document['flags'][key]!r}, reading it back would give "
                    f"{flags.get(key)!r}): its schema prunes a field flagroll writes. Nothing was written"
                )
        self._kept_checked = True


def open_store(
    kind: str, client: Client, ref: ObjectRef, configmap_key: str, *, braking: Collection[str] | None = None
) -> ConfigMapFlagStore | FeatureFlagStore:
    """``braking``: see :class:`FeatureFlagStore` (a ConfigMap keeps each flag's state in the flag)."""
    if kind == "configmap":
        return ConfigMapFlagStore(client, ref, configmap_key)
    if kind == "featureflag":
        return FeatureFlagStore(client, ref, braking=braking)
    raise ValueError(f"unknown Kubernetes flag store {kind!r}")
