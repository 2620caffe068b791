"""Decision-log records that parse as JSON but hold wrong types: ``flagroll log`` and ``flagroll
explain`` skip each with a warning on stderr naming the file and line, and never raise."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import cli
from controller.cli import common
from controller.core.explain import explain
from controller.core.flagd import read_state
from controller.core.records import record_problem, render_all
from tests.support.environment import Environment


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    environment = Environment(tmp_path)
    monkeypatch.setattr(common, "utc_now", lambda: environment.clock.now)
    environment.cycle()  # starts at 1 %: one good record
    environment.clock.now += timedelta(minutes=1)
    environment.cycle()  # advances to 5 %: a second good record
    return environment


def _good(env: Environment) -> dict[str, Any]:
    return dict(json.loads(env.log.read_text().splitlines()[-1]))


BAD_FIELDS: list[tuple[str, Any]] = [
    ("to_percent", "abc"),
    ("checks", 3),
    ("time", 5),
    ("from_step", "two"),
    ("notes", "not a list"),
    ("checks", [{"name": "errors", "rule": "max", "value": "abc", "bound": 0.01, "verdict": "fail"}]),
    ("checks", [{"name": "errors", "rule": "max", "value": 0.1, "bound": [1], "verdict": "fail"}]),
    ("checks", [{"name": "errors", "sequential": {"alpha": "x"}, "verdict": "pass"}]),
    ("checks", [{"name": "errors", "rule": "maxIncrease", "value": 1, "control": {"value": "c"}}]),
    ("time", "yesterday"),
]


def _append_bad(env: Environment) -> list[int]:
    """One record of each bad kind after the good ones; their line numbers."""
    good = _good(env)
    lines = env.log.read_text().splitlines()
    first = len(lines) + 1
    with env.log.open("a") as handle:
        for field, value in BAD_FIELDS:
            handle.write(json.dumps({**good, field: value}) + "\n")
    return list(range(first, first + len(BAD_FIELDS)))


def test_log_skips_records_of_wrong_types_with_a_warning_naming_file_and_line(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    numbers = _append_bad(env)
    capsys.readouterr()
    code = cli.main(["log", "--decision-log", str(env.log)])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.count("cache  ADVANCE") == 2  # the two good records
    warnings = err.splitlines()
    assert len(warnings) == len(BAD_FIELDS)
    for number, (field, _), warning in zip(numbers, BAD_FIELDS, warnings, strict=True):
        assert warning.startswith(f"warning: {env.log}:{number}: skipped a record: "), warning
        assert f"'{field}" in warning  # the field, or the field of one of its checks


def test_log_json_skips_them_too(env: Environment, capsys: pytest.CaptureFixture[str]) -> None:
    _append_bad(env)
    capsys.readouterr()
    assert cli.main(["log", "--decision-log", str(env.log), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert err.count("skipped a record") == len(BAD_FIELDS)


def test_explain_skips_records_of_wrong_types_with_a_warning(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    numbers = _append_bad(env)
    capsys.readouterr()
    code = cli.main(["explain", "cache", "--flags", str(env.flags), "--decision-log", str(env.log)])
    out, err = capsys.readouterr()
    assert code == 0
    assert "Last decision  ADVANCE" in out
    assert "advance  1 % → 5 %" in out
    assert [w.split(": skipped")[0] for w in err.splitlines()] == [f"warning: {env.log}:{n}" for n in numbers]


JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["2026-11-21T12:00:00Z", "fail", "max", "maxIncrease", "pass"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
CHECK_KEYS = [
    "name",
    "kind",
    "rule",
    "limit",
    "arm",
    "query",
    "value",
    "bound",
    "samples",
    "verdict",
    "detail",
    "control",
    "metric",
    "sequential",
    "sample_ratio",
    "shadow",
]


@st.composite
def mangled(draw: st.DrawFn, good: dict[str, Any]) -> dict[str, Any]:
    """A good record with some fields, or some fields of one of its checks, replaced by any JSON."""
    record: dict[str, Any] = json.loads(json.dumps(good))
    for field in draw(st.lists(st.sampled_from(sorted(record)), max_size=3)):
        record[field] = draw(JSON_VALUE)
    checks = record.get("checks")
    if isinstance(checks, list) and checks and isinstance(checks[0], dict):
        for field in draw(st.lists(st.sampled_from(CHECK_KEYS), max_size=3)):
            checks[0][field] = draw(JSON_VALUE)
        if draw(st.booleans()):
            checks[0]["sequential"] = draw(
                st.dictionaries(
                    st.sampled_from(
                        [
                            "alpha",
                            "window_seconds",
                            "tolerated",
                            "excess_lower",
                            "method",
                            "threshold",
                            "treatment",
                        ]
                    ),
                    JSON_VALUE,
                )
            )
    return record


_ROOT: dict[str, Any] = {}


def _sample() -> tuple[dict[str, Any], Any]:
    """A real record (a start with its checks) and the flag state, made once."""
    if not _ROOT:
        import tempfile

        directory = Path(tempfile.mkdtemp())
        env = Environment(directory)
        env.cycle()
        _ROOT["record"] = json.loads(env.log.read_text().splitlines()[-1])
        _ROOT["state"] = read_state(json.loads(env.flags.read_text()), "cache")
        _ROOT["now"] = env.clock.now
    return _ROOT["record"], _ROOT["state"]


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_record_either_has_a_problem_named_or_renders_and_explains(data: st.DataObject) -> None:
    good, state = _sample()
    record = data.draw(mangled(good))
    problem = record_problem(record)
    if problem is not None:
        assert problem.startswith("'"), problem  # names the field first
        return
    list(render_all([record]))
    explain("cache", state, [record], None, _ROOT["now"])
    json.dumps(record, allow_nan=True)
    assert all(
        not isinstance(v, float) or math.isfinite(v)
        for v in (record.get("from_percent"), record.get("to_percent"))
    )


@pytest.mark.parametrize("time", [5, [1], "yesterday"])
def test_status_passes_over_a_last_record_of_wrong_types(
    env: Environment, capsys: pytest.CaptureFixture[str], time: Any
) -> None:
    with env.log.open("a") as handle:
        handle.write(json.dumps({**_good(env), "action": "hold", "time": time, "guarded": "no"}) + "\n")
    capsys.readouterr()
    assert cli.main(["status", "--flags", str(env.flags), "--decision-log", str(env.log), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["last_action"] == "advance"  # the last record fit to read


@pytest.mark.parametrize("counts", [5, "x", [1, 2], True])
def test_log_and_explain_survive_a_failed_check_whose_sequential_arm_is_not_an_object(
    env: Environment, capsys: pytest.CaptureFixture[str], counts: Any
) -> None:
    """A sequential check's arm counts are an object; a record where one is a number, text or a list
    (and the check did not pass, so its queries are listed) is skipped with a warning or shown, never
    a traceback."""
    check = {"name": "errors", "verdict": "fail", "sequential": {"treatment": counts, "alpha": 0.05}}
    with env.log.open("a") as handle:
        handle.write(json.dumps({**_good(env), "checks": [check]}) + "\n")
    capsys.readouterr()
    assert cli.main(["log", "--decision-log", str(env.log)]) == 0
    out, err = capsys.readouterr()
    assert out.count("cache  ADVANCE") + err.count("skipped a record") == 3
    assert cli.main(["explain", "cache", "--flags", str(env.flags), "--decision-log", str(env.log)]) == 0
