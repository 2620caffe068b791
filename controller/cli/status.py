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
from controller.adapters.policyfile import PolicySet, load_paths
from controller.cli import common, kubernetes
from controller.cli.common import EXIT_OK, open_store, optional_decision_log
from controller.cli.options import Commands, decision_log_option, env, flags_option
from controller.core import approval
from controller.core.durations import format_duration
from controller.core.errors import FlagFileError, UsageError
from controller.core.flagd import managed_keys, read_state
from controller.core.freezes import active, covering
from controller.core.guarding import unguarded_reason
from controller.core.policy import pct
from controller.core.printable import printable
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
        "the policy's schedule or a Freeze document is WAITING, with why and until when (in the "
        "policy's time zone and UTC). Below the table, the Freeze documents in force now (from "
        "--policies; without it, those the last decisions named); --freezes lists only them.",
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
    p.add_argument(
        "--freezes",
        action="store_true",
        help="list the Freeze documents in force now (and the flags each covers) instead of the flags",
    )
    kubernetes.add_store_options(p)
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    store = open_store(args)
    now = common.utc_now()
    rows = status_rows(store, optional_decision_log(args), now, args.policies)
    freezes = active_freezes(args.policies, rows, now)
    if args.json:
        print(json.dumps(freezes if args.freezes else rows, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not args.freezes:
        if not rows:
            print(f"no flags managed by flagroll in {store.location}")
        table = [["FLAG", "PERCENT", "STEP", "STATUS", "LAST DECISION", "AGE", "NOTE"]]
        table.extend(_table_row(row, now) for row in rows)
        _print_table(table if rows else [])
    if freezes or args.freezes or args.policies is not None:
        _print_freezes(freezes, live=args.policies is not None)
    return EXIT_OK


def _print_table(table: list[list[str]]) -> None:
    if not table:
        return
    table = [[printable(c) for c in r] for r in table]  # one line a row, nothing a terminal acts on
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])


def _print_freezes(freezes: list[dict[str, Any]], *, live: bool) -> None:
    source = "" if live else " (as the last decisions named them; --policies reads the files now)"
    if not freezes:
        print(f"Freezes in force: none{source}")
        return
    print(f"Freezes in force{source}:")
    table = [["FREEZE", "UNTIL", "WHERE", "COVERS", "REASON"]]
    for freeze in freezes:
        covers = freeze.get("covers") or []
        table.append(
            [
                freeze["name"] if freeze["valid"] else f"{freeze['name']} (INVALID)",
                freeze["to"] or "removed",
                freeze["where"] or "?",
                "every rollout" if live and freeze.get("selector") is None else ", ".join(covers) or "none",
                freeze["reason"] or "—",
            ]
        )
    table = [[printable(c) for c in r] for r in table]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])


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
    elif row.get("freezes"):
        notes.append("FROZEN: " + ", ".join(f["name"] for f in row["freezes"]))
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
    loaded = _loaded(policies, snapshot.document) if policies is not None else None
    unjudged = _unjudged(loaded) if loaded is not None else None
    frozen = _frozen(loaded, now) if loaded is not None else None
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
        row["freezes"] = frozen.get(key, []) if frozen is not None else _recorded_freezes(row["waiting"])
        row.update(_guard(state, unjudged.get(key) if unjudged is not None else None, unjudged is not None))
        row["serving"] = _serving(verified.get(key), state)
        rows.append(row)
    return rows


def _waiting(record: dict[str, Any], state: RolloutState, now: datetime) -> dict[str, Any] | None:
    """What the last decision said the rollout waits for (a change window or the end of a freeze),
    if it still describes the rollout (progressing, at the percentage it held: a pause recorded
    elsewhere waits for a human, not a window), told as of ``now``."""
    waits = approval.waiting_read(record.get("waiting"))
    if waits is None or state.status is not Status.PROGRESSING or record.get("to_percent") != state.percent:
        return None
    if waits.reason == approval.APPROVAL and not state.awaiting_approval:
        return None  # approved (or the gate was removed) since
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


def _loaded(policies: Path, document: Mapping[str, Any] | None) -> PolicySet:
    if not policies.exists():
        raise UsageError(f"--policies {policies}: no such file or directory")
    return load_paths([policies], document)


def _unjudged(loaded: PolicySet) -> dict[str, str]:
    """The managed flags no valid policy judges now, and why."""
    ownership = loaded.ownership
    return {key: u.reason for key, u in ownership.unjudged.items()} if ownership is not None else {}


def _frozen(loaded: PolicySet, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The Freeze documents in force now over each flag a valid policy judges."""
    found = {}
    for entry in loaded.policies:
        held = covering(entry.policy, entry.freezes, now)
        if held:
            found[entry.policy.flag_key] = [f.as_record() for f in held]
    return found


def _recorded_freezes(waiting: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Without the policy files: the Freeze documents the last decision said the rollout waits for."""
    documents = (waiting or {}).get("documents")
    return [d for d in documents if isinstance(d, dict)] if isinstance(documents, list) else []


def active_freezes(policies: Path | None, rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The Freeze documents in force at ``now``, each with the managed flags it covers: from the
    policy files, or without them from what the rows' last decisions named."""
    if policies is None:
        named: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            for freeze in row.get("freezes") or []:
                entry = named.setdefault(
                    (str(freeze.get("name")), str(freeze.get("where"))), {**freeze, "covers": []}
                )
                entry["covers"].append(row["flag"])
        return list(named.values())
    loaded = _loaded(policies, None)
    found = []
    for freeze in active((entry.freeze for entry in loaded.freezes), now):
        covers = [p.policy.flag_key for p in loaded.policies if freeze.selects(p.policy)]
        found.append(freeze.as_record() | {"covers": sorted(covers)})
    return found


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
        "freezes": [],
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
        "status": state.shown_status,
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
