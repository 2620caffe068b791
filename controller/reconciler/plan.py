"""Planning, from a read of the flag file without the lock: which rollouts to decide this cycle, with
the queries each one asks, which flags a policy adopts, which flags no policy judges (and why), and
the notices to record about rejected policies. Who judges what is the core's answer
(:mod:`controller.core.ownership`, applied by :func:`~controller.adapters.policyfile.load_paths`);
here it is only turned into work for the commit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.adapters.flagstore import Underlay
from controller.adapters.policyfile import LoadedPolicy, PolicySet, load_paths
from controller.adapters.yamldoc import render_path
from controller.core.decision import queries_for, rebase
from controller.core.errors import FlagFileError
from controller.core.flagd import check_fits, managed_keys, read_state
from controller.core.guarding import unguarded_reason
from controller.core.ownership import Unjudged, Why
from controller.core.queries import PlannedQuery
from controller.core.records import POLICY_REJECTED_PREFIX
from controller.core.state import ACTIVE, Action, RolloutState
from controller.reconciler.shared import CycleResult, Reported


@dataclass(frozen=True)
class Plan:
    """One rollout to decide: its policy, its state when planned, and the queries to ask for it.
    ``adopt``: the flag exists and is not flagroll's; the policy takes it first."""

    loaded: LoadedPolicy
    stored: RolloutState | None
    queries: list[PlannedQuery]
    adopt: bool = False


@dataclass(frozen=True)
class Orphan:
    """A managed flag that no policy judges this cycle: its owner when planned, why nobody judges it,
    and the policy waiting to take it over, if any."""

    key: str
    owner: str
    unjudged: Unjudged
    successor: LoadedPolicy | None = None


@dataclass(frozen=True)
class Notice:
    """A record that changes nothing: why a flag is not judged, or that a policy naming it was
    rejected. Each distinct notice once per process. ``guarded``: whether a policy judges the flag."""

    key: str
    action: Action
    reason: str
    guarded: bool = True


@dataclass(frozen=True)
class Planned:
    plans: list[Plan]
    orphans: list[Orphan]
    notices: list[Notice]


def load_policies(
    path: Path, document: Mapping[str, Any] | None, reported: Reported, underlay: Underlay | None = None
) -> PolicySet:
    """Load every policy under ``path``; ``document`` (the flag file) tells which policy owns which
    flag, and ``underlay`` what flags sources below it serve. Each rejected policy is logged once."""
    policies = load_paths([path], document, underlay)
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
    named = {loaded.policy.flag_key for loaded in policies.policies}
    for key in managed_keys(document):
        try:
            if (read := read_state(document, key, check_layout=False)) is not None:
                result.states[key] = read
        except FlagFileError as exc:
            if key not in named:  # a policy naming it reports it when it plans it (below)
                problem = (
                    f"{exc}; no valid policy names flag {key!r}, so nobody judges it: restore its "
                    "metadata or its policy"
                )
                result.problems.append(problem)
                reported.once(f"flag:{problem}", "flag_skipped", flag=key, error=problem)
    adopting = set(policies.ownership.adopt.values()) if policies.ownership is not None else set()
    plans: list[Plan] = []
    for loaded in policies.policies:
        if only is not None and loaded.policy.name not in only:
            continue
        key = loaded.policy.flag_key
        if key in adopting:
            plans.append(Plan(loaded, None, [], adopt=True))
            continue
        try:
            planned = _plan_one(loaded, document, now)
        except Exception as exc:  # one flag's corrupt state never stops the others
            problem = str(exc) if isinstance(exc, FlagFileError) else unexpected(key, exc)
            result.problems.append(problem)
            reported.once(
                f"flag:{problem}", "flag_skipped", flag=key, policy=loaded.policy.name, error=problem
            )
            continue
        if planned is not None:
            plans.append(planned)
    orphans = _orphans(policies, result.states, reported)
    result.unjudged.update(orphan.key for orphan in orphans)
    for orphan in orphans:
        held = result.states.get(orphan.key)
        if held is not None and (held.exposed or _edited(document, orphan.key)):
            result.unguarded[orphan.key] = unguarded_reason(held, orphan.unjudged.reason)
    return Planned(plans, orphans, _notices(policies, result.states, orphans, result.unguarded, reported))


def _plan_one(loaded: LoadedPolicy, document: Mapping[str, Any], now: datetime) -> Plan | None:
    """The plan of one rollout, or None when there is nothing to do; FlagFileError naming the field
    when its stored state cannot be judged."""
    policy = loaded.policy
    key = policy.flag_key
    stored = read_state(document, key)
    if stored is not None:
        same = policy.is_revision(stored.revision, owner=stored.owner, review=stored.review)
        check_fits(key, stored, policy.name, same, len(policy.spec.steps))
    state = rebase(policy, stored, now).state
    if state.status not in ACTIVE and state == stored:
        return None  # stopped, rolled back, completed or promoted, and no new revision
    return Plan(loaded, stored, queries_for(policy, state, now, loaded.templates))


def unexpected(key: str, exc: Exception) -> str:
    """The problem of a flag whose state made deciding it raise something unforeseen."""
    return f"flag {key!r}: skipped this cycle, its state could not be judged: {type(exc).__name__}: {exc}"


def _edited(document: Mapping[str, Any], key: str) -> bool:
    """Its targeting does not serve what its state records (edited by hand): take it as exposed."""
    try:
        read_state(document, key)
    except FlagFileError:
        return True
    return False


def _orphans(policies: PolicySet, states: Mapping[str, RolloutState], reported: Reported) -> list[Orphan]:
    """The managed flags no policy judges, with the policy waiting to take each over, if any."""
    if policies.ownership is None:
        return []
    found = []
    for key, unjudged in policies.ownership.unjudged.items():
        successor = policies.candidates[unjudged.successor] if unjudged.successor is not None else None
        state = states.get(key)
        if state is None:
            continue  # its state cannot be read: the cycle's problems say so
        found.append(Orphan(key, state.policy, unjudged, successor))
        if unjudged.why is Why.ABSENT and successor is None and state is not None and not state.exposed:
            reported.once(f"orphan:{key}", "flag_without_policy", flag=key, note=unjudged.reason)
    return found


def _notices(
    policies: PolicySet,
    states: Mapping[str, RolloutState],
    orphans: list[Orphan],
    unguarded: Mapping[str, str],
    reported: Reported,
) -> list[Notice]:
    """Rejections of policies that name a managed flag (or its owner's name), and the flags nobody
    exposed that a failed policy file keeps from being judged: each distinct one once."""
    found: list[Notice] = []
    ownership = policies.ownership
    for rejection in ownership.rejected if ownership is not None else []:
        if rejection.flag is None or rejection.flag not in states:
            continue
        policy = policies.candidates[rejection.index]
        line, column = policy.position(rejection.field)
        where = f"{policy.file}:{line}:{column}: {render_path(rejection.field)}"
        reason = f"{POLICY_REJECTED_PREFIX}: {where}: {rejection.reason}"
        found.append(Notice(rejection.flag, Action.REJECT, reason, rejection.flag not in unguarded))
    for orphan in orphans:
        state = states.get(orphan.key)
        if orphan.unjudged.why is Why.BLOCKED and state is not None and not state.exposed:
            reason = (
                f"{POLICY_REJECTED_PREFIX}, guardrails NOT evaluated until it is fixed; the flag stays "
                f"as it is: {orphan.unjudged.reason}"
            )
            found.append(Notice(orphan.key, Action.HOLD, reason))
    return [n for n in found if reported.first(f"notice:{n.key}:{n.reason}")]
