"""``flagroll log``: the decision log rendered for a human (or as raw JSON), optionally followed."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controller.adapters.decisionlog import exists, follow, read_records
from controller.cli.common import EXIT_OK, decision_log_path, warn
from controller.cli.options import Commands, decision_log_option, flags_option
from controller.core.errors import UsageError
from controller.core.printable import shown
from controller.core.records import render_all

FOLLOW_LAST = 10  # decisions already logged that --follow shows first, as a tail does


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "log",
        help="read the decision log",
        description="Decisions rendered for a human: aim, mechanism, why, then the signals and the "
        "checkpoint.",
    )
    decision_log_option(p)
    flags_option(p)
    p.add_argument("--flag", metavar="KEY", help="only this flag's decisions")
    p.add_argument(
        "--action", action="append", metavar="ACTION", help="only these actions (repeatable), e.g. rollback"
    )
    p.add_argument(
        "--last",
        type=int,
        metavar="N",
        help=f"only the last N decisions (with --follow: of those already logged; default {FOLLOW_LAST})",
    )
    p.add_argument("--json", action="store_true", help="print the raw JSON records")
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help=f"keep printing decisions as they come, after the last {FOLLOW_LAST} logged (--last N)",
    )
    p.set_defaults(handler=cmd_log)


def cmd_log(args: argparse.Namespace) -> int:
    path = decision_log_path(args)

    def wanted(record: dict[str, Any]) -> bool:
        if args.flag and record.get("flag") != args.flag:
            return False
        return not (args.action and record.get("action") not in args.action)

    def show(records: Any) -> None:
        if args.json:
            for record in records:
                print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            for text in render_all(records):
                print(shown(text) + "\n", flush=True)

    if args.follow:
        last = FOLLOW_LAST if args.last is None else args.last
        show(follow(path, warn=warn, where=wanted, last=last))
        return EXIT_OK
    if not exists(path):
        raise UsageError(f"no decision log at {path}")
    records = [r for r in read_records(path, warn=warn) if wanted(r)]
    if args.last is not None:
        records = records[-args.last :] if args.last > 0 else []
    show(records)
    return EXIT_OK
