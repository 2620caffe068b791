"""The PromQL a policy writes, checked as text, for the rules of :mod:`controller.core.policyrules`:
placeholders and ``{{variant}}``, the syntax of a counter selector, and a query against its bounds.
A finding is ``(path of the field at fault, message, severity)``; :func:`error` and :func:`warning`
build one.
"""

from __future__ import annotations

from collections.abc import Iterator

from controller.core.policy import (
    PLACEHOLDER_PATTERN,
    PLACEHOLDERS,
    RELATIVE_RULES,
    Bounds,
    Expectation,
    Guardrail,
    Path,
    placeholders,
)
from controller.core.selectors import parse_selector

Finding = tuple[Path, str, str]  # (path of the field at fault, message, "error" or "warning")
Findings = Iterator[Finding]

_NEEDS_VARIANT = "the query must contain {{variant}} so that treatment and control are measured apart"


def error(path: Path, message: str) -> Finding:
    return (path, message, "error")


def warning(path: Path, message: str) -> Finding:
    return (path, message, "warning")


def query_problems(path: Path, query: str, *, needs_variant: bool) -> Findings:
    """Placeholders other than {{variant}} and {{flag}}; a missing {{variant}} if one is needed."""
    used = placeholders(query)
    unknown = sorted({p for p in used if p not in PLACEHOLDERS})
    if unknown:
        yield error(
            path,
            f"unknown placeholder {{{{{unknown[0]}}}}}; only {{{{variant}}}} and {{{{flag}}}} "
            "are substituted",
        )
    if needs_variant and "variant" not in used:
        yield error(path, _NEEDS_VARIANT)


def bounds_problems(path: Path, bounds: Bounds, query: str | None, control: bool) -> Findings:
    """At least one bound, relative ones with a control arm, min not above max, and a query that
    fits: ``query`` is None for a template, which is split per variant by its labels."""
    rules = dict(bounds.rules())
    if not rules:
        yield error(
            path,
            "no bound set: give at least one of max, min, maxIncrease, maxDecrease, "
            "minIncrease, minDecrease, maxDelta, minDelta",
        )
    relative = sorted(RELATIVE_RULES & set(rules))
    if relative and not control:
        yield error((*path, relative[0]), f"{relative[0]} compares with the control arm; set control: true")
    if "max" in rules and "min" in rules and rules["min"] > rules["max"]:
        yield error((*path, "min"), f"min {rules['min']} is above max {rules['max']}")
    if query is None:
        return
    own_query = isinstance(bounds, Guardrail) or (
        isinstance(bounds, Expectation) and bounds.query is not None
    )
    query_path: Path = (*path, "query") if own_query else (*path, "name")
    if own_query:
        yield from query_problems(query_path, query, needs_variant=False)
    if "variant" in placeholders(query):
        return
    if relative:
        yield error(query_path, _NEEDS_VARIANT)
    elif own_query:
        yield warning(
            query_path, "the query has no {{variant}}: it measures every user, not the treatment arm"
        )


def selector_problems(path: Path, selector: str, what: str) -> Findings:
    """A counter selector ``name{labels}`` (or Prometheus 3's ``{"name", labels}``): flagroll wraps it
    in ``sum(increase(…[Ns]))``."""
    yield from query_problems(path, selector, needs_variant=True)
    plain = PLACEHOLDER_PATTERN.sub("x", selector)
    if parse_selector(plain) is None:
        yield error(
            path,
            f"{what} must be a metric selector such as "
            'http_server_requests_total{feature_flag_result_variant="{{variant}}"} (Prometheus 3 also '
            'takes quoted names: {"http.server.request.duration_count", "feature_flag.result.variant"='
            '"{{variant}}"}): '
            "flagroll adds sum(increase(…[window])) itself; no functions, ranges or operators",
        )
