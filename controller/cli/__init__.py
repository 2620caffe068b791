"""The ``flagroll`` command: one module per command (or group of commands), each adding its own
subparser (:mod:`.parser` puts them together); shared options in :mod:`.options`, shared helpers (exit
codes, the flag store, the decision log, the clock) in :mod:`.common`; the Kubernetes store and Lease
options in :mod:`.kubernetes`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from controller.adapters import logs
from controller.cli import kubernetes
from controller.cli.common import EXIT_FAIL, EXIT_USAGE
from controller.cli.parser import build_parser
from controller.core.errors import FlagrollError, UsageError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stream = sys.stdout if args.command == "run" else sys.stderr
    level = "warning" if args.command == "demo" and args.log_level == "info" else args.log_level
    logs.configure(args.log_format, level, stream)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"flagroll {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FlagrollError as exc:
        print(f"flagroll {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    finally:
        kubernetes.close_clients()
