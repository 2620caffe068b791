"""The dispersion queries against a real Prometheus: the sums over bins it returns are the sums that
the raw samples it stored give when computed in Python, and a bursty treatment arm is measured as
overdispersed in the decision record."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from controller.adapters.promserver import PrometheusServer
from controller.core import dispersion as dsp
from controller.core.decision import decide, queries_for
from controller.core.policy import Guardrail
from controller.core.queries import (
    ARM_LABEL,
    SUM_LABEL,
    Arm,
    Part,
    dispersion_query,
    exposure_dispersion_query,
    le_matcher,
    render,
    with_suffix,
)
from controller.core.state import Outcome
from tests.adapters.test_statistical_prometheus import ask, exposed, load, policy
from tests.support.synthetic import SyntheticService
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.victoriametrics]

BIN_SECONDS = 2
LOOKBACK_MS = 300_000  # Prometheus's default lookback for an instant selector
Sums = dict[Part, float]


@contextmanager
def bursts(synthetic: SyntheticService, route: str, flag: str) -> Iterator[None]:
    """The treatment arm alternates every three seconds (longer than a bin) between no errors and half of its requests
    failing, and between fast and slow requests; control stays steady."""
    synthetic.set(route, flag, "control", rps=40, error_ratio=0.02, latency_seconds=0.04)
    synthetic.set(route, flag, "on", rps=40, error_ratio=0.0, latency_seconds=0.04)
    stop = threading.Event()

    def toggle() -> None:
        bad = False
        while not stop.wait(3.0):
            bad = not bad
            synthetic.set(
                route,
                flag,
                "on",
                rps=40,
                error_ratio=0.5 if bad else 0.0,
                latency_seconds=0.4 if bad else 0.04,
            )

    thread = threading.Thread(target=toggle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def instant(prometheus: PrometheusServer, promql: str, at: float) -> tuple[str, list[Any]]:
    response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"})
    payload = response.json()
    assert payload["status"] == "success", payload
    return payload["data"]["resultType"], payload["data"]["result"]


def sums_answered(prometheus: PrometheusServer, promql: str, at: float) -> dict[tuple[str, Part], float]:
    kind, result = instant(prometheus, promql, at)
    assert kind == "vector"
    return {(s["metric"][ARM_LABEL], Part(s["metric"][SUM_LABEL])): float(s["value"][1]) for s in result}


def samples(
    prometheus: PrometheusServer, selector: str, at: float, seconds: int
) -> list[list[tuple[int, float]]]:
    """Every raw sample of every series of ``selector`` in the ``seconds`` before ``at``."""
    kind, result = instant(prometheus, f"{selector}[{seconds}s]", at)
    assert kind == "matrix"
    return [[(round(float(t) * 1000), float(v)) for t, v in s["values"]] for s in result]


def per_bin(series: list[list[tuple[int, float]]], step_ms: int) -> float | None:
    """What flagroll's per-bin expression gives at one step: per series, the value at the step less
    the value one bin earlier (the latest sample at or before each, within the lookback), at least
    0; summed over the series present at both; nothing when none is."""

    def value_at(points: list[tuple[int, float]], at_ms: int) -> float | None:
        found = [v for t, v in points if at_ms - LOOKBACK_MS < t <= at_ms]
        return found[-1] if found else None

    total, any_series = 0.0, False
    for points in series:
        now, before = value_at(points, step_ms), value_at(points, step_ms - BIN_SECONDS * 1000)
        if now is not None and before is not None:
            total += max(now - before, 0.0)
            any_series = True
    return total if any_series else None


def sums_in_python(bad: list[float | None], total: list[float | None]) -> Sums:
    kept = [(x, n) for x, n in zip(bad, total, strict=True) if n is not None and n > 0]
    return {
        Part.BINS: float(len(kept)),
        Part.BIN_EVENTS: sum(x for x, _ in kept if x is not None),
        Part.BIN_TOTAL: sum(n for _, n in kept),
        Part.BIN_SQUARES: sum(x * x / n for x, n in kept if x is not None),
    }


def left_open(prometheus: PrometheusServer) -> bool:
    """Whether the server's ranges leave out their left edge: ``(t-W, t]`` on Prometheus 3 and
    VictoriaMetrics, ``[t-W, t]`` on Prometheus 2."""
    return not prometheus.version().startswith("2.")


def steps(at: float, window_seconds: int, *, open_left: bool) -> list[int]:
    """The subquery's evaluation times: multiples of the bin within the window, its left edge included
    only where ranges include it (a window that starts on a multiple of the bin has one more step on
    Prometheus 2)."""
    edge = (at - window_seconds) / BIN_SECONDS
    first = math.floor(edge) + 1 if open_left else math.ceil(edge)
    return [k * BIN_SECONDS * 1000 for k in range(first, math.floor(at / BIN_SECONDS) + 1)]


def expected_guardrail_sums(
    prometheus: PrometheusServer, guardrail: Guardrail, flag: str, at: float, window_seconds: int
) -> dict[tuple[str, Part], float]:
    span = window_seconds + 2 * BIN_SECONDS + 300
    evaluated = steps(at, window_seconds, open_left=left_open(prometheus))
    found = {}
    for arm in (Arm.TREATMENT, Arm.CONTROL):
        if guardrail.error_ratio is not None:
            bad_series = samples(
                prometheus, render(guardrail.error_ratio.errors, flag=flag, arm=arm), at, span
            )
            all_series = samples(
                prometheus, render(guardrail.error_ratio.requests, flag=flag, arm=arm), at, span
            )
            bad = [per_bin(bad_series, s) for s in evaluated]
        else:
            assert guardrail.latency is not None
            histogram = render(guardrail.latency.histogram, flag=flag, arm=arm)
            bucket = with_suffix(histogram, "_bucket", le_matcher(guardrail.latency.slower_than_seconds))
            fast_series = samples(prometheus, bucket, at, span)
            all_series = samples(prometheus, with_suffix(histogram, "_count"), at, span)
            bad = []
            for s in evaluated:
                fast, count = per_bin(fast_series, s), per_bin(all_series, s)
                bad.append(None if fast is None or count is None else max(count - fast, 0.0))
        total = [per_bin(all_series, s) for s in evaluated]
        for part, value in sums_in_python(bad, total).items():
            found[(arm.value, part)] = value
    return found


def test_the_sums_over_bins_are_those_of_the_stored_samples(
    synthetic: SyntheticService, prometheus: PrometheusServer
) -> None:
    route, flag = "/disp-bins", "disp-bins"
    p = load(policy(route, flag, interval=f"{BIN_SECONDS}s"))
    since = time.time()
    with bursts(synthetic, route, flag):

        def enough() -> float | None:
            at = float(math.floor(time.time()))
            answered = sums_answered(
                prometheus,
                dispersion_query(p.spec.guardrails[0], flag, max(1, math.ceil(at - since)), BIN_SECONDS),
                at,
            )
            return at if min(answered.get((a.value, Part.BINS), 0) for a in Arm) >= 8 else None

        at = wait_for(enough, timeout_seconds=40, interval_seconds=0.5, what="8 bins per arm in Prometheus")
    # The window starts two bins before the arms' series existed: those bins are empty and left out.
    window_seconds = math.ceil(at - since) + 2 * BIN_SECONDS
    for guardrail in p.spec.guardrails:
        query = dispersion_query(guardrail, flag, window_seconds, BIN_SECONDS)
        answered = sums_answered(prometheus, query, at)
        expected = expected_guardrail_sums(prometheus, guardrail, flag, at, window_seconds)
        assert set(answered) == set(expected), guardrail.name
        for key, value in expected.items():
            assert answered[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (guardrail.name, key)
        arms = [
            dsp.BinSums(
                *(
                    answered[(arm.value, part)]
                    for part in (Part.BINS, Part.BIN_EVENTS, Part.BIN_TOTAL, Part.BIN_SQUARES)
                )
            )
            for arm in (Arm.TREATMENT, Arm.CONTROL)
        ]
        # The treatment's bad requests come in bursts of whole seconds: far more variable than
        # independent requests; control's are spread evenly (under-dispersed, counted smoothly).
        assert dsp.dispersion(arms[:1]).estimate > 5, guardrail.name

    assert p.statistics.exposure is not None
    query = exposure_dispersion_query(p.statistics.exposure, flag, window_seconds, BIN_SECONDS)
    answered = sums_answered(prometheus, query, at)
    span = window_seconds + 2 * BIN_SECONDS + 300
    treatment = samples(prometheus, render(p.statistics.exposure, flag=flag, arm=Arm.TREATMENT), at, span)
    control = samples(prometheus, render(p.statistics.exposure, flag=flag, arm=Arm.CONTROL), at, span)
    bad, total = [], []
    for s in steps(at, window_seconds, open_left=left_open(prometheus)):
        t, c = per_bin(treatment, s), per_bin(control, s)
        bad.append(t)
        total.append(None if t is None or c is None else t + c)
    expected_exposure = sums_in_python(bad, total)
    assert {part for _, part in answered} == set(expected_exposure)
    for part, value in expected_exposure.items():
        assert answered[(Arm.TREATMENT.value, part)] == pytest.approx(value, rel=1e-9, abs=1e-9), part


def test_a_bursty_treatment_is_measured_in_the_decision_record(
    synthetic: SyntheticService, prometheus: PrometheusServer
) -> None:
    route, flag = "/disp-record", "disp-record"
    p = load(policy(route, flag, interval=f"{BIN_SECONDS}s"))
    since = datetime.now(UTC)
    state = exposed(p, since)
    with bursts(synthetic, route, flag):

        def measured() -> Any:
            now = datetime.now(UTC)
            queries = queries_for(p, state, now)
            decision = decide(p, state, queries, ask(prometheus, queries), now)
            errors = next(c for c in decision.checks if c.name == "errors")
            evidence = errors.sequential.dispersion if errors.sequential else None
            return (
                (decision, errors)
                if evidence is not None and evidence.degrees_of_freedom and evidence.degrees_of_freedom >= 12
                else None
            )

        decision, errors = wait_for(
            measured, timeout_seconds=40, interval_seconds=0.5, what="a measured dispersion"
        )
    evidence = errors.sequential.dispersion
    assert evidence.estimate is not None
    assert evidence.estimate > 2
    assert evidence.used >= evidence.estimate
    assert errors.sequential.variance_inflation == evidence.used
    assert evidence.note == ""
    ratio = next(c for c in decision.checks if c.name == "sample-ratio")
    assert ratio.verdict is not Outcome.ERROR
    assert ratio.sample_ratio is not None
    assert ratio.sample_ratio.dispersion is not None
    assert ratio.sample_ratio.dispersion.estimate is not None  # exposures are counted smoothly here
