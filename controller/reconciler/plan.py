"""Planning, from a read of the flag file without the lock: which rollouts to decide this cycle, with
the queries each one asks, and which flags the policy set leaves unguarded or orphaned."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.adapters.policyfile import LoadedPolicy, PolicySet, load_paths
from controller.core import ownership
from controller.core.decision import queries_for, rebase
from controller.core.errors import FlagFileError
from controller.core.flagd import managed_keys, owners, read_state
from controller.core.queries import PlannedQuery
from controller.core.state import ACTIVE, RolloutState
from controller.reconciler.shared import CycleResult, Reported


@dataclass(frozen=True)
class Plan:
    """One rollout to decide: its policy, its state when planned, and the queries to ask for it."""

    loaded: LoadedPolicy
    stored: RolloutState | None
    queries: list[PlannedQuery]


@dataclass(frozen=True)
class Planned:
    plans: list[Plan]
    notices: dict[str, str]  # flags whose policy was rejected, with the reason (each reason once)
    deletions: list[str]  # flags to roll back because their policy was deleted (onDelete: rollback)


def load_policies(path: Path, document: Mapping[str, Any] | None, reported: Reported) -> PolicySet:
    """Load every policy under ``path``; ``document`` (the flag file) tells which policy owns which
    flag. Each rejected policy is logged once."""
    policies = load_paths([path], owners(document) if document is not None else None)
    if not policies.files and not policies.issues:
        reported.once(f"empty:{path}", "no_policies", path=str(path))
    for issue in policies.issues:
        if issue.severity == "error":
            reported.once(f"issue:{issue}", "policy_rejected", issue=str(issue), file=issue.file)
    return policies


def plan(
    document: Mapping[str, Any],
    policies: PolicySet,
    only: set[str] | None,
    now: datetime,
    result: CycleResult,
    reported: Reported,
) -> Planned:
    """What this cycle does, as the flag file ``document`` says, for the policies named in ``only``
    (all when None). Fills in the result's policy errors, the states of every managed flag, and the
    flags that cannot be reconciled."""
    result.policy_errors = policies.errors
    for key in managed_keys(document):
        with contextlib.suppress(FlagFileError):
            if (read := read_state(document, key, check_layout=False)) is not None:
                result.states[key] = read
    plans: list[Plan] = []
    for loaded in policies.policies:
        if only is not None and loaded.policy.name not in only:
            continue
        key = loaded.policy.flag_key
        try:
            stored = read_state(document, key)
        except FlagFileError as exc:
            result.problems.append(str(exc))
            reported.once(f"flag:{exc}", "flag_skipped", flag=key, policy=loaded.policy.name, error=str(exc))
            continue
        state = rebase(loaded.policy, stored, now).state
        if state.status not in ACTIVE and state == stored:
            continue  # stopped, rolled back, completed or promoted, and no new revision
        plans.append(Plan(loaded, stored, queries_for(loaded.policy, state, now, loaded.templates)))
    deletions = _orphans(document, policies, now, reported)
    return Planned(plans, _notices(document, policies, reported), deletions)


def _guarded(policies: PolicySet) -> set[str]:
    return {loaded.policy.flag_key for loaded in policies.policies}


def _orphans(
    document: Mapping[str, Any], policies: PolicySet, now: datetime, reported: Reported
) -> list[str]:
    """The flags to roll back because their policy was deleted; the other flags that no policy names
    are reported once and left as they are."""
    found = ownership.orphans(
        document, _guarded(policies), errors=policies.errors, files=policies.files, now=now
    )
    for key in found.left:
        reported.once(
            f"orphan:{key}",
            "flag_without_policy",
            flag=key,
            note="managed by flagroll but no policy names it; left as it is",
        )
    return found.roll_back


def _notices(document: Mapping[str, Any], policies: PolicySet, reported: Reported) -> dict[str, str]:
    """Managed flags whose policy was rejected: their guardrails are not evaluated. Each new problem
    gets one decision record, so that status and the log say so."""
    reasons = ownership.unguarded(managed_keys(document), _guarded(policies), policies.errors)
    return {key: reason for key, reason in reasons.items() if reported.first(f"notice:{key}:{reason}")}
