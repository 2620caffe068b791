"""Read policy files: YAML with line numbers, pydantic validation, semantic rules, one issue per mistake.

YAML is read with 1.2-style booleans (only ``true``/``false``), so ``on:`` and ``off:`` stay the
strings the policy format uses. Duplicate keys are an error, not a silent overwrite. Every issue names
the file, the line and column of the field at fault, and the field's path (``spec.steps[2].percent``).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from controller.adapters.flagstore import Underlay
from controller.adapters.policyowners import judge_ownership
from controller.adapters.yamldoc import (
    Document,
    FieldPath,
    Loader,
    Position,
    TooLarge,
    position,
    reader_issue,
    render_path,
)
from controller.core.errors import Issue
from controller.core.freezedoc import FREEZE_KIND, FreezeDocument
from controller.core.freezedoc import semantic_issues as semantic_freeze_issues
from controller.core.freezes import StandingFreeze, invalid, selecting, standing
from controller.core.metrictemplate import TEMPLATE_KIND, MetricTemplate
from controller.core.metrictemplate import semantic_issues as semantic_template_issues
from controller.core.ownership import Ownership
from controller.core.policy import KIND, FlagRef, Metadata, Policy, Spec
from controller.core.policyrules import semantic_issues
from controller.core.sharing import Parts

POLICY_SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: Policy
    file: str
    line: int
    warnings: tuple[Issue, ...] = ()
    positions: dict[FieldPath, Position] = field(default_factory=dict, compare=False, repr=False)
    templates: Mapping[str, MetricTemplate] = field(default_factory=dict, compare=False, repr=False)
    # The Freeze documents whose selector picks this policy (in force or not), invalid ones included.
    freezes: tuple[StandingFreeze, ...] = field(default=(), compare=False, repr=False)

    def position(self, path: FieldPath) -> Position:
        return self.positions.get(path, (self.line, 1))

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class LoadedTemplate:
    template: MetricTemplate
    file: str
    line: int
    positions: dict[FieldPath, Position] = field(default_factory=dict, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class LoadedFreeze:
    """A ``kind: Freeze`` document as read: valid, or (``freeze.valid`` false) fail-safe."""

    freeze: StandingFreeze
    file: str
    line: int
    positions: dict[FieldPath, Position] = field(default_factory=dict, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class PolicySet:
    """What a set of files holds: the valid policies, and every issue (errors and warnings)."""

    policies: list[LoadedPolicy] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    templates: list[LoadedTemplate] = field(default_factory=list)
    freezes: list[LoadedFreeze] = field(default_factory=list)
    invalid_templates: dict[str, str] = field(default_factory=dict)  # name → where, for messages
    # What the documents that failed still say: (file, policy name, flag key), each as far as it reads.
    claims: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    # Files that could not be read through (unreadable, not UTF-8, too large, broken YAML): they may
    # hold any policy.
    unreadable: set[str] = field(default_factory=set)
    # With the flag file: every valid policy (``policies`` keeps those that judge a flag this cycle),
    # and who judges what (:func:`controller.core.ownership.assign`).
    candidates: list[LoadedPolicy] = field(default_factory=list)
    ownership: Ownership | None = None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity != "error"]


def _field_path(loc: Sequence[str | int], data: Any) -> FieldPath:
    """The part of a pydantic error location that names real keys and indexes in ``data``
    (pydantic inserts type names such as ``list`` or ``function-before[…]`` between them)."""
    path: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif i == len(loc) - 1 and isinstance(current, dict) and isinstance(part, str):
            pass  # a missing field: named, though not in the data
        else:
            continue
        path.append(part)
    return tuple(path)


def load_text(text: str, file: str) -> PolicySet:
    """Parse every document in ``text``; ``file`` is the name used in issues."""
    result = PolicySet(files=[file])
    try:
        loader = Loader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        result.issues.append(reader_issue(text, file, exc))
        result.unreadable.add(file)
        return result
    try:
        try:
            while loader.check_node():
                root = loader.get_node()
                if root is None:
                    continue
                _load_document(root, file, result)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        result.issues.append(Issue(file, line, column, "", f"YAML syntax error: {problem}"))
        result.unreadable.add(file)
    except yaml.reader.ReaderError as exc:
        result.issues.append(reader_issue(text, file, exc))
        result.unreadable.add(file)
    except yaml.YAMLError as exc:
        result.issues.append(Issue(file, None, None, "", f"YAML error: {exc}"))
        result.unreadable.add(file)
    except RecursionError:
        mark = loader.get_mark()
        result.issues.append(
            Issue(file, mark.line + 1, mark.column + 1, "", "YAML nested too deeply to be a policy")
        )
        result.unreadable.add(file)
    if file in result.unreadable:
        _unread_freeze(text, file, result)
    result.issues.sort(key=lambda i: (i.line or 0, i.column or 0))
    return result


def _load_document(root: yaml.Node, file: str, result: PolicySet) -> None:
    """Judge one document; its issues name the flag it is for, when the flag key can be read, and a
    document that fails leaves what it claims (policy name, flag key) as far as they can be read."""
    start = len(result.issues)
    claim = _judge_document(root, file, result)
    name, flag = claim if claim is not None else (None, None)
    if flag is not None:
        result.issues[start:] = [replace(issue, flag=flag) for issue in result.issues[start:]]
    if claim is not None and any(issue.severity == "error" for issue in result.issues[start:]):
        result.claims.append((file, name, flag))


def _flag_key_of(data: Any) -> str | None:
    spec = data.get("spec") if isinstance(data, dict) else None
    flag = spec.get("flag") if isinstance(spec, dict) else None
    key = flag.get("key") if isinstance(flag, dict) else None
    return key if isinstance(key, str) and key else None


def _name_of(data: Any) -> str | None:
    metadata = data.get("metadata") if isinstance(data, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


def _judge_document(root: yaml.Node, file: str, result: PolicySet) -> tuple[str | None, str | None] | None:
    """Judge one document; returns the policy name and flag key it names, as far as they read (None
    for a metric template, which names no flag)."""
    line = position(root)[0]
    try:
        document = Document(file, root)
    except TooLarge as exc:
        line, column = exc.position
        result.issues.append(Issue(file, line, column, render_path(exc.path), exc.message))
        return None, None
    result.issues.extend(document.issues)
    already = {issue.field for issue in document.issues}
    data = document.value
    if data is None:
        return None, None
    if not isinstance(data, dict):
        message = "a policy document must be a mapping (apiVersion, kind, …)"
        result.issues.append(Issue(file, line, 1, "", message))
        _misshapen_freeze(root, file, message, result)
        return None, None
    claim = _name_of(data), _flag_key_of(data)
    kind = data.get("kind")
    if kind == TEMPLATE_KIND:
        _judge_template(document, data, line, result)
        return None
    if isinstance(kind, str) and kind.strip().lower() == FREEZE_KIND.lower():
        _judge_freeze(document, data, line, result)
        return None
    if kind != KIND:
        where = document.locate(("kind",))
        message = (
            f"unknown kind {kind!r}; a policy file holds kind: {KIND}, {TEMPLATE_KIND} or {FREEZE_KIND}"
            if kind is not None
            else f"missing 'kind: {KIND}' (or 'kind: {TEMPLATE_KIND}', 'kind: {FREEZE_KIND}')"
        )
        if isinstance(kind, str) and _like_freeze(kind):
            message = f"unknown kind {kind!r} (did you mean {FREEZE_KIND!r}?)"
            problem = f"line {where[0]}: kind: {message}"
            kept = _kept(document.positions)
            result.freezes.append(
                LoadedFreeze(invalid(f"{file}:{line}", problem, _name_of(data)), file, line, kept)
            )
        result.issues.append(Issue(file, where[0], where[1], "kind", message))
        if not isinstance(kind, str):
            _misshapen_freeze(root, file, f"kind: {message}", result)
        return claim
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        _report(exc, document, data, already, result, Policy)
        return claim
    if document.issues:
        return claim
    flag = claim[1]
    errors: list[Issue] = []
    warnings: list[Issue] = []
    for path, message, severity in semantic_issues(policy):
        where = document.locate(path)
        issue = Issue(file, where[0], where[1], render_path(path), message, severity, flag)
        (errors if severity == "error" else warnings).append(issue)
    result.issues.extend(errors)
    result.issues.extend(warnings)
    if not errors:
        shared = _PARTS.share(policy)
        result.policies.append(LoadedPolicy(shared, file, line, tuple(warnings), _kept(document.positions)))
    return claim


def _kept(positions: Mapping[FieldPath, Position]) -> dict[FieldPath, Position]:
    """The positions a loaded document still needs (for issues between documents: clashing names and
    flag keys, templates that are not there). A policy's full map is ten times its model's size."""
    return {
        path: where
        for path, where in positions.items()
        if path in _POSITIONS_KEPT or (path and path[-1] == "template")
    }


_POSITIONS_KEPT = frozenset({("metadata", "name"), ("spec", "flag", "key")})


def _judge_template(document: Document, data: dict[str, Any], line: int, result: PolicySet) -> None:
    file = document.file
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str):
        result.invalid_templates.setdefault(name, f"{file}:{line}")  # until it proves valid
    try:
        template = MetricTemplate.model_validate(data)
    except ValidationError as exc:
        _report(exc, document, data, {issue.field for issue in document.issues}, result, MetricTemplate)
        return
    if document.issues:
        return
    problems = semantic_template_issues(template)
    for path, message, severity in problems:
        where = document.locate(path)
        result.issues.append(Issue(file, where[0], where[1], render_path(path), message, severity))
    if not any(severity == "error" for _, _, severity in problems):
        result.invalid_templates.pop(template.name, None)
        shared = _PARTS.share(template)
        result.templates.append(LoadedTemplate(shared, file, line, _kept(document.positions)))


def _judge_freeze(document: Document, data: dict[str, Any], line: int, result: PolicySet) -> None:
    """A Freeze document: valid, it holds what it covers; invalid, it is reported at its field and
    holds every rollout until fixed (fail-safe: what it was meant to cover is unknown)."""
    file = document.file
    start = len(result.issues)
    freeze: FreezeDocument | None = None
    try:
        freeze = FreezeDocument.model_validate(data)
    except ValidationError as exc:
        _report(exc, document, data, {issue.field for issue in document.issues}, result, FreezeDocument)
    if freeze is not None and not document.issues:
        for path, message, severity in semantic_freeze_issues(freeze):
            where = document.locate(path)
            result.issues.append(Issue(file, where[0], where[1], render_path(path), message, severity))
    errors = [i for i in (*document.issues, *result.issues[start:]) if i.severity == "error"]
    kept = _kept(document.positions)
    if freeze is not None and not errors:
        result.freezes.append(LoadedFreeze(standing(freeze, f"{file}:{line}"), file, line, kept))
        return
    first = min(errors, key=lambda i: (i.line or 0, i.column or 0), default=None)
    problem = f"{first.field}: {first.message}" if first is not None and first.field else str(first)
    if first is not None and first.line is not None:
        problem = f"line {first.line}: {problem}"
    broken = invalid(f"{file}:{line}", problem, _name_of(data))
    result.freezes.append(LoadedFreeze(broken, file, line, kept))


# A file that cannot be read through and speaks of a Freeze may hold one: it holds every rollout.
# The key may be quoted (JSON) and the value quoted, tagged or anchored (`kind: &k !!str Freeze`).
_FREEZE_MENTION = re.compile(r"kind[\"']?\s*:\s*(?:[!&]\S*\s+)*[\"'\[]?\s*freeze\b", re.IGNORECASE)


def _unread_freeze(text: str, file: str, result: PolicySet, first_line: int = 1, problem: str = "") -> None:
    found = _FREEZE_MENTION.search(text)
    if found is None:
        return
    line = first_line + text.count("\n", 0, found.start())
    problem = problem or "the file cannot be read through (see its errors), and it names kind: Freeze"
    result.freezes.append(LoadedFreeze(invalid(f"{file}:{line}", problem), file, line))


def _like_freeze(kind: str) -> bool:
    """A kind that is a slip of ``Freeze`` (``Freez``, ``Freezes``): such a document may be meant as
    one, so it holds every rollout, as a Freeze that does not validate."""
    return difflib.SequenceMatcher(None, kind.strip().lower(), FREEZE_KIND.lower()).ratio() >= 0.8


def _misshapen_freeze(root: yaml.Node, file: str, message: str, result: PolicySet) -> None:
    """A document that reads but is not shaped as one (a list, a kind that is not text) and names
    kind: Freeze: it may be meant as one, so it holds every rollout, as a Freeze that does not validate."""
    start, end = root.start_mark, root.end_mark
    if start is None or end is None or not isinstance(start.buffer, str):
        return
    line = start.line + 1
    _unread_freeze(start.buffer[start.index : end.index], file, result, line, f"line {line}: {message}")


def _report(
    exc: ValidationError,
    document: Document,
    data: dict[str, Any],
    already: set[str],
    result: PolicySet,
    root: type[BaseModel],
) -> None:
    for error in exc.errors():
        path = _field_path(error["loc"], data)
        if render_path(path) in already:
            continue  # the YAML reader has already said what is wrong here
        where = document.locate(path)
        message = _explain(error, path, root)
        result.issues.append(Issue(document.file, where[0], where[1], render_path(path), message))


def _explain(error: Any, path: FieldPath, root: type[BaseModel] = Policy) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        name = str(path[-1]) if path else "?"
        allowed = _allowed_keys(path[:-1], root)
        hint = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        text = f"unknown field {name!r}"
        if hint:
            text += f" (did you mean {hint[0]!r}?)"
        elif allowed:
            text += f"; allowed here: {', '.join(allowed)}"
        return text
    if kind == "missing":
        name = str(path[-1]) if path else "?"
        description = _description(path, root)
        if description:
            return f"missing required field {name!r} ({description[0].lower()}{description[1:-1]})"
        return f"missing required field {name!r}"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    given = error.get("input")
    if kind != "value_error" and isinstance(given, str | int | float | bool) and given != "":
        message += f" (got {given!r})"
    return message


def _model_at(path: FieldPath, root: type[BaseModel] = Policy) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path``, if there is one."""
    current: Any = root
    for part in path:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            if typing.get_origin(current) is list and args:
                current = args[0]
                continue
            return None
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        fields = {(f.alias or n): f for n, f in current.model_fields.items()}
        if part not in fields:
            return None
        current = fields[part].annotation
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _allowed_keys(path: FieldPath, root: type[BaseModel] = Policy) -> list[str]:
    model = _model_at(path, root)
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _description(path: FieldPath, root: type[BaseModel] = Policy) -> str | None:
    model = _model_at(path[:-1], root)
    if model is None:
        return None
    for name, info in model.model_fields.items():
        if (info.alias or name) == path[-1]:
            return info.description
    return None


def load_file(path: Path) -> PolicySet:
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return _unread(name, f"file is {size} bytes; policy files are small")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        unread = _unread(name, f"not UTF-8 text: {exc}")
        _unread_freeze(exc.object.decode("utf-8", errors="replace"), name, unread)
        return unread
    except OSError as exc:
        return _unread(name, f"cannot read: {exc.strerror or exc}")
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    cached = _parsed.get(name)
    if cached is not None and cached[0] == digest:
        return cached[1]  # the same text: the same result (callers never change a PolicySet they get)
    loaded = load_text(text, name)
    if len(_parsed) >= MAX_CACHED_FILES:
        _parsed.pop(next(iter(_parsed)))
    _parsed[name] = (digest, loaded)
    return loaded


def _unread(file: str, problem: str) -> PolicySet:
    """A file whose policies could not be read: it may hold any policy."""
    return PolicySet(issues=[Issue(file, None, None, "", problem)], files=[file], unreadable={file})


# What each file held when it was last parsed: the loop reads every policy file every cycle, and
# parsing is the costly part (about 3 ms a policy), so unchanged text is not parsed again.
MAX_CACHED_FILES = 20_000
_parsed: dict[str, tuple[bytes, PolicySet]] = {}
# Parts equal across the kept policies are kept once (see controller.core.sharing).
_PARTS = Parts(own=(Policy, Metadata, Spec, FlagRef, MetricTemplate))


def policy_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named by ``paths``; a directory yields its policy files (not hidden, not recursive)."""
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            folder = path.resolve()  # once per directory: resolving thousands of files is slow
            children = [
                (c, folder / c.name)
                for c in sorted(path.iterdir())
                # Not only regular files: a directory, a broken link or a link loop named like a policy
                # file cannot be read, and is reported (it may hold any policy), never skipped.
                if not c.name.startswith(".") and c.suffix in POLICY_SUFFIXES
            ]
        else:
            children = [(path, path.resolve())]
        for child, resolved in children:
            if resolved not in seen:
                seen.add(resolved)
                yield child


def load_paths(
    paths: Iterable[Path], document: Mapping[str, Any] | None = None, underlay: Underlay | None = None
) -> PolicySet:
    """Load files and directories, then say which policy judges which flag.

    ``document`` (the flag file) names the owner of each managed flag: a second policy for such a flag
    is rejected and the owner keeps its guardrails armed, and a flag that is not flagroll's is adopted
    or refused (see :mod:`controller.core.ownership`). Without it, every policy in a clash is rejected.
    """
    combined = PolicySet()
    for path in policy_files(paths):
        if not path.exists():
            combined.issues.append(Issue(str(path), None, None, "", "no such file or directory"))
            combined.unreadable.add(str(path))
            continue
        loaded = load_file(path)
        combined.policies.extend(loaded.policies)
        combined.issues.extend(loaded.issues)
        combined.files.extend(loaded.files)
        combined.templates.extend(loaded.templates)
        combined.freezes.extend(loaded.freezes)
        combined.claims.extend(loaded.claims)
        combined.unreadable |= loaded.unreadable
        for name, where in loaded.invalid_templates.items():
            combined.invalid_templates.setdefault(name, where)
    _resolve_templates(combined)
    _resolve_freezes(combined)
    judge_ownership(combined, document, underlay or {})
    return combined


def _resolve_templates(loaded: PolicySet) -> None:
    """Give each policy the templates it names; reject a policy that names one that is not there
    (or is invalid, or defined twice), at the line of the field that names it."""
    defined: dict[str, list[LoadedTemplate]] = {}
    for template in loaded.templates:
        defined.setdefault(template.template.name, []).append(template)
    for name, group in defined.items():
        for template in group[1:] if len(group) > 1 else []:
            line, column = template.positions.get(("metadata", "name"), (template.line, 1))
            loaded.issues.append(
                Issue(
                    template.file,
                    line,
                    column,
                    "metadata.name",
                    f"template {name!r} is also defined at {group[0].where}; each template name must be "
                    "unique (this one is ignored)",
                )
            )
    usable = {name: group[0].template for name, group in defined.items()}
    kept = []
    for policy in loaded.policies:
        wrong = []
        for path, name in policy.policy.template_references():
            if name in usable:
                continue
            if name in loaded.invalid_templates:
                why = f"template {name!r} is invalid (see {loaded.invalid_templates[name]})"
            else:
                known = ", ".join(sorted(usable)) or "none"
                hint = difflib.get_close_matches(name, list(usable), n=1, cutoff=0.6)
                why = f"template {name!r} is not defined in the policy files" + (
                    f" (did you mean {hint[0]!r}?)" if hint else f"; defined: {known}"
                )
            line, column = policy.position(path)
            wrong.append(
                Issue(policy.file, line, column, render_path(path), why, flag=policy.policy.flag_key)
            )
        if wrong:
            loaded.issues.extend(wrong)
            loaded.claims.append((policy.file, policy.policy.name, policy.policy.flag_key))
            continue
        names = {name for _, name in policy.policy.template_references()}
        kept.append(replace(policy, templates={n: usable[n] for n in sorted(names)}) if names else policy)
    loaded.policies = kept


def _resolve_freezes(loaded: PolicySet) -> None:
    """Report a Freeze name used twice (both still hold what they cover: dropping either could let
    an advance through), and give each policy the freezes whose selector picks it."""
    first: dict[str, LoadedFreeze] = {}
    for entry in loaded.freezes:
        name = entry.freeze.name
        if not entry.freeze.valid:
            continue
        if name in first:
            line, column = entry.positions.get(("metadata", "name"), (entry.line, 1))
            loaded.issues.append(
                Issue(
                    entry.file,
                    line,
                    column,
                    "metadata.name",
                    f"Freeze {name!r} is also defined at {first[name].where}; each Freeze name must be "
                    "unique (both still hold what they cover)",
                )
            )
        else:
            first[name] = entry
    if not loaded.freezes:
        return
    every = [entry.freeze for entry in loaded.freezes]
    loaded.policies = [
        replace(policy, freezes=chosen) if (chosen := selecting(policy.policy, every)) else policy
        for policy in loaded.policies
    ]
