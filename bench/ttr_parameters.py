"""What the time-to-rollback benchmark (bench/time_to_rollback.py) is run with: its parameters, the
bound the docs give for them, and the policy it rolls out."""

from __future__ import annotations

from dataclasses import dataclass

from controller.adapters.policyfile import load_text
from controller.demo.service import ERROR_RATIO, FLAG, REGRESSION_ERROR_RATIO, ROUTE

POLICY_NAME = "price-quote-cache"
TARGET_MEDIAN_SECONDS = 15.0
EVALUATION_POLL_SECONDS = 0.02  # how often the client evaluates the flag once the regression started
WATCHED_USERS = 5  # treatment users the client watches in each run
PASSING_CHECKS = 2  # consecutive checks at the step, every one passing, before the injection
VERIFY_SAMPLE = 200  # keys flagroll's verification asks the fake flag server each round
VERIFY_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Parameters:
    """Everything the measured time depends on; the bound is computed from these."""

    scrape_seconds: float = 1.0
    window_seconds: int = 10  # the rate window of the policy's queries
    interval_seconds: int = 2  # the policy's check interval
    client_poll_ms: int = 200  # the flagd FILE provider re-reads the flag file this often
    percent: float = 50.0  # the single step: treatment 50 %, control 50 %
    min_samples: int = 40
    error_bound: float = 0.05  # the guardrail's max
    errors_before: float = ERROR_RATIO  # the treatment path's error ratio, healthy
    errors_after: float = REGRESSION_ERROR_RATIO  # … and once the regression is injected
    service_rps: float = 150.0  # the demo service's default load

    @property
    def client_poll_seconds(self) -> float:
        return self.client_poll_ms / 1000

    @property
    def share(self) -> float:
        """The share of the rate window that must hold regressed requests before the ratio crosses
        the bound: (bound − before) / (after − before)."""
        return (self.error_bound - self.errors_before) / (self.errors_after - self.errors_before)


def bound_seconds(p: Parameters) -> float:
    """The docs' bound (README, "How fast a rollback is": a scrape to see the first
    bad sample, the share of the rate window that must be bad, one check interval, one more scrape
    for rate()'s extrapolation) plus one poll of the flagd client, which only then sees the file."""
    return 2 * p.scrape_seconds + p.share * p.window_seconds + p.interval_seconds + p.client_poll_seconds


def bound_formula(p: Parameters) -> str:
    return (
        f"2 × scrape ({p.scrape_seconds:g}s) + {p.share:.2f} × rate window ({p.window_seconds}s) + "
        f"check interval ({p.interval_seconds}s) + client poll ({p.client_poll_seconds:g}s) "
        f"= {bound_seconds(p):.2f}s"
    )


_LABELS = 'route="{route}",feature_flag_key="{{{{flag}}}}",feature_flag_result_variant="{{{{variant}}}}"'


def policy_text(p: Parameters, run: int) -> str:
    """The demo's error-rate guardrail on a single step; ``run`` makes each run a new revision: the
    step's hold (an hour, never reached in a run) gets ``run`` more seconds. The aim names the run for
    people, but an edit of the aim alone is not a new revision."""
    labels = _LABELS.format(route=ROUTE)
    window = f"{p.window_seconds}s"
    return f"""\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata:
  name: {POLICY_NAME}
spec:
  owner: demo-sre
  aim: "Cut p95 of /price/quote from 140ms to 70ms (time-to-rollback run {run})."
  mechanism: "We believe a read-through cache cuts p95 because it removes the pricing-database call."
  flag:
    key: {FLAG}
  control: true
  maxPercent: {p.percent:g}
  interval: {p.interval_seconds}s
  steps:
    - {{percent: {p.percent:g}, hold: {3600 + run}s}}
  traffic:
    query: sum(increase(http_server_requests_total{{{labels}}}[{window}]))
    minSamples: {p.min_samples}
  guardrails:
    - name: error-rate
      query: >-
        sum(rate(http_server_requests_total{{code=~"5..",{labels}}}[{window}]))
        / sum(rate(http_server_requests_total{{{labels}}}[{window}]))
      max: {p.error_bound:g}
"""


def revision_of_text(text: str) -> str:
    loaded = load_text(text, "<time-to-rollback>")
    if loaded.errors or len(loaded.policies) != 1:
        raise ValueError("the benchmark's policy is invalid: " + "; ".join(str(e) for e in loaded.errors))
    return loaded.policies[0].policy.revision


def treatment_error_ratio_query(p: Parameters) -> str:
    """The guardrail's query for the treatment arm: what the controller sees."""
    labels = f'route="{ROUTE}",feature_flag_key="{FLAG}",feature_flag_result_variant="on"'
    window = f"{p.window_seconds}s"
    return (
        f'sum(rate(http_server_requests_total{{code=~"5..",{labels}}}[{window}])) '
        f"/ sum(rate(http_server_requests_total{{{labels}}}[{window}]))"
    )
