"""`flagroll approve`, `status` and `explain` for a rollout awaiting approval, on a real flag file and
decision log written by cycles of the reconciler at an injected clock; the notification and the gauge
it drives."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import cli
from controller.adapters.decisionlog import read_records
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore, FeatureFlagStore
from controller.adapters.notify import events_from
from controller.adapters.telemetry import Telemetry
from controller.core.flagd import read_state, write_flag
from controller.core.state import RolloutState, Status
from tests.support.environment import Environment, failing
from tests.support.gated import GATED, gated_environment
from tests.support.kubefake import FakeKubeApi


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    return gated_environment(tmp_path, monkeypatch)


def awaiting(env: Environment) -> list[dict[str, object]]:
    """Start the rollout, let its first step's hold pass: it awaits approval. The records of the cycles."""
    records = env.cycle()
    env.clock.now += timedelta(minutes=2)
    records += env.cycle()
    assert env.actions() == ["advance", "hold"]
    return records


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _approve(env: Environment, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    return _cli(capsys, "approve", "cache", "--flags", str(env.flags), "--decision-log", str(env.log), *extra)


def test_approve_records_the_actor_and_the_next_cycle_advances(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    awaiting(env)
    env.cycle()  # still waiting: nothing moves
    assert env.percent() == 1
    code, out, _ = _approve(env, capsys, "--reason", "dashboards look fine", "--actor", "ana")
    assert code == 0
    assert "APPROVE" in out
    record = list(read_records(env.log))[-1]
    assert (record["action"], record["actor"], record["to_percent"]) == ("approve", "human:ana", 1)
    assert "approved by a human: dashboards look fine" in str(record["reason"])
    state = read_state(json.loads(env.flags.read_text()), "cache")
    assert state is not None
    assert state.approved_step == 0
    assert state.awaiting_approval_since is None
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    assert env.actions()[-1] == "advance"
    assert env.percent() == 5


def test_approve_needs_a_reason(env: Environment, capsys: pytest.CaptureFixture[str]) -> None:
    awaiting(env)
    with pytest.raises(SystemExit) as exited:
        _approve(env, capsys)
    assert exited.value.code == 2
    assert "--reason" in capsys.readouterr().err
    code, _, err = _approve(env, capsys, "--reason", "  ")
    assert code == 2
    assert "needs --reason" in err


def test_approve_refuses_a_rollout_that_is_not_awaiting_approval(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()  # started; the hold is not over
    before = env.flags.read_text()
    code, _, err = _approve(env, capsys, "--reason", "early")
    assert code == 1
    assert "cannot approve a rollout that is progressing" in err
    assert env.flags.read_text() == before
    assert env.actions() == ["advance"]
    env.clock.now += timedelta(minutes=2)
    env.cycle()
    assert _approve(env, capsys, "--reason", "ok")[0] == 0
    code, _, err = _approve(env, capsys, "--reason", "twice")
    assert code == 1
    assert "approved already" in err


def test_approve_an_unknown_flag_is_a_usage_error(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    awaiting(env)
    code, _, err = _cli(capsys, "approve", "nope", "--flags", str(env.flags), "--reason", "x")
    assert code == 2
    assert "managed flags: cache" in err


def test_status_and_explain_say_it_awaits_approval(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    awaiting(env)
    env.clock.now += timedelta(minutes=5)
    logged = ("--flags", str(env.flags), "--decision-log", str(env.log))
    code, out, _ = _cli(capsys, "status", *logged)
    assert code == 0
    row = out.splitlines()[1]
    assert row.split()[:4] == ["cache", "1%", "1/2", "awaiting_approval"]
    assert (
        "WAITING: awaiting approval of step 1/2 at 1 %: approve with `flagroll approve cache --reason …`"
        in row
    )
    rows = json.loads(_cli(capsys, "status", "--json", *logged)[1])
    assert rows[0]["status"] == "awaiting_approval"
    assert rows[0]["waiting"]["reason"] == "approval"
    assert rows[0]["waiting"]["since"] is not None
    for extra in ((), ("--policies", str(env.policies))):
        out = _cli(capsys, "explain", "cache", *logged, *extra)[1]
        assert out.startswith("cache: awaiting_approval, step 1/2 at 1 %")
        must = out.split("To advance")[1]
        assert "- approve with `flagroll approve cache --reason …` (waiting 5m)" in must
    assert _approve(env, capsys, "--reason", "ok")[0] == 0
    rows = json.loads(_cli(capsys, "status", "--json", *logged)[1])
    assert rows[0]["status"] == "progressing"
    assert rows[0]["waiting"] is None


def test_a_failing_guardrail_rolls_back_while_awaiting_approval(env: Environment) -> None:
    awaiting(env)
    env.metrics.answer = failing
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    assert env.actions()[-1] == "rollback"
    assert env.percent() == 0


def test_the_notification_fires_once_when_the_wait_begins(env: Environment) -> None:
    records = awaiting(env)
    for _ in range(3):
        env.clock.now += timedelta(seconds=10)
        records += env.cycle()
    told = [e for e in events_from(records) if e.kind == "awaiting_approval"]
    assert len(told) == 1
    assert told[0].flag == "cache"
    assert "awaiting approval of step 1/2 at 1 %" in told[0].summary


def test_the_gauge_says_it_waits_for_approval(env: Environment) -> None:
    telemetry = Telemetry(clock=lambda: env.clock.now.timestamp())
    records = awaiting(env)
    telemetry.recorded(records)
    state = read_state(json.loads(env.flags.read_text()), "cache")
    assert state is not None
    telemetry.cycle_done(
        ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states={"cache": state}
    )
    text = telemetry.exposition().decode()
    assert 'flagroll_rollout_waiting{flag="cache",reason="approval"} 1.0' in text
    assert 'flagroll_rollout_waiting{flag="cache",reason="window"} 0.0' in text


# --- on a Kubernetes store -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["configmap", "featureflag"])
def test_approve_works_on_a_kubernetes_store(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moment = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    waiting = RolloutState("cache", "abc123def456", Status.PROGRESSING, 1, 3, 5.0, True, moment, moment)
    waiting = waiting.moved(awaiting_approval_since=moment)
    fake = FakeKubeApi(token="cli-token")
    resource = "configmaps" if kind == "configmap" else "featureflags"
    fake.add(resource, "team", "flags", {"data": {}} if kind == "configmap" else {"spec": {}})
    store = ConfigMapFlagStore if kind == "configmap" else FeatureFlagStore
    seeded = store(fake.client("team"), ObjectRef("team", "flags"))
    snapshot = seeded.read()
    seeded.write(write_flag(snapshot.document, "cache", waiting), snapshot, ["cache"])
    log = tmp_path / "decisions.jsonl"
    with fake.serve() as url:
        kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig", url, namespace="team")
        args = ["--flag-store", kind, "--flag-object", "flags", "--kubeconfig", str(kubeconfig)]
        code = cli.main(
            ["approve", "cache", "--reason", "go", "--actor", "ana", "--decision-log", str(log), *args]
        )
        assert code == 0
        assert "APPROVE" in capsys.readouterr().out
        state = read_state(seeded.read().document, "cache")
        assert state is not None
        assert (state.approved_step, state.awaiting_approval_since) == (1, None)
        assert cli.main(["approve", "cache", "--reason", "again", *args]) == 1
        assert "approved already" in capsys.readouterr().err
    [record] = list(read_records(log))
    assert (record["action"], record["actor"]) == ("approve", "human:ana")


def test_explain_says_an_approved_step_moves_at_the_next_evaluation(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    awaiting(env)
    assert _approve(env, capsys, "--reason", "ok")[0] == 0
    out = _cli(capsys, "explain", "cache", "--flags", str(env.flags), "--decision-log", str(env.log))[1]
    assert out.startswith("cache: progressing, step 1/2 at 1 %")
    assert "- approved by a human: the move after this step is taken at the next evaluation" in out
    assert "approve --reason" not in out


def test_an_unknown_approval_value_is_an_error_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "cache.yaml"
    policy.write_text(GATED.replace("approval: required", "approval: requird"))
    code, out, _ = _cli(capsys, "validate", str(policy))
    assert code == 1
    assert (
        f"{policy}:11:30: spec.steps[0].approval: Input should be 'required' or 'none' (got 'requird')" in out
    )
    policy.write_text(GATED.replace("approval: required", "approval: yes"))
    assert "(got 'yes')" in _cli(capsys, "validate", str(policy))[1]
