"""``flagroll log`` reads the decision log across its rotated generations (``status`` and recovery
read them through last_by_flag: tests/adapters/test_decisionlog_rotation.py and
tests/reconciler/test_recovery_rotation.py); ``flagroll run`` takes the rotation's size and count,
and refuses a bad size with an example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.adapters.decisionlog import DecisionLog
from controller.cli import build_parser, main
from controller.core.logfiles import parse_size


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rotated_log(tmp_path: Path) -> Path:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=300, keep=5)
    for n in range(12):
        log.append(
            [{"time": f"2026-11-21T12:{n:02d}:00.000Z", "flag": "a", "action": "hold", "reason": f"r{n}"}]
        )
    assert len(list(tmp_path.glob("decisions.jsonl.*.gz"))) >= 2
    return path


def test_log_reads_every_generation_oldest_first(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = _rotated_log(tmp_path)
    code, out, err = run(capsys, "log", "--decision-log", str(path), "--json")
    assert code == 0, err
    assert [json.loads(line)["reason"] for line in out.splitlines()] == [f"r{n}" for n in range(12)]
    code, out, _ = run(capsys, "log", "--decision-log", str(path), "--json", "--last", "3")
    assert [json.loads(line)["reason"] for line in out.splitlines()] == ["r9", "r10", "r11"]


def test_log_reads_the_generations_when_the_live_file_is_gone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _rotated_log(tmp_path)
    path.unlink()
    code, out, err = run(capsys, "log", "--decision-log", str(path), "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["reason"] == "r0"


def test_run_takes_the_rotation_options() -> None:
    parser = build_parser()
    common = ["run", "--policies", "p", "--flags", "f.json", "--prometheus", "http://x"]
    args = parser.parse_args(common)
    assert args.decision_log_max_bytes == 64 * 1024 * 1024
    assert args.decision_log_keep == 5
    args = parser.parse_args([*common, "--decision-log-max-bytes", "100MB", "--decision-log-keep", "2"])
    assert (args.decision_log_max_bytes, args.decision_log_keep) == (100 * 1000**2, 2)
    args = parser.parse_args([*common, "--decision-log-max-bytes", "0"])
    assert args.decision_log_max_bytes == 0
    assert parse_size("64Mi") == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--decision-log-max-bytes", "64 mebibytes", "64Mi, 100MB"),
        ("--decision-log-keep", "0", "keep at least 1"),
        ("--decision-log-keep", "many", "whole number"),
    ],
)
def test_run_refuses_a_bad_rotation_option(
    capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", option, value])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
