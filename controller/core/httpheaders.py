"""Extra HTTP headers sent with every Prometheus query, as the user writes them.

``NAME=VALUE`` gives the value itself, ``NAME=@FILE`` the file holding it, ``NAME=env:VAR`` the
environment variable holding it (the first ``=`` splits, so a value may hold ``=``). The typical use
is the tenant header of a multi-tenant store (``X-Scope-OrgID=team-a``).

Pure: text in, a :class:`HeaderSpec` out, or a :class:`~controller.core.errors.UsageError` that names
where the header was given (``--prometheus-header #2``, ``FLAGROLL_PROMETHEUS_HEADER line 3``) and the
header's name, never its value: a value may be a secret. Reading files and the environment is the
adapters' part (``controller.adapters.promauth``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from controller.core.errors import UsageError

# RFC 7230, section 3.2.6: token = 1*tchar
_TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXAMPLE = "e.g. X-Scope-OrgID=team-a, X-Scope-OrgID=@/path/to/file or X-Scope-OrgID=env:VARIABLE"

# Headers the HTTP client writes itself for each query (a form POSTed to the URL's host); one given
# here would contradict them or break the request's framing.
RESERVED = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
AUTHORIZATION = "authorization"


class ValueFrom(StrEnum):
    LITERAL = "literal"  # the text after '=' is the value
    FILE = "file"  # NAME=@FILE
    ENV = "env"  # NAME=env:VARIABLE


@dataclass(frozen=True)
class HeaderSpec:
    """One header as given. ``text`` is the value itself, the file's path or the variable's name:
    it is kept out of ``repr`` in every case (the value may be a secret)."""

    name: str
    source: ValueFrom
    text: str = field(repr=False)
    where: str  # e.g. "--prometheus-header #2"

    @property
    def label(self) -> str:
        """How errors name this header: where it was given and its name, never its value."""
        return f"{self.where} {self.name}"


def parse_header(text: str, where: str) -> HeaderSpec:
    """One ``NAME=VALUE`` (or ``NAME=@FILE``, ``NAME=env:VAR``) given at ``where``."""
    name, equals, rest = text.partition("=")
    if not equals:
        hint = "write NAME=VALUE, not 'NAME: VALUE'" if ":" in text else _EXAMPLE
        raise UsageError(f"{where}: expected NAME=VALUE, found no '=' ({hint})")
    if not name:
        raise UsageError(f"{where}: the header name before '=' is empty ({_EXAMPLE})")
    problem = name_problem(name)
    if problem is not None:
        raise UsageError(f"{where}: {problem}")
    label = f"{where} {name}"
    if rest.startswith("@"):
        if not rest[1:]:
            raise UsageError(f"{label}: '@' must be followed by a file path")
        return HeaderSpec(name, ValueFrom.FILE, rest[1:], where)
    if rest.startswith("env:"):
        if _ENV_NAME.fullmatch(rest[4:]) is None:
            raise UsageError(
                f"{label}: 'env:' must be followed by an environment variable name (letters, digits, _)"
            )
        return HeaderSpec(name, ValueFrom.ENV, rest[4:], where)
    problem = value_problem(rest)
    if problem is not None:
        raise UsageError(f"{label}: {problem}")
    return HeaderSpec(name, ValueFrom.LITERAL, rest, where)


def parse_header_lines(text: str, where: str) -> list[HeaderSpec]:
    """The headers of an environment variable: one per line, blank lines skipped."""
    return [
        parse_header(line.rstrip("\r"), f"{where} line {number}")
        for number, line in enumerate(text.split("\n"), 1)
        if line.strip()
    ]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a header name, showing the first character at fault only."""
    for ch in name:
        if ch not in _TCHAR:
            return (
                f"not a valid HTTP header name (an RFC 7230 token): it contains {ch!r}; "
                "use letters, digits and !#$%&'*+-.^_`|~"
            )
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as a header value, in words that never quote it."""
    if not value:
        return "the value is empty"
    if "\r" in value or "\n" in value:
        return "the value contains a line break"
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
        return "the value contains a control character"
    if any(ord(ch) > 0x7E for ch in value):
        return "the value contains a character outside printable ASCII"
    if value[0] in " \t" or value[-1] in " \t":
        return "the value begins or ends with a space or tab (a server would strip it)"
    return None


def check_header_set(specs: Sequence[HeaderSpec], *, authorization_from: str | None) -> None:
    """Refuse a header given twice (names are case-insensitive), one the HTTP client writes itself,
    and ``Authorization`` when flagroll already sends one (``authorization_from``: "a bearer token",
    "basic auth"): which of the two would be meant cannot be guessed."""
    seen: dict[str, HeaderSpec] = {}
    for spec in specs:
        key = spec.name.lower()
        if key in seen:
            raise UsageError(f"{spec.label}: given twice (also {seen[key].where}); give each header once")
        seen[key] = spec
        if key in RESERVED:
            hint = " (from --prometheus)" if key == "host" else ""
            raise UsageError(f"{spec.label}: flagroll sets this header itself{hint}; leave it out")
        if key == AUTHORIZATION and authorization_from is not None:
            raise UsageError(f"{spec.label}: conflicts with {authorization_from}; give one of them")
