"""The ``flagroll`` argument parser, built from each command module's own piece."""

from __future__ import annotations

import argparse

from controller import __version__
from controller.cli import backtest, demo, diff, explain, human, init, log, run, schema, status, ui, validate
from controller.cli.options import env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagroll",
        description="Roll feature flags out step by step, guarded by Prometheus, for OpenFeature/flagd.",
        epilog="Run 'flagroll COMMAND --help' for a command's options. Docs: README.md.",
    )
    parser.add_argument("--version", action="version", version=f"flagroll {__version__}")
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=env("FLAGROLL_LOG_FORMAT", "auto"),
        help="log lines as JSON or for a terminal; auto picks console on a terminal "
        "[env FLAGROLL_LOG_FORMAT]",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=env("FLAGROLL_LOG_LEVEL", "info"),
        help="[env FLAGROLL_LOG_LEVEL]",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The order here is the order of `flagroll --help`.
    init.add_parser(commands)
    validate.add_parser(commands)
    run.add_parser(commands)
    status.add_parser(commands)
    ui.add_parser(commands)
    backtest.add_parser(commands)
    diff.add_parser(commands)
    explain.add_parser(commands)
    log.add_parser(commands)
    human.add_parsers(commands)  # stop, pause, resume, approve, adopt
    schema.add_parser(commands)
    demo.add_parser(commands)
    return parser
