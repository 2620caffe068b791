"""Options several commands share, their environment-variable defaults, and argument types."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypeAlias

from controller.adapters.promauth import PrometheusAuth, load_auth
from controller.core.durations import parse_duration
from controller.core.logfiles import parse_size

# What ``add_subparsers`` returns: each command module adds its own parser to it.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def env_list(name: str) -> list[str]:
    return [item for item in (os.environ.get(name) or "").replace(",", " ").split() if item]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def flags_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flags",
        type=Path,
        default=env("FLAGROLL_FLAGS"),
        metavar="FILE",
        help="the flagd flag file (JSON) [env FLAGROLL_FLAGS]",
    )


def overlay_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Git owns the base, flagroll owns the override",
        "Keep flag definitions in files Git owns (never written by flagroll); flagroll writes only its "
        "flags to --flags, which flagd lists last among its sources. See docs/gitops.md.",
    )
    group.add_argument(
        "--base",
        action="append",
        type=Path,
        default=[Path(p) for p in env_list("FLAGROLL_BASE")],
        metavar="FILE",
        help="a Git-owned flagd file, read and never written (repeatable) [env FLAGROLL_BASE]",
    )
    group.add_argument(
        "--merged",
        type=Path,
        default=env("FLAGROLL_MERGED"),
        metavar="FILE",
        help="also write the bases overlaid with flagroll's flags here, for single-file readers "
        "[env FLAGROLL_MERGED]",
    )


def decision_log_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decision-log",
        type=Path,
        default=env("FLAGROLL_DECISION_LOG"),
        metavar="FILE",
        help="the decision log (JSON Lines); default: decisions.jsonl beside the flag file "
        "[env FLAGROLL_DECISION_LOG]",
    )


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def keep_arg(text: str) -> int:
    try:
        keep = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; give a whole number, at least 1") from None
    if keep < 1:
        raise argparse.ArgumentTypeError(
            f"{keep}: keep at least 1 generation (use a larger size to rotate less)"
        )
    return keep


def decision_log_rotation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decision-log-max-bytes",
        type=size_arg,
        default=env("FLAGROLL_DECISION_LOG_MAX_BYTES", "64Mi"),
        metavar="SIZE",
        help="rotate the decision log before an append would take it past this size: bytes, or "
        "with a unit (64Mi, 100MB, 1Gi); 0: never rotate (default 64Mi) "
        "[env FLAGROLL_DECISION_LOG_MAX_BYTES]",
    )
    parser.add_argument(
        "--decision-log-keep",
        type=keep_arg,
        default=env("FLAGROLL_DECISION_LOG_KEEP", "5"),
        metavar="N",
        help="rotated generations kept, gzipped, as FILE.1.gz (newest) to FILE.N.gz (default 5) "
        "[env FLAGROLL_DECISION_LOG_KEEP]",
    )


def heartbeat_arg(text: str) -> float:
    """A duration, or 0 (no compaction)."""
    if text.strip() == "0":
        return 0.0
    return duration_arg(text)


def decision_log_heartbeat_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decision-log-heartbeat",
        type=heartbeat_arg,
        default=env("FLAGROLL_DECISION_LOG_HEARTBEAT", "30m"),
        metavar="DURATION",
        help="a run of identical holds is written as its first record in full, then a small "
        "heartbeat record at most this often (default 30m); 0: every evaluation in full "
        "[env FLAGROLL_DECISION_LOG_HEARTBEAT]",
    )


def prometheus_auth(args: argparse.Namespace) -> PrometheusAuth:
    """The credentials :func:`prometheus_auth_options` asked for, read from their files or the
    environment (a clear error naming the option when one cannot be read)."""
    return load_auth(
        bearer_token_file=args.prometheus_bearer_token_file,
        username=args.prometheus_username,
        password_file=args.prometheus_password_file,
        ca_file=args.prometheus_ca_file,
        insecure_skip_verify=args.prometheus_insecure_skip_verify,
        headers=args.prometheus_header,
    )


def prometheus_auth_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Prometheus authentication",
        "Secrets are read from files (e.g. a mounted Secret) or the environment, never from arguments, "
        "and never appear in logs or decision records (a header value that is no secret, such as a "
        "tenant id, may be an argument). TLS certificates are verified by default.",
    )
    group.add_argument(
        "--prometheus-bearer-token-file",
        default=env("FLAGROLL_PROMETHEUS_BEARER_TOKEN_FILE"),
        metavar="FILE",
        help="send 'Authorization: Bearer <token>' with the token in FILE "
        "[env FLAGROLL_PROMETHEUS_BEARER_TOKEN_FILE, or the token itself in "
        "FLAGROLL_PROMETHEUS_BEARER_TOKEN]",
    )
    group.add_argument(
        "--prometheus-username",
        default=env("FLAGROLL_PROMETHEUS_USERNAME"),
        metavar="NAME",
        help="basic auth user name [env FLAGROLL_PROMETHEUS_USERNAME]",
    )
    group.add_argument(
        "--prometheus-password-file",
        default=env("FLAGROLL_PROMETHEUS_PASSWORD_FILE"),
        metavar="FILE",
        help="basic auth password in FILE "
        "[env FLAGROLL_PROMETHEUS_PASSWORD_FILE, or the password itself in FLAGROLL_PROMETHEUS_PASSWORD]",
    )
    group.add_argument(
        "--prometheus-header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="send this HTTP header with every query (repeatable), e.g. X-Scope-OrgID=team-a for a "
        "multi-tenant store. NAME=@FILE reads the value from FILE, NAME=env:VAR from the environment "
        "variable VAR: give secret values so, not as arguments. Values are never shown "
        "[env FLAGROLL_PROMETHEUS_HEADER: one NAME=VALUE per line, sent before these]",
    )
    group.add_argument(
        "--prometheus-ca-file",
        default=env("FLAGROLL_PROMETHEUS_CA_FILE"),
        metavar="FILE",
        help="PEM bundle of the CAs that signed Prometheus's certificate (default: the system's) "
        "[env FLAGROLL_PROMETHEUS_CA_FILE]",
    )
    group.add_argument(
        "--prometheus-insecure-skip-verify",
        action="store_true",
        default=env("FLAGROLL_PROMETHEUS_INSECURE_SKIP_VERIFY", "") in {"1", "true", "yes"},
        help="do not verify Prometheus's TLS certificate (not for production) "
        "[env FLAGROLL_PROMETHEUS_INSECURE_SKIP_VERIFY=true]",
    )


def notify_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Notifications",
        "On rollback, stop, completion, a stale rollout and a rejected policy. Webhook URLs often hold "
        "secrets: prefer the environment variables (space- or comma-separated lists) to arguments.",
    )
    group.add_argument(
        "--notify-webhook",
        action="append",
        default=env_list("FLAGROLL_NOTIFY_WEBHOOK"),
        metavar="URL",
        help="POST each event as JSON to URL (repeatable) [env FLAGROLL_NOTIFY_WEBHOOK]",
    )
    group.add_argument(
        "--notify-slack",
        action="append",
        default=env_list("FLAGROLL_NOTIFY_SLACK"),
        metavar="URL",
        help="POST each event to a Slack-compatible incoming webhook (repeatable) "
        "[env FLAGROLL_NOTIFY_SLACK]",
    )
