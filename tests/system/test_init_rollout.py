"""A policy written by ``flagroll init``, run by ``flagroll run`` against a real Prometheus that scrapes
series under the instrumentation kit's names: the queries match them (a route with braces and quotes
included) and the rollout starts."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.adapters.decisionlog import read_records
from controller.adapters.policyfile import load_paths
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer
from controller.core.decision import initial_state, queries_for
from controller.core.flagd import read_state
from controller.core.queries import PlannedQuery, QueryKey, Reading, ReadingKind
from controller.core.state import Status
from tests.support.paths import EXAMPLES
from tests.support.synthetic import SyntheticService
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.victoriametrics]


def flagroll(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *argv], capture_output=True, text=True, timeout=120, check=False
    )


def ask(prometheus: PrometheusServer, queries: list[PlannedQuery]) -> dict[QueryKey, Reading]:
    async def run() -> dict[QueryKey, Reading]:
        async with PrometheusClient(prometheus.url, timeout_seconds=5) as client:
            return await client.query_all(queries)

    return asyncio.run(run())


@pytest.mark.parametrize("template", [False, True], ids=["inline", "template"])
def test_a_policy_from_flagroll_init_starts_a_rollout_against_a_real_prometheus(
    prometheus: PrometheusServer, synthetic: SyntheticService, tmp_path: Path, template: bool
) -> None:
    route, flag = '/init/{id}/say "hi"', f"init-first-{'template' if template else 'inline'}"
    for variant in ("on", "control"):
        synthetic.set(route, flag, variant, rps=40, error_ratio=0.01, latency_seconds=0.04)
    policies = tmp_path / "policies"
    policies.mkdir()
    if template:
        shutil.copy(EXAMPLES / "http-metrics.yaml", policies / "http-metrics.yaml")
    made = flagroll(
        "init",
        "--flag",
        flag,
        "--route",
        route,
        "--owner",
        "sre",
        "--mechanism",
        "A first policy.",
        *(["--template"] if template else []),
        "--output",
        str(policies / "first.yaml"),
    )
    assert made.returncode == 0, made.stderr

    # Wait (with a deadline) until Prometheus answers every query of the first cycle with both arms'
    # requests: the selectors name the series the service exports, under the escaped route.
    loaded = load_paths([policies])
    assert not loaded.errors, [str(e) for e in loaded.errors]
    (entry,) = loaded.policies
    policy = entry.policy

    def answered() -> dict[QueryKey, Reading] | None:
        now = datetime.now(UTC)
        queries = queries_for(policy, initial_state(policy, now), now, entry.templates)
        answers = ask(prometheus, queries)
        assert [r.detail for r in answers.values() if r.kind is ReadingKind.ERROR] == []
        values = [r.value for r in answers.values()]
        return answers if len(values) == len(queries) and all(v for v in values) else None

    wait_for(answered, timeout_seconds=60, interval_seconds=0.5, what="every query answered with requests")

    flags = tmp_path / "flags.json"
    ran = flagroll(
        "run", "--once", "--policies", str(policies), "--flags", str(flags), "--prometheus", prometheus.url
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    (record,) = read_records(tmp_path / "decisions.jsonl")
    assert record["action"] == "advance", record["reason"]
    assert record["reason"].startswith("rollout starts: step 1/4 at 1 %")
    assert (record["from_percent"], record["to_percent"]) == (0, 1)
    checks = record["checks"]
    names = {c["name"] for c in checks}
    assert {"error-ratio", "slow-requests", "sample-ratio"} <= names
    if template:  # the shared templates' answers, split per flag and arm: this flag's 1 % errors
        ceiling = [c for c in checks if c["name"] == "error-ceiling"]
        assert [c["value"] for c in ceiling] == [pytest.approx(0.01, abs=0.002)]
        assert all(c["samples"] > 0 for c in checks if c["name"] == "traffic")
    assert [c for c in checks if c["verdict"] == "error"] == []
    state = read_state(json.loads(flags.read_text()), flag)
    assert state is not None
    assert (state.status, state.step, state.percent) == (Status.PROGRESSING, 0, 1.0)
