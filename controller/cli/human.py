"""``flagroll stop``, ``pause``, ``resume``, ``approve`` and ``adopt``: a human acts on a rollout,
recorded as such."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import structlog

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FlagStore
from controller.adapters.notify import Notifier, events_from, parse_targets
from controller.adapters.overlay import OverlayStore
from controller.adapters.policyfile import load_paths
from controller.cli import common, kubernetes
from controller.cli.common import EXIT_FAIL, EXIT_OK, open_store, optional_decision_log, warn
from controller.cli.options import (
    Commands,
    decision_log_option,
    env,
    flags_option,
    notify_options,
    overlay_options,
)
from controller.core.commands import approve, pause, resume, stop
from controller.core.decision import Decision
from controller.core.errors import FlagrollError, UsageError, WriteConflictError
from controller.core.flagd import managed_keys, read_state, write_flag
from controller.core.guarding import handover
from controller.core.printable import shown
from controller.core.records import Context, Record, render, to_record
from controller.core.state import RolloutState

HUMAN_CONFLICT_ATTEMPTS = 5


def add_parsers(commands: Commands) -> None:
    """One parser each for stop, pause and resume (the same options)."""
    for name, summary, handler in (
        ("stop", "roll a flag back to 0 % now and keep it there until resumed", cmd_stop),
        ("pause", "freeze a rollout at its step (guardrails stay armed)", cmd_pause),
        ("resume", "unfreeze a paused rollout, or restart a stopped or rolled-back one", cmd_resume),
    ):
        p = commands.add_parser(
            name, help=summary.replace("%", "%%"), description=summary[0].upper() + summary[1:] + "."
        )
        p.add_argument("flag", metavar="FLAG", help="the flag key")
        flags_option(p)
        decision_log_option(p)
        p.add_argument(
            "--reason",
            default="",
            metavar="TEXT",
            help="why (required for stop); recorded in the flag's state and the decision log",
        )
        _store_and_actor_options(p, "who is acting")
        p.set_defaults(handler=handler)
    _add_approve(commands)
    _add_adopt(commands)


def _add_approve(commands: Commands) -> None:
    summary = "approve the move after a step with approval: required, for a rollout awaiting it"
    p = commands.add_parser(
        "approve",
        help=summary,
        description="Approve the move that FLAG awaits after a step with `approval: required` (the "
        "advance, or after the last step the completion or promotion): the next evaluation whose checks "
        "pass makes it, inside the schedule's windows. Recorded in the flag's state (for that step "
        "only: a rollback or restart needs a new approval) and the decision log. A rollout that is not "
        "awaiting approval is refused (exit 1).",
    )
    p.add_argument("flag", metavar="FLAG", help="the flag key")
    flags_option(p)
    decision_log_option(p)
    p.add_argument(
        "--reason",
        required=True,
        metavar="TEXT",
        help="why it may go on; recorded in the decision log",
    )
    _store_and_actor_options(p, "who approves")
    p.set_defaults(handler=cmd_approve)


def _store_and_actor_options(p: argparse.ArgumentParser, who: str) -> None:
    """What every human command takes after its reason: the actor, the stores, notifications."""
    p.add_argument(
        "--actor",
        default=env("FLAGROLL_ACTOR"),
        metavar="NAME",
        help=f"{who} (default: the login name) [env FLAGROLL_ACTOR]",
    )
    kubernetes.add_store_options(p)
    notify_options(p)
    overlay_options(p)


def _add_adopt(commands: Commands) -> None:
    p = commands.add_parser(
        "adopt",
        help="hand a managed flag over to another policy, which judges it from the next cycle",
        description="Make policy NAME the owner of FLAG: it judges the flag from the next cycle, "
        "continuing from its step under its own revision. The policy must be valid and name FLAG "
        "(checked in --policies). Use it when a policy was renamed, or to end a clash at once; "
        "otherwise a policy takes over a flag whose policy is gone only after the grace period.",
    )
    p.add_argument("flag", metavar="FLAG", help="the flag key")
    p.add_argument(
        "--policy", required=True, metavar="NAME", help="the policy that owns the flag from now on"
    )
    p.add_argument(
        "--policies",
        type=Path,
        default=env("FLAGROLL_POLICIES"),
        metavar="DIR",
        help="the policies, to check that NAME is valid and names FLAG [env FLAGROLL_POLICIES]",
    )
    flags_option(p)
    decision_log_option(p)
    p.add_argument("--reason", default="", metavar="TEXT", help="why; recorded in the decision log")
    p.add_argument(
        "--actor",
        default=env("FLAGROLL_ACTOR"),
        metavar="NAME",
        help="who is acting (default: the login name) [env FLAGROLL_ACTOR]",
    )
    kubernetes.add_store_options(p)
    notify_options(p)
    overlay_options(p)
    p.set_defaults(handler=cmd_adopt)


def cmd_stop(args: argparse.Namespace) -> int:
    return _human(args, stop)


def cmd_pause(args: argparse.Namespace) -> int:
    return _human(args, pause)


def cmd_resume(args: argparse.Namespace) -> int:
    return _human(args, resume)


def cmd_approve(args: argparse.Namespace) -> int:
    return _human(args, approve)


def cmd_adopt(args: argparse.Namespace) -> int:
    policies = Path(common.need(args.policies, "--policies", "FLAGROLL_POLICIES"))
    loaded = load_paths([policies])
    named = [p for p in loaded.candidates or loaded.policies if p.policy.name == args.policy]
    if not named:
        known = ", ".join(sorted({p.policy.name for p in loaded.candidates})) or "none"
        raise UsageError(f"no valid policy named {args.policy!r} in {policies} (valid: {known})")
    if all(p.policy.flag_key != args.flag for p in named):
        raise UsageError(
            f"policy {args.policy!r} ({named[0].where}) rolls out flag {named[0].policy.flag_key!r}, "
            f"not {args.flag!r}"
        )
    actor = f"human:{args.actor or _login()}"

    def hand_over(state: RolloutState, reason: str, now: datetime) -> Decision:
        if state.policy == args.policy:
            raise UsageError(f"flag {args.flag!r} already belongs to policy {args.policy!r}")
        decision = handover(state, args.policy, now, "", by=actor)
        return replace(decision, reason=f"{decision.reason}: {reason}" if reason else decision.reason)

    return _human(args, hand_over)


def _human(args: argparse.Namespace, act: Callable[[RolloutState, str, datetime], Decision]) -> int:
    targets = parse_targets(args.notify_webhook, args.notify_slack)  # a bad URL fails before acting
    store = open_store(args, recall_merged=True)
    log_path = optional_decision_log(args)
    actor = args.actor or _login()
    for attempt in range(1, HUMAN_CONFLICT_ATTEMPTS + 1):
        try:
            record = _human_once(args, act, store, actor, log_path)
            break
        except WriteConflictError:  # someone wrote in between: act again on what is there now
            if attempt == HUMAN_CONFLICT_ATTEMPTS:
                raise
    print(shown(render(record)))
    merged_ok = _merged_followed(store)
    if targets:
        notifier = Notifier(targets, log=structlog.get_logger("flagroll"), attempts=3)
        try:
            for event in events_from([record]):
                notifier.send_now(event)
        finally:
            notifier.close()
    return EXIT_OK if merged_ok else EXIT_FAIL


def _merged_followed(store: FlagStore) -> bool:
    """Whether the merged file of an overlay serves the change now (the write refreshed it, and a
    refresh that failed then is tried once more here), saying which file on stderr either way."""
    if not isinstance(store, OverlayStore) or (store.merged is None and store.merged_problem is None):
        return True
    try:
        store.refresh()
    except FlagrollError as exc:
        merged = store.merged or "of the last flagroll run"
        warn(
            f"the change is in {store.location}, but the merged file {merged} was NOT updated "
            f"({exc}); readers of the merged file still get the old flags: fix it and run this again"
        )
        return False
    warn(f"the merged file {store.merged} serves it too")
    return True


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
        now = common.utc_now()
        decision = act(state, args.reason, now)
        document = write_flag(snapshot.document, args.flag, decision.after, keep_segment=True)
        store.write(document, snapshot, [args.flag])
        after = decision.after
        guarded = not (after.unguarded and after.exposed)
        record = to_record(decision, Context(args.flag, actor=f"human:{actor}", guarded=guarded), now)
        if log_path is not None:
            DecisionLog(log_path).append([record])
        return record


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
