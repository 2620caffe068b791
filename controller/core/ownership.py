"""Which policy guards which flag: the policy-set rules, as one pure function of plain data.

The policy files name flags; the flag file records, in each managed flag's metadata, the policy that
rolls it out (its owner). :func:`assign` takes the valid policies (:class:`Candidate`), the files that
failed with what can still be read of them (:class:`Broken`), the managed flags with their owners
(:class:`Managed`) and the flags flagroll does not manage yet (:class:`Unmanaged`), and says:

- which policy judges which flag this cycle (``judged``), and which of those first adopt a flag that
  exists but is not flagroll's (``adopt``);
- which policies are rejected, and why (``rejected``);
- which managed flags no policy judges this cycle, and why (``unjudged``).

The rules:

1. A managed flag is owned by the policy its metadata names. A policy with another name never takes it
   over while the owner may still exist: while the owner is valid, while a file that failed holds (or
   may hold) it, or while a file cannot be read at all. Copies of the owner (the same name and flag in
   two files) keep the first; the others are rejected as duplicates.
2. A name or a flag key used by several policies rejects those that are not an owner; with no owner
   among them, all of them (nobody is exposed yet).
3. A managed flag whose owner is certainly gone (every file was read and none holds it) is ``ABSENT``:
   the loop counts a grace period, then hands it to the one policy that names it (``successor``), or,
   with none, rolls it back when the owner said ``onDelete: rollback``. A flag whose owner may still
   be in a file that failed is ``BLOCKED``: nothing moves it until the files are fixed.
4. A flag that exists but is not flagroll's is adopted by the one policy that names it when it serves
   that policy's ``off`` value to everyone (or is disabled); anything else is refused with what it
   serves, unless the policy says ``flag.adopt: replace``.

The caller reads the files and the flag file, and acts on the answer; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

FieldPath = tuple[str, ...]
NAME_FIELD: FieldPath = ("metadata", "name")
FLAG_KEY_FIELD: FieldPath = ("spec", "flag", "key")
ADOPT_FIELD: FieldPath = ("spec", "flag", "adopt")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A valid policy: its name, the flag it rolls out, where it is, and what it serves as off."""

    name: str
    flag_key: str
    where: str  # file:line, for messages
    off: object = False  # the value of the policy's 'off' variant
    replace: bool = False  # flag.adopt: replace
    revision: str = ""
    legacy_revision: str = ""  # the same revision as flags written by earlier versions record it


@dataclass(frozen=True, slots=True)
class Broken:
    """A policy file that failed: its first problem (with the file's name), and the policy names and
    flag keys it holds as far as they can be read. ``None``: it may hold any policy."""

    problem: str
    names: frozenset[str] | None = None
    keys: frozenset[str] | None = None

    def may_hold(self, name: str, key: str) -> bool:
        if self.names is None or self.keys is None:
            return True
        return name in self.names or key in self.keys


@dataclass(frozen=True, slots=True)
class Managed:
    """A flag flagroll manages: its owner, as its metadata records."""

    key: str
    owner: str
    revision: str = ""  # the owner's revision, as last written: it tells the original from an edited copy


@dataclass(frozen=True, slots=True)
class Unmanaged:
    """A flag in the flag file that is not flagroll's: whether it serves one value to everyone
    (``serves_one``, with the value ``served``) or is disabled, and what it serves, for messages."""

    key: str
    serves_one: bool
    served: object = None
    description: str = ""
    disabled: bool = False


def adoptable(candidate: Candidate, flag: Unmanaged) -> bool:
    """Whether the policy may take this flag: it serves the policy's 'off' value to everyone (or is
    disabled), or the policy says ``flag.adopt: replace``."""
    return candidate.replace or keeps_exposure(candidate, flag)


def keeps_exposure(candidate: Candidate, flag: Unmanaged) -> bool:
    """Whether serving the policy's 'off' value to everyone changes nothing anyone gets."""
    return flag.disabled or (flag.serves_one and _same(flag.served, candidate.off))


def exposure_change(candidate: Candidate, flag: Unmanaged) -> str:
    """What adopting ``flag`` changes for the users it serves, in words, for records and previews."""
    if flag.disabled:
        return (
            "while DISABLED each client got its own default; from now on everyone gets the policy's "
            f"'off' value ({_shown(candidate.off)}): clients whose default differs change"
        )
    if keeps_exposure(candidate, flag):
        return "nobody's exposure changes"
    return (
        "EXPOSURE CHANGES (adopt: replace): everyone is now served the policy's 'off' value "
        f"({_shown(candidate.off)}); users who were served anything else are switched to it"
    )


def _same(a: object, b: object) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class Why(StrEnum):
    BLOCKED = "blocked"  # the owner may still be in a file that failed: nothing moves the flag
    ABSENT = "absent"  # the owner is certainly gone: grace, then hand over or onDelete


@dataclass(frozen=True, slots=True)
class Unjudged:
    """A managed flag that no policy judges this cycle."""

    why: Why
    reason: str
    successor: int | None = None  # ABSENT: the one policy that names the flag, by candidate index


@dataclass(frozen=True, slots=True)
class Rejection:
    """A policy rejected: the field at fault, the message, and the managed flag its rejection is about
    (whose owner it clashed with), so that the flag's history says so."""

    index: int
    field: FieldPath
    reason: str
    flag: str | None = None


@dataclass(slots=True)
class Ownership:
    judged: dict[int, str] = field(default_factory=dict)  # candidate index → the flag it judges
    adopt: dict[int, str] = field(default_factory=dict)  # judged candidates that first adopt their flag
    rejected: list[Rejection] = field(default_factory=list)
    unjudged: dict[str, Unjudged] = field(default_factory=dict)  # managed flag → why nobody judges it


def assign(
    candidates: Sequence[Candidate],
    broken: Sequence[Broken],
    managed: Sequence[Managed],
    unmanaged: Sequence[Unmanaged] = (),
    *,
    files: int = 1,
) -> Ownership:
    """Who judges what (see the module's rules). ``files``: how many policy files were found; with
    none, every owner is taken to be possibly there (a bad mount must not roll anything back)."""
    owners = {m.key: m.owner for m in managed}
    result = Ownership()
    alive = _names_clash(candidates, owners, result)
    by_key: dict[str, list[int]] = {}
    for index in alive:
        by_key.setdefault(candidates[index].flag_key, []).append(index)
    others = {u.key: u for u in unmanaged}
    for key, group in by_key.items():
        if key in owners:
            continue  # below, with every managed flag
        if len(group) > 1:
            _all_rejected(candidates, group, "flag key", key, result)
        elif key in others:
            _adopt_or_refuse(candidates, group[0], others[key], result)
        else:
            result.judged[group[0]] = key
    for flag in managed:
        _managed(flag, candidates, by_key.get(flag.key, []), broken, files, result)
    result.rejected.sort(key=lambda r: r.index)
    return result


def _protected(candidate: Candidate, owners: Mapping[str, str]) -> bool:
    return owners.get(candidate.flag_key) == candidate.name


def _names_clash(candidates: Sequence[Candidate], owners: Mapping[str, str], result: Ownership) -> list[int]:
    """Policies sharing a name: the owners keep it, the others are rejected. Returns the survivors."""
    by_name: dict[str, list[int]] = {}
    for index, candidate in enumerate(candidates):
        by_name.setdefault(candidate.name, []).append(index)
    alive: list[int] = []
    for name, group in by_name.items():
        if len(group) == 1:
            alive.extend(group)
            continue
        kept = [i for i in group if _protected(candidates[i], owners)]
        if not kept:
            _all_rejected(candidates, group, "name", name, result)
            continue
        alive.extend(kept)  # copies of one owner are sorted out with the flag key, below
        for index in group:
            if index in kept:
                continue
            owner = candidates[kept[0]]
            result.rejected.append(
                Rejection(
                    index,
                    NAME_FIELD,
                    f"name {name!r} is already used by the policy at {owner.where}, which rolls out flag "
                    f"{owner.flag_key!r}; this policy is ignored and that one keeps judging its flag "
                    "(give this policy another name)",
                    owner.flag_key,
                )
            )
    return sorted(alive)


def _all_rejected(
    candidates: Sequence[Candidate], group: Sequence[int], label: str, key: str, result: Ownership
) -> None:
    for index in group:
        where = ", ".join(candidates[i].where for i in group if i != index)
        field_path = NAME_FIELD if label == "name" else FLAG_KEY_FIELD
        result.rejected.append(
            Rejection(
                index,
                field_path,
                f"{label} {key!r} is also used by the policy at {where}; each flag must have exactly one "
                "policy",
            )
        )


def _adopt_or_refuse(candidates: Sequence[Candidate], index: int, flag: Unmanaged, result: Ownership) -> None:
    candidate = candidates[index]
    if adoptable(candidate, flag):
        result.judged[index] = flag.key
        result.adopt[index] = flag.key
        return
    result.rejected.append(
        Rejection(
            index,
            FLAG_KEY_FIELD,
            f"flag {flag.key!r} already exists and is not flagroll's: it serves {flag.description}. "
            f"flagroll adopts an existing flag only when it serves this policy's 'off' value "
            f"({_shown(candidate.off)}) to everyone, so that nobody's exposure changes. Turn the flag off "
            "for everyone first, or set spec.flag.adopt: replace to take it over as it is (the adopt "
            "record then says whose exposure changes)",
        )
    )


def _shown(value: object) -> str:
    return "true" if value is True else "false" if value is False else repr(value)


def _managed(
    flag: Managed,
    candidates: Sequence[Candidate],
    naming: Sequence[int],
    broken: Sequence[Broken],
    files: int,
    result: Ownership,
) -> None:
    """Who judges the managed ``flag``: its owner (the first copy), or nobody, and why."""
    owning = [i for i in naming if candidates[i].name == flag.owner]
    # Copies of the owner: the one whose revision the flag records is the original (an edited copy
    # in another file must not take its place); otherwise the first.
    owning.sort(key=lambda i: flag.revision not in (candidates[i].revision, candidates[i].legacy_revision))
    others = [i for i in naming if candidates[i].name != flag.owner]
    if owning:
        result.judged[owning[0]] = flag.key
        owner = candidates[owning[0]]
        for index in owning[1:]:
            result.rejected.append(
                Rejection(
                    index,
                    NAME_FIELD,
                    f"a copy of the policy at {owner.where} (the same name and flag); this one is ignored "
                    "and that one keeps judging the flag (remove one of them)",
                    flag.key,
                )
            )
        _newcomers(candidates, others, flag, f"policy {flag.owner!r} at {owner.where}", result)
        return
    holders = [b for b in broken if b.may_hold(flag.owner, flag.key)]
    moved = [c for c in candidates if c.name == flag.owner]
    if holders or files == 0:
        reason = _blocked_reason(flag, holders, files)
        _newcomers(candidates, others, flag, f"policy {flag.owner!r}, whose file failed", result)
        result.unjudged[flag.key] = Unjudged(Why.BLOCKED, reason)
        return
    if moved:
        gone = f"its policy {flag.owner!r} now rolls out flag {moved[0].flag_key!r} ({moved[0].where})"
    else:
        gone = f"its policy {flag.owner!r} was deleted or renamed (no policy file holds it)"
    successor = None
    if len(others) == 1:
        successor = others[0]
        gone += (
            f"; policy {candidates[successor].name!r} at {candidates[successor].where} names this flag "
            "and takes it over after the grace period"
        )
    elif others:
        _all_rejected(candidates, others, "flag key", flag.key, result)
        gone += "; several policies name this flag, so none takes it over"
    result.unjudged[flag.key] = Unjudged(Why.ABSENT, gone, successor)


def _newcomers(
    candidates: Sequence[Candidate], naming: Sequence[int], flag: Managed, owner: str, result: Ownership
) -> None:
    for index in naming:
        result.rejected.append(
            Rejection(
                index,
                FLAG_KEY_FIELD,
                f"flag {flag.key!r} is already rolled out by {owner}; this policy is ignored (a policy "
                f"never takes over a flag from its owner: 'flagroll adopt {flag.key} --policy "
                f"{candidates[index].name}' hands it over)",
                flag.key,
            )
        )


def _blocked_reason(flag: Managed, holders: Sequence[Broken], files: int) -> str:
    if files == 0:
        return (
            "no policy files were found (a missing mount?); nothing is judged or rolled back until there are"
        )
    shown = "; ".join(
        b.problem if b.names is not None else f"{b.problem} (it cannot be read, so it may hold the policy)"
        for b in holders[:3]
    )
    more = f"; and {len(holders) - 3} more files" if len(holders) > 3 else ""
    return f"its policy {flag.owner!r} is in a file that failed: {shown}{more}"
