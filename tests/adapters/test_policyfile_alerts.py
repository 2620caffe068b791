"""``spec.alerts`` in a policy file: a valid list loads, each mistake is one error at its file, line
and field; the JSON Schema describes it. The alerts start at line 24 of ``BASE``."""

from __future__ import annotations

import pytest

from controller.core.policy import json_schema
from tests.core.test_policy_schema import schema_errors
from tests.support.policytext import BASE, load, plain_data, shown, the_error, the_policy

# Lines: alerts 24, first alert 25 (name), its selector 26, its onFiring 27, second alert 28.
VALID = """\
  alerts:
    - name: checkout-pages
      selector: '{service="checkout", severity="page"}'
      onFiring: hold
    - name: platform-down
      selector: '{team="platform", severity=~"page|critical"}'
      onFiring: rollback
"""


def test_valid_alerts_load_with_hold_as_the_default() -> None:
    policy = the_policy(load(BASE + VALID.replace("      onFiring: hold\n", "")))
    alerts = policy.spec.alerts
    assert alerts is not None
    assert [(a.name, a.on_firing) for a in alerts] == [
        ("checkout-pages", "hold"),
        ("platform-down", "rollback"),
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        (
            "name: platform-down",
            "name: checkout-pages",
            28,
            "spec.alerts[1].name",
            "alert 'checkout-pages' is named twice: give each its own name",
        ),
        (
            """'{service="checkout", severity="page"}'""",
            """'{service="checkout"'""",
            26,
            "spec.alerts[0].selector",
            """'{service="checkout"' is not a selector of alerts: give label matchers in braces, e.g. """
            """'{service="checkout", severity="page"}' (the name, if any, is ALERTS)""",
        ),
        (
            """'{service="checkout", severity="page"}'""",
            """'up{service="checkout"}'""",
            26,
            "spec.alerts[0].selector",
            """'up{service="checkout"}' is not a selector of alerts: give label matchers in braces, e.g. """
            """'{service="checkout", severity="page"}' (the name, if any, is ALERTS)""",
        ),
        (
            """'{service="checkout", severity="page"}'""",
            """'{service="checkout", alertstate="pending"}'""",
            26,
            "spec.alerts[0].selector",
            "a selector of alerts cannot match on alertstate: flagroll asks for the firing alerts itself",
        ),
        (
            """'{service="checkout", severity="page"}'""",
            """'{flag="{{flag}}"}'""",
            26,
            "spec.alerts[0].selector",
            "a selector of alerts takes no placeholders ({{flag}}, {{variant}}): it is asked as written, "
            "once for every rollout that shares it; name the alert's own labels",
        ),
        (
            """'{team="platform", severity=~"page|critical"}'""",
            """'{team="platform", severity=~"(page|critical"}'""",
            29,
            "spec.alerts[1].selector",
            'severity=~"(page|critical" is not a regular expression Prometheus can read '
            "(missing ), unterminated subpattern at position 0): every query would be refused",
        ),
        (
            """'{team="platform", severity=~"page|critical"}'""",
            """'{team="platform", route!~'[a-z'}'""".replace("'[", '"[').replace("'}", '"}'),
            29,
            "spec.alerts[1].selector",
            'route!~"[a-z" is not a regular expression Prometheus can read '
            "(unterminated character set at position 0): every query would be refused",
        ),
        (
            "onFiring: hold",
            "onFiring: page",
            27,
            "spec.alerts[0].onFiring",
            "Input should be 'hold' or 'rollback' (got 'page')",
        ),
        (
            "    - name: checkout-pages\n",
            "    - name: ''\n",
            25,
            "spec.alerts[0].name",
            "String should have at least 1 character",
        ),
    ],
)
def test_each_mistake_is_an_error_at_its_line_and_field(
    old: str, new: str, line: int, field: str, message: str
) -> None:
    text = BASE + VALID.replace(old, new, 1)
    assert text != BASE + VALID
    issue = the_error(load(text))
    assert (issue.line, issue.field, issue.message) == (line, field, message), shown(load(text))
    assert str(issue).startswith(f"p.yaml:{line}:")


def test_a_selector_matching_every_alert_is_warned() -> None:
    result = load(BASE + VALID.replace("""'{service="checkout", severity="page"}'""", "'{}'"))
    the_policy(result)
    assert [(w.field, w.message) for w in result.warnings] == [
        (
            "spec.alerts[0].selector",
            "'{}' matches every firing alert in Prometheus: any page anywhere holds this rollout",
        )
    ]


def test_the_json_schema_describes_the_alerts() -> None:
    schema = json_schema()
    assert schema_errors(schema, plain_data(BASE + VALID), schema) == []
    alert = schema["$defs"]["Alert"]
    assert set(alert["properties"]) == {"name", "selector", "onFiring"}
    assert alert["required"] == ["name", "selector"]
    bad = plain_data(BASE + VALID.replace("onFiring: hold", "onFiring: page"))
    assert schema_errors(alert, bad["spec"]["alerts"][0], schema) == [
        ".onFiring: 'page' is not one of ['hold', 'rollback']"
    ]


@pytest.mark.parametrize(
    "selector",
    [
        r"""'{route=~"/a\\(x\\)", team="platform"}'""",  # an escaped parenthesis
        r"""'{route=~`/a\(x\)`}'""",  # a raw string
        r"""'{route=~"\\pL+", zone=~"[[:alpha:]]+"}'""",  # RE2's classes: Prometheus judges them
        r"""'{route=~"a{2}", zone=~"x|"}'""",
    ],
)
def test_regular_expressions_prometheus_reads_are_not_refused(selector: str) -> None:
    result = load(BASE + VALID.replace("""'{team="platform", severity=~"page|critical"}'""", selector))
    the_policy(result)
    assert result.warnings == []


@pytest.mark.parametrize(
    ("regex", "why"),
    [
        ("(?=page)p.*", "a lookahead or lookbehind, which Prometheus's regular expressions do not have"),
        ("(?<=x)page", "a lookahead or lookbehind, which Prometheus's regular expressions do not have"),
        ("(p)\\\\1", "a backreference, which Prometheus's regular expressions do not have"),
        ("(?P<s>p)(?P=s)", "a backreference, which Prometheus's regular expressions do not have"),
        ("pa++ge", "a possessive repeat, which Prometheus's regular expressions do not have"),
        ("(?>page)", "an atomic group, which Prometheus's regular expressions do not have"),
        ("p{1001}", "a repeat count over 1000"),
        ("p{2,1}", "min repeat greater than max repeat at position 2"),
    ],
)
def test_what_only_python_reads_is_refused_as_prometheus_would(regex: str, why: str) -> None:
    """Prometheus's regular expressions lack lookarounds, backreferences, atomic groups, possessive
    repeats and counts over 1000: a selector using them would be refused every cycle (and with
    ``onError: rollback`` roll the rollout back for a typo in an administrative field)."""
    selector = '\'{team="platform", severity=~"' + regex + "\"}'"
    issue = the_error(
        load(BASE + VALID.replace("""'{team="platform", severity=~"page|critical"}'""", selector))
    )
    assert issue.field == "spec.alerts[1].selector"
    assert issue.message.endswith(f"({why}): every query would be refused"), issue.message
