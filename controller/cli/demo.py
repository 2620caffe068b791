"""``flagroll demo``: a real rollout and rollback with a local Prometheus.

The demo's own modules (and their dependencies) are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from controller.cli.options import Commands


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "demo",
        help="watch a real rollout and a rollback, with a local Prometheus (needs 'prometheus')",
        description="Start a real Prometheus, a demo service evaluating the flag through OpenFeature "
        "and flagd, and the controller on a demo policy; show the rollout live. The default "
        "scenario injects a regression at the last step and shows the rollback; 'healthy' ramps "
        "to completion. Exits 0 when the scenario ends as expected.",
    )
    p.add_argument("--scenario", choices=["regression", "healthy"], default="regression")
    p.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="where to leave the flag file and decision log: a new or empty directory, or one a demo used "
        "before (default: a new temporary directory)",
    )
    p.add_argument(
        "--prometheus-binary", default="prometheus", metavar="PATH", help="the Prometheus server binary"
    )
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from controller.demo.runner import run_demo  # the demo's dependencies load only when asked

    try:
        return asyncio.run(run_demo(args.scenario, args.dir, args.prometheus_binary, sys.stdout))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("flagroll demo: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
