"""Red-team tests of what the commands say about unguarded flags (docs/how-flagroll-decides.md
"Who judges which flag", docs/operations.md "Commands", "On-call"; docs/gitops.md "Renames, copies and existing flags"): `flagroll status` says
UNGUARDED exactly when no policy judges an exposed flag, `flagroll diff` tells what the controller will
do, and a CronJob's `run --once` tells on-call. They fail until the behaviour is fixed."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from controller import cli
from controller.adapters.decisionlog import read_records
from controller.adapters.promserver import free_port
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


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def status_line(capsys: pytest.CaptureFixture[str], env: Environment, flag: str = "cache") -> str:
    code, out = run(capsys, "status", "--flags", str(env.flags))
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith(f"{flag} ")]
    return line


def test_status_says_unguarded_after_on_call_pauses_an_unguarded_flag(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    """On-call pauses a flag whose policy was deleted: it is still exposed and still judged by nobody
    (pausing does not arm any guardrail), so `status` must still say UNGUARDED. The loop records the
    next unguarded reminder only ten minutes later; `status` reads the last record, the pause."""
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(seconds=10)
    env.cycle()  # the unguarded record
    code, _ = run(
        capsys, "pause", "cache", "--flags", str(env.flags), "--reason", "looking", "--actor", "bob"
    )
    assert code == 0
    code, out = run(capsys, "status", "--flags", str(env.flags), "--json")
    (row,) = [r for r in json.loads(out) if r["flag"] == "cache"]
    assert row["guarded"] is False
    assert "UNGUARDED" in status_line(capsys, env)


def test_status_says_unguarded_when_a_newcomer_was_rejected_after_the_unguarded_record(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    """The owner's file breaks and a newcomer names its flag: the cycle records the unguarded hold,
    then the newcomer's rejection. `status` must still say UNGUARDED (docs/how-flagroll-decides.md: "`flagroll status` says
    UNGUARDED")."""
    broken = POLICY.format(name="cache", key="cache").replace("max: 0.01", "max: lots")
    (env.policies / "cache.yaml").write_text(broken)
    env.add_policy("intruder", "cache")
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    assert "UNGUARDED" in status_line(capsys, env)


def test_status_says_unguarded_for_a_flag_whose_policy_is_gone_when_the_decision_log_was_rotated(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    """The flag's own metadata says its policy has been gone since a time (flagroll.absentSince) and it
    is exposed; `status` (On-call step 1, no --policies) must not show it as a normal rollout because
    the decision log was rotated (or, with a Kubernetes store, there is none)."""
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    assert "flagroll.absentSince" in json.loads(env.flags.read_text())["flags"]["cache"]["metadata"]
    env.log.rename(env.log.with_suffix(".jsonl.1"))  # logrotate
    assert "UNGUARDED" in status_line(capsys, env)


def test_diff_says_the_old_flag_is_rolled_back_when_a_flag_key_rename_leaves_it_behind(
    env: Environment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """docs/gitops.md: a renamed spec.flag.key leaves the old flag unguarded "and rolled back after the
    grace period with onDelete: rollback"; `flagroll diff --flags` must say so, as it does for a
    deleted policy ("ROLLED BACK to 0 % if exposed, once the policy has been gone for the grace
    period")."""
    on_delete = POLICY.format(name="cache", key="cache").replace(
        "  interval: 10s\n", "  interval: 10s\n  onDelete: rollback\n"
    )
    env.add_policy("cache", "cache", on_delete)
    env.clock.now += timedelta(seconds=10)
    env.cycle()  # the flag now remembers onDelete: rollback
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(env.policies, old)
    shutil.copytree(env.policies, new)
    (new / "cache.yaml").write_text(on_delete.replace("flag: {key: cache}", "flag: {key: cache-v2}"))
    code, out = run(capsys, "diff", str(old), str(new), "--flags", str(env.flags))
    assert code == 0
    assert [line for line in out.splitlines() if "ROLLED BACK" in line and "cache" in line], out


def test_run_once_fails_while_a_flag_is_unguarded(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CronJob serves no metrics, so FlagrollRolloutUnguarded cannot fire; the chart's alerts say to
    watch its Jobs instead (kube_job_status_failed). `run --once` must then fail while an exposed flag
    is judged by nobody (docs/operations.md: "exits 1 if ... a flag could not be reconciled")."""
    (env.policies / "cache.yaml").unlink()
    code, _ = run(
        capsys,
        "--log-format", "json", "run", "--once",
        "--policies", str(env.policies), "--flags", str(env.flags),
        "--prometheus", f"http://127.0.0.1:{free_port()}", "--query-timeout", "1s",
    )  # fmt: skip
    unguarded = [r for r in read_records(env.log) if r["flag"] == "cache" and r["guarded"] is False]
    assert unguarded  # the run saw it: exposed, no policy
    assert code == 1


def test_diff_shows_what_a_renamed_policy_changes_field_by_field(
    env: Environment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """docs/gitops.md: `flagroll diff` "shows what the edit changes, field by field". A pull request
    that renames metadata.name and loosens a guardrail in the same edit hands the running flag to a
    policy with a ten times looser bound: the diff must show it, as it does without the rename."""
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(env.policies, old)
    shutil.copytree(env.policies, new)
    renamed = POLICY.format(name="cache-renamed", key="cache").replace("max: 0.01", "max: 0.1")
    (new / "cache.yaml").write_text(renamed)
    code, out = run(capsys, "diff", str(old), str(new), "--flags", str(env.flags))
    assert code == 0
    assert "spec.guardrails[0].max" in out, out
