"""``flagroll explain FLAG``: a rollout's story, from its flag state, decision log and policy."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.adapters.decisionlog import read_records
from controller.adapters.policyfile import load_paths
from controller.cli import common, kubernetes
from controller.cli.common import EXIT_OK, open_store, optional_decision_log, warn
from controller.cli.options import Commands, decision_log_option, env, flags_option
from controller.core.errors import UsageError
from controller.core.explain import explain
from controller.core.flagd import managed_keys, read_state
from controller.core.freezes import StandingFreeze
from controller.core.guarding import unguarded_reason
from controller.core.printable import shown


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "explain",
        help="a rollout's story: aim, steps taken, the last checks, what must change to advance",
        description="The rollout of FLAG in plain language: aim and mechanism, the steps taken with "
        "times, the current state, every check of the last decision (value, bound, samples per arm, "
        "verdict), what would have to change for it to advance, and the PromQL of every check.",
    )
    p.add_argument("flag", metavar="FLAG", help="the flag key")
    flags_option(p)
    decision_log_option(p)
    p.add_argument(
        "--policies",
        type=Path,
        default=env("FLAGROLL_POLICIES"),
        metavar="DIR",
        help="the policies (optional: adds the step holds, and the Freeze documents and schedule as "
        "of now) [env FLAGROLL_POLICIES]",
    )
    kubernetes.add_store_options(p)
    p.set_defaults(handler=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    store = open_store(args)
    document = store.read().document
    state = read_state(document, args.flag, check_layout=False)
    if state is None:
        known = ", ".join(managed_keys(document)) or "none"
        raise UsageError(f"flag {args.flag!r} is not in {store.location} (managed flags: {known})")
    log_path = optional_decision_log(args)
    records = (
        [r for r in read_records(log_path, warn) if r.get("flag") == args.flag]
        if log_path is not None
        else []
    )
    policy = None
    freezes: tuple[StandingFreeze, ...] = ()
    unguarded = str(records[-1].get("reason")) if records and records[-1].get("guarded") is False else None
    if args.policies is not None:
        loaded = load_paths([args.policies], document)
        chosen = next((p for p in loaded.policies if p.policy.flag_key == args.flag), None)
        policy, freezes = (chosen.policy, chosen.freezes) if chosen is not None else (None, ())
        why = loaded.ownership.unjudged.get(args.flag) if loaded.ownership is not None else None
        unguarded = unguarded_reason(state, why.reason) if why is not None else None
    print(shown(explain(args.flag, state, records, policy, common.utc_now(), unguarded, freezes)))
    return EXIT_OK
