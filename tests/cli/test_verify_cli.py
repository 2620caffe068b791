"""Verified serving from the command line: ``flagroll run --verify-ofrep`` (its options, a bearer
token, a run with ``--once`` waiting for its verification), and what ``status`` and ``explain`` say
about the last verification. The flag server is the in-process fake of tests/support/ofrepfake.py."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.promserver import free_port
from controller.cli import build_parser, main
from controller.core.commands import stop
from controller.core.flagd import read_state, render_document, write_flag
from controller.core.serving import (
    Answer,
    Check,
    Expectation,
    Outcome,
    Verification,
    judge,
    tally,
    verification_record,
)
from controller.core.state import RolloutState
from tests.support.environment import RAMP, Environment
from tests.support.ofrepfake import OfrepFake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_once_verifies_an_on_delete_rollback_with_a_bearer_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = Environment(tmp_path)
    env.add_policy(
        "cache", "cache", RAMP.replace("  interval: 10s\n", "  interval: 10s\n  onDelete: rollback\n")
    )
    env.cycle()  # 20 %
    (env.policies / "cache.yaml").unlink()
    env.add_policy("other", "other")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    capsys.readouterr()
    with OfrepFake(env.flags) as fake:
        code, out, _ = run(
            capsys,
            "--log-format",
            "json",
            "run",
            "--once",
            "--policies",
            str(env.policies),
            "--flags",
            str(env.flags),
            "--prometheus",
            f"http://127.0.0.1:{free_port()}",
            "--on-delete-grace",
            "0s",
            "--on-delete-grace-cycles",
            "1",
            "--verify-ofrep",
            fake.url,
            "--verify-sample",
            "200",
            "--verify-timeout",
            "10s",
            "--verify-ofrep-bearer-token-file",
            str(token),
        )
    assert code == 0
    cache = [r for r in read_records(env.log) if r["flag"] == "cache"]
    assert [r["action"] for r in cache] == ["advance", "rollback", "verify"]
    serving = cache[-1]["serving"]
    assert (serving["outcome"], serving["keys"], serving["served"]) == ("confirmed", 200, {"off": 200})
    assert {headers["Authorization"] for headers in fake.headers} == {"Bearer s3cret"}
    lines = [json.loads(line) for line in out.splitlines()]
    (started,) = [line for line in lines if line["event"] == "started"]
    assert started["verify_ofrep"] == fake.url
    assert "s3cret" not in out


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--verify-ofrep", "flagd:8016"], "--verify-ofrep 'flagd:8016': give an http:// or https:// URL"),
        (
            ["--verify-ofrep", "http://flagd:8016", "--verify-ofrep-bearer-token-file", "/nonexistent"],
            "cannot read",
        ),
    ],
)
def test_bad_verify_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, options: list[str], said: str
) -> None:
    env = Environment(tmp_path)
    code, _, err = run(
        capsys,
        "run",
        "--once",
        "--policies",
        str(env.policies),
        "--flags",
        str(env.flags),
        "--prometheus",
        "http://127.0.0.1:9",
        *options,
    )
    assert code == 2
    assert said in err
    assert not env.flags.exists()


def test_verify_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGROLL_VERIFY_OFREP", "http://127.0.0.1:8016")
    monkeypatch.setenv("FLAGROLL_VERIFY_TIMEOUT", "45s")
    monkeypatch.setenv("FLAGROLL_VERIFY_SAMPLE", "250")
    monkeypatch.setenv("FLAGROLL_VERIFY_SHARE", "false")
    args = build_parser().parse_args(["run"])
    assert (args.verify_ofrep, args.verify_timeout, args.verify_sample, args.verify_share) == (
        "http://127.0.0.1:8016",
        45.0,
        250,
        False,
    )
    monkeypatch.delenv("FLAGROLL_VERIFY_SHARE")
    assert build_parser().parse_args(["run"]).verify_share is True
    assert build_parser().parse_args(["run", "--no-verify-share"]).verify_share is False


# status and explain -----------------------------------------------------------------------------


def rolled_back_with_a_verification(tmp_path: Path, outcome: Outcome) -> tuple[Environment, RolloutState]:
    env = Environment(tmp_path)
    env.add_policy("cache", "cache", RAMP)
    env.cycle()  # 20 %
    document = json.loads(env.flags.read_text())
    exposed = read_state(document, "cache")
    assert exposed is not None
    env.clock.now += timedelta(seconds=10)
    stopped = stop(exposed, "paged", env.clock.now).after
    env.flags.write_text(render_document(write_flag(document, "cache", stopped, keep_segment=True)))
    DecisionLog(env.log).append(
        [
            {
                "time": "2026-11-21T12:00:10.000Z",
                "flag": "cache",
                "action": "stop",
                "reason": "stopped by a human: paged",
            }
        ]
    )
    wanted = Expectation("cache", Check.OFF, stopped, 20.0)
    served = [Answer.served("off")] * 988 + [Answer.served("on")] * 12
    if outcome is Outcome.CONFIRMED:
        served = [Answer.served("off")] * 1000
    round_ = tally(served, 1000)
    verification = Verification(
        wanted, outcome, "http://flagd:8016", 1000, 4, 1.2, 30.0, round_, judge(wanted, round_), seconds=1.2
    )
    DecisionLog(env.log).append([verification_record(verification, env.clock.now + timedelta(seconds=2))])
    return env, stopped


def test_status_says_loudly_when_the_flag_server_does_not_serve_the_stop(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env, _ = rolled_back_with_a_verification(tmp_path, Outcome.UNVERIFIED)
    capsys.readouterr()
    code, out, _ = run(capsys, "status", "--flags", str(env.flags))
    assert code == 0
    _, row = out.splitlines()
    assert row.split()[:5] == ["cache", "0%", "-/2", "stopped", "stop"]  # the last decision, not the check
    assert "SERVING NOT VERIFIED: the flag server serves on to 12 of 1000 sampled keys" in row
    code, out, _ = run(capsys, "status", "--flags", str(env.flags), "--json")
    (row_json,) = json.loads(out)
    assert row_json["last_action"] == "stop"
    assert row_json["serving"]["outcome"] == "unverified"
    assert row_json["serving"]["check"] == "off"


def test_status_shows_a_confirmation_and_forgets_a_verification_once_the_flag_moved(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env, stopped = rolled_back_with_a_verification(tmp_path, Outcome.CONFIRMED)
    _, out, _ = run(capsys, "status", "--flags", str(env.flags))
    assert "serving verified 1.2s after the write: the flag server serves off to all 1000 sampled keys" in out
    document = json.loads(env.flags.read_text())
    env.clock.now += timedelta(minutes=1)
    moved = stopped.moved(percent=20.0, step=0, step_started_at=env.clock.now, updated_at=env.clock.now)
    env.flags.write_text(render_document(write_flag(document, "cache", moved, keep_segment=True)))
    _, out, _ = run(capsys, "status", "--flags", str(env.flags), "--json")
    assert json.loads(out)[0]["serving"] is None


def test_explain_shows_the_last_verification_beside_the_last_decision(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env, _ = rolled_back_with_a_verification(tmp_path, Outcome.UNVERIFIED)
    code, out, _ = run(capsys, "explain", "cache", "--flags", str(env.flags))
    assert code == 0
    assert "  Serving    SERVING NOT VERIFIED: the flag server serves on to 12 of 1000 sampled keys" in out
    assert "Last decision  STOP" in out
