"""``flagroll backtest``'s usage errors and refusals: no Prometheus needed (none is asked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from tests.core.test_backtest import POLICY

UNUSED = "http://127.0.0.1:9"  # never asked: these runs stop before any query


def test_an_empty_or_reversed_window_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    common = ["backtest", "--policies", str(tmp_path), "--prometheus", UNUSED]
    assert main([*common, "--from", "2026-12-02T00:00:00Z", "--to", "2026-12-01T00:00:00Z"]) == 2
    assert "must be before --to" in capsys.readouterr().err
    assert main([*common, "--from", "1d", "--to", "1d"]) == 2
    assert "the window is empty" in capsys.readouterr().err
    assert main([*common, "--from", "yesterday"]) == 2
    assert "neither an RFC 3339 time" in capsys.readouterr().err


def test_a_flag_no_policy_names_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    code = main(
        ["backtest", "--policies", str(tmp_path), "--prometheus", UNUSED, "--from", "1d", "--flag", "nope"]
    )
    assert code == 2
    assert "no valid policy for flag 'nope'" in capsys.readouterr().err


def test_a_missing_decision_log_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    common = ["backtest", "--policies", str(tmp_path), "--prometheus", UNUSED, "--from", "1d"]
    assert main([*common, "--decision-log", str(tmp_path / "nope.jsonl")]) == 2
    assert f"--decision-log {tmp_path / 'nope.jsonl'}: no such file" in capsys.readouterr().err


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["backtest", "--help"])
    out = capsys.readouterr().out
    options = (
        "--policies",
        "--prometheus",
        "--from",
        "--to",
        "--flag",
        "--compare",
        "--json",
        "--decision-log",
    )
    for option in (*options, "--prometheus-header"):
        assert option in out


def test_a_missing_compare_set_or_one_without_the_flag_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    other = tmp_path / "other"
    common = ["backtest", "--policies", str(tmp_path / "p.yaml"), "--prometheus", UNUSED, "--from", "1d"]
    assert main([*common, "--compare", str(tmp_path / "nope")]) == 2
    assert "--compare" in capsys.readouterr().err
    other.mkdir()
    (other / "q.yaml").write_text(POLICY.replace("key: cache", "key: search"))
    assert main([*common, "--compare", str(other), "--flag", "cache"]) == 2
    assert f"no valid policy for flag 'cache' in {other}" in capsys.readouterr().err
