"""Red-team of ``spec.schedule`` through the real commands: ``flagroll run --once`` (a child process,
the real clock) against a real Prometheus, a freeze over today, then the freeze edited away.

The freeze is computed from today's UTC date (yesterday to tomorrow), so the test does not depend
on the day it runs: the schedule is closed now, whatever now is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.decisionlog import read_records
from controller.adapters.policyfile import load_paths
from controller.adapters.promserver import PrometheusServer
from controller.core.decision import initial_state, queries_for
from controller.core.queries import QueryKey, Reading
from tests.support.synthetic import SyntheticService
from tests.support.waiting import wait_for
from tests.system.test_init_rollout import ask, flagroll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.victoriametrics]


def test_run_once_holds_a_start_in_a_freeze_and_starts_once_the_freeze_is_edited_away(
    prometheus: PrometheusServer, synthetic: SyntheticService, tmp_path: Path
) -> None:
    route, flag = "/schedule/{id}", "schedule-redteam"
    for variant in ("on", "control"):
        synthetic.set(route, flag, variant, rps=40, error_ratio=0.01, latency_seconds=0.04)
    policies = tmp_path / "policies"
    policies.mkdir()
    made = flagroll(
        "init",
        "--flag",
        flag,
        "--route",
        route,
        "--owner",
        "sre",
        "--mechanism",
        "A scheduled policy.",
        "--output",
        str(policies / "first.yaml"),
    )
    assert made.returncode == 0, made.stderr
    plain = (policies / "first.yaml").read_text()
    today = datetime.now(UTC).date()
    frozen = (
        f"  schedule:\n    timezone: UTC\n    freeze:\n"
        f"      - {{from: {today - timedelta(days=1)}, to: {today + timedelta(days=1)}, reason: red team}}\n"
    )
    (policies / "first.yaml").write_text(plain.rstrip("\n") + "\n" + frozen)
    loaded = load_paths([policies])
    assert not loaded.errors, [str(e) for e in loaded.errors]
    policy = loaded.policies[0].policy
    assert policy.spec.schedule is not None

    def answered() -> dict[QueryKey, Reading] | None:
        now = datetime.now(UTC)
        answers = ask(prometheus, queries_for(policy, initial_state(policy, now), now))
        return answers if answers and all(r.value for r in answers.values()) else None

    wait_for(answered, timeout_seconds=60, interval_seconds=0.5, what="every query answered with requests")
    flags = tmp_path / "flags.json"
    common = ("--policies", str(policies), "--flags", str(flags))
    ran = flagroll("run", "--once", *common, "--prometheus", prometheus.url)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    (record,) = read_records(tmp_path / "decisions.jsonl")
    assert record["action"] == "hold", record["reason"]
    assert record["reason"].startswith(
        f"frozen {today - timedelta(days=1)} to {today + timedelta(days=1)} (red team)"
    )
    assert record["waiting"]["reason"] == "freeze"
    assert record["waiting"]["opens_at"] == f"{today + timedelta(days=2)}T00:00:00Z"

    shown = flagroll(
        "status", "--json", "--flags", str(flags), "--decision-log", str(tmp_path / "decisions.jsonl")
    )
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert row["waiting"]["reason"] == "freeze"
    assert row["percent"] == 0

    (policies / "first.yaml").write_text(plain)  # the freeze edited away: not a new revision
    ran = flagroll("run", "--once", *common, "--prometheus", prometheus.url)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    first, second = read_records(tmp_path / "decisions.jsonl")
    assert second["action"] == "advance", second["reason"]
    assert second["revision"] == first["revision"]
    assert second["waiting"] is None
    shown = flagroll(
        "status", "--json", "--flags", str(flags), "--decision-log", str(tmp_path / "decisions.jsonl")
    )
    (row,) = json.loads(shown.stdout)
    assert row["waiting"] is None
    assert row["percent"] == 1
