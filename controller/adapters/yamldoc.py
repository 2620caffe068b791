"""YAML read as policies need it: 1.2-style booleans, positions of every value, plain data only.

``on:`` and ``off:`` stay the strings the policy format uses (only ``true``/``false`` are booleans);
a duplicate key, a tag other than plain maps and lists, an alias loop or an alias bomb is an issue at
its line, never a silent overwrite or a crash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from controller.core.errors import Issue

FieldPath = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line and column

MAX_NODES = 100_000  # alias expansion guard: a policy file is small


class Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: ``on``/``off``/``yes``/``no`` are strings."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.2 has no base-60 numbers: `to: 16:00` is the text "16:00", not the number 960.
_SEXAGESIMAL = r"(?![-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$)"
Loader.yaml_implicit_resolvers = {
    first: [
        (tag, re.compile(_SEXAGESIMAL + regexp.pattern, regexp.flags))
        if tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
        else (tag, regexp)
        for tag, regexp in resolvers
    ]
    for first, resolvers in Loader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class Document:
    """A YAML document turned into plain Python, remembering where each value sits."""

    def __init__(self, file: str, root: yaml.Node) -> None:
        self.file = file
        self.positions: dict[FieldPath, Position] = {}
        self.issues: list[Issue] = []
        self._nodes = 0
        self._open: set[int] = set()  # collections being built: an alias back to one is a loop
        self._constructor = Loader("")
        self.start = position(root)
        self.value = self._build(root, ())

    def _build(self, node: yaml.Node, path: FieldPath) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise TooLarge(path, "document too large (alias expansion?)", node)
        self.positions.setdefault(path, position(node))
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if node.tag not in _PLAIN_COLLECTION_TAGS:
                self._issue(node, path, f"unsupported tag {node.tag!r}: policies hold plain data")
                return None
            if id(node) in self._open:
                raise TooLarge(path, "recursive alias: a value contains itself", node)
            self._open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self._open.discard(id(node))
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:  # an unknown tag, say
            self._issue(node, path, f"cannot read this value: {exc.problem or exc}")
        except Exception as exc:  # a scalar yaml cannot build (an impossible date)
            self._issue(node, path, f"cannot read this value: {exc}")
        return None

    def _collection(self, node: yaml.MappingNode | yaml.SequenceNode, path: FieldPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self._issue(key_node, path, "a key must be a plain string")
                    continue
                key = key_node.value
                if key in result:
                    self._issue(key_node, (*path, key), "duplicate key: the same field is given twice")
                    continue
                self.positions[(*path, key)] = position(key_node)
                result[key] = self._build(value_node, (*path, key))
            return result
        return [self._build(item, (*path, i)) for i, item in enumerate(node.value)]

    def _issue(self, node: yaml.Node, path: FieldPath, message: str) -> None:
        line, column = position(node)
        self.issues.append(Issue(self.file, line, column, render_path(path), message))

    def locate(self, path: FieldPath) -> Position:
        for cut in range(len(path), -1, -1):
            found = self.positions.get(path[:cut])
            if found is not None:
                return found
        return self.start


class TooLarge(Exception):
    def __init__(self, path: FieldPath, message: str, node: yaml.Node) -> None:
        self.path = path
        self.message = message
        self.position = position(node)


_PLAIN_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


def position(node: yaml.Node) -> Position:
    mark = node.start_mark
    return mark.line + 1, mark.column + 1


def render_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def reader_issue(text: str, file: str, exc: yaml.reader.ReaderError) -> Issue:
    line = text.count("\n", 0, exc.position) + 1
    column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    return Issue(file, line, column, "", f"character {exc.character!r} is not allowed: {exc.reason}")
