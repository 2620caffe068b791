"""``flagroll validate``: check policy files, as text, JSON or GitHub workflow annotations."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.adapters.flagstore import FileFlagStore
from controller.adapters.policyfile import PolicySet, load_paths
from controller.adapters.policyowners import adoption
from controller.cli.common import EXIT_FAIL, EXIT_OK
from controller.cli.options import Commands
from controller.core.errors import Issue
from controller.core.flagd import read_state
from controller.core.freezes import StandingFreeze
from controller.core.policy import pct


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "validate",
        help="check policy files; exit 0 if valid, 1 if not",
        description="Check policy files and directories. Every problem is printed as "
        "FILE:LINE:COLUMN: FIELD: MESSAGE. Exit 0 when valid, 1 when not.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="policy files or directories")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--quiet", action="store_true", help="print problems only")
    p.add_argument(
        "--format",
        choices=["text", "json", "github"],
        default="text",
        help="text (default); json (one object: valid, policies, issues); github (workflow annotations "
        "on the offending line of a pull request)",
    )
    p.add_argument(
        "--flags",
        type=Path,
        metavar="FILE",
        help="the flag file the policies will meet: also check who owns which flag (a second policy "
        "for a running flag is an error), which existing flags a policy adopts or may not, and which "
        "flags no policy would judge",
    )
    p.set_defaults(handler=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    document = FileFlagStore(args.flags).read().document if args.flags is not None else None
    result = load_paths(args.paths, document)
    failed = bool(result.errors or (args.strict and result.warnings) or not result.files)
    if args.format == "json":
        print(json.dumps(validation_report(result, valid=not failed), indent=2))
        return EXIT_FAIL if failed else EXIT_OK
    if args.format == "github":
        for issue in result.issues:
            print(github_annotation(issue, strict=args.strict))
        if not result.files:
            print("::error title=flagroll validate::no policy files found")
        return EXIT_FAIL if failed else EXIT_OK
    for issue in result.issues:
        print(issue)
    if not args.quiet:
        _print_summary(result)
        if document is not None:
            for line in ownership_lines(result, document):
                print(line)
    if result.errors or (args.strict and result.warnings):
        return EXIT_FAIL
    if not result.files:
        print("no policy files found", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _print_summary(result: PolicySet) -> None:
    for template in result.templates:
        print(f"{template.where}: ok: template {template.template.name}")
    for entry in result.freezes:
        print(f"{entry.where}: {_freeze_line(entry.freeze)}")
    for loaded in result.policies:
        print(
            f"{loaded.where}: ok: {loaded.policy.name} (flag {loaded.policy.flag_key}, "
            f"revision {loaded.policy.revision})"
        )
    errors, warnings = len(result.errors), len(result.warnings)
    templates = len(result.templates)
    freezes = len(result.freezes)
    print(
        f"{len(result.policies)} valid "
        f"{'policy' if len(result.policies) == 1 else 'policies'}, "
        + (f"{templates} template{'s' * (templates != 1)}, " if templates else "")
        + (f"{freezes} freeze{'s' * (freezes != 1)}, " if freezes else "")
        + f"{errors} "
        f"error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    )


def _freeze_line(freeze: StandingFreeze) -> str:
    """``ok: freeze NAME …`` with what it covers and when, or why an invalid one holds everything."""
    if not freeze.valid:
        return (
            f"INVALID freeze {freeze.name}: until it validates (or is removed) it holds every due "
            "advance of every rollout (fail-safe)"
        )
    labels = freeze.labels
    covers = (
        "every rollout"
        if labels is None
        else "rollouts labelled " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    )
    begins = f"{freeze.begins:%Y-%m-%d %H:%M} UTC" if freeze.begins is not None else "always"
    ends = f"to {freeze.ends:%Y-%m-%d %H:%M} UTC" if freeze.ends is not None else "until removed"
    return f"ok: freeze {freeze.name} ({covers}; from {begins} {ends})"


def ownership_lines(result: PolicySet, document: Mapping[str, Any]) -> list[str]:
    """What meeting the flag file means: flags adopted, and flags no policy would judge."""
    ownership = result.ownership
    if ownership is None:
        return []
    flags = document.get("flags", {})
    lines = []
    for index, key in sorted(ownership.adopt.items()):
        loaded = result.candidates[index]
        lines.append(
            f"{loaded.where}: {loaded.policy.name} adopts flag {key}; {adoption(loaded, flags.get(key))}"
        )
    for key, unjudged in sorted(ownership.unjudged.items()):
        state = read_state(document, key, check_layout=False)
        if state is not None:
            loud = "UNGUARDED" if state.exposed else "not exposed"
            lines.append(
                f"flag {key} ({state.status.value} at {pct(state.percent)} %, {loud}): {unjudged.reason}"
            )
    return lines


def validation_report(result: PolicySet, *, valid: bool) -> dict[str, Any]:
    return {
        "valid": valid,
        "policies": [
            {
                "file": loaded.where,
                "name": loaded.policy.name,
                "flag": loaded.policy.flag_key,
                "revision": loaded.policy.revision,
            }
            for loaded in result.policies
        ],
        "templates": [
            {"file": t.where, "name": t.template.name, "query": t.template.spec.query}
            for t in result.templates
        ],
        "freezes": [entry.freeze.as_record() for entry in result.freezes],
        "issues": [
            {
                "file": issue.file,
                "line": issue.line,
                "column": issue.column,
                "field": issue.field,
                "message": issue.message,
                "severity": issue.severity,
            }
            for issue in result.issues
        ],
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(issue: Issue, *, strict: bool = False) -> str:
    """A workflow command that puts the issue on the offending line of a pull request's diff."""
    level = "error" if issue.severity == "error" or strict else "warning"
    props = [f"file={_escape_property(issue.file)}"]
    if issue.line is not None:
        props.append(f"line={issue.line}")
        if issue.column is not None:
            props.append(f"col={issue.column}")
    props.append(f"title={_escape_property('flagroll validate: ' + (issue.field or 'policy'))}")
    message = f"{issue.field}: {issue.message}" if issue.field else issue.message
    return f"::{level} {','.join(props)}::{_escape_data(message)}"
