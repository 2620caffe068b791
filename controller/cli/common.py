"""What the commands share: exit codes, required options, the flag store, the decision log, the clock.

Commands read the clock as ``common.utc_now()``, through this module, so that a test replaces it in
one place for every command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from controller.adapters.flagstore import FileFlagStore, FlagStore
from controller.adapters.overlay import OverlayStore, recall, remembered_path
from controller.cli import kubernetes
from controller.core.errors import FlagFileError, UsageError
from controller.reconciler import utc_now as utc_now

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def need(value: Any, option: str, env: str) -> Any:
    if value is None or value == "":
        raise UsageError(f"{option} is required (or set {env})")
    return value


def decision_log_path(args: argparse.Namespace) -> Path:
    if args.decision_log is not None:
        return Path(args.decision_log)
    flags = need(args.flags, "--flags or --decision-log", "FLAGROLL_FLAGS or FLAGROLL_DECISION_LOG")
    return Path(flags).with_name("decisions.jsonl")


def open_store(args: argparse.Namespace, *, recall_merged: bool = False) -> FlagStore:
    """The flag file, or the ConfigMap / FeatureFlag named by the Kubernetes options."""
    if kubernetes.uses_kubernetes(args) and args.flag_store != "file":
        return kubernetes.open_store(args)
    flags = Path(need(args.flags, "--flags", "FLAGROLL_FLAGS"))
    return file_store(flags, args, recall_merged=recall_merged)


def file_store(flags: Path, args: argparse.Namespace, *, recall_merged: bool = False) -> FlagStore:
    """The flag file, with its bases and merged file when given. ``recall_merged`` (a human command):
    without --base and --merged, those of the last ``flagroll run`` on this file, so that the merged
    file serves the change at once (see :func:`recalled_store`)."""
    bases = getattr(args, "base", None) or []
    merged = getattr(args, "merged", None)
    if not bases and merged is None and recall_merged:
        return recalled_store(flags)
    if not bases and merged is None:
        return FileFlagStore(flags)
    return OverlayStore(flags, bases, merged)


def recalled_store(flags: Path) -> FlagStore:
    """The flag file with the bases and merged file of the last ``flagroll run`` on it. When what that
    run kept cannot be read, or names files that cannot be used, the change still goes to the flag
    file (a stop is never refused for it) and the store says the merged file was not updated."""
    try:
        remembered = recall(flags)
        if remembered is None:
            return FileFlagStore(flags)
        return OverlayStore(flags, *remembered, recalled=True)
    except (FlagFileError, UsageError) as exc:
        store = OverlayStore(flags, [], None, recalled=True)
        problem = str(exc)
        if isinstance(exc, UsageError):
            problem = f"{remembered_path(flags)} names files that cannot be used: {exc}"
        store.merged_problem = problem
        return store


def optional_decision_log(args: argparse.Namespace) -> Path | None:
    """With a Kubernetes store and no --decision-log, decisions go to stdout only."""
    if args.flag_store != "file" and args.decision_log is None:
        return None
    return decision_log_path(args)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
