"""``flagroll status``: a table (or JSON list) of every flag flagroll manages."""

from __future__ import annotations

import argparse
import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.adapters.decisionlog import last_by_flag
from controller.adapters.flagstore import FlagStore
from controller.cli import common, kubernetes
from controller.cli.common import EXIT_OK, open_store, optional_decision_log
from controller.cli.options import Commands, decision_log_option, flags_option
from controller.core.durations import format_duration
from controller.core.errors import FlagFileError
from controller.core.flagd import managed_keys, read_state
from controller.core.policy import pct
from controller.core.state import NOT_STARTED, RolloutState


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "status",
        help="a table of every managed flag",
        description="Percent, step, status, the last decision and its age, for every flag flagroll "
        "manages in the flag file.",
    )
    flags_option(p)
    decision_log_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    kubernetes.add_store_options(p)
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    store = open_store(args)
    now = common.utc_now()
    rows = status_rows(store, optional_decision_log(args), now)
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
    if row["stale"]:
        notes.append(f"STALE: review date {row['review']} has passed")
    if row["problem"]:
        notes.append(f"PROBLEM: {row['problem']}")
    if row["reason"] and row["status"] in {"stopped", "paused", "rolled_back"}:
        notes.append(row["reason"])
    last_reason = str(row["last_reason"] or "")
    if row["last_action"] == "hold" and last_reason and not last_reason.startswith(("all ", "complete")):
        notes.append(f"held: {last_reason[:120]}{'…' if len(last_reason) > 120 else ''}")
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
