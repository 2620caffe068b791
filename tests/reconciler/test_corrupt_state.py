"""One managed flag whose stored state is corrupt never stops the cycle for the others: it is skipped,
left exactly as it is, named (flag and field) in the cycle's problems and in one log line, and
``flagroll run --once`` exits 1 without a traceback."""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from controller.adapters.promserver import free_port
from controller.cli import main
from controller.core.flagd import PREFIX
from tests.support.environment import Environment


def _started(root: Path) -> Environment:
    """Two rollouts, ``cache`` and ``other``, both at their first step (1 %), the hold over."""
    env = Environment(root)
    env.add_policy("other", "other")
    env.cycle()
    assert env.percent("cache") == env.percent("other") == 1
    env.clock.now += timedelta(minutes=2)
    return env


def _corrupt(env: Environment, **fields: Any) -> bytes:
    """Set metadata fields of ``cache`` (a value None removes the field); the file's new bytes."""
    document = json.loads(env.flags.read_text())
    meta = document["flags"]["cache"]["metadata"]
    for name, value in fields.items():
        if value is None:
            meta.pop(PREFIX + name, None)
        else:
            meta[PREFIX + name] = value
    env.flags.write_text(json.dumps(document, indent=2))
    return json.dumps(document["flags"]["cache"], sort_keys=True).encode()


def _cache_entry(env: Environment) -> bytes:
    return json.dumps(json.loads(env.flags.read_text())["flags"]["cache"], sort_keys=True).encode()


CORRUPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"step": 5, "steps": 6}, "step"),  # beyond the policy's 2 steps, under the same revision
    ({"percent": -3}, "percent"),
    ({"percent": "5"}, "percent"),
    ({"step": "1"}, "step"),
    ({"status": "exploded"}, "status"),
    ({"control": "yes"}, "control"),
    ({"stepStartedAt": "0001-01-01T00:00:00+01:00"}, "stepStartedAt"),
    ({"percent": 10**400}, "percent"),
]


@pytest.mark.parametrize(
    ("fields", "field"), CORRUPTIONS, ids=[c[1] + str(i) for i, c in enumerate(CORRUPTIONS)]
)
def test_a_flag_with_corrupt_state_is_skipped_and_named_while_the_others_go_on(
    tmp_path: Path, fields: dict[str, Any], field: str
) -> None:
    env = _started(tmp_path)
    before = _corrupt(env, **fields)

    with capture_logs() as logs:
        ok = asyncio.run(env.reconciler().run(once=True))

    assert ok is False  # --once exits 1
    assert env.percent("other") == 5  # the healthy rollout advanced in the same cycle
    assert _cache_entry(env) == before  # the corrupt one is left exactly as it is
    named = [e for e in logs if e.get("flag") == "cache" and e["log_level"] == "error"]
    assert named, logs
    assert any(PREFIX + field in str(e.get("error")) for e in named), named
    assert "cycle_crashed" not in [e["event"] for e in logs]


def test_the_cycle_result_names_the_corrupt_flag_and_its_field(tmp_path: Path) -> None:
    env = _started(tmp_path)
    _corrupt(env, step=5, steps=6)
    result = asyncio.run(env.reconciler().cycle())
    assert len(result.problems) == 1
    assert "'cache'" in result.problems[0]
    assert PREFIX + "step" in result.problems[0]
    assert "2 steps" in result.problems[0]
    assert [r["flag"] for r in result.records] == ["other"]


def test_run_once_exits_1_without_a_traceback_on_a_corrupt_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _started(tmp_path)
    _corrupt(env, percent=10**400)
    url = f"http://127.0.0.1:{free_port()}"  # nobody answers: the healthy flag holds
    argv = ["--log-format", "json", "run", "--once", "--policies", str(env.policies)]
    code = main([*argv, "--flags", str(env.flags), "--prometheus", url, "--query-timeout", "2s"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in out + err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e.get("flag") == "cache" and PREFIX + "percent" in str(e.get("error")) for e in lines)
    assert [e["flag"] for e in lines if e["event"] == "decision"] == ["other"]


METADATA_FIELDS = [
    "status",
    "step",
    "steps",
    "percent",
    "control",
    "stepStartedAt",
    "updatedAt",
    "exposedSince",
    "review",
    "revision",
    "absentCycles",
    "absentSince",
    "onDelete",
]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2026-11-21T12:00:00Z",
            "2026-11-21",
            "progressing",
            "completed",
            "promoted",
            "paused",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(st.dictionaries(st.sampled_from(METADATA_FIELDS), ANY_VALUE, min_size=1, max_size=3))
@example({"step": 5, "steps": 6})
@example({"step": 1, "status": "paused", "steps": 9})
@example({"percent": 10**400})
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_corrupt_metadata_of_one_flag_never_stops_the_others(fields: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        env = _started(Path(directory))
        before = _corrupt(env, **fields)
        result = asyncio.run(env.reconciler().cycle())  # never raises
        assert env.percent("other") == 5
        assert "other" in [r["flag"] for r in result.records]
        if any("'cache'" in problem for problem in result.problems):
            assert _cache_entry(env) == before  # skipped: left exactly as it is


def test_a_step_beyond_the_policy_under_an_old_style_revision_is_named_too(tmp_path: Path) -> None:
    """A flag file written before administrative fields left the revision records the hash of the
    whole policy: that is the same revision, so a step beyond the policy's steps is corrupt state,
    named by its field, as under the revision written today."""
    from controller.adapters.policyfile import load_paths

    env = _started(tmp_path)
    (cache,) = [p.policy for p in load_paths([env.policies]).policies if p.policy.name == "cache"]
    _corrupt(env, step=5, steps=6, revision=cache.legacy_revision)
    result = asyncio.run(env.reconciler().cycle())
    assert len(result.problems) == 1
    assert PREFIX + "step" in result.problems[0]
    assert [r["flag"] for r in result.records] == ["other"]


@pytest.mark.parametrize(
    ("fields", "field"), CORRUPTIONS[1:], ids=[c[1] + str(i) for i, c in enumerate(CORRUPTIONS[1:])]
)
def test_a_corrupt_flag_whose_policy_is_gone_is_named_not_forgotten(
    tmp_path: Path, fields: dict[str, Any], field: str
) -> None:
    """Exposed, no policy names it any more, and its state cannot be read: nobody judges it, and the
    cycle must say so (a problem, the run failing) rather than pass over it."""
    env = _started(tmp_path)
    (env.policies / "cache.yaml").unlink()
    before = _corrupt(env, **fields)

    with capture_logs() as logs:
        ok = asyncio.run(env.reconciler().run(once=True))

    assert ok is False
    assert _cache_entry(env) == before
    assert env.percent("other") == 5
    named = [e for e in logs if e.get("flag") == "cache" and e["log_level"] == "error"]
    assert named, logs
    assert any(PREFIX + field in str(e.get("error")) for e in named), named
    assert any("no valid policy" in str(e.get("error")) for e in named), named
