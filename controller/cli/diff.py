"""``flagroll diff OLD NEW``: what a policy edit changes, and what it would do to the running rollout."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.adapters.policyfile import LoadedPolicy, PolicySet, load_paths
from controller.adapters.policyowners import adoption
from controller.cli import common, kubernetes
from controller.cli.common import EXIT_FAIL, EXIT_OK, open_store
from controller.cli.options import Commands, flags_option
from controller.core.flagd import is_managed, read_state
from controller.core.ownership import Why
from controller.core.policy import Policy, pct
from controller.core.policydiff import effect, field_changes, revision_line, schedule_effect
from controller.core.state import RolloutState, Status


def is_managed_key(document: Mapping[str, Any], key: str) -> bool:
    return is_managed(document.get("flags", {}).get(key))


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "diff",
        help="what a policy edit changes, and what it would do to the running rollout",
        description="Compare two versions of policy files (e.g. the main branch's and a pull request's): "
        "the fields that change, the new revision, and, with --flags, what the controller would do to "
        "each running rollout (continue from its step, lower exposure, restart a rolled-back one). Exit 0 "
        "when NEW is valid, 1 when not.",
    )
    p.add_argument("old", type=Path, metavar="OLD", help="the policy file (or directory) as it is now")
    p.add_argument("new", type=Path, metavar="NEW", help="the policy file (or directory) as edited")
    flags_option(p)
    kubernetes.add_store_options(p)
    p.set_defaults(handler=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    was = load_paths([args.old])
    old = {p.policy.name: p.policy for p in was.policies}
    for issue in was.errors:  # a policy that does not load in OLD is compared as if it were new
        print(f"OLD does not load: {issue}")
    document = None
    if args.flags is not None or args.flag_store != "file":
        document = open_store(args).read().document
    loaded = load_paths([args.new], document)
    for issue in loaded.issues:
        print(issue)
    now = common.utc_now()
    new_names = {p.policy.name for p in loaded.candidates}
    successors = _successors(loaded)
    for item in loaded.candidates:
        if item not in loaded.policies and item.policy.name not in successors:
            continue  # rejected: its issue says why
        new = item.policy
        print(f"policy {new.name} (flag {new.flag_key}), revision {new.revision}")
        before = old.get(new.name)
        if before is None:
            before = next(
                (o for o in old.values() if o.flag_key == new.flag_key and o.name not in new_names), None
            )
            print(f"  renamed from policy {before.name!r}" if before is not None else "  new policy")
            if before is not None:
                print(f"  {_handover_line(new.flag_key, before.name, new.name)}")
        if before is not None:
            changes = field_changes(before, new)
            print(f"  {revision_line(before, new, changes)}")
            for line in changes:
                print(f"  {line}")
        if document is not None:
            state = (
                read_state(document, new.flag_key, check_layout=False)
                if is_managed_key(document, new.flag_key)
                else None
            )
            print("  effect on the running rollout:")
            scheduled = schedule_effect(before, new, state) if before is not None else []
            for line in [*_effect(loaded, item, document, state, now), *scheduled]:
                print(f"    {line}")
    for name in sorted(old.keys() - new_names):
        print(_removed_line(old[name], successors.values()))
    if document is not None:
        _unjudged_lines(loaded, document)
    return EXIT_FAIL if loaded.errors else EXIT_OK


def _successors(loaded: PolicySet) -> dict[str, str]:
    """Policy name → the flag it waits to take over."""
    if loaded.ownership is None:
        return {}
    return {
        loaded.candidates[u.successor].policy.name: key
        for key, u in loaded.ownership.unjudged.items()
        if u.successor is not None
    }


def _handover_line(flag: str, old: str, new: str) -> str:
    return (
        f"flag {flag} belongs to policy {old!r}: {new!r} takes it over once {old!r} has been gone for "
        f"the grace period (the flag is UNGUARDED meanwhile if exposed), or at once with "
        f"'flagroll adopt {flag} --policy {new}'"
    )


def _effect(
    loaded: PolicySet,
    item: LoadedPolicy,
    document: Mapping[str, Any],
    state: RolloutState | None,
    now: datetime,
) -> list[str]:
    new = item.policy
    ownership = loaded.ownership
    if ownership is not None and new.flag_key in ownership.adopt.values() and item in loaded.policies:
        flag = document.get("flags", {}).get(new.flag_key)
        return [
            f"adopts flag {new.flag_key}, which is not flagroll's: {adoption(item, flag)}",
            "then the ramp starts at the next cycle, as for a new flag",
        ]
    if state is not None and state.policy != new.name:
        return [
            _handover_line(new.flag_key, state.policy, new.name),
            *effect(new, state.moved(policy=new.name), now),
        ]
    return effect(new, state, now)


def _removed_line(policy: Policy, successors: Iterable[str]) -> str:
    flag = policy.flag_key
    if flag in set(successors):
        return f"policy {policy.name}: removed; flag {flag} goes to the policy that names it now (see above)"
    if policy.spec.on_delete == "rollback":
        return (
            f"policy {policy.name}: removed; onDelete: rollback: flag {flag} is ROLLED BACK to 0 % if "
            "exposed, once the policy has been gone for the grace period"
        )
    return (
        f"policy {policy.name}: removed; flag {flag} is left as it is, and is UNGUARDED (recorded, "
        "alerted) while anyone is exposed to it"
    )


def _unjudged_lines(loaded: PolicySet, document: Mapping[str, Any]) -> None:
    """The managed flags that no policy would judge once NEW is in place."""
    if loaded.ownership is None or not loaded.ownership.unjudged:
        return
    print("flags no policy would judge:")
    for key, unjudged in sorted(loaded.ownership.unjudged.items()):
        state = read_state(document, key, check_layout=False)
        if state is None:
            continue
        loud = "UNGUARDED" if state.exposed else "not exposed"
        print(f"  {key} ({state.status.value} at {pct(state.percent)} %, {loud}): {unjudged.reason}")
        if unjudged.why is Why.ABSENT and unjudged.successor is None and state.exposed:
            if state.rollback_on_delete and state.status is not Status.PROMOTED:
                then = "is ROLLED BACK to 0 % once its policy has been gone for the grace period"
            else:
                then = "stays as it is, UNGUARDED, until a policy names it or a human stops it"
            print(f"    then: {key} {then}")
