"""``flagroll diff OLD NEW``: what a policy edit changes, and what it would do to the running rollout."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.adapters.policyfile import load_paths
from controller.cli import common, kubernetes
from controller.cli.common import EXIT_FAIL, EXIT_OK, open_store
from controller.cli.options import Commands, flags_option
from controller.core.flagd import read_state
from controller.core.policydiff import effect, field_changes


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "diff",
        help="what a policy edit changes, and what it would do to the running rollout",
        description="Compare two versions of policy files (e.g. the main branch's and a pull request's): "
        "the fields that change, the new revision, and, with --flags, what the controller would do to "
        "each running rollout (continue from its step, lower exposure, restart a rolled-back one). Exit 0 "
        "when NEW is valid, 1 when not.",
    )
    p.add_argument("old", type=Path, metavar="OLD", help="the policy file (or directory) as it is now")
    p.add_argument("new", type=Path, metavar="NEW", help="the policy file (or directory) as edited")
    flags_option(p)
    kubernetes.add_store_options(p)
    p.set_defaults(handler=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    old = {p.policy.name: p.policy for p in load_paths([args.old]).policies}
    loaded = load_paths([args.new])
    for issue in loaded.issues:
        print(issue)
    document = None
    if args.flags is not None or args.flag_store != "file":
        document = open_store(args).read().document
    now = common.utc_now()
    for item in loaded.policies:
        new = item.policy
        print(f"policy {new.name} (flag {new.flag_key}), revision {new.revision}")
        before = old.get(new.name)
        if before is None:
            print("  new policy")
        else:
            changes = field_changes(before, new)
            print(f"  revision {before.revision} → {new.revision}" if changes else "  no change in meaning")
            for line in changes:
                print(f"  {line}")
        if document is not None:
            state = read_state(document, new.flag_key, check_layout=False)
            print("  effect on the running rollout:")
            for line in effect(new, state, now):
                print(f"    {line}")
    for name in sorted(old.keys() - {p.policy.name for p in loaded.policies}):
        if old[name].spec.on_delete == "rollback":
            print(f"policy {name}: removed; onDelete: rollback: its flag is ROLLED BACK to 0 % if exposed")
        else:
            print(f"policy {name}: removed (its flag is left as it is and reported as without a policy)")
    return EXIT_FAIL if loaded.errors else EXIT_OK
