"""The command-line options of the Kubernetes flag stores and leader election, and what they build.

Importing this module is cheap: the Kubernetes client loads only when a Kubernetes store or a Lease
is actually asked for, so ``flagroll validate`` and the file store never pay for it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.adapters.kube.objects import DEFAULT_CONFIGMAP_KEY
from controller.cli.options import env
from controller.core.errors import UsageError

if TYPE_CHECKING:
    from lightkube import Client

    from controller.adapters.flagstore import FlagStore
    from controller.adapters.kube.lease import LeaseElector

STORES = ("file", "configmap", "featureflag")


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kubernetes flag stores")
    group.add_argument(
        "--flag-store",
        choices=STORES,
        default=env("FLAGROLL_FLAG_STORE", "file"),
        help="where the flags live: the --flags file (default), a ConfigMap key, or an OpenFeature "
        "Operator FeatureFlag (core.openfeature.dev/v1beta1) [env FLAGROLL_FLAG_STORE]",
    )
    group.add_argument(
        "--flag-object",
        default=env("FLAGROLL_FLAG_OBJECT"),
        metavar="NAMESPACE/NAME",
        help="the ConfigMap or FeatureFlag to manage (NAME alone: the pod's or the kubeconfig "
        "context's namespace) [env FLAGROLL_FLAG_OBJECT]",
    )
    group.add_argument(
        "--configmap-key",
        default=env("FLAGROLL_CONFIGMAP_KEY", DEFAULT_CONFIGMAP_KEY),
        metavar="KEY",
        help=f"the ConfigMap key holding the flagd JSON (default {DEFAULT_CONFIGMAP_KEY}) "
        "[env FLAGROLL_CONFIGMAP_KEY]",
    )
    group.add_argument(
        "--kubeconfig",
        type=Path,
        default=_kubeconfig_from_env(),
        metavar="FILE",
        help="kubeconfig file; without it, the pod's service account in a cluster, else "
        "~/.kube/config [env KUBECONFIG]",
    )


def add_leader_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--leader-election-lease",
        default=env("FLAGROLL_LEADER_ELECTION_LEASE"),
        metavar="NAMESPACE/NAME",
        help="run several replicas: only the holder of this coordination.k8s.io Lease reconciles; "
        "identity from env POD_NAME, else the host name [env FLAGROLL_LEADER_ELECTION_LEASE]",
    )


def _kubeconfig_from_env() -> Path | None:
    """KUBECONFIG may list several files; flagroll uses the first that exists."""
    value = env("KUBECONFIG")
    if value is None:
        return None
    paths = [Path(p).expanduser() for p in value.split(os.pathsep) if p]
    return next((p for p in paths if p.is_file()), paths[0] if paths else None)


def uses_kubernetes(args: argparse.Namespace) -> bool:
    if args.flag_store not in STORES:
        raise UsageError(f"--flag-store {args.flag_store!r}: choose one of {', '.join(STORES)}")
    return bool(args.flag_store != "file" or getattr(args, "leader_election_lease", None))


BRAKES = ("stop", "pause")
"""The human commands that only take exposure down (or hold it): they still work on a FeatureFlag
whose other flags lost their state (controller/adapters/kube/stores.py, FeatureFlagStore)."""

_CONNECTED: list[Client] = []
"""The clients this command opened, closed by :func:`close_clients` when it ends."""


def connect(args: argparse.Namespace) -> Client:
    from controller.adapters.kube.client import connect as connect_client

    client = connect_client(args.kubeconfig)
    _CONNECTED.append(client)
    return client


def close_clients() -> None:
    """Close the connections of every client the command opened (``main`` calls it at the end)."""
    while _CONNECTED:
        with contextlib.suppress(Exception):  # closing a broken connection must not hide the result
            _CONNECTED.pop().close()


def open_store(args: argparse.Namespace, client: Client | None = None) -> FlagStore:
    from controller.adapters.kube.client import default_namespace
    from controller.adapters.kube.objects import parse_ref
    from controller.adapters.kube.stores import open_store as open_kube_store

    if not args.flag_object:
        raise UsageError(
            f"--flag-store {args.flag_store} needs --flag-object NAMESPACE/NAME (or FLAGROLL_FLAG_OBJECT)"
        )
    if args.flag_store == "configmap" and not args.configmap_key:
        raise UsageError("--configmap-key must not be empty")
    client = client if client is not None else connect(args)
    ref = parse_ref(args.flag_object, "--flag-object", default_namespace(client))
    braking = [args.flag] if getattr(args, "command", None) in BRAKES else None
    return open_kube_store(args.flag_store, client, ref, args.configmap_key, braking=braking)


def identity() -> str:
    return env("POD_NAME") or socket.gethostname()


def open_elector(args: argparse.Namespace, client: Client | None, log: Any) -> LeaseElector:
    from controller.adapters.kube.client import default_namespace
    from controller.adapters.kube.lease import LeaseElector
    from controller.adapters.kube.objects import parse_ref

    client = client if client is not None else connect(args)
    ref = parse_ref(args.leader_election_lease, "--leader-election-lease", default_namespace(client))
    return LeaseElector(client, ref, identity(), log=log)
