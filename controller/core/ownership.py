"""Which policy guards which flag: the policy-set rules, as pure functions of plain data.

The policy files name flags; the flag file records, in each managed flag's metadata, the policy that
rolls it out (its owner). From those, and from the files that failed to load, three rules follow:

- :func:`clashes`: several policies naming one flag (or sharing one name) are rejected, except the
  flag's recorded owner, which keeps its flag: a newcomer never takes over a flag, and a clash never
  disarms the owner;
- :func:`unguarded`: a managed flag whose policy was rejected has no guardrails evaluated until it is
  fixed, and the reason says so (the reconciler records it, once per distinct reason);
- :func:`orphans`: a managed flag that no policy names, when every policy file is valid, is either
  rolled back (its policy said ``onDelete: rollback`` and it is still exposed) or left as it is.

The caller does the I/O (loading the files, reading the flag file) and reports each problem once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.core.decision import deleted
from controller.core.errors import FlagFileError, Issue
from controller.core.flagd import managed_keys, read_state
from controller.core.records import POLICY_REJECTED_PREFIX

FieldPath = tuple[str, ...]
NAME_FIELD: FieldPath = ("metadata", "name")
FLAG_KEY_FIELD: FieldPath = ("spec", "flag", "key")
REASONS_SHOWN = 3  # rejection reasons quoted in an unguarded flag's notice; the rest are counted


@dataclass(frozen=True, slots=True)
class Claim:
    """What a valid policy claims: its name, and the flag it rolls out."""

    name: str
    flag_key: str


@dataclass(frozen=True, slots=True)
class Clash:
    """One policy rejected because another policy shares its name or its flag key."""

    index: int  # the rejected claim, by its position in the claims given
    label: str  # "name" or "flag key": what they share
    field: FieldPath  # the field of the policy that says it
    key: str  # the name or flag key they share
    others: tuple[int, ...]  # the other claims sharing it, by position, in order
    keeper: str | None = None  # the owner that keeps the flag, when the flag file names one

    def reason(self, others: str) -> str:
        """The issue's message; ``others`` says where the other policies are (``file:line, …``)."""
        if self.keeper is not None:
            return (
                f"flag {self.key!r} is already rolled out by policy {self.keeper!r} at {others}; "
                "this policy is ignored"
            )
        return (
            f"{self.label} {self.key!r} is also used by the policy at {others}; "
            "each flag must have exactly one policy"
        )


def clashes(claims: Sequence[Claim], owners: Mapping[str, str]) -> list[Clash]:
    """The claims to reject, first those sharing a name, then those sharing a flag key.

    ``owners`` maps flag keys to the policy that rolls them out (from the flag file). When exactly one
    of the policies naming a flag is its owner, it keeps the flag and only the others are rejected;
    otherwise every one of them is. Policies sharing a name are always all rejected. A claim can be
    rejected twice (for its name and for its flag key): each clash is a problem of its own.
    """
    found: list[Clash] = []
    for label, field_path in (("name", NAME_FIELD), ("flag key", FLAG_KEY_FIELD)):
        groups: dict[str, list[int]] = {}
        for index, claim in enumerate(claims):
            groups.setdefault(claim.name if label == "name" else claim.flag_key, []).append(index)
        for key, group in groups.items():
            if len(group) < 2:
                continue
            owned = [i for i in group if owners.get(claims[i].flag_key) == claims[i].name]
            keeper = owned[0] if len(owned) == 1 and label == "flag key" else None
            for index in group:
                if index == keeper:
                    continue
                others = tuple(i for i in group if i != index)
                owner = claims[keeper].name if keeper is not None else None
                found.append(Clash(index, label, field_path, key, others, owner))
    return found


def unguarded(managed: Iterable[str], guarded: Collection[str], errors: Iterable[Issue]) -> dict[str, str]:
    """Managed flags whose policy was rejected, with the reason their records give: no valid policy
    names them (``guarded`` holds the flag keys the valid policies name), and a policy error does.

    Their guardrails are not evaluated until the policy is fixed; the flag stays as it is."""
    flags = set(managed)
    problems: dict[str, list[str]] = {}
    for issue in errors:
        if issue.flag is not None and issue.flag in flags and issue.flag not in guarded:
            problems.setdefault(issue.flag, []).append(str(issue))
    return {key: _rejected(issues) for key, issues in problems.items()}


def _rejected(issues: Sequence[str]) -> str:
    more = len(issues) - REASONS_SHOWN
    return (
        f"{POLICY_REJECTED_PREFIX}, guardrails NOT evaluated until it is fixed; the flag stays as it is: "
        + "; ".join(issues[:REASONS_SHOWN])
        + (f"; and {more} more" if more > 0 else "")
    )


@dataclass(frozen=True, slots=True)
class Orphans:
    """Managed flags that no policy names."""

    roll_back: list[str] = field(default_factory=list)  # onDelete: rollback, and still exposed
    left: list[str] = field(default_factory=list)  # left as they are (and reported)


def orphans(
    document: Mapping[str, Any],
    guarded: Collection[str],
    *,
    errors: Sequence[Issue],
    files: Sequence[str],
    now: datetime,
) -> Orphans:
    """The managed flags of the flag ``document`` that no valid policy names (``guarded``).

    Nothing is an orphan while a policy file has ``errors`` (a broken file may be the missing policy)
    or when there are no policy ``files`` at all (that may be a bad mount): both are empty then."""
    found = Orphans()
    if errors or not files:
        return found
    for key in managed_keys(document):
        if key in guarded:
            continue
        try:
            state = read_state(document, key, check_layout=False)
        except FlagFileError:
            state = None
        if state is not None and deleted(state, now) is not None:
            found.roll_back.append(key)
        else:
            found.left.append(key)
    return found
