"""The results of the time-to-rollback benchmark: one per run, their summary, the lines it prints
and the JSON document it writes."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.ttr_parameters import (
    EVALUATION_POLL_SECONDS,
    PASSING_CHECKS,
    TARGET_MEDIAN_SECONDS,
    WATCHED_USERS,
    Parameters,
    bound_formula,
    bound_seconds,
    policy_text,
)


@dataclass
class RunResult:
    run: int
    revision: str = ""
    rolled_back: bool = False  # the controller wrote a rollback record for this run's revision
    client_saw_off: bool = False  # … and the client evaluated off for every watched user
    seconds: float | None = None  # the measure: injection → the client evaluates off
    rollback_record_seconds: float | None = None  # injection → the controller decided to roll back
    injection_phase: float | None = None  # where between two checks (0–1 of the interval) it started
    exposed_seconds_before_injection: float | None = None
    error_rate_before: float | None = None  # the last passing check's treatment error rate
    guardrail: str | None = None  # the guardrail that tripped, its value, bound and samples
    value: float | None = None
    bound: float | None = None
    samples: float | None = None
    # The flag server's side (a fake of its OFREP API in a process of its own, on the same flag file):
    ofrep_seconds: float | None = None  # injection → it answers off for every watched user
    verified: str | None = None  # flagroll's own verification of the rollback: confirmed or unverified
    verified_seconds: float | None = None  # … from flagroll's write to all its sampled keys off
    users: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.rolled_back and self.client_saw_off and self.seconds is not None


@dataclass(frozen=True)
class Summary:
    runs: int
    rolled_back: int
    median_seconds: float | None
    max_seconds: float | None
    min_seconds: float | None
    target_median_seconds: float
    target_met: bool
    ok: bool  # every run rolled back and the client saw it, and the target is met
    ofrep_median_seconds: float | None = None  # the flag server's answer, over the runs that had one
    ofrep_max_seconds: float | None = None
    verified: int = 0  # runs whose rollback flagroll's verification confirmed


def summarise(results: Sequence[RunResult], target_median_seconds: float = TARGET_MEDIAN_SECONDS) -> Summary:
    measured = [r.seconds for r in results if r.ok and r.seconds is not None]
    median = statistics.median(measured) if measured else None
    met = median is not None and median <= target_median_seconds
    every = bool(results) and all(r.ok for r in results)
    served = [r.ofrep_seconds for r in results if r.ok and r.ofrep_seconds is not None]
    return Summary(
        runs=len(results),
        rolled_back=sum(1 for r in results if r.ok),
        median_seconds=median,
        max_seconds=max(measured) if measured else None,
        min_seconds=min(measured) if measured else None,
        target_median_seconds=target_median_seconds,
        target_met=met,
        ok=every and met,
        ofrep_median_seconds=statistics.median(served) if served else None,
        ofrep_max_seconds=max(served) if served else None,
        verified=sum(1 for r in results if r.verified == "confirmed"),
    )


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}s"


def run_line(result: RunResult, runs: int) -> str:
    head = f"  run {result.run:>2}/{runs}: "
    if not result.ok:
        return head + f"FAILED: {result.problem or 'no rollback seen'}"
    why = ""
    if result.guardrail is not None and result.value is not None:
        why = f"; {result.guardrail} {result.value:.4g} > {result.bound:g} (n={result.samples:.0f})"
    served = f"; flag server (OFREP) off at {_seconds(result.ofrep_seconds)}"
    if result.verified is not None:
        served += f", verification {result.verified} {_seconds(result.verified_seconds)} after the write"
    return (
        head
        + f"{_seconds(result.seconds)} to off (rollback decided at {_seconds(result.rollback_record_seconds)}"
        + f"{why}; injected {result.injection_phase or 0:.2f} of an interval after a check{served})"
    )


def report_lines(p: Parameters, results: Sequence[RunResult], summary: Summary) -> list[str]:
    measured = ", ".join(f"{r.seconds:.2f}" for r in results if r.ok and r.seconds is not None)
    target = f"median ≤ {summary.target_median_seconds:g} s"
    verdict = "met" if summary.target_met else "NOT met"
    served = ", ".join(f"{r.ofrep_seconds:.2f}" for r in results if r.ok and r.ofrep_seconds is not None)
    return [
        f"time to rollback (s), regression start → client evaluates off: {measured or '—'}",
        f"median {_seconds(summary.median_seconds)}, max {_seconds(summary.max_seconds)} "
        f"({summary.rolled_back}/{summary.runs} runs rolled back)",
        f"… → the flag server answers off over OFREP (a fake of its API, not the daemon): {served or '—'}",
        f"median {_seconds(summary.ofrep_median_seconds)}, max {_seconds(summary.ofrep_max_seconds)}; "
        f"flagroll's own verification confirmed {summary.verified}/{summary.runs} rollbacks",
        f"parameters: scrape interval {p.scrape_seconds:g}s, rate window {p.window_seconds}s, "
        f"check interval {p.interval_seconds}s, flagd client poll {p.client_poll_seconds:g}s "
        f"(deadline_ms {p.client_poll_ms}), evaluation poll {EVALUATION_POLL_SECONDS * 1000:.0f}ms, "
        f"{p.percent:g} % treatment at {p.service_rps:g} req/s",
        f"bound: {bound_formula(p)}",
        f"  where {p.share:.2f} = (error bound {p.error_bound:g} − errors before {p.errors_before:g}) / "
        f"(errors after {p.errors_after:g} − errors before {p.errors_before:g})",
        f"target: {target}: {verdict} ({_seconds(summary.median_seconds)})",
    ]


def document(
    p: Parameters, results: Sequence[RunResult], summary: Summary, *, command: str, started: datetime
) -> dict[str, Any]:
    return {
        "command": command,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "measures": "seconds from the regression's start (SIGUSR1 sent to the service) until an "
        "OpenFeature flagd FILE-mode client evaluates off for every watched treatment user; beside it "
        "(ofrep_seconds) until the flag server answers off for them over OFREP: a fake of the server's "
        "OFREP API in a process of its own, evaluating the same flag file with the Python flagd "
        "evaluator (the flagd daemon cannot run here), and "
        "(verified_seconds) flagroll's own verification of the rollback, from its write",
        "parameters": {
            **asdict(p),
            "client_poll_seconds": p.client_poll_seconds,
            "evaluation_poll_seconds": EVALUATION_POLL_SECONDS,
            "watched_users": WATCHED_USERS,
            "passing_checks_before_injection": PASSING_CHECKS,
        },
        "bound": {
            "seconds": round(bound_seconds(p), 3),
            "formula": bound_formula(p),
            "share": round(p.share, 4),
        },
        "target": {
            "median_seconds_at_most": summary.target_median_seconds,
            "met": summary.target_met,
        },
        "summary": asdict(summary),
        "seconds": [r.seconds for r in results if r.ok],
        "ofrep_seconds": [r.ofrep_seconds for r in results if r.ok],
        "runs": [asdict(r) for r in results],
        "policy": policy_text(p, 1),
    }
