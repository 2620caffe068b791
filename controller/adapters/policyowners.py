"""The loaded policies against the flag file: the inputs of :func:`controller.core.ownership.assign`,
gathered from what was read, and its answer applied to the policy set.

A policy rejected by ownership gets an issue at the field at fault (its name or its flag key), like
any other mistake; a policy waiting to take over a flag whose policy is gone gets a warning saying so.
A file that failed holds, as far as can be read, the policy names and flag keys of its documents; one
that could not be read through may hold any policy: either keeps an owner it may hold from being
taken over, handed over or rolled back (see the ownership rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controller.adapters.flagstore import Underlay
from controller.core.errors import Issue
from controller.core.flagd import PREFIX, describe_unmanaged, owners
from controller.core.ownership import (
    FLAG_KEY_FIELD,
    Broken,
    Candidate,
    Managed,
    Unmanaged,
    assign,
    exposure_change,
)

if TYPE_CHECKING:
    from controller.adapters.policyfile import LoadedPolicy, PolicySet


def judge_ownership(policies: PolicySet, document: Mapping[str, Any] | None, underlay: Underlay) -> None:
    """Decide who judges what, and keep in ``policies.policies`` only the policies that judge a flag."""
    loaded = policies.policies
    recorded = owners(document) if document is not None else {}
    flags = document.get("flags", {}) if document is not None else {}
    candidates = [candidate(p) for p in loaded]
    unmanaged = [
        existing
        for key in sorted({c.flag_key for c in candidates} - set(recorded))
        if (existing := _existing(key, flags, underlay)) is not None
    ]
    result = assign(
        candidates,
        failed_files(policies),
        [Managed(key, owner, _revision(flags.get(key))) for key, owner in recorded.items()],
        unmanaged,
        files=len(policies.files),
    )
    for rejection in result.rejected:
        policy = loaded[rejection.index]
        line, column = policy.position(rejection.field)
        policies.issues.append(
            Issue(
                policy.file,
                line,
                column,
                ".".join(rejection.field),
                rejection.reason,
                flag=policy.policy.flag_key,
            )
        )
    for key, unjudged in result.unjudged.items():
        if unjudged.successor is not None:
            policy = loaded[unjudged.successor]
            line, column = policy.position(FLAG_KEY_FIELD)
            policies.issues.append(
                Issue(
                    policy.file,
                    line,
                    column,
                    ".".join(FLAG_KEY_FIELD),
                    f"flag {key!r} belongs to policy {recorded[key]!r}, which is gone: this policy takes it "
                    "over once that one has been gone for the grace period (or at once with "
                    f"'flagroll adopt {key} --policy {policy.policy.name}')",
                    "warning",
                    key,
                )
            )
    policies.candidates = list(loaded)
    policies.policies = [p for i, p in enumerate(loaded) if i in result.judged]
    policies.ownership = result


def _existing(key: str, flags: Mapping[str, Any], underlay: Underlay) -> Unmanaged | None:
    """The flag ``key`` as a policy meets it when flagroll does not manage it: in the flag file, in a
    source below it, or unknown (a source below cannot be read); None when it does not exist."""
    if key in flags:
        return describe_unmanaged(key, flags[key])
    if isinstance(underlay, str):
        return Unmanaged(key, False, None, f"something unknown: a base file cannot be read ({underlay})")
    if key in underlay:
        return describe_unmanaged(key, underlay[key])
    return None


def candidate(loaded: LoadedPolicy) -> Candidate:
    flag = loaded.policy.spec.flag
    return Candidate(
        loaded.policy.name,
        flag.key,
        loaded.where,
        off=flag.variants.get("off"),
        replace=flag.adopt == "replace",
        revision=loaded.policy.revision,
        legacy_revision=loaded.policy.legacy_revision,
    )


def failed_files(policies: PolicySet) -> list[Broken]:
    """Each file with an error, with the policy names and flag keys it holds as far as they read. A
    file that could not be read through, or with a failed policy whose name and flag key both cannot
    be read, may hold any policy."""
    first: dict[str, Issue] = {}
    for issue in policies.errors:
        first.setdefault(issue.file, issue)
    names: dict[str, set[str]] = {}
    keys: dict[str, set[str]] = {}
    anonymous: set[str] = set(policies.unreadable)
    for file, name, key in policies.claims:
        if name is None and key is None:
            anonymous.add(file)
        if name is not None:
            names.setdefault(file, set()).add(name)
        if key is not None:
            keys.setdefault(file, set()).add(key)
    return [
        Broken(str(issue))
        if file in anonymous
        else Broken(str(issue), frozenset(names.get(file, ())), frozenset(keys.get(file, ())))
        for file, issue in first.items()
    ]


def adoption(loaded: LoadedPolicy, flag: Any) -> str:
    """What adopting ``flag`` (its definition in the flag file) means, in words, for messages."""
    found = describe_unmanaged(loaded.policy.flag_key, flag)
    return f"it serves {found.description}: {exposure_change(candidate(loaded), found)}"


def _revision(flag: Any) -> str:
    revision = flag.get("metadata", {}).get(PREFIX + "revision") if isinstance(flag, dict) else None
    return revision if isinstance(revision, str) else ""
