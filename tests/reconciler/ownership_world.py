"""The world of the ownership model (tests/reconciler/test_ownership_model.py): the policies it
writes, the files they sit in, the flag file as the checks read it, a decision log that can die
between the flag write and the append, and one cycle as the checks see it."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from controller.adapters.decisionlog import DecisionLog
from controller.core.flagd import PREFIX, is_managed, read_state
from controller.core.guarding import NOTICE_REPEAT_SECONDS, Grace
from controller.core.records import Record
from controller.core.state import RolloutState
from controller.reconciler import CycleResult

KEYS = ("alpha", "beta", "gamma")
NAMES = ("cache", "search", "quote", "ranker")
FILES = ("a.yaml", "b.yaml", "c.yaml")
EXISTING = "gamma"  # the key of a flag that may be in the flag file before flagroll
USERS = tuple(f"user-{i}" for i in range(200))
GRACE = Grace(cycles=2, seconds=60)
NOTICE_AGE = timedelta(seconds=NOTICE_REPEAT_SECONDS)
TICK = timedelta(milliseconds=1)  # what a cycle or a command takes, at least

SCHEMA, BAD_NAME, BAD_KEY = "schema", "bad-name", "bad-key"  # invalid; the name or the key unreadable
TAB, NOT_UTF8, TOO_LARGE = "tab", "not-utf8", "too-large"
DIRECTORY, DANGLING = "directory", "dangling-symlink"  # where the file was: a directory, a broken link
BREAKAGES = tuple(
    os.environ.get("FLAGROLL_MODEL_BREAKAGES", "").split(",")
    if os.environ.get("FLAGROLL_MODEL_BREAKAGES")
    else (SCHEMA, BAD_NAME, BAD_KEY, TAB, NOT_UTF8, TOO_LARGE, DIRECTORY, DANGLING)
)
UNREADABLE = frozenset({TAB, NOT_UTF8, TOO_LARGE, DIRECTORY, DANGLING})  # files that may hold any policy
EDITS = ("hold", "bound", "steps", "onDelete")
MOVES = ("percent", "status", "step", "revision", "policy")


# The model's policies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A policy as the model writes it. Its ``aim`` names it, so that every decision record says which
    policy text judged the flag."""

    name: str
    key: str
    hold: int = 60
    bound: float = 0.01
    steps: tuple[int, ...] = (1, 5, 20)
    on_delete: bool = False

    def text(self) -> str:
        lines = [
            "apiVersion: flagroll/v1",
            "kind: RolloutPolicy",
            f"metadata: {{name: {self.name}}}",
            "spec:",
            "  owner: sre-lead",
            f"  aim: '{self.name}@{self.key}: cut p95 on /price/quote from 450ms to 250ms'",
            "  mechanism: A cache removes repeated I/O.",
            f"  flag: {{key: {self.key}}}",
            "  interval: 10s",
        ]
        if self.on_delete:
            lines.append("  onDelete: rollback")
        lines.append("  steps:")
        lines += [f"    - {{percent: {p}, hold: {self.hold}s}}" for p in self.steps]
        lines += [
            "  traffic:",
            '    query: sum(requests{v="{{variant}}"})',
            "    minSamples: 10",
            "  guardrails:",
            "    - name: errors",
            '      query: sum(errors{v="{{variant}}",flag="{{flag}}"})',
            f"      max: {self.bound}",
        ]
        return "\n".join(lines) + "\n"

    def edited(self, what: str) -> Spec:
        if what == "hold":
            return replace(self, hold=120 if self.hold == 60 else 60)
        if what == "bound":
            return replace(self, bound=0.02 if self.bound == 0.01 else 0.01)
        if what == "steps":
            return replace(self, steps=(1, 5) if len(self.steps) == 3 else (1, 5, 20))
        return replace(self, on_delete=not self.on_delete)


@dataclass(frozen=True)
class Slot:
    """A policy file: the policy it holds (as far as it can be read), and how it is broken (None:
    valid)."""

    spec: Spec
    broken: str | None = None


def aim_of(record: Record) -> tuple[str, str] | None:
    """The policy (name, flag key) a decision record was built with, from its aim; None: a record
    built without a policy (unguarded, hand-over, onDelete, reject, recover, human)."""
    aim = record.get("aim")
    if not isinstance(aim, str):
        return None
    name, _, key = aim.split(":", 1)[0].partition("@")
    return name, key


def when(record: Record) -> datetime:
    return datetime.fromisoformat(str(record["time"]))


def moves(entry: dict[str, Any]) -> tuple[object, ...]:
    meta = entry.get("metadata", {})
    return tuple(meta.get(PREFIX + field) for field in MOVES)


def state_of(document: dict[str, Any], key: str) -> RolloutState | None:
    entry = document["flags"].get(key)
    if entry is None or not is_managed(entry):
        return None
    return read_state(document, key, check_layout=False)


_SERVED: dict[str, tuple[str, ...]] = {}


def served(key: str, entry: dict[str, Any]) -> tuple[str, ...]:
    """The variant the real flagd evaluator serves each of USERS (metadata aside: it serves nothing)."""
    text = json.dumps({"flags": {key: {k: v for k, v in entry.items() if k != "metadata"}}}, sort_keys=True)
    if text not in _SERVED:
        core = FlagdCore()
        core.set_flags(text)
        variants = []
        for user in USERS:
            details = core.resolve_boolean_value(key, False, EvaluationContext(targeting_key=user))
            assert details.variant is not None, details
            variants.append(details.variant)
        _SERVED[text] = tuple(variants)
    return _SERVED[text]


# The process around the reconciler ----------------------------------------------------------------


class ProcessKilled(Exception):
    """The process died: raised by the decision log's append, after the flag file was written."""


class MortalLog(DecisionLog):
    """The decision log of one process; ``die`` kills the process at the next append."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.die = False

    def append(self, records: Sequence[Record]) -> None:
        if self.die and records:
            self.die = False
            raise ProcessKilled(f"killed before appending {len(records)} records")
        super().append(records)


class Stdout:
    """The reconciler's logger: keeps the decision lines (what stdout would show), drops the rest."""

    def __init__(self) -> None:
        self.decisions: list[Record] = []

    def info(self, event: str, **fields: Any) -> None:
        if event == "decision":
            self.decisions.append(fields)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


_BASE: list[Path] = []


def scratch() -> Path:
    """The same directory for every sequence (wiped first): the policy loader caches parsed files by
    path, and one set of paths keeps that cache small over thousands of sequences."""
    if not _BASE:
        _BASE.append(Path(tempfile.mkdtemp(prefix="flagroll-model-")))
        atexit.register(shutil.rmtree, _BASE[0], ignore_errors=True)
    root = _BASE[0] / "run"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    return root


@dataclass
class Streak:
    """Consecutive cycles of one flag's owner, since a given time."""

    owner: str
    since: datetime
    cycles: int


# The machine -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    """One cycle as the checks see it: the flag file before and after, its records (as the decision
    log got them; for a process that died, as stdout got them), its result (None: the process died),
    and each managed flag's owner before it."""

    before: dict[str, Any]
    after: dict[str, Any]
    records: Sequence[Record]
    result: CycleResult | None
    owners: dict[str, str]

    def of(self, key: str) -> list[Record]:
        return [r for r in self.records if r["flag"] == key]

    def before_state(self, key: str) -> RolloutState | None:
        return state_of(self.before, key)

    def after_state(self, key: str) -> RolloutState | None:
        return state_of(self.after, key)


def owners(document: dict[str, Any]) -> dict[str, str]:
    return {
        key: entry["metadata"][PREFIX + "policy"]
        for key, entry in document["flags"].items()
        if is_managed(entry)
    }
