"""The scale benchmark (bench/scale.py): its policies are valid, its verdicts follow the targets, and a
small run against a real Prometheus prints the figures and asks one query per template a cycle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import scale
from controller.adapters.policyfile import load_paths


@pytest.mark.parametrize("per_policy", [False, True], ids=["templates", "per-policy"])
def test_the_generated_policies_are_valid(tmp_path: Path, per_policy: bool) -> None:
    scale.write_policies(tmp_path, 3, per_policy=per_policy)
    loaded = load_paths([tmp_path])
    assert loaded.issues == []
    assert len(loaded.policies) == 3
    assert len(loaded.templates) == (0 if per_policy else 3)


def _figures(rollouts: int, mode: str, median: float, queries: float, rss: float) -> scale.Figures:
    return scale.Figures(rollouts, mode, 3, median, median, median, queries, rss, rollouts, {}, {})


def test_the_verdicts_follow_the_targets() -> None:
    rows = [
        _figures(1000, "templates", 0.8, 3, 90),
        _figures(1000, "per-policy", 9.0, 6000, 95),
        _figures(5000, "templates", 4.0, 3, 160),
    ]
    assert [met for _, met in scale.verdicts(rows)] == [True, True, True, False]
    slower = [_figures(1000, "templates", 1.2, 4, 90), _figures(1000, "per-policy", 9.0, 150, 95)]
    assert [met for _, met in scale.verdicts(slower)] == [False, False, False]


def test_a_small_run_prints_the_table_and_writes_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scale.json"
    scale.main(["--sizes", "5", "--cycles", "2", "--scrape", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "rollouts  mode" in printed
    rows = {row["mode"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["templates"]["queries_per_cycle"] == 3  # three templates, whatever the rollouts
    assert rows["per-policy"]["queries_per_cycle"] == 5 * 3 * 2  # three queries per arm per rollout
    for row in rows.values():
        assert row["actions"] == {"hold": 10}  # five rollouts, two cycles, every one judged
        assert set(row["verdicts"]) == {"pass"}  # real numbers from Prometheus, all within bounds
        assert row["peak_rss_mib"] > 0
