"""The rules of ``spec.alerts`` (:func:`alerts_are_sound`), one of the cross-field rules that
:mod:`controller.core.policyrules` runs: each finding carries the path of the field at fault."""

from __future__ import annotations

import re
import warnings

from controller.core.policy import Policy
from controller.core.queries import ALERTS_METRIC, alert_matchers
from controller.core.querytext import Findings, error, warning
from controller.core.selectors import STRING

_LABEL = re.compile(r"""^\s*([A-Za-z_][A-Za-z0-9_]*|"[^"]*"|'[^']*'|`[^`]*`)""")
_REGEX_MATCHER = re.compile(r"(?:=~|!~)\s*(" + STRING + r")\s*$")
_ESCAPES = re.compile(r"\\(.)", re.DOTALL)
# Mistakes Prometheus's regular expressions (RE2) refuse as Python's do; what Python alone refuses
# (RE2's \pL, \z, [[:alpha:]]) is left for Prometheus to judge.
_SHARED_MISTAKES = (
    "missing ), unterminated subpattern",
    "unbalanced parenthesis",
    "unterminated character set",
    "nothing to repeat",
    "multiple repeat",
    "min repeat greater than max repeat",
)
# What Python's regular expressions read and Prometheus's (RE2) do not: refused by every query.
_CLASSES = re.compile(r"\[(?:\\.|[^\]\\])*\]")  # character classes, where these signs are literal
_RE2_LACKS = (
    (re.compile(r"\(\?<?[=!]"), "a lookahead or lookbehind"),
    (re.compile(r"\(\?P=|(?<!\\)(?:\\\\)*\\[1-9]"), "a backreference"),
    (re.compile(r"\(\?>"), "an atomic group"),
    (re.compile(r"(?<!\\)[*+?}]\+"), "a possessive repeat"),
)
_COUNTS = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")
MAX_REPEAT = 1000  # Prometheus refuses a repeat count above this
_UNQUOTED = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}  # a PromQL string's escapes
_RESERVED = {"alertstate": "flagroll asks for the firing alerts itself", "__name__": "the series is ALERTS"}


def alerts_are_sound(policy: Policy) -> Findings:
    """Each alert has its own name and a selector flagroll can read: label matchers in braces (the
    name ``ALERTS`` may be written), without placeholders, none on ``alertstate`` or the metric
    name. ``{}`` is warned: every firing alert in Prometheus would hold the rollout."""
    seen: set[str] = set()
    for i, alert in enumerate(policy.spec.alerts or ()):
        at = ("spec", "alerts", i)
        if alert.name in seen:
            yield error((*at, "name"), f"alert {alert.name!r} is named twice: give each its own name")
        seen.add(alert.name)
        if "{{" in alert.selector:
            yield error(
                (*at, "selector"),
                "a selector of alerts takes no placeholders ({{flag}}, {{variant}}): it is asked as "
                "written, once for every rollout that shares it; name the alert's own labels",
            )
            continue
        matchers = alert_matchers(alert.selector)
        if matchers is None:
            yield error(
                (*at, "selector"),
                f"{alert.selector!r} is not a selector of alerts: give label matchers in braces, e.g. "
                f'\'{{service="checkout", severity="page"}}\' (the name, if any, is {ALERTS_METRIC})',
            )
            continue
        for matcher in matchers:
            label = _LABEL.match(matcher)
            name = label.group(1).strip("\"'`") if label is not None else ""
            if name in _RESERVED:
                yield error(
                    (*at, "selector"), f"a selector of alerts cannot match on {name}: {_RESERVED[name]}"
                )
            broken = _unreadable_regex(matcher)
            if broken is not None:
                yield error(
                    (*at, "selector"),
                    f"{matcher} is not a regular expression Prometheus can read ({broken}): every "
                    "query would be refused",
                )
        if not matchers:
            yield warning(
                (*at, "selector"),
                "'{}' matches every firing alert in Prometheus: any page anywhere holds this rollout",
            )


def _unreadable_regex(matcher: str) -> str | None:
    """Why the regular expression of a ``=~``/``!~`` matcher cannot be read, when it is a mistake
    that Prometheus refuses too (an unbalanced parenthesis or bracket, a repeat of nothing); None
    otherwise."""
    found = _REGEX_MATCHER.search(matcher)
    if found is None:
        return None
    literal = found.group(1)
    text = literal[1:-1]
    if literal[0] != "`":
        text = _ESCAPES.sub(lambda m: _UNQUOTED.get(m.group(1), "\\" + m.group(1)), text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(text)
    except re.error as exc:
        return str(exc) if any(str(exc).startswith(m) for m in _SHARED_MISTAKES) else None
    return _lacking(text)


def _lacking(text: str) -> str | None:
    """What of Python's regular expressions ``text`` uses that Prometheus's lack, if any."""
    outside = _CLASSES.sub("", text)
    for pattern, what in _RE2_LACKS:
        if pattern.search(outside):
            return f"{what}, which Prometheus's regular expressions do not have"
    for counted in _COUNTS.finditer(outside):
        if any(n and int(n) > MAX_REPEAT for n in counted.groups()):
            return f"a repeat count over {MAX_REPEAT}"
    return None
