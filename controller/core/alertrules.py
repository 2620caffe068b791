"""The rules of ``spec.alerts`` (:func:`alerts_are_sound`), one of the cross-field rules that
:mod:`controller.core.policyrules` runs: each finding carries the path of the field at fault."""

from __future__ import annotations

import re

from controller.core.policy import Policy
from controller.core.queries import ALERTS_METRIC, alert_matchers
from controller.core.querytext import Findings, error, warning

_LABEL = re.compile(r"""^\s*([A-Za-z_][A-Za-z0-9_]*|"[^"]*"|'[^']*'|`[^`]*`)""")
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
        if not matchers:
            yield warning(
                (*at, "selector"),
                "'{}' matches every firing alert in Prometheus: any page anywhere holds this rollout",
            )
