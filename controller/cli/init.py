"""``flagroll init``: write a first rollout policy for one flag (to stdout, or a new file).

The text comes from :mod:`controller.core.firstpolicy`, with the metric names of the instrumentation
kit. With ``--flags`` the flag file says whether the flag is new, would be adopted (the adoption
decision of :mod:`controller.core.ownership`, as ``flagroll run`` applies it), or cannot be: then
nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from controller.adapters.flagstore import FileFlagStore
from controller.adapters.policyfile import load_text
from controller.adapters.policyowners import adoption, judge_ownership
from controller.cli import common
from controller.cli.common import EXIT_FAIL, EXIT_OK
from controller.cli.options import Commands
from controller.core.errors import FlagrollError, UsageError
from controller.core.firstpolicy import (
    TEMPLATES_FILE,
    FirstPolicyOptions,
    KitMetrics,
    first_policy,
    option_problems,
)
from controller.core.flagd import owners
from controller.core.policy import pct

REVIEW_AFTER = timedelta(days=28)


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "init",
        help="write a first rollout policy for a flag (to stdout, or --output FILE)",
        description="Write a first rollout policy for one flag: a control arm, four steps with holds, "
        "statistical guardrails on the error ratio and on slow requests against control, and the "
        "sample-ratio check, on the metrics the instrumentation kit exports. Comments mark what to "
        "adjust. Exit 0 when written; 1 when --flags shows the flag cannot be taken; 2 for a bad option.",
        epilog="Then: 'flagroll validate FILE', and commit the file beside your policies.",
    )
    p.add_argument(
        "--flag",
        required=True,
        metavar="KEY",
        help="the flag key, as your service evaluates it (letters, digits, '_', '-', '.'); the policy's "
        "name is the key in lower case with '_' as '-'",
    )
    p.add_argument(
        "--route",
        required=True,
        metavar="/PATH",
        help="the route label of the requests the flag changes, a template such as /price/quote or "
        "/items/{id} (as the kit's middleware records it); the guardrails judge only these requests",
    )
    p.add_argument("--owner", required=True, metavar="NAME", help="who can say stop (a team or a person)")
    p.add_argument(
        "--aim",
        metavar="TEXT",
        help="the outcome sought, with numbers ('Cut p95 of /price/quote from 450ms to 250ms'); shown in "
        "every decision (default: a neutral sentence to replace)",
    )
    p.add_argument(
        "--mechanism",
        metavar="TEXT",
        help="why the change should work ('We believe X moves Y because Z'); without it the policy has a "
        "commented line to fill in, and 'flagroll validate' warns",
    )
    p.add_argument(
        "--template",
        action="store_true",
        help=f"also count traffic and cap the error ratio with the shared MetricTemplates of "
        f"{TEMPLATES_FILE} (keep that file beside the policy); the statistical guardrails keep their "
        "own selectors",
    )
    p.add_argument(
        "--flags",
        type=Path,
        metavar="FILE",
        help="the flag file the policy will meet: say whether the flag is new or would be adopted, and "
        "refuse (exit 1, nothing written) when it cannot be taken as it is",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write the policy to FILE (refused if it exists, unless --force) instead of stdout",
    )
    p.add_argument("--force", action="store_true", help="with --output: overwrite an existing file")
    p.set_defaults(handler=cmd_init)


def kit_metrics() -> KitMetrics:
    """The names the instrumentation kit exports (loaded only when the command runs)."""
    from controller import instrumentation as kit

    return KitMetrics(
        requests=kit.REQUESTS_METRIC,
        duration=kit.DURATION_METRIC,
        evaluations=kit.EVALUATIONS_METRIC,
        flag_label=kit.FLAG_KEY_LABEL,
        variant_label=kit.VARIANT_LABEL,
        route_label=kit.ROUTE_LABEL,
        code_label=kit.CODE_LABEL,
        buckets_seconds=kit.DEFAULT_BUCKETS,
    )


def cmd_init(args: argparse.Namespace) -> int:
    options = FirstPolicyOptions(
        flag_key=args.flag,
        route=args.route,
        owner=args.owner,
        review=common.utc_now().date() + REVIEW_AFTER,
        aim=args.aim,
        mechanism=args.mechanism,
        template=args.template,
    )
    problems = option_problems(options)
    if args.force and args.output is None:
        problems.append("--force: only with --output FILE")
    if args.output is not None and args.output.exists() and not args.force:
        problems.append(f"--output: {args.output} already exists; pass --force to overwrite it")
    if problems:
        raise UsageError("\n  ".join(problems))
    text = first_policy(options, kit_metrics())
    _check(text)
    note = None
    if args.flags is not None:
        ok, note = meets_flag_file(text, args.flags)
        if not ok:
            print(f"flagroll init: {note}; nothing written", file=sys.stderr)
            return EXIT_FAIL
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write(args.output, text, force=args.force)
        print(f"wrote {args.output}: read the lines marked ADJUST, then 'flagroll validate'", file=sys.stderr)
    if note is not None:
        print(note, file=sys.stderr)
    return EXIT_OK


def _check(text: str) -> None:
    """The text must be a valid policy (the templates it names are in their own file)."""
    loaded = load_text(text, "flagroll init")
    if loaded.errors or len(loaded.policies) != 1:
        shown = "; ".join(str(issue) for issue in loaded.errors) or "no policy"
        raise FlagrollError(f"the policy written does not validate (a flaw of flagroll init): {shown}")


def meets_flag_file(text: str, flags: Path) -> tuple[bool, str]:
    """Whether the policy in ``text`` can take its flag in the flag file ``flags``, and what that means.

    The flag's owner comes from the flag file; a flag that is not flagroll's is adopted or refused by
    the ownership rules (:func:`controller.core.ownership.assign`), exactly as ``flagroll run`` would.
    """
    snapshot = FileFlagStore(flags).read()
    document = snapshot.document
    loaded = load_text(text, "flagroll init")
    policy = loaded.policies[0]
    key, name = policy.policy.flag_key, policy.policy.name
    # A managed flag: only its owner's name is known here (not the policy files), so whether that
    # policy still exists cannot be told; a first policy for a flag another policy runs is refused.
    owner = owners(document).get(key)
    if owner == name:
        return True, (
            f"{flags}: flag {key} is already rolled out by a policy named {name}: this one replaces its "
            "text (a new revision); replace that policy's file with it rather than add a second copy"
        )
    if owner is not None:
        return False, (
            f"--flags {flags}: flag {key} is rolled out by policy {owner!r}; a second policy for it is "
            f"ignored while that one exists (hand it over with 'flagroll adopt {key} --policy {name}' "
            "once this policy is in the policy directory)"
        )
    judge_ownership(loaded, document, {})
    ownership = loaded.ownership
    assert ownership is not None  # judge_ownership sets it
    if 0 in ownership.adopt:
        flag = document.get("flags", {}).get(key)
        return True, f"{flags}: flag {key} exists and is not flagroll's; this policy adopts it: " + adoption(
            policy, flag
        )
    rejected = [r.reason for r in ownership.rejected]
    if rejected:
        return False, f"--flags {flags}: {rejected[0]}"
    first = pct(policy.policy.step_percent(0))
    where = "does not exist yet" if snapshot.version is None else "does not hold it"
    return True, (
        f"{flags} {where}: flag {key} is new; the first cycle of 'flagroll run' creates it and starts the "
        f"rollout at {first} %"
    )


def _write(path: Path, text: str, *, force: bool) -> None:
    try:
        with path.open("w" if force else "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"--output: {path} already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise FlagrollError(f"cannot write {path}: {exc.strerror or exc}") from exc
