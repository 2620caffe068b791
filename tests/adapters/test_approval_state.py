"""The approval marks of a rollout's state (``awaitingApprovalSince``, ``approvedStep``) round-trip
through every flag store: the file, a ConfigMap and a FeatureFlag (on the in-process fake of the
Kubernetes API); states written before they existed still read, without them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.flagstore import FileFlagStore
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import METADATA_ANNOTATION, ConfigMapFlagStore, FeatureFlagStore
from controller.core.errors import FlagFileError
from controller.core.flagd import PREFIX, empty_document, read_state, write_flag
from controller.core.state import RolloutState, Status
from tests.support.kubefake import FakeKubeApi

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
REF = ObjectRef("team", "flags")


def awaiting(approved: bool = False) -> RolloutState:
    state = RolloutState("cache", "abc123def456", Status.PROGRESSING, 1, 3, 5.0, True, NOW, NOW)
    if approved:
        return state.moved(approved_step=1)
    return state.moved(awaiting_approval_since=NOW - timedelta(minutes=3))


@pytest.mark.parametrize("approved", [False, True])
def test_the_file_store_round_trips_the_approval_marks(tmp_path: Path, approved: bool) -> None:
    store = FileFlagStore(tmp_path / "flags.json")
    store.write(write_flag(empty_document(), "cache", awaiting(approved)), store.read(), ["cache"])
    read = read_state(store.read().document, "cache")
    assert read == awaiting(approved)
    assert read is not None
    assert read.shown_status == ("progressing" if approved else "awaiting_approval")
    meta = json.loads(store.path.read_text())["flags"]["cache"]["metadata"]
    assert meta[PREFIX + "status"] == "progressing"  # an older flagroll still reads the state
    if approved:
        assert meta[PREFIX + "approvedStep"] == 1
    else:
        assert meta[PREFIX + "awaitingApprovalSince"] == "2026-11-21T11:57:00Z"


def test_a_state_without_the_approval_marks_reads_as_before(tmp_path: Path) -> None:
    plain = RolloutState("cache", "abc123def456", Status.PROGRESSING, 1, 3, 5.0, True, NOW, NOW)
    document = write_flag(empty_document(), "cache", plain)
    meta = document["flags"]["cache"]["metadata"]
    assert not any("pprov" in key for key in meta)  # nothing new written when there is nothing to say
    read = read_state(document, "cache")
    assert read is not None
    assert read.awaiting_approval_since is None
    assert read.approved_step is None
    assert read.shown_status == "progressing"


def test_a_configmap_round_trips_the_approval_marks() -> None:
    fake = FakeKubeApi(token="secret-token")
    fake.add("configmaps", "team", "flags", {"data": {}})
    store = ConfigMapFlagStore(fake.client("team"), REF)
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", awaiting()), snapshot, ["cache"])
    assert read_state(store.read().document, "cache") == awaiting()


@pytest.mark.parametrize("approved", [False, True])
def test_a_featureflag_keeps_the_approval_marks_in_its_annotation(approved: bool) -> None:
    fake = FakeKubeApi(token="secret-token")
    fake.add("featureflags", "team", "flags", {"spec": {}})
    store = FeatureFlagStore(fake.client("team"), REF)
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", awaiting(approved)), snapshot, ["cache"])
    kept = json.loads(
        fake.get("featureflags", "team", "flags")["metadata"]["annotations"][METADATA_ANNOTATION]
    )
    assert (PREFIX + ("approvedStep" if approved else "awaitingApprovalSince")) in kept["cache"]
    assert read_state(store.read().document, "cache") == awaiting(approved)


def test_a_broken_approval_mark_is_an_error_naming_it() -> None:
    document = write_flag(empty_document(), "cache", awaiting())
    document["flags"]["cache"]["metadata"][PREFIX + "approvedStep"] = "two"
    with pytest.raises(FlagFileError, match="approvedStep' has the wrong type"):
        read_state(document, "cache")
