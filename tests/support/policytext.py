"""A valid policy, ``BASE``, whose line numbers are listed beside it, and the helpers the policy tests
use to change one thing in it (:func:`edit`), load it and look at what the loader found.

Expected line numbers in the tests are counted from the listing below.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import yaml

from controller.adapters.policyfile import PolicySet, load_text
from controller.core.errors import Issue
from controller.core.policy import Policy

# Line numbers of BASE, for counting:
#  1 apiVersion   5 spec         9 flag         13 - percent: 1   17 traffic       21 - name: errors
#  2 kind         6 owner       10 key          14   hold: 5m     18 query         22   query
#  3 metadata     7 aim         11 interval     15 - percent: 5   19 minSamples    23   max
#  4 name         8 mechanism   12 steps        16   hold: 10m    20 guardrails
BASE = textwrap.dedent(
    """\
    apiVersion: flagroll/v1
    kind: RolloutPolicy
    metadata:
      name: demo
    spec:
      owner: sre-lead
      aim: Cut p95 from 450ms to 250ms.
      mechanism: A cache removes repeated I/O.
      flag:
        key: demo
      interval: 30s
      steps:
        - percent: 1
          hold: 5m
        - percent: 5
          hold: 10m
      traffic:
        query: sum(requests_total{v="{{variant}}"})
        minSamples: 100
      guardrails:
        - name: errors
          query: sum(errors_total{v="{{variant}}"})
          max: 0.01
    """
)
assert BASE.count("\n") == 23

# Appended after line 23: checkpoint at 24, expect 25, "- name" 26, max 27.
CHECKPOINT = "  checkpoint:\n    expect:\n      - name: errors\n        max: 0.02\n"
# Replaces line 11 and inserts one line: the new field is at line 11 and `interval` moves to 12.
INTERVAL = "  interval: 30s\n"


def edit(*changes: tuple[str, str], text: str = BASE) -> str:
    """Apply ``(old, new)`` replacements, each of which must match exactly once."""
    for old, new in changes:
        assert text.count(old) == 1, f"{old!r} must occur exactly once"
        text = text.replace(old, new)
    return text


def before_interval(line: str) -> tuple[str, str]:
    return INTERVAL, f"  {line}\n{INTERVAL}"


def load(text: str) -> PolicySet:
    result = load_text(text, "p.yaml")
    assert isinstance(result, PolicySet)
    return result


def shown(result: PolicySet) -> list[str]:
    return [str(issue) for issue in result.issues]


def the_error(result: PolicySet) -> Issue:
    """The one error in ``result``; the policy must have been rejected."""
    assert len(result.errors) == 1, shown(result)
    assert result.policies == [], shown(result)
    return result.errors[0]


def the_policy(result: PolicySet) -> Policy:
    assert result.errors == [], shown(result)
    assert len(result.policies) == 1, shown(result)
    return result.policies[0].policy


# --- a YAML 1.2 reader for the schema checks (on/off stay strings, dates become text) -----------------


class Yaml12Loader(yaml.SafeLoader):
    pass


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def plain_data(text: str) -> Any:
    """``text`` as JSON-compatible data, read with YAML 1.2 booleans."""
    return json.loads(json.dumps(yaml.load(text, Loader=Yaml12Loader), default=str))
