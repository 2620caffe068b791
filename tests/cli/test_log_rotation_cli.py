"""``flagroll log`` reads the decision log across its rotated generations (``status`` and recovery
read them through last_by_flag: tests/adapters/test_decisionlog_rotation.py and
tests/reconciler/test_recovery_rotation.py); ``flagroll run`` takes the rotation's size and count,
and refuses a bad size with an example."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from controller.adapters.decisionlog import DecisionLog, follow
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


def _followed(path: Path, *extra: str, appended: list[dict[str, str]], expect: int) -> list[str]:
    """``flagroll log --follow --json`` as a child process: the reasons it printed, once ``expect``
    lines are out (``appended`` written after it printed what was logged before it started)."""
    with subprocess.Popen(
        [sys.executable, "-m", "controller", "log", "--decision-log", str(path), "--json", "-f", *extra],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        deadline = threading.Timer(30, child.kill)  # a line that never comes fails the test, not CI
        deadline.start()
        try:
            before = expect - len(appended)
            lines = [child.stdout.readline() for _ in range(before)]  # blocks until each is printed
            DecisionLog(path, max_bytes=300, keep=5).append(appended)  # rotates, under the follower
            lines += [child.stdout.readline() for _ in range(len(appended))]
        finally:
            deadline.cancel()
            child.terminate()
    return [json.loads(line)["reason"] for line in lines]


def test_follow_starts_with_the_last_ten_matching_then_follows_across_a_rotation(tmp_path: Path) -> None:
    path = _rotated_log(tmp_path)
    new = [
        {"time": "2026-11-21T13:00:00.000Z", "flag": "a", "action": "hold", "reason": f"n{n}"}
        for n in range(5)
    ]
    assert _followed(path, appended=new, expect=15) == [f"r{n}" for n in range(2, 12)] + [
        f"n{n}" for n in range(5)
    ]


def test_follow_with_last_and_a_filter_starts_with_the_last_n_of_those_it_shows(tmp_path: Path) -> None:
    path = _rotated_log(tmp_path)
    other = {"time": "2026-11-21T13:00:00.000Z", "flag": "b", "action": "hold", "reason": "other"}
    mine = {"time": "2026-11-21T13:01:00.000Z", "flag": "a", "action": "hold", "reason": "mine"}
    assert _followed(path, "--flag", "a", "--last", "2", appended=[other, mine], expect=3) == [
        "r10",
        "r11",
        "mine",
    ]
    again = {**mine, "reason": "again"}
    assert _followed(path, "--last", "1", appended=[again], expect=2) == ["mine", "again"]


def test_follow_with_last_0_shows_only_what_comes_after_it_started(tmp_path: Path) -> None:
    path = _rotated_log(tmp_path)
    later = {"time": "2026-11-21T13:00:00.000Z", "flag": "a", "action": "hold", "reason": "later"}
    polls: list[int] = []

    def stop() -> bool:  # asked first once the records already logged are behind it
        if not polls:
            DecisionLog(path, max_bytes=300, keep=5).append([later])
        polls.append(1)
        return len(polls) > 50

    assert [r["reason"] for r in follow(path, poll_seconds=0.01, stop=stop, last=0)] == ["later"]
