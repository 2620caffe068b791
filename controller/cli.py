"""The ``flagroll`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from controller import __version__
from controller.adapters import logs
from controller.adapters.decisionlog import DecisionLog, follow, last_by_flag, read_records
from controller.adapters.endpoints import Endpoints, parse_listen
from controller.adapters.flagstore import FileFlagStore, FlagStore
from controller.adapters.kube import options as kube_options
from controller.adapters.notify import Notifier, events_from, parse_targets
from controller.adapters.overlay import OverlayStore
from controller.adapters.policyfile import PolicySet, load_paths
from controller.adapters.promauth import load_auth
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.telemetry import Telemetry
from controller.core.decision import Decision, pause, resume, stop
from controller.core.durations import format_duration, parse_duration
from controller.core.errors import FlagFileError, FlagrollError, Issue, UsageError, WriteConflictError
from controller.core.explain import explain
from controller.core.flagd import managed_keys, owners, read_state, write_flag
from controller.core.metrictemplate import json_schema as template_schema
from controller.core.policy import json_schema, pct
from controller.core.policydiff import effect, field_changes
from controller.core.records import Context, Record, render, render_all, to_record
from controller.core.state import NOT_STARTED, RolloutState
from controller.reconciler import Reconciler, utc_now

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flags_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flags",
        type=Path,
        default=_env("FLAGROLL_FLAGS"),
        metavar="FILE",
        help="the flagd flag file (JSON) [env FLAGROLL_FLAGS]",
    )


def _overlay_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Git owns the base, flagroll owns the override",
        "Keep flag definitions in files Git owns (never written by flagroll); flagroll writes only its "
        "flags to --flags, which flagd lists last among its sources. See docs/gitops.md.",
    )
    group.add_argument(
        "--base",
        action="append",
        type=Path,
        default=[Path(p) for p in _env_list("FLAGROLL_BASE")],
        metavar="FILE",
        help="a Git-owned flagd file, read and never written (repeatable) [env FLAGROLL_BASE]",
    )
    group.add_argument(
        "--merged",
        type=Path,
        default=_env("FLAGROLL_MERGED"),
        metavar="FILE",
        help="also write the bases overlaid with flagroll's flags here, for single-file readers "
        "[env FLAGROLL_MERGED]",
    )


def _decision_log_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decision-log",
        type=Path,
        default=_env("FLAGROLL_DECISION_LOG"),
        metavar="FILE",
        help="the decision log (JSON Lines); default: decisions.jsonl beside the flag file "
        "[env FLAGROLL_DECISION_LOG]",
    )


def _prometheus_auth_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Prometheus authentication",
        "Secrets are read from files (e.g. a mounted Secret) or the environment, never from arguments, "
        "and never appear in logs or decision records. TLS certificates are verified by default.",
    )
    group.add_argument(
        "--prometheus-bearer-token-file",
        default=_env("FLAGROLL_PROMETHEUS_BEARER_TOKEN_FILE"),
        metavar="FILE",
        help="send 'Authorization: Bearer <token>' with the token in FILE "
        "[env FLAGROLL_PROMETHEUS_BEARER_TOKEN_FILE, or the token itself in "
        "FLAGROLL_PROMETHEUS_BEARER_TOKEN]",
    )
    group.add_argument(
        "--prometheus-username",
        default=_env("FLAGROLL_PROMETHEUS_USERNAME"),
        metavar="NAME",
        help="basic auth user name [env FLAGROLL_PROMETHEUS_USERNAME]",
    )
    group.add_argument(
        "--prometheus-password-file",
        default=_env("FLAGROLL_PROMETHEUS_PASSWORD_FILE"),
        metavar="FILE",
        help="basic auth password in FILE "
        "[env FLAGROLL_PROMETHEUS_PASSWORD_FILE, or the password itself in FLAGROLL_PROMETHEUS_PASSWORD]",
    )
    group.add_argument(
        "--prometheus-ca-file",
        default=_env("FLAGROLL_PROMETHEUS_CA_FILE"),
        metavar="FILE",
        help="PEM bundle of the CAs that signed Prometheus's certificate (default: the system's) "
        "[env FLAGROLL_PROMETHEUS_CA_FILE]",
    )
    group.add_argument(
        "--prometheus-insecure-skip-verify",
        action="store_true",
        default=_env("FLAGROLL_PROMETHEUS_INSECURE_SKIP_VERIFY", "") in {"1", "true", "yes"},
        help="do not verify Prometheus's TLS certificate (not for production) "
        "[env FLAGROLL_PROMETHEUS_INSECURE_SKIP_VERIFY=true]",
    )


def _env_list(name: str) -> list[str]:
    return [item for item in (os.environ.get(name) or "").replace(",", " ").split() if item]


def _notify_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Notifications",
        "On rollback, stop, completion, a stale rollout and a rejected policy. Webhook URLs often hold "
        "secrets: prefer the environment variables (space- or comma-separated lists) to arguments.",
    )
    group.add_argument(
        "--notify-webhook",
        action="append",
        default=_env_list("FLAGROLL_NOTIFY_WEBHOOK"),
        metavar="URL",
        help="POST each event as JSON to URL (repeatable) [env FLAGROLL_NOTIFY_WEBHOOK]",
    )
    group.add_argument(
        "--notify-slack",
        action="append",
        default=_env_list("FLAGROLL_NOTIFY_SLACK"),
        metavar="URL",
        help="POST each event to a Slack-compatible incoming webhook (repeatable) "
        "[env FLAGROLL_NOTIFY_SLACK]",
    )


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
        default=_env("FLAGROLL_LOG_FORMAT", "auto"),
        help="log lines as JSON or for a terminal; auto picks console on a terminal "
        "[env FLAGROLL_LOG_FORMAT]",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=_env("FLAGROLL_LOG_LEVEL", "info"),
        help="[env FLAGROLL_LOG_LEVEL]",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser(
        "run",
        help="reconcile policies against Prometheus and the flag file",
        description="Each policy is checked at its own interval: Prometheus is queried, a decision "
        "is taken, the flag file is written atomically and the decision is appended to the log.",
    )
    p.add_argument(
        "--policies",
        type=Path,
        default=_env("FLAGROLL_POLICIES"),
        metavar="DIR",
        help="directory (or file) of rollout policies [env FLAGROLL_POLICIES]",
    )
    _flags_option(p)
    p.add_argument(
        "--prometheus",
        default=_env("FLAGROLL_PROMETHEUS"),
        metavar="URL",
        help="Prometheus base URL, e.g. http://prometheus:9090 [env FLAGROLL_PROMETHEUS]",
    )
    p.add_argument("--once", action="store_true", help="run one cycle of every policy and exit (CronJob)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and log to stdout, but write neither the flag file nor the decision log",
    )
    _decision_log_option(p)
    p.add_argument(
        "--query-timeout",
        type=_duration_arg,
        default=_env("FLAGROLL_QUERY_TIMEOUT", "10s"),
        metavar="DURATION",
        help="timeout of one Prometheus query (default 10s) [env FLAGROLL_QUERY_TIMEOUT]",
    )
    p.add_argument(
        "--max-concurrent-queries",
        type=_positive_int,
        default=_env("FLAGROLL_MAX_CONCURRENT_QUERIES", "8"),
        metavar="N",
        help="Prometheus queries in flight at once (default 8) [env FLAGROLL_MAX_CONCURRENT_QUERIES]",
    )
    p.add_argument(
        "--lock-timeout",
        type=_duration_arg,
        default=_env("FLAGROLL_LOCK_TIMEOUT", "30s"),
        metavar="DURATION",
        help="how long to wait for another writer's lock (default 30s) [env FLAGROLL_LOCK_TIMEOUT]",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_duration_arg,
        default=_env("FLAGROLL_SHUTDOWN_TIMEOUT", "10s"),
        metavar="DURATION",
        help="on SIGTERM or SIGINT, how long the cycle in progress may take to finish before it is "
        "abandoned (default 10s; nothing half-written is ever left) [env FLAGROLL_SHUTDOWN_TIMEOUT]",
    )
    p.add_argument(
        "--listen",
        default=_env("FLAGROLL_LISTEN"),
        metavar="HOST:PORT",
        help="serve /healthz, /readyz and /metrics here, e.g. 0.0.0.0:8080 (default: off) "
        "[env FLAGROLL_LISTEN]",
    )
    _prometheus_auth_options(p)
    _notify_options(p)
    _overlay_options(p)
    kube_options.add_store_options(p)
    kube_options.add_leader_option(p)
    p.set_defaults(handler=cmd_run)

    p = commands.add_parser(
        "status",
        help="a table of every managed flag",
        description="Percent, step, status, the last decision and its age, for every flag flagroll "
        "manages in the flag file.",
    )
    _flags_option(p)
    _decision_log_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    kube_options.add_store_options(p)
    p.set_defaults(handler=cmd_status)

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
    _flags_option(p)
    kube_options.add_store_options(p)
    p.set_defaults(handler=cmd_diff)

    p = commands.add_parser(
        "explain",
        help="a rollout's story: aim, steps taken, the last checks, what must change to advance",
        description="The rollout of FLAG in plain language: aim and mechanism, the steps taken with "
        "times, the current state, every check of the last decision (value, bound, samples per arm, "
        "verdict), what would have to change for it to advance, and the PromQL of every check.",
    )
    p.add_argument("flag", metavar="FLAG", help="the flag key")
    _flags_option(p)
    _decision_log_option(p)
    p.add_argument(
        "--policies",
        type=Path,
        default=_env("FLAGROLL_POLICIES"),
        metavar="DIR",
        help="the policies (optional: adds the step holds) [env FLAGROLL_POLICIES]",
    )
    kube_options.add_store_options(p)
    p.set_defaults(handler=cmd_explain)

    p = commands.add_parser(
        "log",
        help="read the decision log",
        description="Decisions rendered for a human: aim, mechanism, why, then the signals and the "
        "checkpoint.",
    )
    _decision_log_option(p)
    _flags_option(p)
    p.add_argument("--flag", metavar="KEY", help="only this flag's decisions")
    p.add_argument(
        "--action", action="append", metavar="ACTION", help="only these actions (repeatable), e.g. rollback"
    )
    p.add_argument("--last", type=int, metavar="N", help="only the last N decisions")
    p.add_argument("--json", action="store_true", help="print the raw JSON records")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing decisions as they come")
    p.set_defaults(handler=cmd_log)

    for name, summary, handler in (
        ("stop", "roll a flag back to 0 % now and keep it there until resumed", cmd_stop),
        ("pause", "freeze a rollout at its step (guardrails stay armed)", cmd_pause),
        ("resume", "unfreeze a paused rollout, or restart a stopped or rolled-back one", cmd_resume),
    ):
        p = commands.add_parser(
            name, help=summary.replace("%", "%%"), description=summary[0].upper() + summary[1:] + "."
        )
        p.add_argument("flag", metavar="FLAG", help="the flag key")
        _flags_option(p)
        _decision_log_option(p)
        p.add_argument(
            "--reason",
            default="",
            metavar="TEXT",
            help="why (required for stop); recorded in the flag's state and the decision log",
        )
        p.add_argument(
            "--actor",
            default=_env("FLAGROLL_ACTOR"),
            metavar="NAME",
            help="who is acting (default: the login name) [env FLAGROLL_ACTOR]",
        )
        kube_options.add_store_options(p)
        _notify_options(p)
        _overlay_options(p)
        p.set_defaults(handler=handler)

    p = commands.add_parser(
        "schema",
        help="print the policy JSON Schema",
        description="Print the JSON Schema of a policy document (or of a metric template).",
    )
    p.add_argument(
        "--kind",
        choices=("RolloutPolicy", "MetricTemplate"),
        default="RolloutPolicy",
        help="which document kind (default: RolloutPolicy)",
    )
    p.set_defaults(handler=cmd_schema)

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
        help="where to leave the flag file and decision log (default: a new temporary directory)",
    )
    p.add_argument(
        "--prometheus-binary", default="prometheus", metavar="PATH", help="the Prometheus server binary"
    )
    p.set_defaults(handler=cmd_demo)
    return parser


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


def _need(value: Any, option: str, env: str) -> Any:
    if value is None or value == "":
        raise UsageError(f"{option} is required (or set {env})")
    return value


def _decision_log_path(args: argparse.Namespace) -> Path:
    if args.decision_log is not None:
        return Path(args.decision_log)
    flags = _need(args.flags, "--flags or --decision-log", "FLAGROLL_FLAGS or FLAGROLL_DECISION_LOG")
    return Path(flags).with_name("decisions.jsonl")


def _open_store(args: argparse.Namespace) -> FlagStore:
    """The flag file, or the ConfigMap / FeatureFlag named by the Kubernetes options."""
    if kube_options.uses_kubernetes(args) and args.flag_store != "file":
        return kube_options.open_store(args)
    return _file_store(Path(_need(args.flags, "--flags", "FLAGROLL_FLAGS")), args)


def _file_store(flags: Path, args: argparse.Namespace) -> FlagStore:
    bases = getattr(args, "base", None) or []
    merged = getattr(args, "merged", None)
    if not bases and merged is None:
        return FileFlagStore(flags)
    return OverlayStore(flags, bases, merged)


def _optional_decision_log(args: argparse.Namespace) -> Path | None:
    """With a Kubernetes store and no --decision-log, decisions go to stdout only."""
    if args.flag_store != "file" and args.decision_log is None:
        return None
    return _decision_log_path(args)


# validate ---------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    result = load_paths(args.paths)
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
        for template in result.templates:
            print(f"{template.where}: ok: template {template.template.name}")
        for loaded in result.policies:
            print(
                f"{loaded.where}: ok: {loaded.policy.name} (flag {loaded.policy.flag_key}, "
                f"revision {loaded.policy.revision})"
            )
        errors, warnings = len(result.errors), len(result.warnings)
        templates = len(result.templates)
        print(
            f"{len(result.policies)} valid "
            f"{'policy' if len(result.policies) == 1 else 'policies'}, "
            + (f"{templates} template{'s' * (templates != 1)}, " if templates else "")
            + f"{errors} "
            f"error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
        )
    if result.errors or (args.strict and result.warnings):
        return EXIT_FAIL
    if not result.files:
        print("no policy files found", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


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


# run --------------------------------------------------------------------------------------------


def _refuse_git_owned(path: Path) -> None:
    """flagroll never writes a file that Git tracks: Git would fight it on the next sync."""
    git = shutil.which("git")
    if git is None or not path.exists():
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [git, "-C", str(path.parent.resolve()), "ls-files", "--error-unmatch", path.name],
            capture_output=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            raise UsageError(
                f"{path} is tracked by Git; flagroll does not write files Git owns. Point --flags at "
                "a file outside the repository (the one flagd reads)"
            )


def cmd_run(args: argparse.Namespace) -> int:
    policies = Path(_need(args.policies, "--policies", "FLAGROLL_POLICIES"))
    kubernetes = kube_options.uses_kubernetes(args)
    flags = Path(_need(args.flags, "--flags", "FLAGROLL_FLAGS")) if args.flag_store == "file" else None
    url = _need(args.prometheus, "--prometheus", "FLAGROLL_PROMETHEUS")
    if not policies.exists():
        raise UsageError(f"--policies {policies}: no such file or directory")
    if flags is not None and not flags.parent.is_dir():
        raise UsageError(f"--flags {flags}: directory {flags.parent} does not exist")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--prometheus {url!r}: give an http:// or https:// URL")
    auth = load_auth(
        bearer_token_file=args.prometheus_bearer_token_file,
        username=args.prometheus_username,
        password_file=args.prometheus_password_file,
        ca_file=args.prometheus_ca_file,
        insecure_skip_verify=args.prometheus_insecure_skip_verify,
    )
    log = structlog.get_logger("flagroll")
    client = kube_options.connect(args) if kubernetes else None
    store: FlagStore
    if flags is not None:
        _refuse_git_owned(flags)
        if args.merged is not None:
            _refuse_git_owned(args.merged)
        store = _file_store(flags, args)
    else:
        store = kube_options.open_store(args, client)
    elector = kube_options.open_elector(args, client, log) if args.leader_election_lease else None
    log_path = _optional_decision_log(args)
    decision_log = None if args.dry_run or log_path is None else DecisionLog(log_path)
    telemetry = Telemetry()
    targets = parse_targets(args.notify_webhook, args.notify_slack)
    notifier = Notifier(targets, log=log).start() if targets else None
    endpoints = Endpoints(telemetry, *parse_listen(args.listen)) if args.listen else None

    async def main_loop() -> bool:
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            if not stop_event.is_set():
                log.info("shutting_down", signal=sig.name, shutdown_timeout_seconds=args.shutdown_timeout)
            stop_event.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        async with PrometheusClient(
            url,
            timeout_seconds=args.query_timeout,
            max_concurrency=args.max_concurrent_queries,
            auth=auth,
        ) as prometheus:
            reconciler = Reconciler(
                policies=policies,
                store=store,
                prometheus=prometheus,
                decision_log=decision_log,
                dry_run=args.dry_run,
                lock_timeout_seconds=args.lock_timeout,
                log=log,
                leader=elector,
                observer=_Observers(telemetry, notifier),
                keep_records=False,
            )
            log.info(
                "started",
                version=__version__,
                policies=str(policies),
                flags=store.location,
                prometheus=prometheus.url,
                prometheus_auth=auth.describe(),
                listen=f"{endpoints.address[0]}:{endpoints.address[1]}" if endpoints else None,
                once=args.once,
                dry_run=args.dry_run,
            )
            async with _leading(elector, once=args.once):
                ok = await run_until_stopped(reconciler, stop_event, args.once, args.shutdown_timeout, log)
            log.info("stopped", ok=ok)
            return ok

    try:
        with endpoints if endpoints is not None else contextlib.nullcontext():
            ok = asyncio.run(main_loop())
    finally:
        if notifier is not None:
            notifier.close()
    return EXIT_OK if ok or not args.once else EXIT_FAIL


class _Observers:
    """Each cycle goes to the metrics and, when configured, to the notifier (which never blocks)."""

    def __init__(self, telemetry: Telemetry, notifier: Notifier | None) -> None:
        self.telemetry = telemetry
        self.notifier = notifier

    def beat(self) -> None:
        self.telemetry.beat()

    def recorded(self, records: Sequence[Record]) -> None:
        self.telemetry.recorded(records)
        if self.notifier is not None:
            self.notifier.records(records)

    def cycle_done(
        self,
        *,
        ok: bool,
        policy_errors: int,
        prometheus_answered: bool,
        duration_seconds: float,
        states: Mapping[str, RolloutState] | None = None,
    ) -> None:
        self.telemetry.cycle_done(
            ok=ok,
            policy_errors=policy_errors,
            prometheus_answered=prometheus_answered,
            duration_seconds=duration_seconds,
            states=states,
        )

    def cycle_failed(self, duration_seconds: float) -> None:
        self.telemetry.cycle_failed(duration_seconds)

    def follower(self) -> None:
        self.telemetry.follower()


async def run_until_stopped(
    reconciler: Reconciler, stop_event: asyncio.Event, once: bool, shutdown_timeout_seconds: float, log: Any
) -> bool:
    """Run the loop; once ``stop_event`` is set, give the cycle in progress ``shutdown_timeout_seconds``
    to finish, then abandon it. Abandoning is safe at any point: queries are simply dropped, and a
    flag-file write is atomic (a write already under way is completed, never cut in half)."""
    task = asyncio.create_task(reconciler.run(once=once, stop=stop_event))
    stopping = asyncio.create_task(stop_event.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        try:
            return await asyncio.wait_for(asyncio.shield(task), shutdown_timeout_seconds)
        except TimeoutError:
            reconciler.abandon()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.warning(
                "cycle_abandoned",
                note=f"the cycle in progress did not finish within {shutdown_timeout_seconds:g}s; its "
                "queries were dropped and its decisions not taken (a write already under way completes)",
            )
            return False
    return task.result()


@contextlib.asynccontextmanager
async def _leading(elector: Any, *, once: bool) -> AsyncIterator[None]:
    """Run the Lease elector beside the loop (one attempt with --once); give the Lease up after."""
    if elector is None:
        yield
        return
    done = asyncio.Event()
    renewing = None
    if once:
        await asyncio.to_thread(elector.try_acquire_or_renew)
    else:
        renewing = asyncio.create_task(elector.run(done))
    try:
        yield
    finally:
        done.set()
        if renewing is not None:
            await renewing
        await asyncio.to_thread(elector.release)


# status -----------------------------------------------------------------------------------------


def _age(since: str | None, now: datetime) -> str:
    if not since:
        return "—"
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    return format_duration(max(0.0, (now - moment).total_seconds()))


def status_rows(store: FlagStore, decision_log: Path | None, now: datetime) -> list[dict[str, Any]]:
    snapshot = store.read()
    keys = list(managed_keys(snapshot.document))
    last = last_by_flag(decision_log, keys) if decision_log is not None else {}
    rows = []
    for key in keys:
        problem = None
        state: RolloutState | None = None
        try:
            state = read_state(snapshot.document, key)
        except FlagFileError as exc:
            problem = str(exc)
            with contextlib.suppress(FlagFileError):
                state = read_state(snapshot.document, key, check_layout=False)
        record = last.get(key, {})
        if state is None:  # its state is unreadable: still listed, with the problem
            rows.append(_unreadable_row(key, record, problem or "no state", now))
            continue
        rows.append(_status_row(key, state, record, problem, now))
    return rows


def _unreadable_row(key: str, record: dict[str, Any], problem: str, now: datetime) -> dict[str, Any]:
    return {
        "flag": key,
        "policy": None,
        "percent": None,
        "control_percent": None,
        "step": None,
        "steps": None,
        "status": "unknown",
        "stale": False,
        "review": None,
        "owner": None,
        "revision": None,
        "reason": None,
        "last_action": record.get("action"),
        "last_reason": record.get("reason"),
        "last_decision_at": record.get("time"),
        "problem": problem,
    }


def _status_row(
    key: str, state: RolloutState, record: dict[str, Any], problem: str | None, now: datetime
) -> dict[str, Any]:
    return {
        "flag": key,
        "policy": state.policy,
        "percent": state.percent,
        "control_percent": state.control_percent,
        "step": state.step + 1 if state.step != NOT_STARTED else None,
        "steps": state.steps,
        "status": state.status.value,
        "stale": state.is_stale(now.date()),
        "review": state.review.isoformat() if state.review else None,
        "owner": state.owner or None,
        "revision": state.revision,
        "reason": state.reason or None,
        "last_action": record.get("action"),
        "last_reason": record.get("reason"),
        "last_decision_at": record.get("time"),
        "problem": problem,
    }


def cmd_status(args: argparse.Namespace) -> int:
    store = _open_store(args)
    now = utc_now()
    rows = status_rows(store, _optional_decision_log(args), now)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print(f"no flags managed by flagroll in {store.location}")
        return EXIT_OK
    table = [["FLAG", "PERCENT", "STEP", "STATUS", "LAST DECISION", "AGE", "NOTE"]]
    for row in rows:
        step = f"{row['step']}/{row['steps']}" if row["step"] is not None else f"-/{row['steps'] or '?'}"
        notes = []
        if row["stale"]:
            notes.append(f"STALE: review date {row['review']} has passed")
        if row["problem"]:
            notes.append(f"PROBLEM: {row['problem']}")
        if row["reason"] and row["status"] in {"stopped", "paused", "rolled_back"}:
            notes.append(row["reason"])
        last_reason = str(row["last_reason"] or "")
        if row["last_action"] == "hold" and last_reason and not last_reason.startswith(("all ", "complete")):
            notes.append(f"held: {last_reason[:120]}{'…' if len(last_reason) > 120 else ''}")
        table.append(
            [
                row["flag"],
                f"{pct(row['percent'])}%" if row["percent"] is not None else "?",
                step,
                row["status"],
                row["last_action"] or "—",
                _age(row["last_decision_at"], now),
                "; ".join(notes),
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return EXIT_OK


# diff -------------------------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace) -> int:
    old = {p.policy.name: p.policy for p in load_paths([args.old]).policies}
    loaded = load_paths([args.new])
    for issue in loaded.issues:
        print(issue)
    document = None
    if args.flags is not None or args.flag_store != "file":
        document = _open_store(args).read().document
    now = utc_now()
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


# explain ----------------------------------------------------------------------------------------


def cmd_explain(args: argparse.Namespace) -> int:
    store = _open_store(args)
    document = store.read().document
    state = read_state(document, args.flag, check_layout=False)
    if state is None:
        known = ", ".join(managed_keys(document)) or "none"
        raise UsageError(f"flag {args.flag!r} is not in {store.location} (managed flags: {known})")
    log_path = _optional_decision_log(args)
    records = (
        [r for r in read_records(log_path, _warn) if r.get("flag") == args.flag]
        if log_path is not None
        else []
    )
    policy = None
    if args.policies is not None:
        loaded = load_paths([args.policies], owners(document))
        policy = next((p.policy for p in loaded.policies if p.policy.flag_key == args.flag), None)
    print(explain(args.flag, state, records, policy, utc_now()))
    return EXIT_OK


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# log --------------------------------------------------------------------------------------------


def cmd_log(args: argparse.Namespace) -> int:
    path = _decision_log_path(args)

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

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
                print(text + "\n", flush=True)

    if args.follow:
        show(r for r in follow(path, warn=warn) if wanted(r))
        return EXIT_OK
    if not path.exists():
        raise UsageError(f"no decision log at {path}")
    records = [r for r in read_records(path, warn=warn) if wanted(r)]
    if args.last is not None:
        records = records[-args.last :] if args.last > 0 else []
    show(records)
    return EXIT_OK


# stop / pause / resume --------------------------------------------------------------------------


HUMAN_CONFLICT_ATTEMPTS = 5


def _human(args: argparse.Namespace, act: Callable[[RolloutState, str, datetime], Decision]) -> int:
    targets = parse_targets(args.notify_webhook, args.notify_slack)  # a bad URL fails before acting
    store = _open_store(args)
    log_path = _optional_decision_log(args)
    actor = args.actor or _login()
    for attempt in range(1, HUMAN_CONFLICT_ATTEMPTS + 1):
        try:
            record = _human_once(args, act, store, actor, log_path)
            break
        except WriteConflictError:  # someone wrote in between: act again on what is there now
            if attempt == HUMAN_CONFLICT_ATTEMPTS:
                raise
    print(render(record))
    if targets:
        notifier = Notifier(targets, log=structlog.get_logger("flagroll"), attempts=3)
        try:
            for event in events_from([record]):
                notifier.send_now(event)
        finally:
            notifier.close()
    return EXIT_OK


def _human_once(
    args: argparse.Namespace,
    act: Callable[[RolloutState, str, datetime], Decision],
    store: FlagStore,
    actor: str,
    log_path: Path | None,
) -> Record:
    with store.locked(30.0):
        snapshot = store.read()
        emergency = act is stop  # stop must work even on a flag whose targeting was hand-edited
        state = read_state(snapshot.document, args.flag, check_layout=not emergency)
        if state is None:
            known = ", ".join(managed_keys(snapshot.document)) or "none"
            raise UsageError(f"flag {args.flag!r} is not in {store.location} (managed flags: {known})")
        now = utc_now()
        decision = act(state, args.reason, now)
        document = write_flag(snapshot.document, args.flag, decision.after, keep_segment=True)
        store.write(document, snapshot, [args.flag])
        record = to_record(decision, Context(args.flag, actor=f"human:{actor}"), now)
        if log_path is not None:
            DecisionLog(log_path).append([record])
        return record


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def cmd_stop(args: argparse.Namespace) -> int:
    return _human(args, stop)


def cmd_pause(args: argparse.Namespace) -> int:
    return _human(args, pause)


def cmd_resume(args: argparse.Namespace) -> int:
    return _human(args, resume)


def cmd_demo(args: argparse.Namespace) -> int:
    from controller.demo.runner import run_demo  # the demo's dependencies load only when asked

    try:
        return asyncio.run(run_demo(args.scenario, args.dir, args.prometheus_binary, sys.stdout))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("flagroll demo: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130


def cmd_schema(args: argparse.Namespace) -> int:
    schema = template_schema() if args.kind == "MetricTemplate" else json_schema()
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return EXIT_OK
