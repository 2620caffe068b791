"""The decision log benchmark (bench/decisionlog.py): a small run prints the figures before and after
and writes the JSON, and its check of the compacted log catches a lost or changed record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import decisionlog


def test_a_small_run_prints_before_and_after_and_writes_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "decisionlog.json"
    code = decisionlog.main(["--simulate", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    for column in ("before MB/day", "after MB/day", "before rec/day", "after rec/day", "reduction"):
        assert column in printed
    document = json.loads(out.read_text())
    figures = document["figures"]
    assert figures["changes"] > 0
    assert [a["lost"] for a in figures["after"]] == [0, 0]
    assert all(a["heartbeats"] > 0 and a["bytes"] < figures["before_bytes"] for a in figures["after"])
    assert {row["rollouts"] for row in figures["rows"]} == {100, 1000, 5000}
    assert document["targets"][1]["met"] is True
    assert code == (0 if all(t["met"] for t in document["targets"]) else 1)


def test_the_check_catches_a_lost_or_changed_record() -> None:
    r = decisionlog.rollout(0, 1)
    records = []
    for second in range(r.start, r.start + 120, 30):
        evaluated = decisionlog.evaluate(r, second)
        assert evaluated is not None
        records.append(evaluated[0])
    assert decisionlog._lost(records, records) == 0
    assert decisionlog._lost(records, records[1:]) > 0
    assert decisionlog._lost(records, [*records[:-1], records[-1] | {"reason": "else"}]) == 1
