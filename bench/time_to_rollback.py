"""Time to rollback, end to end on real components: from the moment a regression starts in the
treatment path to the moment an OpenFeature client evaluates ``off`` for users who were in treatment.

What runs, all on 127.0.0.1:

- a real Prometheus (:class:`controller.adapters.promserver.PrometheusServer`, 1 s scrape), one for all runs;
- the demo service (``python -m controller.demo.service``): it evaluates the flag through OpenFeature
  and the flagd provider in FILE mode, serves 150 requests per second to 20,000 simulated users and
  exports per-variant metrics; SIGUSR1 injects a regression into the treatment path (errors 0.1 % →
  20 %, +200 ms), SIGUSR2 clears it;
- the controller: the real :class:`~controller.reconciler.Reconciler` with the file flag store, the
  Prometheus client and the decision log, one cycle every 2 s (the policy's ``interval``), driven on a
  fixed schedule by this process;
- an OpenFeature client in this process: the flagd provider in FILE mode on the same flag file, which
  it polls every 200 ms (``deadline_ms``);
- a flag server's OFREP API on the same flag file: the fake of tests/support/ofrepfake.py in a process
  of its own (not the flagd daemon, which cannot run here). The controller verifies each rollback
  against it (``--verify-ofrep``), and the benchmark asks it for the watched users too, so that each
  run also gives the time to the flag server's answer, beside the in-process client's.

The policy is an error-rate guardrail (``max: 0.05`` over a 10 s rate window, ``minSamples:
40`` of traffic) with a single step at 50 %; a p95-latency guardrail is left out (it often
trips first), so that what is measured is the guardrail the bound is about. Each run writes a new
policy revision (which restarts a rolled-back rollout), waits until the rollout is at 50 %, its arms
have been exposed for a full rate window plus two scrapes and the last two checks passed, picks
treatment users (the client evaluates ``on`` for them), then sends SIGUSR1 at a random moment
between two checks. From that moment it evaluates the flag for those users every 20 ms until every
one of them gets ``off``: that is the measured time. It then sends SIGUSR2 and, before the next run,
waits until the guardrail's rate window no longer sees the regression.

    .venv/bin/python -m bench.time_to_rollback                  # 10 runs, about 5 minutes
    .venv/bin/python -m bench.time_to_rollback --runs 3 --json /tmp/ttr.json

It prints every run, the median and the maximum, the bound the docs give and whether the target
(median ≤ 15 s) is met; exit code 0 when every run rolled back and the target is met. See
docs/benchmarks.md for the figures and why the bound holds.

This module is the command line; the parameters, the bound and the policy are in
bench/ttr_parameters.py, the predicates on records and evaluations in bench/ttr_records.py, the
summary and the report in bench/ttr_results.py, and the live harness (the controller's driver, the
client, the runs) in bench/ttr_harness.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

if not __package__:  # run as a file (python bench/time_to_rollback.py): make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ttr_harness import measure
from bench.ttr_parameters import TARGET_MEDIAN_SECONDS, Parameters, bound_seconds
from bench.ttr_results import RunResult, Summary, document, report_lines, summarise
from controller.core.errors import UsageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.time_to_rollback",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--runs", type=int, default=10, help="regressions to inject, one per run (default 10)"
    )
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument(
        "--dir",
        type=Path,
        help="keep the flag file, decision log, policy and logs here (default: a temporary "
        "directory, removed afterwards)",
    )
    parser.add_argument("--seed", type=int, help="seed of the injection moments and watched users")
    return parser


def _write_json(
    path: Path,
    argv: list[str] | None,
    p: Parameters,
    results: list[RunResult],
    summary: Summary,
    started: datetime,
) -> None:
    command = "python -m bench.time_to_rollback " + " ".join(argv if argv is not None else sys.argv[1:])
    figures = document(p, results, summary, command=command.strip(), started=started)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    p = Parameters()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="flagroll-ttr-"))
    started = datetime.now(UTC)
    print(
        f"time to rollback: {args.runs} runs; regression start → client evaluates off; "
        f"bound {bound_seconds(p):.2f}s, target median ≤ {TARGET_MEDIAN_SECONDS:g}s",
        file=out,
        flush=True,
    )
    try:
        results = asyncio.run(measure(args.runs, directory, out, p, args.seed))
    except UsageError as exc:
        print(f"time_to_rollback: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    summary = summarise(results)
    print(file=out)
    for line in report_lines(p, results, summary):
        print(line, file=out)
    if args.json is not None:
        _write_json(args.json, argv, p, results, summary, started)
        print(f"JSON: {args.json}", file=out)
    if args.dir is not None:
        print(f"flag file, decision log, policy and logs: {args.dir}", file=out)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
