"""The Helm chart's RBAC enforced by a real API server (kube-apiserver v1.37.2, RBAC authorization).

For every mode of the chart (sidecar with the file store; deployment and cronjob, each with the
ConfigMap and the FeatureFlag store; deployment with and without leader election; the flag object in
the release namespace or another one), the chart is rendered offline, its ServiceAccount, Roles and
RoleBindings are created in fresh namespaces with the flag object the values name, and then, as the
chart's service account (a token from the TokenRequest API):

- flagroll does what the mode needs: ``run --once`` writes the flag, creates and then takes the
  Lease; ``status``, ``stop`` and ``resume`` read and write the flag;
- the effective permissions, as the API server's authorizer answers ``SelfSubjectAccessReview`` over
  every verb of ConfigMaps, FeatureFlags, Leases and Secrets, by name and as a collection, in the
  release namespace, the store's and another one, are exactly the mode's table in :data:`EXPECTED`,
  and ``SelfSubjectRulesReview`` shows no rule on any other resource;
- a Role widened or narrowed by one verb, name or rule is caught by that comparison.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import pytest

from controller.adapters.kube.client import connect
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore, FeatureFlagStore
from controller.adapters.promserver import PrometheusServer
from controller.cli import main
from controller.core.flagd import read_state
from controller.core.state import RolloutState, Status
from tests.support.chart import FULLNAME, base, find, options, render, run_args
from tests.support.environment import POLICY
from tests.support.kubeapi import KubeApiServer, object_path
from tests.support.paths import CHART
from tests.support.rbac import Access, Rule, allowed, baseline_rules, every, expand, rules_review
from tests.support.waiting import wait_for

CONFIGMAPS = "configmaps"
FEATUREFLAGS = "featureflags.core.openfeature.dev"
LEASES = "leases.coordination.k8s.io"
SECRETS = "secrets"
RESOURCES = (CONFIGMAPS, FEATUREFLAGS, LEASES, SECRETS)
"""What the access tables probe; any rule on another resource fails the rules review."""

CONFIGMAP, FEATUREFLAG, LEASE, OTHER = "flagd-flags", "checkout-flags", FULLNAME, "other"
NAMES = (CONFIGMAP, FEATUREFLAG, LEASE, OTHER, "")
"""The names probed: the flag objects, the Lease, another object, and the collection ("")."""
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
ANY = "*"
"""In :data:`EXPECTED`: every name probed, the collection included."""

# (verb, resource, name, namespace): the namespace as "release", "store" (where the flag object is;
# the release namespace unless the mode puts it elsewhere) or "elsewhere" (a third namespace).
Grant = tuple[str, str, str, str]

EXPECTED: dict[str, set[Grant]] = {
    "sidecar": set(),
    "deployment-configmap": {
        ("get", CONFIGMAPS, CONFIGMAP, "release"),
        ("update", CONFIGMAPS, CONFIGMAP, "release"),
    },
    "deployment-configmap-lease": {
        ("get", CONFIGMAPS, CONFIGMAP, "release"),
        ("update", CONFIGMAPS, CONFIGMAP, "release"),
        ("get", LEASES, LEASE, "release"),
        ("update", LEASES, LEASE, "release"),
        ("create", LEASES, ANY, "release"),  # RBAC cannot limit create by name
    },
    "deployment-configmap-elsewhere": {
        ("get", CONFIGMAPS, CONFIGMAP, "store"),
        ("update", CONFIGMAPS, CONFIGMAP, "store"),
    },
    "deployment-featureflag": {
        ("get", FEATUREFLAGS, FEATUREFLAG, "release"),
        ("update", FEATUREFLAGS, FEATUREFLAG, "release"),  # the dry run on the first write too
    },
    "deployment-featureflag-lease": {
        ("get", FEATUREFLAGS, FEATUREFLAG, "release"),
        ("update", FEATUREFLAGS, FEATUREFLAG, "release"),
        ("get", LEASES, LEASE, "release"),
        ("update", LEASES, LEASE, "release"),
        ("create", LEASES, ANY, "release"),
    },
    "deployment-featureflag-elsewhere-lease": {
        ("get", FEATUREFLAGS, FEATUREFLAG, "store"),
        ("update", FEATUREFLAGS, FEATUREFLAG, "store"),
        ("get", LEASES, LEASE, "release"),
        ("update", LEASES, LEASE, "release"),
        ("create", LEASES, ANY, "release"),
    },
    "cronjob-configmap": {
        ("get", CONFIGMAPS, CONFIGMAP, "release"),
        ("update", CONFIGMAPS, CONFIGMAP, "release"),
    },
    "cronjob-featureflag": {
        ("get", FEATUREFLAGS, FEATUREFLAG, "release"),
        ("update", FEATUREFLAGS, FEATUREFLAG, "release"),
    },
}


@dataclass(frozen=True)
class Mode:
    """One way to install the chart: its mode, flag store, leader election, and whether the flag
    object is in another namespace than the release."""

    mode: str
    store: str = "file"
    lease: bool = False
    elsewhere: bool = False

    @property
    def id(self) -> str:
        parts = [self.mode] + ([self.store] if self.store != "file" else [])
        return "-".join(parts + ["elsewhere"] * self.elsewhere + ["lease"] * self.lease)

    @property
    def flag_name(self) -> str:
        return CONFIGMAP if self.store == "configmap" else FEATUREFLAG

    @property
    def flag_resource(self) -> str:
        return CONFIGMAPS if self.store == "configmap" else FEATUREFLAGS

    def values(self, store_namespace: str) -> dict[str, Any]:
        if self.mode == "sidecar":
            return base("sidecar")
        store = {"type": self.store, "name": self.flag_name}
        if self.elsewhere:
            store["namespace"] = store_namespace
        extra: dict[str, Any] = {"flagStore": store}
        if self.lease:
            extra |= {"leaderElection": {"enabled": True}, "deployment": {"replicas": 2}}
        return base(self.mode, **extra)


KUBE_MODES = [
    Mode("deployment", "configmap"),
    Mode("deployment", "configmap", lease=True),
    Mode("deployment", "configmap", elsewhere=True),
    Mode("deployment", "featureflag"),
    Mode("deployment", "featureflag", lease=True),
    Mode("deployment", "featureflag", lease=True, elsewhere=True),
    Mode("cronjob", "configmap"),
    Mode("cronjob", "featureflag"),
]
MODES = [Mode("sidecar"), *KUBE_MODES]


def flag_object(kind: str, name: str, namespace: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    if kind == CONFIGMAPS:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"README": "kept"}}
    return {
        "apiVersion": "core.openfeature.dev/v1beta1",
        "kind": "FeatureFlag",
        "metadata": meta,
        "spec": {"flagSpec": {"flags": {}}},
    }


class Installed:
    """The chart's ServiceAccount and RBAC objects for one mode, in fresh namespaces of the real API
    server, beside the flag object the values name (and decoys: another object of its kind in its
    namespace, one of its name in a third namespace), with the service account's token."""

    def __init__(self, api: KubeApiServer, chart: helm_python.Chart, mode: Mode, root: Path) -> None:
        self.api, self.mode, self.root = api, mode, root
        self.release = api.namespace("release")
        self.store = api.namespace("store") if mode.elsewhere else self.release
        self.elsewhere = api.namespace("elsewhere")
        self.objects = render(chart, mode.values(self.store), namespace=self.release)
        for obj in self.objects:
            if obj["kind"] in RBAC_KINDS:
                api.apply(obj)
        (account,) = find(self.objects, "ServiceAccount")
        self.token = api.service_account_token(self.release, account["metadata"]["name"])
        self._baseline: dict[str, set[Rule]] = {}
        if mode.store != "file":
            kind, name = mode.flag_resource, mode.flag_name
            api.apply(flag_object(kind, name, self.store))
            api.apply(flag_object(kind, OTHER, self.store))
            api.apply(flag_object(kind, name, self.elsewhere))
        for role in find(self.objects, "Role"):  # the authorizer learns of new Roles by a watch
            self.settle(role["metadata"]["namespace"], expand(role["rules"]), exactly=False)

    def extra_rules(self, namespace: str) -> set[Rule]:
        """The service account's rules in ``namespace`` beyond what every identity has there."""
        if namespace not in self._baseline:
            self._baseline[namespace] = baseline_rules(self.api, namespace)
        return rules_review(self.api, self.token, namespace) - self._baseline[namespace]

    def namespaces(self) -> dict[str, str]:
        return {"release": self.release, "store": self.store, "elsewhere": self.elsewhere}

    def settle(self, namespace: str, wanted: set[Rule], *, exactly: bool = True) -> None:
        """Wait until the authorizer gives the service account ``wanted`` in ``namespace`` (beyond
        what every identity has): only, or at least."""

        def seen() -> bool:
            got = self.extra_rules(namespace)
            return got == wanted if exactly else wanted <= got

        wait_for(seen, timeout_seconds=10, interval_seconds=0.1, what=f"the RBAC rules in {namespace}")

    # ---- the access table ----------------------------------------------------------------------

    def probes(self) -> list[Access]:
        return every(RESOURCES, NAMES, sorted(set(self.namespaces().values())))

    def expected(self, table: set[Grant]) -> set[Access]:
        spaces = self.namespaces()
        return {
            Access(verb, resource, n, spaces[where])
            for verb, resource, name, where in table
            for n in (NAMES if name == ANY else (name,))
        }

    def verdict(self) -> tuple[set[Access], set[Access], set[Rule]]:
        """(missing, extra, unprobed): the accesses of :data:`EXPECTED` the server denies, the
        accesses it allows beyond them, and rules on resources the table does not probe."""
        granted = allowed(self.api, self.token, self.probes())
        wanted = self.expected(EXPECTED[self.mode.id])
        probed = {(a.group, a.plural) for a in self.probes()}
        unprobed = {
            rule
            for namespace in set(self.namespaces().values())
            for rule in self.extra_rules(namespace)
            if (rule[1], rule[2]) not in probed
        }
        return wanted - granted, granted - wanted, unprobed

    # ---- flagroll as the service account -------------------------------------------------------

    def kubeconfig(self) -> Path:
        return self.api.kubeconfig(self.root / "kubeconfig", token=self.token, namespace=self.release)

    def store_args(self, *, run: bool = False) -> list[str]:
        """The Kubernetes options of the rendered workload's ``flagroll run`` arguments (``run``: with
        the Lease, which only ``run`` takes)."""
        rendered = options(run_args(self.objects))
        wanted = ["--flag-store", "--flag-object", "--configmap-key"]
        wanted += ["--leader-election-lease"] if run else []
        args = [f"{name}={rendered[name]}" for name in wanted if name in rendered]
        return [*args, f"--kubeconfig={self.kubeconfig()}"]

    def state(self) -> RolloutState | None:
        """The rollout state of flag ``cache``, read as the administrator."""
        admin = self.api.kubeconfig(self.root / "admin-kubeconfig")
        client = connect(admin)
        try:
            ref = ObjectRef(self.store, self.mode.flag_name)
            store = ConfigMapFlagStore if self.mode.store == "configmap" else FeatureFlagStore
            return read_state(store(client, ref).read().document, "cache")
        finally:
            client.close()


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


# ---- 1. every operation the mode needs succeeds ------------------------------------------------------


def run_once(root: Path, prometheus: PrometheusServer, store_args: list[str]) -> int:
    policies = root / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "cache.yaml").write_text(POLICY.format(name="cache", key="cache"))
    command = ["run", "--once", f"--policies={policies}", f"--prometheus={prometheus.url}"]
    return main(["--log-format", "json", *command, *store_args])


def lease_spec(setup: Installed) -> dict[str, Any]:
    answer = setup.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{setup.release}/leases/{LEASE}")
    spec: dict[str, Any] = answer["spec"]
    return spec


@pytest.mark.parametrize("mode", KUBE_MODES, ids=lambda m: m.id)
def test_flagroll_does_all_its_mode_needs_as_the_charts_service_account(
    kube_api: KubeApiServer,
    chart: helm_python.Chart,
    mode: Mode,
    tmp_path: Path,
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup = Installed(kube_api, chart, mode, tmp_path)
    args, run_options = setup.store_args(), setup.store_args(run=True)
    assert f"--flag-object={setup.store}/{mode.flag_name}" in args
    assert (f"--leader-election-lease={setup.release}/{LEASE}" in run_options) is mode.lease
    monkeypatch.setenv("POD_NAME", "flagroll-0")

    assert run_once(tmp_path, prometheus, run_options) == 0, capsys.readouterr()
    state = setup.state()
    assert state is not None
    assert (state.status, state.percent) == (Status.PROGRESSING, 1)  # written
    if mode.lease:
        # Created (no Lease yet), then given up with an update; a second run takes the existing one.
        assert lease_spec(setup).get("holderIdentity") is None
        assert lease_spec(setup)["leaseTransitions"] == 0
        assert run_once(tmp_path, prometheus, run_options) == 0, capsys.readouterr()
        assert lease_spec(setup)["leaseTransitions"] == 1
        assert "leadership_acquired" in capsys.readouterr().out

    capsys.readouterr()
    assert main(["status", "--json", *args]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["flag"], r["status"], r["percent"]) for r in rows] == [("cache", "progressing", 1)]
    assert main(["stop", "cache", "--reason", "pager", "--actor", "oncall", *args]) == 0
    state = setup.state()
    assert state is not None
    assert (state.status, state.percent) == (Status.STOPPED, 0)
    assert main(["resume", "cache", "--reason", "fixed", "--actor", "oncall", *args]) == 0
    state = setup.state()
    assert state is not None
    assert state.status == Status.PROGRESSING


# ---- 2. what the mode does not need is forbidden -----------------------------------------------------


@pytest.mark.parametrize("mode", KUBE_MODES, ids=lambda m: m.id)
def test_requests_outside_the_mode_are_forbidden(
    kube_api: KubeApiServer, chart: helm_python.Chart, mode: Mode, tmp_path: Path
) -> None:
    setup = Installed(kube_api, chart, mode, tmp_path)
    kind, name = mode.flag_resource, mode.flag_name
    flag = flag_object(kind, name, setup.store)
    own = object_path(flag)
    forbidden = {
        "another object of the flag's kind": ("GET", object_path(flag_object(kind, OTHER, setup.store))),
        "the flag's name in another namespace": (
            "GET",
            object_path(flag_object(kind, name, setup.elsewhere)),
        ),
        "listing the flag's kind": ("GET", own.rsplit("/", 1)[0]),
        "deleting the flag": ("DELETE", own),
        "reading Secrets": ("GET", f"/api/v1/namespaces/{setup.release}/secrets"),
    }
    for what, (method, path) in forbidden.items():
        answer = kube_api.request(method, path, token=setup.token)
        assert answer.status_code == 403, f"{what}: {answer.status_code} {answer.text}"
    assert kube_api.request("GET", own).status_code == 200  # still there
    assert kube_api.request("GET", own, token=setup.token).status_code == 200

    second = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "second", "namespace": setup.release},
        "spec": {},
    }
    created = kube_api.request("POST", object_path(second).rsplit("/", 1)[0], second, token=setup.token)
    # With leader election the chart grants create on Leases, which RBAC cannot limit by name
    # (docs/kubernetes-stores.md, Permissions): a second name is created too. Without it, nothing.
    assert created.status_code == (201 if mode.lease else 403), created.text


# ---- 3. the effective permissions are exactly the mode's table ----------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.id)
def test_the_effective_permissions_are_exactly_the_modes_table(
    kube_api: KubeApiServer, chart: helm_python.Chart, mode: Mode, tmp_path: Path
) -> None:
    setup = Installed(kube_api, chart, mode, tmp_path)
    if mode.store == "file":
        assert not [o["kind"] for o in setup.objects if o["kind"] in RBAC_KINDS[1:]]
    missing, extra, unprobed = setup.verdict()
    assert sorted(map(str, missing)) == [], "denied although the mode needs it"
    assert sorted(map(str, extra)) == [], "allowed beyond the mode's table"
    assert unprobed == set(), "rules on resources no table probes"


Edit = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
"""An edit of a Role's rules."""


def _add_verb(verb: str, resource: str) -> Edit:
    def edit(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for rule in rules:
            if resource in rule["resources"] and "resourceNames" in rule:
                rule["verbs"] = [*rule["verbs"], verb]
        return rules

    return edit


def _drop_verb(verb: str, resource: str) -> Edit:
    def edit(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for rule in rules:
            if resource in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        return [r for r in rules if r["verbs"]]

    return edit


def _any_name(resource: str) -> Edit:
    def edit(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for rule in rules:
            if resource in rule["resources"]:
                rule.pop("resourceNames", None)
        return rules

    return edit


def _create_by_name(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Lease's create moved into the rule limited by name: RBAC then never allows it."""
    kept = [r for r in rules if not ("leases" in r["resources"] and "resourceNames" not in r)]
    for rule in kept:
        if "leases" in rule["resources"]:
            rule["verbs"] = [*rule["verbs"], "create"]
    return kept


def _add_rule(resource: str) -> Edit:
    def edit(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*rules, {"apiGroups": [""], "resources": [resource], "verbs": ["get"]}]

    return edit


@dataclass
class Mutation:
    """A Role edited by ``edit``, and what the comparison must find: accesses of the table now
    denied (``missing``), accesses now allowed beyond it (``extra``), rules on other resources."""

    what: str
    edit: Edit
    missing: set[str] = field(default_factory=set)
    extra: set[str] = field(default_factory=set)
    unprobed: bool = False


def test_a_widened_or_narrowed_role_is_caught(
    kube_api: KubeApiServer, chart: helm_python.Chart, tmp_path: Path
) -> None:
    """Mutated copies of the rendered Role of deployment mode with the ConfigMap store and leader
    election, each put in place of the chart's: the comparison of :func:`Installed.verdict` names
    what changed."""
    setup = Installed(kube_api, chart, Mode("deployment", "configmap", lease=True), tmp_path)
    (role,) = find(setup.objects, "Role")
    ns = setup.release
    every_configmap = {f"{v} configmaps {n or '(all)'} in {ns}" for v in ("get", "update") for n in NAMES}
    cases = [
        Mutation(
            "list on the flag ConfigMap",
            _add_verb("list", "configmaps"),
            extra={f"list configmaps {CONFIGMAP} in {ns}"},
        ),
        Mutation(
            "patch on the Lease", _add_verb("patch", "leases"), extra={f"patch {LEASES} {LEASE} in {ns}"}
        ),
        Mutation(
            "every ConfigMap",
            _any_name("configmaps"),
            extra=every_configmap - {f"{v} configmaps {CONFIGMAP} in {ns}" for v in ("get", "update")},
        ),
        Mutation(
            "Secrets", _add_rule("secrets"), extra={f"get secrets {n or '(all)'} in {ns}" for n in NAMES}
        ),
        Mutation("pods", _add_rule("pods"), unprobed=True),
        Mutation(
            "no update on the ConfigMap",
            _drop_verb("update", "configmaps"),
            missing={f"update configmaps {CONFIGMAP} in {ns}"},
        ),
        Mutation(
            "no get on the Lease", _drop_verb("get", "leases"), missing={f"get {LEASES} {LEASE} in {ns}"}
        ),
        Mutation(
            "create limited by name",
            _create_by_name,
            missing={f"create {LEASES} {n or '(all)'} in {ns}" for n in NAMES if n != LEASE},
        ),
    ]
    for case in cases:
        rules = case.edit(json.loads(json.dumps(role["rules"])))
        kube_api.apply({**role, "rules": rules})
        setup.settle(ns, expand(rules))
        missing, extra, unprobed = setup.verdict()
        assert (set(map(str, missing)), set(map(str, extra))) == (case.missing, case.extra), case.what
        assert bool(unprobed) is case.unprobed, case.what
    kube_api.apply(role)
    setup.settle(ns, expand(role["rules"]))
    assert setup.verdict() == (set(), set(), set())


def test_create_limited_by_name_would_stop_the_leader_election(
    kube_api: KubeApiServer, chart: helm_python.Chart, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Why the chart grants create on Leases without a name: with ``resourceNames`` the API server
    denies the create of the Lease, and flagroll ``run --once`` fails naming the permission."""
    setup = Installed(kube_api, chart, Mode("deployment", "configmap", lease=True), tmp_path)
    (role,) = find(setup.objects, "Role")
    rules = _create_by_name(json.loads(json.dumps(role["rules"])))
    kube_api.apply({**role, "rules": rules})
    setup.settle(setup.release, expand(rules))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "cache.yaml").write_text(POLICY.format(name="cache", key="cache"))
    code = main(
        [
            "run",
            "--once",
            f"--policies={policies}",
            "--prometheus=http://127.0.0.1:9",
            *setup.store_args(run=True),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot create leases" in err
    assert setup.state() is None  # nothing written
