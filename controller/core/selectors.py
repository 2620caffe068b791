"""One PromQL series selector, read as text: its metric name and its label matchers.

Two spellings are read. The classic one, ``name{label="value", …}``, and the one Prometheus 3 added for
names that are not PromQL identifiers (OpenTelemetry's ``http.server.request.duration``): the name as a
quoted string inside the braces, and quoted label names, ``{"http.server.request.duration",
"feature_flag.key"="pay"}``. A string is double- or single-quoted with backslash escapes, or in
backticks (raw); it may hold any character, braces included (``route="/items/{id}"``). Nothing else
(functions, ranges, ``offset``, operators) is a selector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STRING = r'"(?:[^"\\\n]|\\.)*"' + r"|'(?:[^'\\\n]|\\.)*'" + r"|`[^`]*`"
"""A PromQL string literal."""

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = re.compile(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)?\s*")
# One item of the braces, then a comma or the end: a label matcher (its label an identifier or a
# quoted string), or a quoted string alone (the metric name).
_ITEM = re.compile(
    rf"\s*(?:(?P<label>{_IDENTIFIER}|{STRING})\s*(?:=~|!~|!=|=)\s*(?:{STRING})|(?P<name>{STRING}))"
    r"\s*(?P<end>,|$)"
)
QUOTES = "\"'`"


@dataclass(frozen=True)
class Selector:
    """A parsed selector. ``name`` is as written: an identifier, or a string with its quotes."""

    name: str
    matchers: tuple[str, ...]  # each label matcher as written, without the separating commas

    @property
    def quoted(self) -> bool:
        return self.name[0] in QUOTES

    @property
    def bare_name(self) -> str:
        """The name without its quotes (escapes are left as written)."""
        return self.name[1:-1] if self.quoted else self.name

    def with_suffix(self, suffix: str, extra_matcher: str = "") -> str:
        """The selector of the series ``name<suffix>`` (a histogram's ``_bucket``, ``_count``), with
        ``extra_matcher`` added; a quoted name stays quoted, the suffix inside its quotes."""
        matchers = [*self.matchers, *([extra_matcher] if extra_matcher else [])]
        if not self.quoted:
            return f"{self.name}{suffix}{{{', '.join(matchers)}}}"
        return "{" + ", ".join([self.name[:-1] + suffix + self.name[-1], *matchers]) + "}"


def parse_selector(text: str) -> Selector | None:
    """``text`` as one series selector with a metric name, or None if it is not one."""
    head = _NAME.match(text)
    assert head is not None  # it matches the empty string
    name = head.group(1)
    rest = text[head.end() :]
    matchers: list[str] = []
    if rest:
        if not (rest[0] == "{" and rest.rstrip().endswith("}")):
            return None
        inner = rest.rstrip()[1:-1]
        position = 0
        while inner[position:].strip():
            item = _ITEM.match(inner, position)
            if item is None:
                return None
            position = item.end()
            quoted_name, label = item.group("name"), item.group("label")
            if quoted_name is not None:
                if name is not None or len(quoted_name) == 2:
                    return None  # a second name, or an empty one
                name = quoted_name
            else:
                if label[0] in QUOTES and len(label) == 2:
                    return None  # an empty label name
                matchers.append(item.group(0).strip().rstrip(",").strip())
            if item.group("end") == "":
                break
    if name is None:
        return None
    return Selector(name, tuple(matchers))


def metric_name(selector: str) -> str | None:
    """The metric name of a selector, without quotes; None if ``selector`` is not one."""
    parsed = parse_selector(selector)
    return parsed.bare_name if parsed is not None else None
