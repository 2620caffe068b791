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
from controller.adapters.overlay import OverlayStore
from controller.cli import kubernetes
from controller.core.errors import UsageError
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


def open_store(args: argparse.Namespace) -> FlagStore:
    """The flag file, or the ConfigMap / FeatureFlag named by the Kubernetes options."""
    if kubernetes.uses_kubernetes(args) and args.flag_store != "file":
        return kubernetes.open_store(args)
    return file_store(Path(need(args.flags, "--flags", "FLAGROLL_FLAGS")), args)


def file_store(flags: Path, args: argparse.Namespace) -> FlagStore:
    bases = getattr(args, "base", None) or []
    merged = getattr(args, "merged", None)
    if not bases and merged is None:
        return FileFlagStore(flags)
    return OverlayStore(flags, bases, merged)


def optional_decision_log(args: argparse.Namespace) -> Path | None:
    """With a Kubernetes store and no --decision-log, decisions go to stdout only."""
    if args.flag_store != "file" and args.decision_log is None:
        return None
    return decision_log_path(args)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
