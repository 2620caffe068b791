"""The ``flagroll`` command, run in-process through ``main(argv)``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.promserver import free_port
from controller.cli import build_parser, main
from controller.core.flagd import empty_document, read_state, render_document, write_flag
from controller.core.state import NOT_STARTED, RolloutState, Status
from tests.support.paths import EXAMPLES


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def managed(tmp_path: Path, percent: float = 5, status: Status = Status.PROGRESSING) -> Path:
    now = datetime.now(UTC) - timedelta(minutes=3)
    state = RolloutState(
        policy="price-quote-cache",
        revision="abc123abc123",
        status=status,
        step=1 if percent else NOT_STARTED,
        steps=3,
        percent=percent,
        control=True,
        step_started_at=now,
        updated_at=now,
        owner="sre-lead",
        review=(now - timedelta(days=2)).date(),
    )
    segment = {"==": [{"var": "segment"}, "S"]}
    document = write_flag(empty_document(), "price-quote-cache", state, segment=segment)
    document["flags"]["banner"] = {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}
    flags = tmp_path / "flags.json"
    flags.write_text(render_document(document))
    return flags


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = ["validate", "run", "status", "log", "stop", "pause", "resume", "schema"]
    for command in [None, *commands]:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"] if command else ["--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "usage: flagroll" in out
    help_text = build_parser().format_help()
    assert all(command in help_text for command in commands)


def test_validate_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(EXAMPLES))
    assert code == 0
    assert "4 valid policies, 3 templates, 0 errors" in out


def test_validate_names_file_line_and_field_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    text = (EXAMPLES / "price-quote-cache.yaml").read_text()
    bad.write_text(text.replace("maxPercent: 10", "maxPercent: 4"))
    code, out, _ = run(capsys, "validate", str(bad))
    assert code == 1
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "{percent: 5, hold: 10m}" in t)
    assert f"{bad}:{line}:" in out
    assert "spec.steps[1].percent: 5 % is above maxPercent 4 %" in out


def test_validate_reports_two_expectations_of_one_name_at_the_second(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    text = (EXAMPLES / "price-quote-cache.yaml").read_text()
    first = "      - name: p95-latency\n        minDecrease: 0.25\n"
    bad.write_text(text.replace(first, first + "      - name: p95-latency\n        max: 0.3\n"))
    code, out, _ = run(capsys, "validate", str(bad))
    assert code == 1
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "minDecrease: 0.25" in t) + 1
    assert (
        f"{bad}:{line}:9: spec.checkpoint.expect[1].name: duplicate expectation name 'p95-latency' "
        "(also at checkpoint.expect[0])"
    ) in out


def test_validate_warns_when_no_data_would_roll_back_the_first_step(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = (EXAMPLES / "price-quote-cache.yaml").read_text()
    policy = tmp_path / "p.yaml"
    policy.write_text(text.replace("onNoData: hold", "onNoData: rollback"))
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "onNoData: hold" in t)
    code, out, _ = run(capsys, "validate", str(policy))
    assert code == 0
    assert (
        f"{policy}:{line}:3: warning: spec.onNoData: onNoData is rollback and traffic.minSamples is 200: "
        "the first check after the rollout starts comes one interval (30s) later"
    ) in out
    assert "the segment must serve at least 667 requests per second" in out
    assert run(capsys, "validate", "--strict", str(policy))[0] == 1


def test_validate_strict_fails_on_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = (EXAMPLES / "price-quote-cache.yaml").read_text()
    policy = tmp_path / "p.yaml"
    policy.write_text("\n".join(t for t in text.splitlines() if "mechanism:" not in t))
    assert run(capsys, "validate", str(policy))[0] == 0
    assert run(capsys, "validate", "--strict", str(policy))[0] == 1


def _broken(tmp_path: Path) -> tuple[Path, int]:
    bad = tmp_path / "bad, policy.yaml"
    text = (EXAMPLES / "price-quote-cache.yaml").read_text()
    bad.write_text(text.replace("maxPercent: 10", "maxPercent: 4"))
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "{percent: 5, hold: 10m}" in t)
    return bad, line


def test_validate_json_lists_policies_and_issues(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "validate", "--format", "json", str(EXAMPLES))
    assert code == 0
    report = json.loads(out)
    assert report["valid"] is True
    assert {p["flag"] for p in report["policies"]} == {
        "price-quote-cache",
        "onboarding-checklist-prompt",
        "checkout-http-client",
        "search-ranking-recency",
    }
    assert {t["name"] for t in report["templates"]} == {
        "http-requests",
        "http-error-ratio",
        "http-p95-latency",
    }
    bad, line = _broken(tmp_path)
    code, out, _ = run(capsys, "validate", "--format", "json", str(bad))
    assert code == 1
    report = json.loads(out)
    assert report["valid"] is False
    issue = next(i for i in report["issues"] if i["field"] == "spec.steps[1].percent")
    assert issue == {
        "file": str(bad),
        "line": line,
        "column": issue["column"],
        "field": "spec.steps[1].percent",
        "message": issue["message"],
        "severity": "error",
    }
    assert issue["message"].startswith("5 % is above maxPercent 4 %")


def test_validate_github_annotates_the_offending_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad, line = _broken(tmp_path)
    code, out, _ = run(capsys, "validate", "--format", "github", str(bad))
    assert code == 1
    annotation = next(a for a in out.splitlines() if "steps[1].percent" in a)
    escaped_file = str(bad).replace(",", "%2C")  # properties escape commas and colons
    assert annotation.startswith(f"::error file={escaped_file},line={line},col=")
    assert "::spec.steps[1].percent: 5 %25 is above maxPercent 4 %25" in annotation


def test_github_annotations_escape_line_breaks_and_percent() -> None:
    from controller.cli.validate import github_annotation
    from controller.core.errors import Issue

    issue = Issue("a:b.yaml", 3, None, "spec.aim", "first\nsecond 100%", severity="warning")
    assert github_annotation(issue) == (
        "::warning file=a%3Ab.yaml,line=3,title=flagroll validate%3A spec.aim::spec.aim: first%0Asecond 100%25"
    )
    assert github_annotation(issue, strict=True).startswith("::error ")


def test_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    assert "maxPercent" in json.dumps(json.loads(out))


def test_status_shows_every_managed_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = managed(tmp_path)
    DecisionLog(tmp_path / "decisions.jsonl").append(
        [
            {
                "time": (datetime.now(UTC) - timedelta(seconds=42)).isoformat(),
                "flag": "price-quote-cache",
                "action": "hold",
                "reason": "waiting",
            }
        ]
    )
    code, out, _ = run(capsys, "status", "--flags", str(flags))
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["FLAG", "PERCENT", "STEP", "STATUS"]
    assert row.split()[:6] == ["price-quote-cache", "5%", "2/3", "progressing", "hold", "42s"]
    assert "STALE" in row
    assert "banner" not in out
    code, out, _ = run(capsys, "status", "--flags", str(flags), "--json")
    rows = json.loads(out)
    assert rows[0]["flag"] == "price-quote-cache"
    assert (rows[0]["percent"], rows[0]["step"], rows[0]["status"]) == (5, 2, "progressing")
    assert rows[0]["stale"] is True


def test_stop_takes_the_flag_to_zero_at_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = managed(tmp_path)
    code, _, err = run(capsys, "stop", "price-quote-cache", "--flags", str(flags))
    assert code == 2
    assert "--reason" in err
    code, out, _ = run(
        capsys,
        "stop",
        "price-quote-cache",
        "--flags",
        str(flags),
        "--reason",
        "checkout errors",
        "--actor",
        "ana",
    )
    assert code == 0
    document = json.loads(flags.read_text())
    state = read_state(document, "price-quote-cache")
    assert state is not None
    assert (state.percent, state.status, state.reason) == (0, Status.STOPPED, "checkout errors")
    assert document["flags"]["price-quote-cache"]["targeting"]["if"][0] == {"==": [{"var": "segment"}, "S"]}
    assert document["flags"]["banner"] == {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}
    [record] = list(read_records(tmp_path / "decisions.jsonl"))
    assert (record["action"], record["actor"], record["to_percent"]) == ("stop", "human:ana", 0)
    assert "STOP" in out


def test_stop_works_even_on_a_hand_edited_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = managed(tmp_path)
    document = json.loads(flags.read_text())
    buckets = document["flags"]["price-quote-cache"]["targeting"]["if"][1]["fractional"]
    buckets[0][1], buckets[1][1] = 3000, 10_000 - 3000 - 500
    flags.write_text(json.dumps(document))
    assert run(capsys, "pause", "price-quote-cache", "--flags", str(flags))[0] == 1
    assert run(capsys, "stop", "price-quote-cache", "--flags", str(flags), "--reason", "x")[0] == 0
    state = read_state(json.loads(flags.read_text()), "price-quote-cache")
    assert state is not None
    assert state.percent == 0


def test_pause_and_resume(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = managed(tmp_path)
    assert run(capsys, "pause", "price-quote-cache", "--flags", str(flags), "--reason", "sale")[0] == 0
    state = read_state(json.loads(flags.read_text()), "price-quote-cache")
    assert state is not None
    assert (state.status, state.percent) == (Status.PAUSED, 5)
    code, _, err = run(capsys, "pause", "price-quote-cache", "--flags", str(flags))
    assert code == 2
    assert "cannot pause" in err
    assert run(capsys, "resume", "price-quote-cache", "--flags", str(flags))[0] == 0
    state = read_state(json.loads(flags.read_text()), "price-quote-cache")
    assert state is not None
    assert (state.status, state.percent) == (Status.PROGRESSING, 5)
    actions = [r["action"] for r in read_records(tmp_path / "decisions.jsonl")]
    assert actions == ["pause", "resume"]


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = managed(tmp_path)
    code, _, err = run(capsys, "stop", "nope", "--flags", str(flags), "--reason", "x")
    assert code == 2
    assert "managed flags: price-quote-cache" in err


def test_options_come_from_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = managed(tmp_path)
    monkeypatch.setenv("FLAGROLL_FLAGS", str(flags))
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0
    assert json.loads(out)[0]["flag"] == "price-quote-cache"


def test_run_needs_its_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "run", "--flags", str(tmp_path / "f.json"), "--prometheus", "http://x")
    assert code == 2
    assert "--policies is required" in err
    code, _, err = run(
        capsys,
        "run",
        "--policies",
        str(EXAMPLES),
        "--flags",
        str(tmp_path / "f.json"),
        "--prometheus",
        "x:9090",
    )
    assert code == 2
    assert "http://" in err


def test_run_once_against_an_unreachable_prometheus_holds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flags = tmp_path / "flags.json"
    url = f"http://127.0.0.1:{free_port()}"
    code, out, _ = run(
        capsys,
        "--log-format",
        "json",
        "run",
        "--once",
        "--policies",
        str(EXAMPLES),
        "--flags",
        str(flags),
        "--prometheus",
        url,
        "--query-timeout",
        "2s",
    )
    assert code == 0
    records = list(read_records(tmp_path / "decisions.jsonl"))
    assert {r["flag"] for r in records} == {
        "price-quote-cache",
        "onboarding-checklist-prompt",
        "checkout-http-client",
        "search-ranking-recency",
    }
    assert {r["action"] for r in records} == {"hold"}
    assert all("not starting while a query fails" in r["reason"] for r in records)
    assert all("cannot connect" in r["reason"] for r in records)
    lines = [json.loads(line) for line in out.splitlines()]
    assert sum(1 for line in lines if line["event"] == "decision") == len(records) == 4
    document = json.loads(flags.read_text())
    assert {read_state(document, k).percent for k in document["flags"]} == {0}  # type: ignore[union-attr]


def test_run_dry_run_writes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = tmp_path / "flags.json"
    url = f"http://127.0.0.1:{free_port()}"
    code, out, _ = run(
        capsys,
        "--log-format",
        "json",
        "run",
        "--once",
        "--dry-run",
        "--policies",
        str(EXAMPLES),
        "--flags",
        str(flags),
        "--prometheus",
        url,
        "--query-timeout",
        "1s",
    )
    assert code == 0
    assert not flags.exists()
    assert not (tmp_path / "decisions.jsonl").exists()
    assert any(json.loads(line).get("dry_run") is True for line in out.splitlines())


def test_run_refuses_a_flag_file_that_git_tracks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = managed(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "flags.json"], check=True)
    code, _, err = run(
        capsys,
        "run",
        "--once",
        "--policies",
        str(EXAMPLES),
        "--flags",
        str(flags),
        "--prometheus",
        "http://127.0.0.1:1",
    )
    assert code == 2
    assert "tracked by Git" in err


def test_log_renders_for_humans_and_filters(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    base = {"revision": "r1", "status": "progressing", "checks": [], "notes": []}
    DecisionLog(log).append(
        [
            {
                **base,
                "time": "2026-11-21T12:00:00.000Z",
                "flag": "a",
                "action": "advance",
                "from_percent": 0,
                "to_percent": 1,
                "reason": "rollout starts",
                "aim": "Cut p95",
                "mechanism": "A cache",
            },
            {
                **base,
                "time": "2026-11-21T12:01:00.000Z",
                "flag": "b",
                "action": "hold",
                "from_percent": 0,
                "to_percent": 0,
                "reason": "waiting",
                "aim": "Other",
                "mechanism": None,
            },
            {
                **base,
                "time": "2026-11-21T12:02:00.000Z",
                "flag": "a",
                "action": "stop",
                "from_percent": 1,
                "to_percent": 0,
                "reason": "stopped by a human: pager",
                "aim": None,
                "mechanism": None,
                "actor": "human:ana",
            },
        ]
    )
    code, out, _ = run(capsys, "log", "--decision-log", str(log), "--flag", "a")
    assert code == 0
    assert out.count("Aim        Cut p95") == 2  # carried to the human record
    assert "by human:ana" in out
    assert "Other" not in out
    code, out, _ = run(capsys, "log", "--decision-log", str(log), "--json", "--action", "stop")
    assert [json.loads(line)["action"] for line in out.splitlines()] == ["stop"]
    code, out, _ = run(capsys, "log", "--decision-log", str(log), "--json", "--last", "2")
    assert [json.loads(line)["flag"] for line in out.splitlines()] == ["b", "a"]
    code, _, err = run(capsys, "log", "--decision-log", str(tmp_path / "missing.jsonl"))
    assert code == 2
    assert "no decision log" in err


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda rule: rule["if"][1]["fractional"][0].__setitem__(1, 5000), id="weights-off-total"
        ),
        pytest.param(lambda rule: rule.clear() or rule.update({"in": ["x", "y"]}), id="rule-replaced"),
    ],
)
def test_stop_works_on_any_hand_edit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, edit: Callable[[dict[str, Any]], object]
) -> None:
    flags = managed(tmp_path)
    document = json.loads(flags.read_text())
    edit(document["flags"]["price-quote-cache"]["targeting"])
    flags.write_text(json.dumps(document))
    code, _, err = run(capsys, "stop", "price-quote-cache", "--flags", str(flags), "--reason", "pager")
    assert code == 0, err
    written = json.loads(flags.read_text())
    state = read_state(written, "price-quote-cache")
    assert state is not None
    assert (state.percent, state.status) == (0, Status.STOPPED)
    assert written["flags"]["price-quote-cache"]["targeting"] == {
        "fractional": [["on", 0], ["off", 10_000], ["control", 0]]
    }


def test_stop_works_beside_a_broken_flag_someone_else_owns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flags = managed(tmp_path)
    document = json.loads(flags.read_text())
    document["flags"]["banner"]["state"] = "DISABLED_FOR_NOW"
    flags.write_text(json.dumps(document))
    code, _, err = run(capsys, "stop", "price-quote-cache", "--flags", str(flags), "--reason", "pager")
    assert code == 0, err
    written = json.loads(flags.read_text())
    assert written["flags"]["banner"]["state"] == "DISABLED_FOR_NOW"


def test_status_lists_a_flag_whose_state_is_unreadable_beside_the_others(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flags = managed(tmp_path)
    document = json.loads(flags.read_text())
    broken = json.loads(json.dumps(document["flags"]["price-quote-cache"]))
    broken["metadata"]["flagroll.stepStartedAt"] = "yesterday"
    document["flags"]["other-cache"] = broken
    flags.write_text(json.dumps(document))
    code, out, _ = run(capsys, "status", "--flags", str(flags), "--json")
    assert code == 0
    rows = {row["flag"]: row for row in json.loads(out)}
    assert rows["price-quote-cache"]["percent"] == 5
    assert rows["other-cache"]["status"] == "unknown"
    assert "not an ISO time" in rows["other-cache"]["problem"]
    code, out, _ = run(capsys, "status", "--flags", str(flags))
    assert code == 0
    assert "PROBLEM: flag 'other-cache'" in out


def test_status_says_why_a_rollout_is_holding(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = managed(tmp_path)
    DecisionLog(tmp_path / "decisions.jsonl").append(
        [
            {
                "time": datetime.now(UTC).isoformat(),
                "flag": "price-quote-cache",
                "action": "hold",
                "reason": "no_data: error-rate treatment: no_data (treatment: empty result: no series matched)",
            }
        ]
    )
    code, out, _ = run(capsys, "status", "--flags", str(flags))
    assert code == 0
    assert "held: no_data: error-rate treatment" in out


def test_a_bad_notification_url_is_refused_before_the_stop_is_made(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flags = managed(tmp_path)
    before = flags.read_bytes()
    code, _, err = run(
        capsys, "stop", "cache", "--reason", "x", "--flags", str(flags), "--notify-webhook", "ftp://x"
    )
    assert code == 2
    assert "http:// or https://" in err
    assert flags.read_bytes() == before


@pytest.mark.parametrize(
    ("given", "message"), [("0", "0 is below 1"), ("many", "'many' is not a whole number")]
)
def test_max_concurrent_queries_must_be_a_positive_whole_number(
    capsys: pytest.CaptureFixture[str], given: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--once", "--policies", str(EXAMPLES), "--max-concurrent-queries", given])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
