"""Decision records as the controller writes them, built from the core's own check types and its real
comparison, for the demo's report."""

from __future__ import annotations

from typing import Any

from controller.core import sequential
from controller.core.checkrecord import ArmCount, ArmEvidence, Check, DispersionEvidence, SequentialEvidence
from controller.core.queries import Arm, Source
from controller.core.state import Outcome


def statistical(
    t_errors: float,
    t_requests: float,
    c_errors: float,
    c_requests: float,
    *,
    name: str = "errors-vs-control",
    alpha: float = 0.01,
    inflation: float = 1.0,
) -> dict[str, Any]:
    """An errorRatio guardrail's check (``maxDelta: 0``), judged by the real confidence sequence."""
    result = sequential.compare(
        sequential.ArmCounts(t_errors, t_requests),
        sequential.ArmCounts(c_errors, c_requests),
        rule="maxDelta",
        limit=0,
        alpha=alpha,
        expected_samples=2000,
        variance_inflation=inflation,
    )
    treatment = ArmCount(t_errors, t_requests, "errors{on}", "requests{on}")
    control = ArmCount(c_errors, c_requests, "errors{control}", "requests{control}")
    evidence = SequentialEvidence(
        method=sequential.METHOD,
        metric="errorRatio",
        window_seconds=30,
        treatment=treatment,
        control=control,
        difference=result.treatment_share - result.control_share,
        tolerated=result.tolerated,
        excess=result.excess,
        excess_lower=result.excess_lower,
        log_likelihood_ratio=result.log_likelihood_ratio,
        threshold=result.threshold,
        alpha=result.alpha,
        alpha_total=alpha,
        comparisons=1,
        variance_inflation=inflation,
        expected_samples=2000,
        dispersion=DispersionEvidence("pearson", inflation, 1.0, None, None, None, 2, "not measured"),
    )
    return Check(
        name=name,
        kind=Source.GUARDRAIL,
        rule="maxDelta",
        limit=0,
        arm=Arm.TREATMENT,
        query="errors{on}",
        value=result.treatment_share,
        bound=result.tolerated,
        samples=t_requests,
        verdict=Outcome.FAIL if result.fails else Outcome.PASS,
        metric="errorRatio",
        control=ArmEvidence("errors{control}", result.control_share, c_requests),
        sequential=evidence,
    ).as_record()


def not_judged(detail: str, *, settling: bool = False, name: str = "errors-vs-control") -> dict[str, Any]:
    return Check(
        name=name,
        kind=Source.GUARDRAIL,
        rule="maxDelta",
        limit=0,
        arm=Arm.TREATMENT,
        query="errors{on}",
        value=0.1,
        bound=None,
        samples=30,
        verdict=Outcome.NO_DATA,
        detail=detail,
        metric="errorRatio",
        control=ArmEvidence("errors{control}", 0.05, 32),
        settling=settling,
    ).as_record()


def fixed(name: str, value: float, bound: float, *, samples: float = 600) -> dict[str, Any]:
    """A fixed ``max`` guardrail on the treatment arm."""
    return Check(
        name=name,
        kind=Source.GUARDRAIL,
        rule="max",
        limit=bound,
        arm=Arm.TREATMENT,
        query=f"{name}{{on}}",
        value=value,
        bound=bound,
        samples=samples,
        verdict=Outcome.FAIL if value > bound else Outcome.PASS,
        control=ArmEvidence(f"{name}{{control}}", 0.01, samples),
    ).as_record()


def traffic(arm: Arm, samples: float) -> dict[str, Any]:
    return Check(
        name="traffic",
        kind=Source.TRAFFIC,
        rule="minSamples",
        limit=40,
        arm=arm,
        query="requests",
        value=samples,
        bound=40,
        samples=samples,
        verdict=Outcome.PASS,
    ).as_record()


def record(
    action: str, checks: list[dict[str, Any]], *, percent: float = 50, step: int = 2
) -> dict[str, Any]:
    """A decision record of the demo's three-step policy."""
    rolled_back = action == "rollback"
    return {
        "time": "2026-12-04T08:00:00.000Z",
        "action": action,
        "from_percent": percent,
        "to_percent": 0 if rolled_back else percent,
        "from_step": step,
        "to_step": -1 if rolled_back else step,
        "steps": 3,
        "reason": "guardrail failed" if rolled_back else "",
        "checks": [traffic(Arm.TREATMENT, 600), traffic(Arm.CONTROL, 610), *checks],
    }
