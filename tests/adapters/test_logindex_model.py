"""The web UI's index of the decision log against the full read, as a state machine: records appended
for random flags, rotations through the real rotation code (whole, or cut short as a crash leaves
them), a torn line written and completed, the live file truncated or replaced, an old generation
deleted; after each step the overview, a rollout page and log pages from the index equal those of a
full read at the same moment."""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from controller.adapters.flagstore import FileFlagStore
from controller.adapters.logrotation import finish_rotation, rotation_steps, writer_lock
from controller.adapters.webui import WebUI
from controller.core.compaction import HEARTBEAT
from tests.support.uidata import NOW, check, document, iso, record, state

FLAGS = ["a", "b", "c", "gone"]
MANAGED = FLAGS[:3]
ACTIONS = ["hold", "advance", "verify", "rollback", "stop"]


class IndexedLog(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.TemporaryDirectory(prefix="flagroll-logindex-")
        root = Path(self.root.name)
        flags = root / "flags.json"
        flags.write_text(json.dumps(document((key, state(key)) for key in MANAGED)))
        self.log = root / "decisions.jsonl"
        self.indexed = WebUI(FileFlagStore(flags), self.log, lambda: NOW)
        self.reference = WebUI(FileFlagStore(flags), self.log, lambda: NOW, indexed=False)
        self.n = 0
        self.torn: bytes | None = None
        self.last_full_time: dict[str, str] = {}

    def teardown(self) -> None:
        self.root.cleanup()

    def _line(self, flag: str, action: str, beat: bool) -> bytes:
        self.n += 1
        at = NOW - timedelta(hours=2) + timedelta(seconds=30 * self.n)
        one = record(flag, at, action, to_percent=float(self.n % 7), checks=[check(0.001 * self.n)])
        if action == "hold" and beat and flag in self.last_full_time:
            one[HEARTBEAT] = {"since": self.last_full_time[flag], "cycles": 3}
        elif action != "verify":
            self.last_full_time[flag] = iso(at)
        return (json.dumps(one, ensure_ascii=False) + "\n").encode()

    def _write(self, data: bytes) -> None:
        with self.log.open("ab") as handle:
            handle.write(data)

    @rule(
        flags=st.lists(st.sampled_from(FLAGS), min_size=1, max_size=6),
        action=st.sampled_from(ACTIONS),
        beat=st.booleans(),
    )
    def append(self, flags: list[str], action: str, beat: bool) -> None:
        if self.torn is not None:
            return
        self._write(b"".join(self._line(flag, action, beat) for flag in flags))

    @rule(done=st.one_of(st.none(), st.integers(min_value=1, max_value=6)), keep=st.integers(1, 3))
    def rotate(self, done: int | None, keep: int) -> None:
        if self.torn is not None:
            return
        with writer_lock(self.log):
            finish_rotation(self.log)
            if self.log.exists():
                for step in rotation_steps(self.log, keep)[:done]:
                    step.run()

    @rule(flag=st.sampled_from(FLAGS), cut=st.integers(min_value=1, max_value=200))
    def half_write(self, flag: str, cut: int) -> None:
        if self.torn is not None:
            return
        line = self._line(flag, "hold", False)
        self.torn = line[cut:]
        self._write(line[:cut])

    @rule()
    def complete(self) -> None:
        if self.torn is not None:
            self._write(self.torn)
            self.torn = None

    @rule(flag=st.sampled_from(FLAGS), replace=st.booleans())
    def truncate(self, flag: str, replace: bool) -> None:
        self.torn = None
        if replace:
            other = self.log.with_name("other")
            other.write_bytes(self._line(flag, "advance", False))
            other.replace(self.log)
        else:
            with self.log.open("r+b") if self.log.exists() else self.log.open("wb") as handle:
                handle.truncate(0)
                handle.write(self._line(flag, "advance", False))

    @rule(back=st.integers(min_value=1, max_value=3), flag=st.sampled_from(FLAGS))
    def cut_back_and_append(self, back: int, flag: str) -> None:
        """A failed append undone: the live file cut back to a line's end, then longer lines."""
        self.torn = None
        if not self.log.exists():
            return
        lines = self.log.read_bytes().splitlines(keepends=True)
        kept = b"".join(lines[: max(0, len(lines) - back)])
        with self.log.open("r+b") as handle:
            handle.truncate(len(kept))
        self._write(b"".join(self._line(flag, "rollback", False) for _ in range(back + 1)))

    @rule()
    def delete_oldest(self) -> None:
        olds = sorted(self.log.parent.glob(self.log.name + ".*.gz"), key=lambda p: int(p.name.split(".")[-2]))
        if olds:
            olds[-1].unlink()

    @invariant()
    def pages_equal_a_full_read(self) -> None:
        for target in ("/", "/flags/a", "/flags/gone", "/log", "/log?flag=b&size=2", "/log?action=verify"):
            got, wanted = self.indexed.reply("GET", target), self.reference.reply("GET", target)
            assert (got.status, got.body.decode()) == (wanted.status, wanted.body.decode()), target


IndexedLog.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestIndexedLog = IndexedLog.TestCase
