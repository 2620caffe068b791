"""`flagroll diff OLD NEW`: the fields an edit changes, and its effect on the running rollout (computed
by the controller's own rebase)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from controller import cli
from controller.cli import common
from tests.support.environment import POLICY, Environment, failing


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    environment = Environment(tmp_path)
    monkeypatch.setattr(common, "utc_now", lambda: environment.clock.now)
    return environment


def _diff(
    env: Environment, capsys: pytest.CaptureFixture[str], new_text: str, *, flags: bool = True
) -> tuple[int, str]:
    old = env.policies / "cache.yaml"
    new = env.policies.parent / "new.yaml"
    new.write_text(new_text)
    capsys.readouterr()
    code = cli.main(["diff", str(old), str(new), *(["--flags", str(env.flags)] if flags else [])])
    return code, capsys.readouterr().out


def _at_five_percent(env: Environment) -> None:
    env.cycle()
    env.clock.now += timedelta(minutes=1)
    env.cycle()


OLD = POLICY.format(name="cache", key="cache")


def test_a_looser_guardrail_continues_from_the_current_step(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    _at_five_percent(env)
    code, out = _diff(env, capsys, OLD.replace("max: 0.01", "max: 0.02"))
    assert code == 0
    assert "~ spec.guardrails[0].max: 0.01 → 0.02" in out
    assert "afterwards: progressing, step 2/2 at 5 % (now progressing at 5 %)" in out
    assert ": continuing at 5 % (step 2/2)" in out


def test_removing_the_step_it_is_at_lowers_exposure(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    _at_five_percent(env)
    code, out = _diff(env, capsys, OLD.replace("    - {percent: 5, hold: 1m}\n", ""))
    assert code == 0
    assert "- spec.steps[1].percent: 5" in out
    assert "exposure is LOWERED from 5 % to 1 % (adjust)" in out


def test_a_rolled_back_rollout_restarts_on_a_new_revision(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    env.metrics.answer = failing
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    _, out = _diff(env, capsys, OLD.replace("max: 0.01", "max: 0.02"))
    assert "the rolled-back rollout restarts from the first step" in out


def test_a_comment_is_not_a_new_revision(env: Environment, capsys: pytest.CaptureFixture[str]) -> None:
    _at_five_percent(env)
    _, out = _diff(env, capsys, "# reviewed by the team\n" + OLD)
    assert "no change in meaning" in out
    assert "same revision" in out
    assert "nothing changes (progressing at 5 %)" in out


def test_a_stopped_rollout_waits_for_resume(env: Environment, capsys: pytest.CaptureFixture[str]) -> None:
    _at_five_percent(env)
    assert cli.main(["stop", "cache", "--reason", "x", "--flags", str(env.flags)]) == 0
    _, out = _diff(env, capsys, OLD.replace("max: 0.01", "max: 0.02"))
    assert "stopped by a human: nothing changes until `flagroll resume`" in out


def test_an_invalid_edit_exits_1_with_its_problems(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _diff(env, capsys, OLD.replace("max: 0.01", "max: lots"), flags=False)
    assert code == 1
    assert "new.yaml:" in out
    assert "spec.guardrails[0].max" in out


def test_a_renamed_policy_is_a_hand_over_not_a_new_rollout(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = _diff(
        env, capsys, OLD.replace("metadata: {name: cache}", "metadata: {name: renamed}"), flags=False
    )
    assert "policy renamed (flag cache)" in out
    assert "renamed from policy 'cache'" in out
    assert "takes it over once 'cache' has been gone for the grace period" in out
    assert "flagroll adopt cache --policy renamed" in out
    assert "policy cache: removed; flag cache goes to the policy that names it now" not in out  # no flags


def test_with_the_flag_file_a_rename_shows_the_hand_over_and_the_unguarded_wait(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    _at_five_percent(env)
    _, out = _diff(env, capsys, OLD.replace("metadata: {name: cache}", "metadata: {name: renamed}"))
    assert "renamed from policy 'cache'" in out
    assert "continuing at 5 %" in out  # after the hand-over, the same ramp goes on
    assert "ROLLED BACK" not in out
    assert "policy cache: removed; flag cache goes to the policy that names it now" in out
    assert "flags no policy would judge:" in out
    assert "cache (progressing at 5 %, UNGUARDED)" in out


def test_a_renamed_flag_key_leaves_the_old_flag_unguarded_and_says_so(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    _at_five_percent(env)
    _, out = _diff(env, capsys, OLD.replace("flag: {key: cache}", "flag: {key: cache-v2}"))
    assert "policy cache (flag cache-v2)" in out
    assert "cache (progressing at 5 %, UNGUARDED): its policy 'cache' now rolls out flag 'cache-v2'" in out


def test_a_removed_policy_is_said_to_leave_its_flag_exposed_and_unguarded(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = _diff(env, capsys, POLICY.format(name="other", key="other"), flags=False)
    assert "policy cache: removed; flag cache is left as it is, and is UNGUARDED" in out


def test_an_administrative_edit_is_not_a_new_revision(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    env.metrics.answer = failing
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    edited = OLD.replace("owner: sre-lead", "owner: platform-team").replace(
        "mechanism: A cache removes repeated I/O.", "mechanism: Fewer round trips."
    )
    code, out = _diff(env, capsys, edited)
    assert code == 0
    assert "~ spec.owner: 'sre-lead' → 'platform-team'" in out
    assert "administrative fields only: not a new revision" in out
    assert re.search(r"revision \w+ → ", out) is None
    assert "restarts" not in out
    assert "owner 'sre-lead' → 'platform-team'" in out
    assert "afterwards: rolled_back at 0 %; not restarted" in out


def test_an_old_version_that_does_not_load_is_said_so_rather_than_shown_as_a_new_policy(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    """OLD is what runs now; when it does not load (a typo, or a template in a file left out), the
    policy is not new: the output must say OLD's problem rather than only 'new policy'."""
    (env.policies / "cache.yaml").write_text(OLD.replace("max: 0.01", "max: lots"))

    code, out = _diff(env, capsys, OLD, flags=False)

    assert code == 0
    assert "cache.yaml:" in out
    assert "spec.guardrails[0].max" in out
    assert "OLD does not load" in out
