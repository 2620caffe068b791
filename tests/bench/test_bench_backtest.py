"""The backtest benchmark (bench/backtest.py) at a tiny size: backfilled history, a real Prometheus,
the command and the naive way in the same run, so that it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import backtest


def test_a_tiny_run_prints_both_ways_and_the_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "backtest.json"
    code = backtest.main(
        ["--hours", "2", "--sample", "5", "--json", str(out), "--dir", str(tmp_path / "run")]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "generated and backfilled in" in printed
    assert "naive (one instant query per query per evaluation time): measured on the first 5" in printed
    figures = json.loads(out.read_text())["figures"]
    # traffic and two guardrails, both arms: 6 distinct queries; 241 evaluations fit one chunk
    assert figures["evaluations"] == 241
    assert (figures["distinct_queries"], figures["chunks"]) == (6, 1)
    assert figures["backtest_requests"] == 6
    assert figures["naive_sample_requests"] == 6 * 5
    assert figures["naive_requests"] == 6 * 241
    assert figures["first_rollback"] is not None  # the incident, half an hour before the end
    # the same guardrails as statistical comparisons: 2 guardrails × 2 counters × 2 arms, the
    # exposures' query being the requests' one, and the traffic per arm: 10 distinct queries
    assert figures["statistical_requests"] == 10
    assert figures["html_bytes"] > 1000
    assert "the same guardrails as comparisons with control" in printed


def test_the_verdicts_follow_the_targets() -> None:
    statistical_and_page = (30.0, 20, None, 9.9, 80_000)  # figures only: no target
    figures = backtest.Figures(
        168, 20161, 6, 2, 1, 1, 9.5, 24, None, 10, 60, 1, 120966, 2000, *statistical_and_page
    )
    assert [met for _, met in backtest.verdicts(figures)] == [True, True]
    slower = backtest.Figures(
        168, 20161, 6, 2, 1, 1, 10.5, 25, None, 10, 60, 1, 120966, 2000, *statistical_and_page
    )
    assert [met for _, met in backtest.verdicts(slower)] == [False, False]
