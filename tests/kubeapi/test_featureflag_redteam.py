"""The FeatureFlag store's annotation (``flagroll/flag-metadata``) against another client's rewrites,
on the real API server: an exposed rollout whose state is gone, renamed or claimed by hand, a broken
annotation, the human commands on such an object, and the annotation size limit. Each case is loud
(an error naming the object, a record, an unguarded flag) and changes nobody's exposure."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.kube.errors import KubeRejectedError
from controller.adapters.kube.stores import METADATA_ANNOTATION
from controller.core.errors import FlagFileError, PermanentError
from tests.support.kubeapi import KubeApiServer
from tests.support.kubecluster import Cluster


@pytest.fixture
def featureflag(kube_api: KubeApiServer, tmp_path: Path) -> Iterator[Cluster]:
    with contextlib.closing(Cluster(kube_api, tmp_path, "featureflag")) as made:
        yield made


def replaced(cluster: Cluster, obj: dict[str, Any]) -> str:
    """Replace the object as another client would (``kubectl replace``, a GitOps sync): exactly
    ``obj``, at the current resourceVersion. Returns the new resourceVersion."""
    body = copy.deepcopy(obj)
    keep = ("name", "namespace", "annotations", "resourceVersion")
    body["metadata"] = {k: v for k, v in body["metadata"].items() if k in keep}
    answer = cluster.api.request("PUT", cluster.path, body)
    assert answer.status_code < 300, answer.text
    return str(answer.json()["metadata"]["resourceVersion"])


def kept(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(obj["metadata"]["annotations"][METADATA_ANNOTATION]))


def test_an_exposed_rollout_whose_annotation_was_dropped_fails_loudly_and_keeps_serving(
    featureflag: Cluster,
) -> None:
    cluster = featureflag
    cluster.cycle()
    obj = cluster.raw()
    del obj["metadata"]["annotations"][METADATA_ANNOTATION]
    version = replaced(cluster, obj)
    served = cluster.served()
    # Before: the flag at 20 % looked hand-made; only the policy was rejected, nobody was told the
    # rollout was unguarded.
    with pytest.raises(FlagFileError) as raised:
        cluster.cycle()
    message = str(raised.value)
    assert f"featureflag {cluster.namespace}/flags" in message
    assert "'cache'" in message
    assert "20 %" in message
    assert METADATA_ANNOTATION in message
    assert "UNGUARDED" in message
    assert cluster.raw()["metadata"]["resourceVersion"] == version
    assert cluster.served() == served
    # The human commands say the same, and change nothing.
    for command in (("status",), ("explain", "cache"), ("stop", "cache", "--reason", "x", "--actor", "o")):
        assert cluster.cli(*command) == 1
    assert cluster.raw()["metadata"]["resourceVersion"] == version


def test_a_renamed_rollout_is_not_left_exposed_while_a_new_one_starts(featureflag: Cluster) -> None:
    cluster = featureflag
    cluster.cycle()
    obj = cluster.raw()
    flags = obj["spec"]["flagSpec"]["flags"]
    flags["cache-v2"] = flags.pop("cache")  # the annotation still names 'cache', which is gone
    version = replaced(cluster, obj)
    # Before: 'cache-v2' kept serving 20 % unguarded and unreported; 'cache' started anew beside it.
    with pytest.raises(FlagFileError) as raised:
        cluster.cycle()
    assert "'cache-v2'" in str(raised.value)
    assert "20 %" in str(raised.value)
    assert cluster.raw()["metadata"]["resourceVersion"] == version
    assert cluster.actions() == ["advance"]


def test_a_stopped_rollout_whose_annotation_was_dropped_is_not_taken_over(featureflag: Cluster) -> None:
    cluster = featureflag
    cluster.cycle()
    assert cluster.cli("stop", "cache", "--reason", "5xx", "--actor", "oncall") == 0
    obj = cluster.raw()
    del obj["metadata"]["annotations"][METADATA_ANNOTATION]
    version = replaced(cluster, obj)
    result = cluster.cycle()  # nobody is exposed: the policy is refused, the flag stays at 0 %
    assert any("'cache' already exists and is not flagroll's" in i.message for i in result.policy_errors)
    assert cluster.raw()["metadata"]["resourceVersion"] == version
    assert cluster.actions() == ["advance", "stop"]


def test_an_annotation_claiming_a_hand_made_flag_is_loud_and_changes_no_exposure(
    featureflag: Cluster,
) -> None:
    cluster = featureflag
    cluster.cycle()
    obj = cluster.raw()
    claims = kept(obj)
    claims["hand-made"] = dict(claims["cache"])
    obj["metadata"]["annotations"][METADATA_ANNOTATION] = json.dumps(claims)
    replaced(cluster, obj)
    hand_made = cluster.raw()["spec"]["flagSpec"]["flags"]["hand-made"]
    result = cluster.cycle()
    assert "hand-made" in result.unguarded
    assert "UNGUARDED" in result.unguarded["hand-made"]
    assert cluster.raw()["spec"]["flagSpec"]["flags"]["hand-made"] == hand_made


def test_a_hand_made_flag_re_added_under_a_key_the_annotation_names_is_never_changed(
    featureflag: Cluster,
) -> None:
    cluster = featureflag
    cluster.cycle()
    obj = cluster.raw()
    obj["spec"]["flagSpec"]["flags"]["cache"] = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on",
    }
    version = replaced(cluster, obj)
    result = cluster.cycle()
    assert any("'cache'" in p and "not flagroll's" in p for p in result.problems)
    assert cluster.raw()["metadata"]["resourceVersion"] == version


@pytest.mark.parametrize(
    "text", ["{not json", "[]", '{"cache": 5}', '{"cache": "x"}'], ids=["invalid", "list", "number", "text"]
)
def test_a_broken_annotation_stops_the_cycle_and_every_command_naming_it(
    featureflag: Cluster, text: str
) -> None:
    cluster = featureflag
    cluster.cycle()
    obj = cluster.raw()
    obj["metadata"]["annotations"][METADATA_ANNOTATION] = text
    version = replaced(cluster, obj)
    with pytest.raises(FlagFileError) as raised:
        cluster.cycle()
    assert METADATA_ANNOTATION in str(raised.value)
    assert cluster.namespace in str(raised.value)
    for command in (("status",), ("explain", "cache"), ("stop", "cache", "--reason", "x", "--actor", "o")):
        assert cluster.cli(*command) == 1
    assert cluster.raw()["metadata"]["resourceVersion"] == version


def test_too_many_managed_flags_for_the_annotation_limit_is_an_error_naming_the_object(
    featureflag: Cluster,
) -> None:
    cluster = featureflag
    cluster.cycle()
    store = cluster.store()
    snapshot = store.read()
    document = copy.deepcopy(snapshot.document)
    template = document["flags"]["cache"]
    for n in range(1000):
        document["flags"][f"cache-{n:03}"] = copy.deepcopy(template)
    before = cluster.raw()
    with pytest.raises(KubeRejectedError) as raised:
        store.write(document, snapshot, ["cache-000"])
    assert isinstance(raised.value, PermanentError)
    assert f"'flags' in namespace '{cluster.namespace}'" in str(raised.value)
    assert "262144 bytes" in str(raised.value)
    assert cluster.raw()["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_on_call_can_still_stop_an_intact_rollout_while_another_has_lost_its_state(
    featureflag: Cluster,
) -> None:
    """The object is refused as a whole for the controller, but ``stop`` and ``pause`` (the brakes)
    work on a flag whose state is intact; on the flag that lost its state they still refuse, loudly."""
    cluster = featureflag
    (cluster.policies / "other.yaml").write_text(
        (cluster.policies / "cache.yaml")
        .read_text()
        .replace("{name: cache}", "{name: other}")
        .replace("{key: cache}", "{key: other}")
    )
    cluster.cycle()
    assert cluster.state("other").percent == 20
    obj = cluster.raw()
    entries = kept(obj)
    del entries["cache"]  # a sync dropped one flag's entry
    obj["metadata"]["annotations"][METADATA_ANNOTATION] = json.dumps(entries)
    replaced(cluster, obj)
    with pytest.raises(FlagFileError, match="UNGUARDED"):
        cluster.cycle()

    assert cluster.cli("stop", "other", "--reason", "5xx", "--actor", "oncall") == 0
    after = cluster.raw()
    assert kept(after)["other"]["flagroll.status"] == "stopped"
    assert "cache" not in kept(after)  # the lost flag is left exactly as it was
    assert after["spec"]["flagSpec"]["flags"]["cache"] == obj["spec"]["flagSpec"]["flags"]["cache"]
    assert cluster.cli("stop", "cache", "--reason", "5xx", "--actor", "oncall") == 1
    assert cluster.cli("resume", "other", "--reason", "fixed", "--actor", "oncall") == 1  # not a brake
    with pytest.raises(FlagFileError, match="UNGUARDED"):
        cluster.cycle()  # and the controller keeps saying so
