"""The time-to-rollback benchmark (bench/time_to_rollback.py): one run against the real components
(Prometheus, the demo service, the controller, a flagd FILE-mode OpenFeature client) and the fake
of a flag server's OFREP API (tests/support/ofrepfake.py, in a process of its own), and its pure
helpers: the bound, the summary, the policy and the record predicates."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails

from bench import time_to_rollback as ttr
from bench import ttr_parameters, ttr_records, ttr_results
from controller.adapters.decisionlog import read_records
from controller.adapters.policyfile import load_text
from controller.demo import runner
from controller.demo.service import FLAG

MARGIN_SECONDS = 3.0  # error-count noise, the regression's added latency, a loaded CI machine


@pytest.mark.prometheus
@pytest.mark.slow
def test_one_run_against_the_real_components_rolls_back_within_the_bound(tmp_path: Path) -> None:
    out = io.StringIO()
    figures = tmp_path / "ttr.json"
    code = ttr.main(["--runs", "1", "--json", str(figures), "--dir", str(tmp_path / "run")], out=out)
    printed = out.getvalue()
    assert code == 0, printed

    document = json.loads(figures.read_text())
    assert {"command", "parameters", "bound", "target", "summary", "seconds", "runs", "policy"} <= set(
        document
    )
    (run,) = document["runs"]
    assert run["rolled_back"] is True
    assert run["client_saw_off"] is True
    assert run["problem"] is None
    assert run["guardrail"] == "error-rate"
    assert run["value"] > run["bound"] == 0.05
    assert len(run["users"]) == ttr_parameters.WATCHED_USERS

    bound = float(re.findall(r"^bound: .* = (\d+\.\d+)s$", printed, re.MULTILINE)[0])
    assert bound == pytest.approx(document["bound"]["seconds"], abs=0.01)
    assert 0 < run["seconds"] < bound + MARGIN_SECONDS, printed
    # The controller decided first; the client saw the written file afterwards.
    assert 0 < run["rollback_record_seconds"] <= run["seconds"]
    # The flag server (the fake, reading the same file) answers off after the decision too, and
    # flagroll's own verification of the rollback confirmed it.
    assert run["rollback_record_seconds"] <= run["ofrep_seconds"] < bound + MARGIN_SECONDS, printed
    assert run["verified"] == "confirmed"
    assert 0 <= run["verified_seconds"] < ttr_parameters.VERIFY_TIMEOUT_SECONDS
    assert document["ofrep_seconds"] == [run["ofrep_seconds"]]
    assert summary_line(printed).startswith("… → the flag server answers off over OFREP")
    assert document["seconds"] == [run["seconds"]]
    summary = document["summary"]
    assert summary["median_seconds"] == summary["max_seconds"] == run["seconds"]
    assert summary["target_met"] is True
    assert summary["ok"] is True
    assert document["parameters"]["window_seconds"] == 10
    assert document["parameters"]["interval_seconds"] == 2
    assert document["parameters"]["scrape_seconds"] == 1.0
    assert "median ≤ 15 s: met" in printed

    # The decision log and the flag file say the same, as the real flagd evaluator reads the file.
    records = list(read_records(tmp_path / "run" / "decisions.jsonl"))
    rollback = [r for r in records if r["action"] == "rollback"]
    assert len(rollback) == 1
    assert rollback[0]["revision"] == run["revision"]
    core = FlagdCore()
    core.set_flags((tmp_path / "run" / "flags.json").read_text())
    for user in run["users"]:
        resolved = core.resolve_boolean_value(FLAG, True, EvaluationContext(targeting_key=user))
        assert (resolved.value, resolved.variant) == (False, "off")


# Pure helpers --------------------------------------------------------------------------------------


def test_the_bound_is_the_documented_formula_plus_one_client_poll() -> None:
    p = ttr_parameters.Parameters()
    assert p.share == pytest.approx((0.05 - 0.001) / (0.2 - 0.001))
    assert ttr_parameters.bound_seconds(p) == pytest.approx(2 * 1 + p.share * 10 + 2 + 0.2)
    # The demo service's defaults are the benchmark's error ratios; the demo's own run with a 1 s
    # scrape, 10 s window and 2 s interval as well.
    assert (runner.SCRAPE_SECONDS, runner.WINDOW_SECONDS, runner.INTERVAL_SECONDS) == (1, 10, 2)
    assert ttr_parameters.bound_formula(p) == (
        "2 × scrape (1s) + 0.25 × rate window (10s) + check interval (2s) + client poll (0.2s) = 6.66s"
    )


def test_the_bound_follows_the_parameters() -> None:
    p = ttr_parameters.Parameters(
        scrape_seconds=15, window_seconds=120, interval_seconds=30, client_poll_ms=500, error_bound=0.02
    )
    share = (0.02 - 0.001) / (0.2 - 0.001)
    assert ttr_parameters.bound_seconds(p) == pytest.approx(30 + share * 120 + 30 + 0.5)


def summary_line(printed: str) -> str:
    return next(line for line in printed.splitlines() if line.startswith("… → the flag server"))


def _run(
    number: int, seconds: float | None, *, ok: bool = True, ofrep: float | None = None
) -> ttr_results.RunResult:
    return ttr_results.RunResult(
        number,
        rolled_back=ok,
        client_saw_off=ok,
        seconds=seconds,
        ofrep_seconds=ofrep,
        verified="confirmed" if ofrep is not None else None,
        verified_seconds=0.3 if ofrep is not None else None,
    )


def test_the_summary_gives_median_and_max_and_judges_the_target() -> None:
    summary = ttr_results.summarise([_run(1, 4.0), _run(2, 2.0), _run(3, 9.0), _run(4, 3.0)])
    assert (summary.median_seconds, summary.max_seconds, summary.min_seconds) == (3.5, 9.0, 2.0)
    assert (summary.runs, summary.rolled_back) == (4, 4)
    assert summary.target_met
    assert summary.ok

    slow = ttr_results.summarise([_run(1, 16.0), _run(2, 14.0), _run(3, 20.0)])
    assert slow.median_seconds == 16.0
    assert not slow.target_met
    assert not slow.ok


def test_a_run_without_rollback_fails_the_benchmark_even_when_the_median_is_met() -> None:
    missed = ttr_results.RunResult(2, problem="the client still evaluated on 30s after the injection")
    summary = ttr_results.summarise([_run(1, 4.0), missed, _run(3, 5.0)])
    assert (summary.rolled_back, summary.median_seconds) == (2, 4.5)
    assert summary.target_met
    assert not summary.ok
    assert "FAILED: the client still evaluated on" in ttr_results.run_line(missed, 3)
    assert not ttr_results.summarise([]).ok


def test_the_report_prints_every_figure_the_docs_quote() -> None:
    p = ttr_parameters.Parameters()
    results = [_run(1, 4.25, ofrep=4.3), _run(2, 3.5, ofrep=3.52)]
    summary = ttr_results.summarise(results)
    assert (summary.ofrep_median_seconds, summary.ofrep_max_seconds, summary.verified) == (3.91, 4.3, 2)
    lines = "\n".join(ttr_results.report_lines(p, results, summary))
    assert "4.25, 3.50" in lines
    assert "median 3.88s, max 4.25s" in lines
    assert "the flag server answers off over OFREP (a fake of its API, not the daemon): 4.30, 3.52" in lines
    assert "median 3.91s, max 4.30s; flagroll's own verification confirmed 2/2 rollbacks" in lines
    run_line = ttr_results.run_line(results[0], 2)
    assert "flag server (OFREP) off at 4.30s, verification confirmed 0.30s after the write" in run_line
    assert "scrape interval 1s, rate window 10s, check interval 2s" in lines
    assert "= 6.66s" in lines
    assert "target: median ≤ 15 s: met" in lines


def test_each_run_is_a_new_revision_of_a_valid_policy_with_the_benchmarks_parameters() -> None:
    p = ttr_parameters.Parameters()
    loaded = [load_text(ttr_parameters.policy_text(p, run), "<test>") for run in (1, 2)]
    assert not [issue for policies in loaded for issue in policies.issues]
    first, second = (policies.policies[0].policy for policies in loaded)
    assert first.revision != second.revision
    assert ttr_parameters.revision_of_text(ttr_parameters.policy_text(p, 1)) == first.revision
    spec = first.spec
    assert spec.interval_seconds == 2
    assert [step.percent for step in spec.steps] == [50]
    assert spec.traffic is not None
    assert spec.traffic.min_samples == 40
    (guardrail,) = spec.guardrails
    assert guardrail.name == "error-rate"
    assert "[10s]" in ttr_parameters.policy_text(p, 1)
    assert "[10s]" in ttr_parameters.treatment_error_ratio_query(p)
    assert 'feature_flag_result_variant="on"' in ttr_parameters.treatment_error_ratio_query(p)


def _record(action: str, *verdicts: str, percent: float = 50.0) -> dict[str, Any]:
    return {
        "action": action,
        "status": "rolled_back" if action == "rollback" else "progressing",
        "to_percent": 0.0 if action == "rollback" else percent,
        "time": "2026-11-21T10:00:01.250Z",
        "checks": [
            {"name": "traffic", "kind": "traffic", "verdict": "pass"},
            *({"name": "error-rate", "kind": "guardrail", "verdict": v, "value": 0.07} for v in verdicts),
        ],
    }


def test_only_a_hold_at_the_step_with_every_check_passing_counts_as_passing() -> None:
    assert ttr_records.passing(_record("hold", "pass"), 50.0)
    assert not ttr_records.passing(_record("hold", "no_data"), 50.0)
    assert not ttr_records.passing(_record("hold", "pass", percent=20.0), 50.0)
    assert not ttr_records.passing(_record("advance", "pass"), 50.0)
    assert not ttr_records.passing({**_record("hold"), "checks": []}, 50.0)


def test_the_tripped_guardrail_and_the_record_time_are_read_from_the_rollback_record() -> None:
    record = _record("rollback", "pass", "fail")
    assert ttr_records.tripped(record) == record["checks"][2]
    assert ttr_records.tripped(_record("hold", "pass")) is None
    moment = ttr_records.record_time(record)
    offset = moment.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0
    assert (moment.second, moment.microsecond) == (1, 250_000)


def test_on_and_off_need_the_variant_and_no_error() -> None:
    def details(
        value: bool, variant: str | None, error: ErrorCode | None = None
    ) -> FlagEvaluationDetails[bool]:
        return FlagEvaluationDetails(FLAG, value, variant=variant, error_code=error)

    assert ttr_records.is_on(details(True, "on"))
    assert ttr_records.is_off(details(False, "off"))
    assert not ttr_records.is_off(details(False, "control"))  # a control user was never in treatment
    assert not ttr_records.is_off(
        details(False, None, ErrorCode.FLAG_NOT_FOUND)
    )  # the default, not a rollback
    assert not ttr_records.is_on(details(True, "on", ErrorCode.GENERAL))
