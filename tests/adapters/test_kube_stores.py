"""The ConfigMap and FeatureFlag stores against the in-process fake of the Kubernetes API, with every
written document loaded into the real flagd evaluator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.adapters.kube.client import connect
from controller.adapters.kube.errors import (
    KubeNotFoundError,
    KubePermissionError,
    KubeRejectedError,
    KubeUnavailableError,
)
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import METADATA_ANNOTATION, ConfigMapFlagStore, FeatureFlagStore
from controller.adapters.promserver import free_port
from controller.core.errors import FlagFileError, PermanentError, TemporaryError, WriteConflictError
from controller.core.flagd import read_state, write_flag
from controller.core.state import NOT_STARTED, RolloutState, Status
from tests.support.kubecluster import exposure as served_shares
from tests.support.kubefake import FLAG_FIELDS, FakeKubeApi

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
REF = ObjectRef("team", "flags")
USERS = [f"user-{i}" for i in range(5000)]
HAND_WRITTEN = """{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "banner":   {"state": "ENABLED", "variants": {"a": 0.50, "b": 1E2},
                 "defaultVariant": "a"},
    "theme": {
        "state": "DISABLED", "variants": {"dark": "\\u00e9"}, "defaultVariant": "dark"
    }
  },
  "$evaluators": {"beta": {"in": ["@example.com", {"var": "email"}]}}
}
"""


def rollout(percent: float, status: Status = Status.PROGRESSING) -> RolloutState:
    return RolloutState(
        policy="cache",
        revision="abc123def456",
        status=status,
        step=0 if percent else NOT_STARTED,
        steps=2,
        percent=percent,
        control=True,
        step_started_at=NOW,
        updated_at=NOW,
        owner="sre-lead",
    )


def exposure(flags_json: str, key: str) -> dict[str, float]:
    """Share of 5,000 users per variant, as the real flagd evaluator serves them."""
    return served_shares(flags_json, key, USERS)


@pytest.fixture
def fake() -> FakeKubeApi:
    return FakeKubeApi(token="secret-token")


def configmap(fake: FakeKubeApi, data: dict[str, str] | None = None, **extra: Any) -> ConfigMapFlagStore:
    fake.add("configmaps", "team", "flags", {"data": data if data is not None else {}, **extra})
    return ConfigMapFlagStore(fake.client("team"), REF)


def featureflag(fake: FakeKubeApi, flag_spec: dict[str, Any] | None = None) -> FeatureFlagStore:
    body = {"spec": {"flagSpec": flag_spec}} if flag_spec is not None else {"spec": {}}
    fake.add("featureflags", "team", "flags", body)
    return FeatureFlagStore(fake.client("team"), REF)


# --- ConfigMap -------------------------------------------------------------------------------------


def test_a_configmap_round_trip_serves_the_rollout_in_flagd(fake: FakeKubeApi) -> None:
    store = configmap(fake)
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", rollout(5)), snapshot, ["cache"])
    text = fake.get("configmaps", "team", "flags")["data"]["flags.flagd.json"]
    served = exposure(text, "cache")
    assert served["on"] == pytest.approx(5, abs=1)
    assert served["control"] == pytest.approx(5, abs=1)
    again = store.read()
    assert read_state(again.document, "cache") == rollout(5)
    assert again.version == fake.get("configmaps", "team", "flags")["metadata"]["resourceVersion"]


def test_a_configmap_write_keeps_other_keys_and_every_unmanaged_byte(fake: FakeKubeApi) -> None:
    store = configmap(
        fake,
        {"flags.flagd.json": HAND_WRITTEN, "README": "do not edit by hand\n"},
        binaryData={"logo.png": "iVBORw0KGgo="},
    )
    fake.edit("configmaps", "team", "flags", lambda o: o["metadata"].update(labels={"app": "flagd"}))
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", rollout(1)), snapshot, ["cache"])
    stored = fake.get("configmaps", "team", "flags")
    assert stored["data"]["README"] == "do not edit by hand\n"
    assert stored["binaryData"] == {"logo.png": "iVBORw0KGgo="}
    assert stored["metadata"]["labels"] == {"app": "flagd"}
    text = stored["data"]["flags.flagd.json"]
    untouched_banner = '"banner":   {"state": "ENABLED", "variants": {"a": 0.50, "b": 1E2},\n                 "defaultVariant": "a"}'
    assert untouched_banner in text
    assert (
        '"theme": {\n        "state": "DISABLED", "variants": {"dark": "\\u00e9"}, "defaultVariant": "dark"\n    }'
        in text
    )
    assert text.endswith('"$evaluators": {"beta": {"in": ["@example.com", {"var": "email"}]}}\n}\n')
    # a second write, of the managed flag only, still leaves the hand-written flags alone
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", rollout(5)), snapshot, ["cache"])
    text = fake.get("configmaps", "team", "flags")["data"]["flags.flagd.json"]
    assert untouched_banner in text
    assert read_state(json.loads(text), "cache") == rollout(5)
    assert exposure(text, "cache")["on"] == pytest.approx(5, abs=1)


def test_a_missing_key_reads_empty_and_the_first_write_adds_it(fake: FakeKubeApi) -> None:
    store = configmap(fake, {"other": "x"})
    snapshot = store.read()
    assert snapshot.document["flags"] == {}
    store.write(write_flag(snapshot.document, "cache", rollout(1)), snapshot, ["cache"])
    data = fake.get("configmaps", "team", "flags")["data"]
    assert data["other"] == "x"
    assert read_state(json.loads(data["flags.flagd.json"]), "cache") == rollout(1)


def test_invalid_json_in_the_key_names_the_object_key_and_line(fake: FakeKubeApi) -> None:
    store = configmap(fake, {"flags.flagd.json": '{\n  "flags": {\n    "x": ,\n  }\n}\n'})
    with pytest.raises(
        FlagFileError, match=r"configmap team/flags key flags\.flagd\.json:3:10: not valid JSON"
    ):
        store.read()


def test_the_document_as_binary_data_is_refused(fake: FakeKubeApi) -> None:
    store = configmap(fake, binaryData={"flags.flagd.json": "e30="})
    with pytest.raises(FlagFileError, match="binaryData"):
        store.read()


def test_a_missing_configmap_is_a_permanent_error_naming_it(fake: FakeKubeApi) -> None:
    store = ConfigMapFlagStore(fake.client("team"), REF)
    with pytest.raises(KubeNotFoundError, match="configmaps 'flags' in namespace 'team' not found") as caught:
        store.read()
    assert isinstance(caught.value, PermanentError)


def test_a_stale_write_is_refused_and_the_other_edit_survives(fake: FakeKubeApi) -> None:
    store = configmap(fake, {"flags.flagd.json": HAND_WRITTEN})
    snapshot = store.read()
    fake.edit("configmaps", "team", "flags", lambda o: o["data"].update(README="edited meanwhile"))
    with pytest.raises(WriteConflictError, match="nothing was overwritten") as caught:
        store.write(write_flag(snapshot.document, "cache", rollout(1)), snapshot, ["cache"])
    assert isinstance(caught.value, TemporaryError)
    stored = fake.get("configmaps", "team", "flags")
    assert stored["data"] == {"flags.flagd.json": HAND_WRITTEN, "README": "edited meanwhile"}


def test_every_write_carries_the_resource_version_it_read(fake: FakeKubeApi) -> None:
    store = configmap(fake)
    versions = []
    for percent in (1, 5, 10):
        snapshot = store.read()
        versions.append(snapshot.version)
        store.write(write_flag(snapshot.document, "cache", rollout(percent)), snapshot, ["cache"])
    assert [w.resource_version for w in fake.writes("configmaps")][-3:] == versions


def test_a_document_flagd_refuses_is_never_sent(fake: FakeKubeApi) -> None:
    store = configmap(fake)
    snapshot = store.read()
    document = write_flag(snapshot.document, "cache", rollout(1))
    document["flags"]["cache"]["state"] = "BROKEN"
    with pytest.raises(FlagFileError, match="flagd would refuse"):
        store.write(document, snapshot, ["cache"])
    assert fake.writes("configmaps") == []


@pytest.mark.parametrize(
    ("method", "verb"),
    [("GET", "get"), ("PUT", "update")],
)
def test_forbidden_names_the_object_and_the_missing_permission(
    fake: FakeKubeApi, method: str, verb: str
) -> None:
    store = configmap(fake)
    snapshot = store.read()
    fake.fail(method, "configmaps", 403)
    document = write_flag(snapshot.document, "cache", rollout(1))

    def act() -> None:
        if method == "GET":
            store.read()
        else:
            store.write(document, snapshot, ["cache"])

    with pytest.raises(KubePermissionError) as caught:
        act()
    message = str(caught.value)
    assert f"cannot {verb} configmaps 'flags' in namespace 'team'" in message
    assert f"verb {verb!r} on resource 'configmaps'" in message
    assert isinstance(caught.value, PermanentError)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_temporary(fake: FakeKubeApi, status: int) -> None:
    store = configmap(fake)
    fake.fail("GET", "configmaps", status)
    with pytest.raises(KubeUnavailableError, match=f"HTTP {status}") as caught:
        store.read()
    assert isinstance(caught.value, TemporaryError)
    assert store.read().document["flags"] == {}  # and the next attempt works


def test_an_unreachable_api_server_is_temporary(tmp_path: Any) -> None:
    fake = FakeKubeApi(token="t")
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}")
    store = ConfigMapFlagStore(connect(kubeconfig, timeout_seconds=2), REF)
    with pytest.raises(KubeUnavailableError, match="ConnectError"):
        store.read()


def test_a_refused_token_is_a_permanent_credentials_error(fake: FakeKubeApi) -> None:
    store = configmap(fake)
    fake.token = "rotated"
    with pytest.raises(PermanentError, match="unauthorized"):
        store.read()


# --- FeatureFlag -----------------------------------------------------------------------------------


def test_a_featureflag_round_trip_serves_the_rollout_in_flagd(fake: FakeKubeApi) -> None:
    store = featureflag(fake)
    snapshot = store.read()
    assert snapshot.document == {"flags": {}}
    store.write(write_flag(snapshot.document, "cache", rollout(5)), snapshot, ["cache"])
    flag_spec = fake.get("featureflags", "team", "flags")["spec"]["flagSpec"]
    assert "$schema" not in flag_spec
    served = exposure(json.dumps(flag_spec), "cache")
    assert served["on"] == pytest.approx(5, abs=1)
    assert read_state(store.read().document, "cache") == rollout(5)


def test_a_featureflag_write_keeps_other_flags_and_evaluators(fake: FakeKubeApi) -> None:
    hand = json.loads(HAND_WRITTEN)
    del hand["$schema"]
    store = featureflag(fake, hand)
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", rollout(1)), snapshot, ["cache"])
    flag_spec = fake.get("featureflags", "team", "flags")["spec"]["flagSpec"]
    assert flag_spec["flags"]["banner"] == hand["flags"]["banner"]
    assert flag_spec["flags"]["theme"] == hand["flags"]["theme"]
    assert flag_spec["$evaluators"] == hand["$evaluators"]


def test_the_state_the_crd_prunes_is_kept_in_an_annotation_written_with_it(fake: FakeKubeApi) -> None:
    store = featureflag(fake)
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", rollout(5)), snapshot, ["cache"])
    obj = fake.get("featureflags", "team", "flags")
    assert "metadata" not in obj["spec"]["flagSpec"]["flags"]["cache"]
    kept = json.loads(obj["metadata"]["annotations"][METADATA_ANNOTATION])
    assert kept["cache"]["flagroll.percent"] == 5
    assert len(fake.writes("featureflags")) == 1  # one replace: exposure and state land together
    assert read_state(store.read().document, "cache") == rollout(5)


def test_a_crd_that_keeps_flag_metadata_holds_the_same_state_twice(fake: FakeKubeApi) -> None:
    fake.kept_flag_fields = FLAG_FIELDS | {"metadata"}
    store = featureflag(fake)
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", rollout(5)), snapshot, ["cache"])
    obj = fake.get("featureflags", "team", "flags")
    kept = json.loads(obj["metadata"]["annotations"][METADATA_ANNOTATION])
    assert obj["spec"]["flagSpec"]["flags"]["cache"]["metadata"] == kept["cache"]


def test_state_from_before_the_annotation_is_read_from_the_flag(fake: FakeKubeApi) -> None:
    fake.kept_flag_fields = FLAG_FIELDS | {"metadata"}
    written = write_flag({"flags": {}}, "cache", rollout(5))
    featureflag(fake, written)  # as a flagroll without the annotation left it, on such a CRD
    store = FeatureFlagStore(fake.client("team"), REF)
    assert read_state(store.read().document, "cache") == rollout(5)


def test_a_broken_annotation_is_an_error_naming_it_not_an_unmanaged_flag(fake: FakeKubeApi) -> None:
    store = featureflag(fake)
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", rollout(5)), snapshot, ["cache"])

    def break_it(obj: dict[str, Any]) -> None:
        obj["metadata"]["annotations"][METADATA_ANNOTATION] = '{"cache": '

    fake.edit("featureflags", "team", "flags", break_it)
    with pytest.raises(FlagFileError, match=f"annotation {METADATA_ANNOTATION}: not JSON"):
        store.read()


def test_a_crd_that_would_drop_a_field_flagroll_writes_is_refused_before_anything_is_written(
    fake: FakeKubeApi,
) -> None:
    fake.kept_flag_fields = FLAG_FIELDS - {"targeting"}
    store = featureflag(fake)
    snapshot = store.read()
    with pytest.raises(KubeRejectedError, match=r"would not keep flag 'cache'.*Nothing was written"):
        store.write(write_flag(snapshot.document, "cache", rollout(1)), snapshot, ["cache"])
    assert fake.writes("featureflags") == []
    assert fake.get("featureflags", "team", "flags")["spec"] == {}


def test_a_missing_featureflag_crd_or_object_says_what_to_install(fake: FakeKubeApi) -> None:
    store = FeatureFlagStore(fake.client("team"), REF)
    with pytest.raises(KubeNotFoundError, match="OpenFeature Operator"):
        store.read()


def test_forbidden_on_a_featureflag_names_its_api_group(fake: FakeKubeApi) -> None:
    store = featureflag(fake)
    snapshot = store.read()
    fake.fail("PUT", "featureflags", 403)
    with pytest.raises(KubePermissionError, match=r"'featureflags\.core\.openfeature\.dev'"):
        store.write(write_flag(snapshot.document, "cache", rollout(1)), snapshot, ["cache"])
