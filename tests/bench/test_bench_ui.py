"""The web UI benchmark (bench/ui.py): a small run writes a log of generations and a live file,
prints the index's figures beside the full read's and writes the JSON, the pages identical."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from bench import ui
from controller.adapters.decisionlog import read_records


def test_a_small_run_prints_the_index_and_the_baseline_and_writes_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ui.json"
    code = ui.main(["--size-mb", "3", "--flags", "20", "--big", "300", "--baseline-mb", "1", "--requests", "3",
                    "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    for text in ("first request (index built cold)", "index memory", "page (warm)", "full read ms", "MET"):
        assert text in printed
    document = json.loads(out.read_text())
    figures = document["figures"]
    assert figures["baseline"]["pages_identical"] is True
    assert figures["warm"]["rollout"]["median_seconds"] > 0
    assert figures["index_compressed_bytes"] < figures["log_bytes"]
    assert code == (0 if all(t["met"] for t in document["targets"]) else 1)


def test_the_log_has_generations_and_the_big_flag_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui, "GENERATION_BYTES", 200_000)
    log = tmp_path / "decisions.jsonl"
    records, written = ui.write_log(log, flags=10, size_bytes=1_000_000, big=100, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir())[:2] == ["decisions.jsonl", "decisions.jsonl.1.gz"]
    assert (tmp_path / "decisions.jsonl.4.gz").exists()
    read = list(read_records(log))
    assert len(read) == records
    assert sum(1 for r in read if r["flag"] == ui.BIG) == 100
    assert [r["time"] for r in read] == sorted(r["time"] for r in read)
    assert written > 900_000


def test_the_run_leaves_the_collector_as_it_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = gc.get_threshold()
    ui.main(["--size-mb", "1", "--flags", "5", "--big", "50", "--baseline-mb", "1", "--requests", "1"])
    assert gc.get_threshold() == before
    assert "page (warm)" in capsys.readouterr().out
