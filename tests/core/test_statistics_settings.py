"""The ranges of the statistical settings: what the comparison's and the sample-ratio test's
arithmetic cannot carry is refused when the policy is loaded, at the line of the field."""

from __future__ import annotations

import pytest

from controller.adapters.policyfile import load_text
from controller.core.policy import Policy, json_schema

SELECT = 'route="/pay",feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"'
POLICY = f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: pay}}
spec:
  owner: payments-sre
  aim: Cut p95 of /pay from 800ms to 500ms.
  mechanism: Pooled connections avoid TLS handshakes.
  flag: {{key: pay}}
  control: true
  interval: 30s
  steps:
    - {{percent: 5, hold: 10m}}
  guardrails:
    - name: errors
      errorRatio:
        errors: http_server_requests_total{{{SELECT},code=~"5.."}}
        requests: http_server_requests_total{{{SELECT}}}
      maxDelta: 0.001
    - name: slow
      latency:
        histogram: http_server_request_duration_seconds{{{SELECT}}}
        slowerThan: 300ms
      maxIncrease: 0.1
{{extra}}"""

STATISTICS = """\
  statistics:
    alpha: 0.01
    exposure: feature_flag_evaluations_total{feature_flag_key="{{flag}}",feature_flag_result_variant="{{variant}}"}
"""


def issues(text: str) -> list[str]:
    return [str(i) for i in load_text(text, "pay.yaml").issues]


def policy(extra: str) -> Policy:
    loaded = load_text(POLICY.replace("{extra}", extra), "pay.yaml")
    assert not loaded.errors, [str(i) for i in loaded.errors]
    return loaded.policies[0].policy


def test_the_policy_of_these_tests_is_valid() -> None:
    assert policy(STATISTICS).comparisons == 2


@pytest.mark.parametrize("field", ["alpha", "sampleRatioAlpha"])
@pytest.mark.parametrize("value", ["1.0e-170", "1.0e-7", "0.21", "-0.01"])
def test_budgets_outside_a_sane_range_are_refused_at_their_line(field: str, value: str) -> None:
    # A budget of 1e-170 would pass (0, 0.2] and then underflow the boundary's arithmetic.
    text = POLICY.replace("{extra}", f"  statistics:\n    {field}: {value}\n")
    line = text.splitlines().index(f"    {field}: {value}") + 1
    found = issues(text)
    assert any(i.startswith(f"pay.yaml:{line}:") and f"spec.statistics.{field}:" in i for i in found), found


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("    alpha: 0.01\n", "    expectedSamples: 10000000000000\n", "spec.statistics.expectedSamples", ""),
        (
            "      maxDelta: 0.001\n",
            "      maxIncrease: 1001\n",
            "spec.guardrails[0].maxIncrease",
            "at most 1000",
        ),
        (
            "      maxIncrease: 0.1\n",
            "      maxIncrease: 1.0e+200\n",
            "spec.guardrails[1].maxIncrease",
            "at most 1000",
        ),
    ],
    ids=["expectedSamples", "errors-maxIncrease", "slow-maxIncrease"],
)
def test_settings_the_arithmetic_cannot_carry_are_refused_at_their_line(
    old: str, new: str, field: str, message: str
) -> None:
    # An expectedSamples of 1e400 overflowed a float; a maxIncrease of 1e200 squared is infinite.
    text = POLICY.replace("{extra}", STATISTICS).replace(old, new)
    line = text.splitlines().index(new.rstrip("\n")) + 1
    found = issues(text)
    assert any(i.startswith(f"pay.yaml:{line}:") and f"{field}:" in i and message in i for i in found), found


def test_a_thousandfold_increase_is_still_a_bound() -> None:
    p = policy(
        STATISTICS.replace("    alpha: 0.01\n", "    alpha: 0.01\n    expectedSamples: 1000000000000\n")
    )
    assert p.statistics.expected_samples == 10**12
    text = POLICY.replace("{extra}", STATISTICS).replace(
        "      maxIncrease: 0.1\n", "      maxIncrease: 1000\n"
    )
    assert not issues(text)


@pytest.mark.parametrize("value", ["1.0e-6", "0.2"])
def test_budgets_at_the_ends_of_the_range_are_accepted(value: str) -> None:
    p = policy(f"  statistics:\n    alpha: {value}\n    sampleRatioAlpha: {value}\n")
    assert p.statistics.alpha == float(value)
    assert p.statistics.sample_ratio_alpha == float(value)


def test_the_json_schema_bounds_the_budgets() -> None:
    statistics = json_schema()["$defs"]["Statistics"]["properties"]
    for field in ("alpha", "sampleRatioAlpha"):
        assert statistics[field]["minimum"] == 1e-6
        assert statistics[field]["maximum"] == 0.2


@pytest.mark.parametrize("value", ["1.0e-320", "0.0009"])
def test_a_weight_that_would_starve_a_rule_of_its_budget_is_refused_at_its_line(value: str) -> None:
    """A tiny alphaWeight gives its rule a share of alpha far below the budget's own floor (1e-320
    left it about 1e-322): weights run from 0.001 to 1000."""
    text = POLICY.replace("{extra}", "").replace(
        "      maxDelta: 0.001\n", f"      maxDelta: 0.001\n      alphaWeight: {value}\n"
    )
    line = text.splitlines().index(f"      alphaWeight: {value}") + 1
    found = issues(text)
    assert any(i.startswith(f"pay.yaml:{line}:") and "alphaWeight" in i for i in found), found


def test_the_smallest_weight_is_accepted() -> None:
    text = POLICY.replace("{extra}", "").replace(
        "      maxDelta: 0.001\n", "      maxDelta: 0.001\n      alphaWeight: 0.001\n"
    )
    assert not [i for i in issues(text) if "alphaWeight" in i]
