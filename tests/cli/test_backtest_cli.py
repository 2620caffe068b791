"""``flagroll backtest``'s usage errors and refusals: no Prometheus needed (none is asked); and
``--html`` end to end against a Prometheus played by respx."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx

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
        "--html",
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


PROM = "http://prom.test"
WINDOW = ["--from", "2026-12-01T00:00:00Z", "--to", "2026-12-01T02:00:00Z"]
# the treatment's errors go from 1 % to 30 % at 01:02, between two evaluation times
INCIDENT_S = datetime(2026, 12, 1, 1, 2, tzinfo=UTC).timestamp()


def _range_answer(request: httpx.Request) -> httpx.Response:
    """A matrix for one range query of POLICY: traffic enough, 1 % errors, 30 % in the treatment arm
    (variant "on") from the incident."""
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    start, end = float(form["start"]), float(form["end"])
    step_s = int(form["step"].removesuffix("ms")) / 1000
    values = []
    for i in range(math.floor((end - start) / step_s) + 1):
        at = start + i * step_s
        if form["query"].startswith("sum(requests"):
            value = 1000.0
        else:
            value = 0.3 if 'v="on"' in form["query"] and at >= INCIDENT_S else 0.01
        values.append([at, str(value)])
    matrix = {"resultType": "matrix", "result": [{"metric": {}, "values": values}]}
    return httpx.Response(200, json={"status": "success", "data": matrix})


def _run(tmp_path: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with respx.mock:
        respx.post(f"{PROM}/api/v1/query_range").mock(side_effect=_range_answer)
        code = main(
            ["backtest", "--policies", str(tmp_path / "p.yaml"), "--prometheus", PROM, *WINDOW, *extra]
        )
    return code, capsys.readouterr().out


def test_html_writes_a_page_with_the_charts_and_leaves_the_report_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    pages = tmp_path / "pages"
    pages.mkdir()
    page = pages / "backtest.html"
    code, plain = _run(tmp_path, capsys=capsys)
    assert code == 0
    code, with_page = _run(tmp_path, "--html", str(page), capsys=capsys)
    assert code == 0
    assert with_page == plain  # the text report is the same, with or without a page
    code, as_json = _run(tmp_path, "--json", "--html", str(page), capsys=capsys)
    assert code == 0
    assert json.loads(as_json)["policies"][0]["first_rollback"] == "2026-12-01T01:05:00Z"
    assert [p.name for p in pages.iterdir()] == ["backtest.html"]  # no temporary file left
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>")
    assert "<script" not in text
    charts = [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", text, flags=re.DOTALL)]
    assert text.count('class="chart exposure"') == 1
    assert text.count('class="chart guardrail"') == 1  # errors (treatment): a max bound, no control arm
    assert len(charts) == 2
    for chart in charts:
        (marker,) = [g for g in chart.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "marker"]
        assert marker.get("data-at") == "2026-12-01T01:05:00Z"


def test_html_into_a_missing_directory_is_a_usage_error_before_any_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    missing = tmp_path / "nope" / "page.html"
    common = ["backtest", "--policies", str(tmp_path), "--prometheus", UNUSED, "--from", "1d"]
    assert main([*common, "--html", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"--html {missing}" in err
    assert "no such directory" in err
    assert not missing.parent.exists()
    assert main([*common, "--html", str(tmp_path)]) == 2
    assert f"--html {tmp_path}: is a directory" in capsys.readouterr().err


def test_html_is_written_when_problems_are_reported_and_shows_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY.replace("max: 0.05", "max: lots"))  # refused: nothing asked
    page = tmp_path / "page.html"
    code = main(
        ["backtest", "--policies", str(tmp_path), "--prometheus", UNUSED, "--from", "1d", "--html", str(page)]
    )
    assert code == 1
    assert "p.yaml" in capsys.readouterr().err
    text = page.read_text(encoding="utf-8")
    assert '<section class="problems">' in text
    assert "p.yaml" in text.split('<section class="problems">')[1]
