"""``flagroll status``: a table (or JSON list) of every flag flagroll manages."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.adapters.decisionlog import last_by_flag
from controller.adapters.flagstore import FlagStore
from controller.adapters.policyfile import load_paths
from controller.cli import common, kubernetes
from controller.cli.common import EXIT_OK, open_store, optional_decision_log
from controller.cli.options import Commands, decision_log_option, env, flags_option
from controller.core.changewindows import waiting_from_record
from controller.core.durations import format_duration
from controller.core.errors import FlagFileError, UsageError
from controller.core.flagd import managed_keys, read_state
from controller.core.guarding import unguarded_reason
from controller.core.policy import pct
from controller.core.serving import describes, is_verification, summary, unverified
from controller.core.state import NOT_STARTED, RolloutState, Status


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "status",
        help="a table of every managed flag",
        description="Percent, step, status, the last decision and its age, for every flag flagroll "
        "manages in the flag file, and whether a policy judges it: an exposed flag that no valid policy "
        "judges is UNGUARDED. With --policies that is worked out from the policy files now; without, "
        "from the last decision record. With flagroll run --verify-ofrep, whether the flag server "
        "serves what the flag file says (SERVING NOT VERIFIED when it does not). A due move held by "
        "the policy's schedule is WAITING, with why and when the next window opens (in the policy's "
        "time zone and UTC).",
    )
    flags_option(p)
    decision_log_option(p)
    p.add_argument(
        "--policies",
        type=Path,
        default=env("FLAGROLL_POLICIES"),
        metavar="DIR",
        help="the policies: say which flags no policy judges as of now [env FLAGROLL_POLICIES]",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    kubernetes.add_store_options(p)
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    store = open_store(args)
    now = common.utc_now()
    rows = status_rows(store, optional_decision_log(args), now, args.policies)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print(f"no flags managed by flagroll in {store.location}")
        return EXIT_OK
    table = [["FLAG", "PERCENT", "STEP", "STATUS", "LAST DECISION", "AGE", "NOTE"]]
    table.extend(_table_row(row, now) for row in rows)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return EXIT_OK


def _table_row(row: dict[str, Any], now: datetime) -> list[str]:
    step = f"{row['step']}/{row['steps']}" if row["step"] is not None else f"-/{row['steps'] or '?'}"
    notes = []
    if row["guarded"] is False:
        notes.append(str(row["unguarded_reason"]))
    if row["stale"]:
        notes.append(f"STALE: review date {row['review']} has passed")
    if row["problem"]:
        notes.append(f"PROBLEM: {row['problem']}")
    if row.get("serving") is not None and row["serving"]["outcome"] == "unverified":
        notes.append(row["serving"]["summary"])
    if row["reason"] and row["status"] in {"stopped", "paused", "rolled_back"}:
        notes.append(row["reason"])
    last_reason = str(row["last_reason"] or "")
    if row.get("waiting") is not None:
        notes.append(f"WAITING: {row['waiting']['text']}")
    elif row["last_action"] == "hold" and last_reason and not last_reason.startswith(("all ", "complete")):
        notes.append(f"held: {last_reason[:120]}{'…' if len(last_reason) > 120 else ''}")
    if row.get("serving") is not None and row["serving"]["outcome"] != "unverified":
        notes.append(row["serving"]["summary"])
    return [
        row["flag"],
        f"{pct(row['percent'])}%" if row["percent"] is not None else "?",
        step,
        row["status"],
        row["last_action"] or "—",
        _age(row["last_decision_at"], now),
        "; ".join(notes),
    ]


def _age(since: str | None, now: datetime) -> str:
    if not since:
        return "—"
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    return format_duration(max(0.0, (now - moment).total_seconds()))


def status_rows(
    store: FlagStore, decision_log: Path | None, now: datetime, policies: Path | None = None
) -> list[dict[str, Any]]:
    snapshot = store.read()
    keys = list(managed_keys(snapshot.document))
    last = last_by_flag(decision_log, keys, where=_decision) if decision_log is not None else {}
    verified = last_by_flag(decision_log, keys, where=is_verification) if decision_log is not None else {}
    unjudged = _unjudged(policies, snapshot.document) if policies is not None else None
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
        row = _status_row(key, state, record, problem, now)
        judged = unjudged is None or key not in unjudged  # without --policies, the record's word
        row["waiting"] = _waiting(record, state, now) if judged else None
        row.update(_guard(state, unjudged.get(key) if unjudged is not None else None, unjudged is not None))
        row["serving"] = _serving(verified.get(key), state)
        rows.append(row)
    return rows


def _waiting(record: dict[str, Any], state: RolloutState, now: datetime) -> dict[str, Any] | None:
    """What the last decision said the rollout waits for (a change window or the end of a freeze),
    if it still describes the rollout (progressing, at the percentage it held: a pause recorded
    elsewhere waits for a human, not a window), told as of ``now``."""
    waits = waiting_from_record(record.get("waiting"))
    if waits is None or state.status is not Status.PROGRESSING or record.get("to_percent") != state.percent:
        return None
    return waits.as_record(now)


def _decision(record: dict[str, Any]) -> bool:
    return not is_verification(record)


def _serving(record: dict[str, Any] | None, state: RolloutState) -> dict[str, Any] | None:
    """The last verification of what the flag server serves, if it is about what the flag serves now."""
    if record is None or not describes(record, state):
        return None
    serving = record["serving"]
    return {
        "outcome": "unverified" if unverified(record) else "confirmed",
        "check": serving.get("check"),
        "seconds": serving.get("seconds"),
        "verified_at": record.get("time"),
        "summary": summary(record),
    }


def _unjudged(policies: Path, document: Mapping[str, Any]) -> dict[str, str]:
    """The managed flags no valid policy judges now, and why."""
    if not policies.exists():
        raise UsageError(f"--policies {policies}: no such file or directory")
    ownership = load_paths([policies], document).ownership
    return {key: u.reason for key, u in ownership.unjudged.items()} if ownership is not None else {}


def _guard(state: RolloutState, reason: str | None, live: bool) -> dict[str, Any]:
    """Whether a policy watches the exposed flag: from the policy files now (``live``), else from the
    mark the controller keeps in the flag's metadata."""
    if live:
        if reason is None or not state.exposed:
            return {"guarded": True, "unguarded_reason": None}
        return {"guarded": False, "unguarded_reason": unguarded_reason(state, reason)}
    if state.unguarded and state.exposed:
        return {"guarded": False, "unguarded_reason": state.unguarded_reason}
    return {"guarded": True, "unguarded_reason": None}


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
        "guarded": None,
        "unguarded_reason": None,
        "serving": None,
        "waiting": None,
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
