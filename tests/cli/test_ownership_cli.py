"""The commands that show and change who judges a flag: status (guarded or not), adopt (a human
hand-over), validate --flags (ownership, adoption and unjudged flags against a real flag file)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from controller import cli
from controller.adapters.decisionlog import read_records
from controller.cli import common
from tests.support.environment import POLICY, Environment


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    environment = Environment(tmp_path)
    monkeypatch.setattr(common, "utc_now", lambda: environment.clock.now)
    monkeypatch.delenv("FLAGROLL_POLICIES", raising=False)
    environment.add_policy("other", "other")
    environment.cycle()  # cache and other at 1 %
    return environment


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(capsys: pytest.CaptureFixture[str], env: Environment, *extra: str) -> dict[str, dict[str, object]]:
    code, out, _ = run(capsys, "status", "--flags", str(env.flags), "--json", *extra)
    assert code == 0
    return {row["flag"]: row for row in json.loads(out)}


def test_status_says_which_exposed_flags_no_policy_judges(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rows(capsys, env)["cache"]["guarded"] is True
    (env.policies / "cache.yaml").unlink()
    live = rows(capsys, env, "--policies", str(env.policies))["cache"]  # before any cycle: from the files
    assert live["guarded"] is False
    assert "its policy 'cache' was deleted or renamed" in str(live["unguarded_reason"])
    assert rows(capsys, env)["cache"]["guarded"] is True  # no record says otherwise yet
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    recorded = rows(capsys, env)["cache"]  # without --policies: the last record says
    assert recorded["guarded"] is False
    assert str(recorded["unguarded_reason"]).startswith("UNGUARDED: 1 % exposed")
    assert rows(capsys, env)["other"]["guarded"] is True
    code, out, _ = run(capsys, "status", "--flags", str(env.flags))
    assert code == 0
    assert "UNGUARDED: 1 % exposed" in out.splitlines()[1 + ["cache", "other"].index("cache")]


def test_adopt_hands_a_flag_to_a_renamed_policy_at_once(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    renamed = POLICY.format(name="cache-renamed", key="cache")
    (env.policies / "cache.yaml").write_text(renamed)
    code, out, err = run(
        capsys, "adopt", "cache", "--policy", "cache-renamed", "--policies", str(env.policies),
        "--flags", str(env.flags), "--reason", "renamed in PR 42", "--actor", "alice",
    )  # fmt: skip
    assert code == 0, err
    assert "ADOPT" in out
    assert "by human:alice" in out
    assert "renamed in PR 42" in out
    (record,) = [r for r in read_records(env.log) if r["action"] == "adopt"]
    assert (record["actor"], record["policy"]) == ("human:alice", "cache-renamed")
    env.clock.now += timedelta(minutes=2)
    (judged,) = [r for r in env.cycle() if r["flag"] == "cache"]
    assert (judged["policy"], judged["action"], judged["guarded"]) == ("cache-renamed", "advance", True)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("nope", "no valid policy named 'nope'"),
        ("other", "rolls out flag 'other', not 'cache'"),
        ("cache", "already belongs to policy 'cache'"),
    ],
)
def test_adopt_refuses_a_policy_that_cannot_own_the_flag(
    env: Environment, capsys: pytest.CaptureFixture[str], policy: str, message: str
) -> None:
    before = env.flags.read_bytes()
    code, _, err = run(
        capsys,
        "adopt",
        "cache",
        "--policy",
        policy,
        "--policies",
        str(env.policies),
        "--flags",
        str(env.flags),
    )
    assert code == 2
    assert message in err
    assert env.flags.read_bytes() == before


def test_validate_against_the_flag_file_rejects_a_newcomer_and_shows_adoption(
    env: Environment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    document = json.loads(env.flags.read_text())
    document["flags"]["legacy"] = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
    }
    env.flags.write_text(json.dumps(document))
    env.add_policy("legacy", "legacy")
    code, out, _ = run(capsys, "validate", str(env.policies), "--flags", str(env.flags))
    assert code == 0, out
    assert (
        "legacy adopts flag legacy; it serves variant 'off' (false) to everyone: nobody's exposure changes"
        in out
    )
    env.add_policy("intruder", "cache")
    code, out, _ = run(capsys, "validate", str(env.policies), "--flags", str(env.flags))
    assert code == 1
    assert "intruder.yaml" in out
    assert "already rolled out by policy 'cache'" in out
    code, _, _ = run(capsys, "validate", str(env.policies))
    assert code == 1  # without the flag file: a plain clash, both rejected


def test_explain_leads_with_unguarded(env: Environment, capsys: pytest.CaptureFixture[str]) -> None:
    (env.policies / "cache.yaml").write_text(
        POLICY.format(name="cache", key="cache").replace("max: 0.01", "max: lots")
    )
    code, out, _ = run(capsys, "explain", "cache", "--flags", str(env.flags), "--policies", str(env.policies))
    assert code == 0
    assert out.splitlines()[1].startswith("  UNGUARDED: 1 % exposed and guardrails NOT evaluated")
    assert "cache.yaml" in out.splitlines()[1]
    assert "spec.guardrails[0].max" in out.splitlines()[1]
    code, out, _ = run(capsys, "explain", "other", "--flags", str(env.flags), "--policies", str(env.policies))
    assert "UNGUARDED" not in out


def test_diff_shows_what_adopting_an_existing_flag_does(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(env.flags.read_text())
    document["flags"]["legacy"] = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on",
    }
    env.flags.write_text(json.dumps(document))
    new = env.policies.parent / "legacy.yaml"
    new.write_text(
        POLICY.format(name="legacy", key="legacy").replace(
            "flag: {key: legacy}", "flag: {key: legacy, adopt: replace}"
        )
    )
    old = env.policies / "other.yaml"
    code, out, _ = run(capsys, "diff", str(old), str(new), "--flags", str(env.flags))
    assert code == 0
    assert (
        "adopts flag legacy, which is not flagroll's: it serves variant 'on' (true) to everyone: EXPOSURE CHANGES"
        in out
    )
