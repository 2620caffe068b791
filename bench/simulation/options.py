"""The command line of bench/simulate.py."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def parser(description: str | None, root: Path) -> argparse.ArgumentParser:
    """The options of bench/simulate.py (``root``: the repository)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--family",
        choices=("classic", "realistic"),
        default="classic",
        help="classic: the balanced, independent scenarios (and a broken split, a latency regression); "
        "realistic: one traffic model per family (unequal arms, bursts of errors, repeated evaluations "
        "per user, a daily cycle), each A/A and 1 %% → 2 %% errors",
    )
    parser.add_argument(
        "--inflation",
        choices=("estimated", "policy", "oracle"),
        default="estimated",
        help="estimated: the variance inflation measured from per-interval counts at every look, the "
        "policy's varianceInflation as its floor (as the controller does); policy: the policy's value "
        "alone (1); oracle: the traffic's true inflation of error counts (2m − 1 for geometric bursts of "
        "mean m, 1 without bursts) as varianceInflation, nothing measured: the best a test of this form "
        "can do when told the truth",
    )
    parser.add_argument(
        "--families",
        help="only these families, comma-separated (realistic: balanced, unequal-10, unequal-100, "
        "bursts-geo3, bursts-geo5, bursts-zeta, users-geo3, users-zeta, daily)",
    )
    parser.add_argument("--runs", type=int, default=1000, help="simulated rollouts per scenario")
    parser.add_argument(
        "--aa-runs", type=int, default=None, help="simulated rollouts per A/A scenario (default: --runs)"
    )
    parser.add_argument("--seed", type=int, default=20261102)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument(
        "--alpha", type=float, default=0.01, help="statistics.alpha of the statistical policy"
    )
    parser.add_argument("--error-delta", type=float, default=0.0, help="maxDelta of the errorRatio guardrail")
    parser.add_argument(
        "--slow-increase", type=float, default=0.05, help="maxIncrease of the latency guardrail"
    )
    parser.add_argument("--min-samples", type=int, default=200)
    parser.add_argument("--expected-samples", type=int, default=2000, help="statistics.expectedSamples")
    parser.add_argument(
        "--error-weight",
        type=float,
        default=3.0,
        help="alphaWeight of the errorRatio guardrail next to the latency guardrail's 1 (default 3: "
        "3/4 of alpha for errors)",
    )
    parser.add_argument(
        "--guardrails", default="errors,latency", help="statistical guardrails in the policy: errors, latency"
    )
    parser.add_argument(
        "--regression-at", type=int, default=0, help="seconds after exposure start when the regression begins"
    )
    parser.add_argument(
        "--fixed",
        action="append",
        default=None,
        help="a fixed-threshold rule as ERROR_MAX,P95_MAX_SECONDS, or none (repeatable; "
        "default 0.02,0.35 and 0.05,0.5)",
    )
    parser.add_argument("--fixed-window", default="1m", help="rate window of the fixed-threshold rules")
    parser.add_argument(
        "--minutes", type=int, default=None, help="simulated time per rollout (default: its ramp's, 45 min)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write every figure (default bench/results/simulation.json, or realistic.json)",
    )
    parser.add_argument("--plot", type=Path, default=root / "docs" / "time-to-rollback.png")
    parser.add_argument("--no-plot", action="store_true")
    return parser
