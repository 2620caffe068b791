"""Edit flags inside JSON text without reformatting the rest (pure: no I/O).

A ConfigMap key holds the flag document as text that people also edit by hand. Re-rendering the whole
document would reflow every flag flagroll does not own; instead the new value of each changed flag is
spliced over its old value's span, so every other byte stays as it was. When the text cannot be
spliced safely (a new flag in an empty ``flags`` object, say), the whole document is rendered; either
way the result is parsed again and must equal the document meant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from controller.core.flagd import render_document

_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Unspliceable(Exception):
    pass


def _skip(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _members(text: str, at: int) -> tuple[dict[str, tuple[int, int]], int]:
    """Spans of each member's value in the object starting at ``text[at]``, and where it closes."""
    if text[at : at + 1] != "{":
        raise _Unspliceable("not an object")
    spans: dict[str, tuple[int, int]] = {}
    at = _skip(text, at + 1)
    if text[at : at + 1] == "}":
        return spans, at
    while True:
        key, at = _DECODER.raw_decode(text, at)
        if not isinstance(key, str):
            raise _Unspliceable("object key is not a string")
        at = _skip(text, at)
        if text[at : at + 1] != ":":
            raise _Unspliceable("no colon")
        start = _skip(text, at + 1)
        _, end = _DECODER.raw_decode(text, start)
        spans[key] = (start, end)
        at = _skip(text, end)
        if text[at : at + 1] == ",":
            at = _skip(text, at + 1)
            continue
        if text[at : at + 1] == "}":
            return spans, at
        raise _Unspliceable("no comma or closing brace")


def _indent_of(text: str, at: int) -> str:
    line_start = text.rfind("\n", 0, at) + 1
    line = text[line_start:at]
    return line[: len(line) - len(line.lstrip(" \t"))]


def _render_value(value: Any, indent: str) -> str:
    rendered = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    return rendered.replace("\n", "\n" + indent)


def splice_flags(text: str, document: Mapping[str, Any], changed: Collection[str]) -> str:
    """``text`` with the flags ``changed`` replaced by (or added as) their values in ``document``.

    Falls back to rendering ``document`` whole when splicing is not possible or would not give
    ``document`` back.
    """
    try:
        result = _splice(text, document, changed)
        if json.loads(result) == document:
            return result
    except (_Unspliceable, ValueError, KeyError, IndexError):
        pass
    return render_document(document)


def _splice(text: str, document: Mapping[str, Any], changed: Collection[str]) -> str:
    top, _ = _members(text, _skip(text, 0))
    if "flags" not in top:
        raise _Unspliceable("no flags object")
    flags_at = top["flags"][0]
    spans, _ = _members(text, flags_at)
    flags = document["flags"]
    edits: list[tuple[int, int, str]] = []
    added = [key for key in changed if key not in spans]
    for key in changed:
        if key in spans:
            start, end = spans[key]
            edits.append((start, end, _render_value(flags[key], _indent_of(text, start))))
    if added:
        if not spans:
            raise _Unspliceable("no flag to copy the layout from")
        last_start, last_end = max(spans.values())
        indent = _indent_of(text, last_start)  # the line of the last flag's key and value
        pieces = [
            f",\n{indent}{json.dumps(key, ensure_ascii=False)}: {_render_value(flags[key], indent)}"
            for key in added
        ]
        edits.append((last_end, last_end, "".join(pieces)))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text
