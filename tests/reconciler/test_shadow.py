"""Shadow guardrails (`dryRun: true`): evaluated and recorded every cycle, never acting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from controller.adapters.policyfile import load_text
from controller.core.queries import Reading
from controller.core.records import render
from tests.support.environment import POLICY, Environment, healthy
from tests.support.paths import EXAMPLES

SHADOW = """\
    - name: new-latency-guardrail
      query: sum(latency{{v="{{{{variant}}}}"}})
      max: 0.25
      dryRun: true
"""


def _policy(shadow: bool = True) -> str:
    text = POLICY.format(name="cache", key="cache") + SHADOW.format()
    return text if shadow else text.replace("      dryRun: true\n", "")


def _latency(value: float | None) -> Callable[[str], Reading]:
    def answer(promql: str) -> Reading:
        if promql.startswith("sum(latency"):
            return (
                Reading.of(value) if value is not None else Reading.no_data("empty result: no series matched")
            )
        return healthy(promql)

    return answer


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    environment = Environment(tmp_path)
    environment.add_policy("cache", "cache", _policy())
    return environment


def test_a_failing_shadow_guardrail_is_recorded_but_never_rolls_back(env: Environment) -> None:
    env.metrics.answer = _latency(0.9)
    assert [r["action"] for r in env.cycle()] == ["advance"]
    env.clock.now += timedelta(minutes=1)
    records = env.cycle()
    assert [r["action"] for r in records] == ["advance"]  # 1 % → 5 % regardless
    checks = cast(list[dict[str, Any]], records[0]["checks"])
    shadow = [c for c in checks if c.get("shadow")]
    assert [(c["name"], c["verdict"]) for c in shadow] == [("new-latency-guardrail", "fail")]
    assert "all 3 checks pass" in str(records[0]["reason"])  # the shadow check is not one of them
    assert "new-latency-guardrail treatment [shadow: never acts] 0.9 > 0.25" in render(records[0])


def test_the_same_guardrail_without_dry_run_rolls_back(env: Environment) -> None:
    env.add_policy("cache", "cache", _policy(shadow=False))
    env.metrics.answer = _latency(0.1)
    env.cycle()
    env.metrics.answer = _latency(0.9)
    env.clock.now += timedelta(seconds=10)
    assert [r["action"] for r in env.cycle()] == ["rollback"]


def test_a_shadow_guardrail_without_data_does_not_hold_the_rollout(env: Environment) -> None:
    env.metrics.answer = _latency(None)
    env.cycle()
    env.clock.now += timedelta(minutes=1)
    records = env.cycle()
    assert [r["action"] for r in records] == ["advance"]
    checks = cast(list[dict[str, Any]], records[0]["checks"])
    assert [c["verdict"] for c in checks if c.get("shadow")] == ["no_data"]


def test_dry_run_must_be_a_boolean() -> None:
    issues = load_text(_policy().replace("dryRun: true", "dryRun: maybe"), "p.yaml").errors
    assert any(i.field.endswith("dryRun") for i in issues)


def test_a_shadow_statistical_guardrail_takes_no_budget_from_the_others() -> None:
    text = (EXAMPLES / "checkout-http-client.yaml").read_text()
    live = load_text(text, "p.yaml").policies[0].policy
    marker = "    - name: slow-payments\n"
    assert marker in text
    shadowed = load_text(text.replace(marker, marker + "      dryRun: true\n"), "p.yaml")
    assert not shadowed.errors, shadowed.errors
    policy = shadowed.policies[0].policy
    errors, latency = (g for g in policy.spec.guardrails if g.sequential)
    assert policy.comparison_alpha(errors) == pytest.approx(policy.statistics.alpha)  # all of it
    live_latency = next(g for g in live.spec.guardrails if g.name == latency.name)
    assert policy.comparison_alpha(latency) == pytest.approx(
        live.comparison_alpha(live_latency)
    )  # as if live


def test_a_policy_whose_every_guardrail_is_a_shadow_is_rejected() -> None:
    text = POLICY.format(name="cache", key="cache").replace(
        "      max: 0.01\n", "      max: 0.01\n      dryRun: true\n"
    )
    issues = load_text(text + SHADOW.format(), "p.yaml").errors
    assert any("needs at least one guardrail that can roll it back" in i.message for i in issues)


def test_explain_does_not_ask_a_shadow_guardrail_to_pass(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller import cli

    env.metrics.answer = _latency(0.9)
    env.cycle()
    capsys.readouterr()
    assert cli.main(["explain", "cache", "--flags", str(env.flags), "--decision-log", str(env.log)]) == 0
    must = capsys.readouterr().out.split("To advance")[1].split("PromQL")[0]
    assert "new-latency-guardrail" not in must
