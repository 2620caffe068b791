"""A model-based test of the product's promise: a flag flagroll exposes is always watched by its
guardrails, or on-call is told, loudly.

A hypothesis state machine drives the real reconciler (``Reconciler.cycle()`` on the files of a
:class:`~tests.support.environment.Environment`: real policy files, flag file and decision log in a
temporary directory, the fake clock, the fake metrics at the project's own seam) and the real
``flagroll`` command through random sequences of GitOps edits and operator actions, on a small
universe (3 flag keys, 4 policy names, 3 file names):

- policy files: add, edit (a new revision: a hold, a bound, the steps, ``onDelete``), rename
  ``metadata.name``, rename ``spec.flag.key``, copy into another file, break, remove, restore (the
  file's last good text). Broken: a schema error (name and key readable, or one of them not), a tab
  in the indentation, not UTF-8, over the size limit, a directory or a dangling symlink where the
  file was;
- the treatment arm of chosen flags failing its guardrail (the fake metrics' answer), or healing;
- ``flagroll stop|pause|resume FLAG`` and ``flagroll adopt FLAG --policy NAME`` (``controller.cli.main``
  with the clock patched through ``controller.cli.common.utc_now``);
- time passing (1 s to 15 min), cycles, a controller restart (a new ``Reconciler``: a new process),
  and a process that dies between the flag write and the decision-log append (the log's append raises
  once; the next process must record ``recover``);
- at the start, optionally, a flag that is not flagroll's (serving off, or on, to everyone), policies
  in the first files and a few cycles.

The grace period is ``Grace(cycles=2, seconds=60)``, so that hand-overs and ``onDelete: rollback``
happen within a run. Every cycle and every command takes a millisecond of fake time, as real ones take
at least that (records carry milliseconds); nothing reads the wall clock. After every cycle, from what
the model knows (which files hold which valid policies, which are broken and how) and what the flag
file, the decision log and the ``CycleResult`` say:

- I1: every managed flag exposed after the cycle (``RolloutState.exposed``) was judged in it by
  exactly one valid policy, its recorded owner (or the one policy that started it): one decision
  record built with that policy (its ``aim`` names the policy, so the record tells which text judged),
  ``guarded: true``. Every policy is due in these cycles and an exposed rollout is active, so a
  judging policy always records a decision. Otherwise the cycle reports the flag unguarded
  (``CycleResult.unguarded``), the decision log holds an unguarded record (``guarded: false``)
  for it no older than 10 minutes, and ``flagroll status`` (from the flag file's marks) shows
  ``guarded: false`` for exactly these flags. A hand-over (the ``adopt`` record of the grace period, from the
  successor, ``guarded: true``) counts as the successor taking it; it judges from the next cycle.
  With the model: a flag whose owner is valid in some file is judged by it, once (a clash never
  disarms the owner), and a flag whose owner is not valid is judged by nobody;
- I2: a flag whose owner is valid, active and exposed before the cycle, whose guardrail fails, is
  rolled back in that cycle;
- I3: no flag is moved (percent, status, step, revision or owner) by a policy other than its recorded
  owner before the cycle (each record's ``policy``, and the policy its ``aim`` names), except by an
  ``adopt`` record: a hand-over to the one policy naming the flag that survives the clashes of names,
  its owner certainly gone (not valid, not possibly in a file that failed), or the adoption of a flag
  that is not flagroll's and serves off to everyone; a flag nobody owned is started only by that one
  policy; every move has a record saying where the flag went; a flag that is not flagroll's is never
  changed otherwise;
- I4: a cycle never undoes a stop (only ``resume`` does), and undoes a rollback only with a new
  revision of the owner (a record of the owner with another revision than the rolled-back state's);
- I5: each flag's variants, as the real Python flagd evaluator serves them to 200 users, move only
  treatment ⇄ off or control ⇄ off, only when the percentage changes, and no user is ever served both
  treatment and control of one flag (checked after commands too);
- I6: a flag whose owner may be in a file that failed (or with no policy file left) keeps its flag
  file entry exactly as it was, but for its unguarded marks (``flagroll.unguarded*``, and the absence
  counters they reset); a hand-over or an ``onDelete`` rollback happens only after the grace
  period (the model counts the cycles and the time since the owner was last valid), and does happen
  once the owner has been certainly gone (the flag exposed, or a successor waiting) for all of it;
- after a process died between the flag write and the log append, the next process's first cycle
  records ``recover`` for each flag it moved.

Default: bounded for ``make test`` (300 sequences of 30 steps, about 10 s). A long soak::

    FLAGROLL_SOAK=1 .venv/bin/pytest tests/reconciler/test_ownership_model.py -q --hypothesis-show-statistics

(``FLAGROLL_SOAK_EXAMPLES`` and ``FLAGROLL_SOAK_STEPS`` set its size, default 3000 × 50;
``FLAGROLL_MODEL_BREAKAGES=schema,tab,…`` limits the ways files break, to look past a known finding.)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from controller import cli
from controller.adapters.decisionlog import parse_line
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.policyfile import MAX_FILE_BYTES
from controller.cli import common
from controller.cli.status import status_rows
from controller.core.flagd import PREFIX, is_managed
from controller.core.queries import Reading
from controller.core.records import Record
from controller.core.state import ACTIVE, RolloutState, Status
from controller.reconciler import CycleResult, Reconciler
from tests.reconciler.ownership_world import (
    BAD_KEY,
    BAD_NAME,
    BREAKAGES,
    DIRECTORY,
    EDITS,
    EXISTING,
    FILES,
    GRACE,
    KEYS,
    NAMES,
    NOT_UTF8,
    NOTICE_AGE,
    SCHEMA,
    TAB,
    TICK,
    TOO_LARGE,
    UNREADABLE,
    USERS,
    Cycle,
    MortalLog,
    ProcessKilled,
    Slot,
    Spec,
    Stdout,
    Streak,
    aim_of,
    moves,
    owners,
    scratch,
    served,
    state_of,
    when,
)
from tests.support.environment import Environment, healthy

SOAK = os.environ.get("FLAGROLL_SOAK", "") not in ("", "0")
settings.register_profile(
    "flagroll-model",
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "flagroll-model-soak",
    parent=settings.get_profile("flagroll-model"),
    max_examples=int(os.environ.get("FLAGROLL_SOAK_EXAMPLES", "3000")),
    stateful_step_count=int(os.environ.get("FLAGROLL_SOAK_STEPS", "50")),
)
PROFILE = "flagroll-model-soak" if SOAK else "flagroll-model"


class OwnershipModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.env = Environment(scratch())
        (self.env.policies / "cache.yaml").unlink()  # the Environment's own example policy
        self.env.grace = GRACE
        self.env.metrics.answer = self.answer
        self.files: dict[str, Slot] = {}
        self.last_good: dict[str, Spec] = {}
        self.regressing: set[str] = set()
        self.existing: str | None = None
        self.decision_log = MortalLog(self.env.log)
        self.stdout = Stdout()
        self.reconciler = self.new_process()
        self.log_offset = 0
        self.last_unguarded: dict[str, datetime] = {}
        self.shown: dict[str, tuple[tuple[str, ...], object]] = {}
        self.arms: dict[str, list[set[str]]] = {}
        self.gone: dict[str, Streak] = {}  # owner not valid (absent or blocked)
        self.absent: dict[str, Streak] = {}  # owner certainly gone, and the grace period counting
        self.unrecorded: dict[str, float] = {}  # moves of a process that died, to be recovered

    def new_process(self) -> Reconciler:
        return Reconciler(
            policies=self.env.policies,
            store=FileFlagStore(self.env.flags),
            prometheus=self.env.metrics,
            decision_log=self.decision_log,
            clock=self.env.clock,
            log=self.stdout,
            grace=self.env.grace,
        )

    def answer(self, promql: str) -> Reading:
        treatment_errors = promql.startswith("sum(errors") and 'v="on"' in promql
        if treatment_errors and any(f'flag="{key}"' in promql for key in self.regressing):
            return Reading.of(0.5)
        return healthy(promql)

    @property
    def now(self) -> datetime:
        return self.env.clock.now

    # The model's view of the policy files ----------------------------------------------------

    def valid(self) -> list[Spec]:
        return [slot.spec for _, slot in sorted(self.files.items()) if slot.broken is None]

    def owner_valid(self, owner: str, key: str) -> bool:
        return any(s.name == owner and s.key == key for s in self.valid())

    def blocked(self, owner: str, key: str) -> bool:
        """The owner is not valid and may be in a file that failed, or no policy file is left."""
        if self.owner_valid(owner, key):
            return False
        if not self.files:
            return True
        return any(
            slot.broken in UNREADABLE
            or (slot.broken in {SCHEMA, BAD_KEY} and slot.spec.name == owner)
            or (slot.broken in {SCHEMA, BAD_NAME} and slot.spec.key == key)
            for slot in self.files.values()
        )

    def alive(self, owners: dict[str, str]) -> list[Spec]:
        """The valid policies that survive a clash of names: a name used once, or by an owner for its
        own flag (``owners``: each managed flag's recorded owner)."""
        valid = self.valid()
        return [
            spec
            for spec in valid
            if sum(s.name == spec.name for s in valid) == 1 or owners.get(spec.key) == spec.name
        ]

    def sole(self, key: str, owners: dict[str, str]) -> Spec | None:
        """The one surviving policy naming ``key`` (not its owner): the one that may start, adopt or
        take over a flag whose owner is not there."""
        naming = [s for s in self.alive(owners) if s.key == key and s.name != owners.get(key)]
        return naming[0] if len(naming) == 1 else None

    # Files ----------------------------------------------------------------------------------

    def path(self, file: str) -> Path:
        return self.env.policies / file

    def put(self, file: str, slot: Slot) -> None:
        path = self.path(file)
        self.clear(path)
        text = slot.spec.text()
        if slot.broken is None:
            path.write_text(text)
            self.last_good[file] = slot.spec
        elif slot.broken == SCHEMA:
            path.write_text(text.replace("  interval: 10s\n", "  interval: 10s\n  intervall: 20s\n"))
        elif slot.broken == BAD_NAME:
            path.write_text(text.replace(f"metadata: {{name: {slot.spec.name}}}", "metadata: {name: [x]}"))
        elif slot.broken == BAD_KEY:
            path.write_text(text.replace(f"  flag: {{key: {slot.spec.key}}}", "  flag: {key: 7}"))
        elif slot.broken == TAB:
            path.write_text(text.replace("  owner: sre-lead\n", "\towner: sre-lead\n"))
        elif slot.broken == NOT_UTF8:
            path.write_bytes(text.encode() + b"# caf\xe9\n")
        elif slot.broken == TOO_LARGE:
            path.write_text(text)
            with path.open("r+b") as handle:
                handle.truncate(MAX_FILE_BYTES + 1)
        elif slot.broken == DIRECTORY:
            path.mkdir()
            (path / "policy.yaml").write_text(text)
        else:
            path.symlink_to(self.env.policies / ".unmounted" / file)
        self.files[file] = slot

    @staticmethod
    def clear(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.exists():
            path.unlink()

    def document(self) -> dict[str, Any]:
        if not self.env.flags.exists():
            return {"flags": {}}
        document: dict[str, Any] = json.loads(self.env.flags.read_text())
        return document

    def appended(self) -> Iterator[Record]:
        """Records appended to the decision log since last asked."""
        if not self.env.log.exists():
            return
        with self.env.log.open("rb") as handle:
            handle.seek(self.log_offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.log_offset += len(complete)
        for line in complete.splitlines():
            record = parse_line(line)
            if record is not None:
                yield record

    def read_log(self) -> list[Record]:
        records = list(self.appended())
        for record in records:
            if record.get("guarded") is False:
                self.last_unguarded[str(record["flag"])] = when(record)
        return records

    # Rules: the world before flagroll ------------------------------------------------------------

    @initialize(
        existing=st.sampled_from([None, "off", "on"]),
        policies=st.lists(
            st.tuples(st.sampled_from(NAMES), st.sampled_from(KEYS), st.booleans()), max_size=len(FILES)
        ),
        ramp=st.integers(0, 3),
    )
    def start(self, existing: str | None, policies: list[tuple[str, str, bool]], ramp: int) -> None:
        """Optionally, a flag that is not flagroll's, serving ``existing`` to everyone; policies in the
        first files, and ``ramp`` cycles a minute apart."""
        self.existing = existing
        if existing is not None:
            flag = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": existing}
            self.env.flags.write_text(json.dumps({"flags": {EXISTING: flag}}, indent=2) + "\n")
            self.check_arms(self.document())
        for file, (name, key, on_delete) in zip(FILES, policies, strict=False):
            self.put(file, Slot(Spec(name, key, on_delete=on_delete)))
        for _ in range(ramp):
            self.env.clock.now += timedelta(seconds=61)
            self.run_cycle()

    # Rules: GitOps ------------------------------------------------------------------------------

    @rule(
        file=st.sampled_from(FILES),
        name=st.sampled_from(NAMES),
        key=st.sampled_from(KEYS),
        on_delete=st.booleans(),
    )
    def add_policy(self, file: str, name: str, key: str, on_delete: bool) -> None:
        if file not in self.files:
            self.put(file, Slot(Spec(name, key, on_delete=on_delete)))

    @rule(file=st.sampled_from(FILES), what=st.sampled_from(EDITS))
    def edit_policy(self, file: str, what: str) -> None:
        slot = self.files.get(file)
        if slot is not None and slot.broken is None:
            self.put(file, Slot(slot.spec.edited(what)))

    @rule(file=st.sampled_from(FILES), name=st.sampled_from(NAMES))
    def rename_policy(self, file: str, name: str) -> None:
        slot = self.files.get(file)
        if slot is not None and slot.broken is None:
            self.put(file, Slot(replace(slot.spec, name=name)))

    @rule(file=st.sampled_from(FILES), key=st.sampled_from(KEYS))
    def rename_flag_key(self, file: str, key: str) -> None:
        slot = self.files.get(file)
        if slot is not None and slot.broken is None:
            self.put(file, Slot(replace(slot.spec, key=key)))

    @rule(source=st.sampled_from(FILES), into=st.sampled_from(FILES))
    def copy_policy(self, source: str, into: str) -> None:
        slot = self.files.get(source)
        if source != into and slot is not None and slot.broken is None:
            self.put(into, slot)

    @rule(file=st.sampled_from(FILES), how=st.sampled_from(BREAKAGES))
    def break_policy(self, file: str, how: str) -> None:
        slot = self.files.get(file)
        if slot is not None and slot.broken is None:
            self.put(file, Slot(slot.spec, how))

    @rule(file=st.sampled_from(FILES))
    def remove_policy(self, file: str) -> None:
        if file in self.files:
            self.clear(self.path(file))
            del self.files[file]

    @rule(file=st.sampled_from(FILES))
    def restore_policy(self, file: str) -> None:
        slot = self.files.get(file)
        if file in self.last_good and (slot is None or slot.broken is not None):
            self.put(file, Slot(self.last_good[file]))

    # Rules: the service, on-call, time, the process ------------------------------------------------

    @rule(failing=st.frozensets(st.sampled_from(KEYS)))
    def regressions(self, failing: frozenset[str]) -> None:
        """From now on, the treatment arm of the flags ``failing`` breaks its guardrail."""
        self.regressing = set(failing)

    @rule(command=st.sampled_from(["stop", "pause", "resume"]), key=st.sampled_from(KEYS))
    def human(self, command: str, key: str) -> None:
        before = self.document()
        state = state_of(before, key)
        code, record = self.flagroll(command, key, "--reason", f"on-call says {command}")
        if state is None:
            assert code != 0, f"flagroll {command} {key} succeeded on a flag flagroll does not manage"
            return
        allowed = {
            "stop": True,
            "pause": state.status is Status.PROGRESSING,
            "resume": state.status in {Status.PAUSED, Status.STOPPED, Status.ROLLED_BACK},
        }[command]
        assert (code == 0) == allowed, f"flagroll {command} {key} on a {state.status.value} rollout: {code}"
        after = state_of(self.document(), key)
        assert after is not None
        if code != 0:
            assert after == state
            return
        assert record is not None
        assert record["action"] == command
        assert after.policy == state.policy
        if command == "stop":
            assert (after.status, after.percent) == (Status.STOPPED, 0.0)
        self.unrecorded.pop(key, None)  # the command's record starts from what the flag file holds

    @rule(key=st.sampled_from(KEYS), name=st.sampled_from(NAMES))
    def human_adopt(self, key: str, name: str) -> None:
        state = state_of(self.document(), key)
        code, record = self.flagroll("adopt", key, "--policy", name, "--policies", str(self.env.policies))
        if code != 0:
            return
        assert state is not None
        assert state.policy != name
        assert any(s.name == name and s.key == key for s in self.valid()), (
            f"flagroll adopt {key} --policy {name} succeeded though the model has no valid policy "
            f"{name!r} for {key!r}: {self.files}"
        )
        assert record is not None
        assert (record["action"], record["policy"]) == ("adopt", name)
        after = state_of(self.document(), key)
        assert after is not None
        assert (after.policy, after.percent) == (name, state.percent)
        self.unrecorded.pop(key, None)

    def flagroll(self, command: str, key: str, *options: str) -> tuple[int, Record | None]:
        """Run the ``flagroll`` command, at the fake clock's time; its record, if it made one."""
        self.env.clock.now += TICK
        argv = [command, key, "--flags", str(self.env.flags), "--decision-log", str(self.env.log)]
        argv += ["--actor", "model", *options]
        out = io.StringIO()
        with (
            mock.patch.object(common, "utc_now", self.env.clock),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            code = cli.main(argv)
        assert code in (0, 1, 2), out.getvalue()
        records = self.read_log()
        assert len(records) == (1 if code == 0 else 0), records
        self.check_arms(self.document())
        return code, records[0] if records else None

    @rule(
        seconds=st.one_of(
            st.sampled_from([1, 10, 30, 59, 60, 61, 119, 120, 300, 599, 600, 601, 900]),
            st.integers(1, 900),
        )
    )
    def time_passes(self, seconds: int) -> None:
        self.env.clock.now += timedelta(seconds=seconds)

    @rule()
    def cycle(self) -> None:
        self.run_cycle()

    @rule(count=st.integers(1, 3), every=st.sampled_from([1, 10, 30, 60, 61, 120, 600, 900]))
    def cycles(self, count: int, every: int) -> None:
        for _ in range(count):
            self.env.clock.now += timedelta(seconds=every)
            self.run_cycle()

    @rule()
    def restart(self) -> None:
        self.reconciler = self.new_process()

    @rule()
    def die_between_write_and_log(self) -> None:
        self.run_cycle(die=True)

    # A cycle, and what must hold after it ----------------------------------------------------------

    def run_cycle(self, *, die: bool = False) -> None:
        self.env.clock.now += TICK
        before = self.document()
        self.stdout.decisions.clear()
        self.decision_log.die = die
        result: CycleResult | None
        try:
            result = asyncio.run(self.reconciler.cycle())
        except ProcessKilled:
            result = None
            self.reconciler = self.new_process()  # the next process
        self.decision_log.die = False
        after = self.document()
        records = result.records if result is not None else list(self.stdout.decisions)
        assert all(r["actor"] == "controller" for r in records), records
        appended = self.read_log()
        if result is not None:
            assert appended == records, "the decision log holds what the cycle recorded"
            self.check_recovered(records)
        cycle = Cycle(before, after, records, result, owners(before))
        self.count_streaks(cycle)
        self.check_moves(cycle)
        self.check_blocked(cycle)
        self.check_grace(cycle)
        self.check_arms(after)
        for key in KEYS:  # counted again from the next cycle when flagroll starts afresh (or acted)
            state = cycle.after_state(key)
            if state is None or state.absent_since is None:
                self.gone.pop(key, None)
                self.absent.pop(key, None)
        for record in records:
            kind = "unguarded" if record["guarded"] is False else record["action"]
            event(f"record: {kind}{' (no policy)' if aim_of(record) is None else ''}")
        for key in KEYS:
            prior = cycle.before_state(key)
            if prior is not None and self.blocked(prior.policy, key):
                event(f"blocked flag ({'exposed' if prior.exposed else 'not exposed'})")
        if result is None:
            self.remember_unrecorded(cycle)
            return
        self.check_judged(cycle, result)
        self.check_status(result)
        self.check_regressions(cycle)

    def count_streaks(self, cycle: Cycle) -> None:
        """How long each flag's owner has not been valid (``gone``), and certainly gone with the grace
        period counting (``absent``), as the model sees it, this cycle included."""
        for key in KEYS:
            state = cycle.before_state(key)
            if state is None:
                self.gone.pop(key, None)
                self.absent.pop(key, None)
                continue
            owner = state.policy
            written = cycle.after_state(key)
            if self.owner_valid(owner, key) and written is not None and written.absent_since is None:
                self.gone.pop(key, None)
                self.absent.pop(key, None)
                continue
            self.gone[key] = self.extended(self.gone.get(key), owner)
            counting = state.exposed or self.sole(key, cycle.owners) is not None
            if self.owner_valid(owner, key) or self.blocked(owner, key) or not counting:
                self.absent.pop(key, None)
            else:
                self.absent[key] = self.extended(self.absent.get(key), owner)

    def extended(self, streak: Streak | None, owner: str) -> Streak:
        if streak is None or streak.owner != owner:
            return Streak(owner, self.now, 1)
        return Streak(owner, streak.since, streak.cycles + 1)

    def check_judged(self, cycle: Cycle, result: CycleResult) -> None:
        """I1, and the model's view of who judges: the owner when it is valid, nobody otherwise."""
        for key in KEYS:
            mine = cycle.of(key)
            judging = [r for r in mine if aim_of(r) is not None]
            prior = cycle.before_state(key)
            if prior is not None:
                owner = prior.policy
                if not self.owner_valid(owner, key):
                    assert judging == [], f"{key}: judged though its owner {owner!r} is not valid: {judging}"
                elif prior.status in ACTIVE:
                    assert len(judging) == 1, (
                        f"{key}: its owner {owner!r} is valid and the rollout active, so it must be judged "
                        f"by it, once: {mine}"
                    )
                assert all(aim_of(r) == (owner, key) for r in judging), f"{key}: judged by another: {judging}"
            elif judging:
                creator = self.sole(key, cycle.owners)
                taker = (creator.name, key) if creator is not None else None
                assert [aim_of(r) for r in judging] == [taker], (
                    f"{key}: nobody owned it; only the one valid policy naming it may take it: {judging}, "
                    f"valid: {self.valid()}"
                )
            state = cycle.after_state(key)
            if state is None or not state.exposed:
                continue
            if judging:
                assert key not in result.unguarded, (
                    f"{key}: judged and reported unguarded: {result.unguarded}"
                )
                assert judging[0]["guarded"] is True, judging
                continue
            if any(r["action"] == "adopt" and r["policy"] == state.policy for r in mine):
                continue  # handed over (checked with the moves): its new owner judges from the next cycle
            event("I1: exposed and unguarded")
            noticed = self.last_unguarded.get(key)
            assert key in result.unguarded, (
                f"{key}: exposed at {state.percent:g} % and judged by no policy, but the cycle does not "
                f"report it unguarded: {mine}"
            )
            assert noticed is not None, f"{key}: exposed, judged by no policy, never reported: {mine}"
            assert self.now - noticed <= NOTICE_AGE, (
                f"{key}: exposed at {state.percent:g} % and judged by no policy, with no unguarded record "
                f"in the last 10 minutes (last: {noticed}); records this cycle: {mine}"
            )

    def check_status(self, result: CycleResult) -> None:
        """I1, as on-call sees it: ``flagroll status`` (from the marks in the flag file, as a CronJob's
        replica would read them) says ``guarded: false`` exactly for the flags the cycle reported
        unguarded, with their reason."""
        rows = status_rows(FileFlagStore(self.env.flags), None, self.now)
        shown = {row["flag"]: row["unguarded_reason"] for row in rows if row["guarded"] is False}
        assert sorted(shown) == sorted(result.unguarded), (
            f"status shows {shown} unguarded; the cycle reported {result.unguarded}"
        )
        assert all(str(reason).startswith("UNGUARDED: ") for reason in shown.values()), shown

    def check_regressions(self, cycle: Cycle) -> None:
        """I2: a guarded, active, exposed flag whose guardrail fails is rolled back in that cycle."""
        for key in sorted(self.regressing):
            prior = cycle.before_state(key)
            if prior is None or not self.owner_valid(prior.policy, key):
                continue
            if prior.status not in ACTIVE or prior.percent <= 0:
                continue
            state = cycle.after_state(key)
            judged = [r["action"] for r in cycle.of(key) if aim_of(r) is not None]
            assert state is not None
            assert (state.status, state.percent) == (Status.ROLLED_BACK, 0.0), (
                f"{key}: its guardrail fails at {prior.percent:g} % under its valid owner {prior.policy!r}, "
                f"but it is {state}: {cycle.of(key)}"
            )
            assert judged == ["rollback"], cycle.of(key)
            event("I2: a failing guardrail under a valid owner")

    def check_moves(self, cycle: Cycle) -> None:
        """I3 and I4: who may move a flag, that every move is recorded, and what a cycle never undoes."""
        old, new = cycle.before["flags"], cycle.after["flags"]
        assert set(old) <= set(new), "a cycle never removes a flag"
        for key in sorted(new):
            mine = cycle.of(key)
            entry, was = new[key], old.get(key)
            if not is_managed(entry):
                assert was == entry, f"{key}: a flag that is not flagroll's was changed"
                assert mine == [], mine
                continue
            state = cycle.after_state(key)
            assert state is not None
            if was is None or not is_managed(was):
                self.check_taken(cycle, key, state)
                continue
            prior = cycle.before_state(key)
            assert prior is not None
            owner = prior.policy
            for record in mine:
                if record["action"] != "adopt":
                    assert record["policy"] == owner, (
                        f"{key}: owned by {owner!r}, recorded for another: {record}"
                    )
                    assert aim_of(record) in (None, (owner, key)), f"{key}: judged by another: {record}"
            if state.policy != owner:
                adopt = [r for r in mine if r["action"] == "adopt"]
                assert [r["policy"] for r in adopt] == [state.policy], (
                    f"{key}: owner {owner!r} → {state.policy!r} without an adopt record: {mine}"
                )
                successor = self.sole(key, cycle.owners)
                assert successor is not None, f"{key}: handed over with no policy to take it: {self.files}"
                assert successor.name == state.policy, (
                    f"{key}: handed over to {state.policy!r}, not the one valid policy naming it: {self.files}"
                )
                assert not self.owner_valid(owner, key), f"{key}: handed over from its valid owner {owner!r}"
                assert not self.blocked(owner, key), (
                    f"{key}: handed over from {owner!r}, which may be in a file that failed: {self.files}"
                )
            if moves(entry) != moves(was):
                assert any(
                    r["to_percent"] == state.percent and r["status"] == state.status.value for r in mine
                ), f"{key}: moved {moves(was)} → {moves(entry)} without a record saying so: {mine}"
            if prior.status is Status.STOPPED:
                assert state.status is Status.STOPPED, f"{key}: a cycle undid a stop: {mine}"
            if prior.status is Status.ROLLED_BACK and state.status is not Status.ROLLED_BACK:
                revised = [r for r in mine if aim_of(r) == (owner, key) and r["revision"] != prior.revision]
                assert revised, f"{key}: a rollback undone without a new revision of its owner: {mine}"
                event("I4: a rollback undone by a new revision")

    def check_taken(self, cycle: Cycle, key: str, state: RolloutState) -> None:
        """A flag nobody owned: started, or adopted, only by the one valid policy naming it."""
        mine = cycle.of(key)
        creator = self.sole(key, cycle.owners)
        assert creator is not None, f"{key}: taken by {state.policy!r}, though no policy may: {self.files}"
        assert state.policy == creator.name, (
            f"{key}: taken by {state.policy!r}, not by the one valid policy naming it: {self.files}"
        )
        assert mine, f"{key}: taken by {state.policy!r} without a record"
        assert all(aim_of(r) == (creator.name, key) for r in mine), mine
        if key in cycle.before["flags"]:
            assert self.existing == "off", f"{key}: adopted though it served {self.existing!r} to everyone"
            assert [r["action"] for r in mine] == ["adopt"], mine
            assert state.percent == 0, state

    def check_blocked(self, cycle: Cycle) -> None:
        """I6: while the owner may be in a file that failed, its flag serves exactly what it did: only
        the unguarded marks (and the absence counters they reset) may change in its metadata."""
        for key in KEYS:
            prior = cycle.before_state(key)
            if prior is not None and self.blocked(prior.policy, key):
                was, now = cycle.before["flags"][key], cycle.after["flags"][key]
                changed = {k: (was["metadata"].get(k), v) for k, v in now["metadata"].items()}
                changed = {k: v for k, v in changed.items() if v[0] != v[1]}
                assert json.dumps(unmarked(now)) == json.dumps(unmarked(was)), (  # key order included
                    f"{key}: changed while its owner {prior.policy!r} may be in a file that failed "
                    f"({self.files}): metadata {changed}; records: {cycle.of(key)}"
                )

    def check_grace(self, cycle: Cycle) -> None:
        """I6: hand-overs and onDelete rollbacks after the grace period, only then, and then surely."""
        for key in KEYS:
            mine = cycle.of(key)
            acted = [r for r in mine if aim_of(r) is None and r["action"] in {"adopt", "rollback"}]
            if acted:
                gone = self.gone.get(key)
                assert gone is not None, f"{key}: {acted[0]['action']} though its owner is there: {mine}"
                assert gone.cycles >= GRACE.cycles, (
                    f"{key}: {acted[0]['action']} after {gone} without its owner (grace: {GRACE}): {mine}"
                )
                assert (self.now - gone.since).total_seconds() >= GRACE.seconds, (
                    f"{key}: {acted[0]['action']} {self.now - gone.since} after its owner went: {mine}"
                )
            prior, streak = cycle.before_state(key), self.absent.get(key)
            if cycle.result is None or prior is None or streak is None or streak.cycles < GRACE.cycles:
                continue
            if (self.now - streak.since).total_seconds() < GRACE.seconds:
                continue
            state = cycle.after_state(key)
            assert state is not None
            successor = self.sole(key, cycle.owners)
            event(
                f"I6: grace over ({'successor' if successor else 'none'}, onDelete {prior.rollback_on_delete})"
            )
            if successor is not None:
                assert state.policy == successor.name, (
                    f"{key}: its owner {prior.policy!r} has been gone for {streak}; {successor.name!r} "
                    f"should have taken it over: {mine}"
                )
            elif prior.rollback_on_delete and prior.exposed:
                assert (state.status, state.percent) == (Status.ROLLED_BACK, 0.0), (
                    f"{key}: its owner {prior.policy!r} (onDelete: rollback) has been gone for {streak}; "
                    f"it should have been rolled back: {mine}"
                )

    def check_arms(self, document: dict[str, Any]) -> None:
        """I5: no user changes arms."""
        for key, entry in document["flags"].items():
            variants = served(key, entry)
            percent = entry.get("metadata", {}).get(PREFIX + "percent")
            seen = self.arms.setdefault(key, [set() for _ in USERS])
            shown = self.shown.get(key)
            if shown is not None:
                was, was_percent = shown
                if was_percent == percent and was_percent is not None:
                    assert was == variants, f"{key}: users moved at an unchanged {percent} %"
                for user, (a, b) in enumerate(zip(was, variants, strict=True)):
                    assert a == b or {a, b} in ({"on", "off"}, {"control", "off"}), (
                        f"{key}: {USERS[user]} moved from {a!r} to {b!r}"
                    )
            for user, variant in enumerate(variants):
                seen[user].add(variant)
                assert not {"on", "control"} <= seen[user], f"{key}: {USERS[user]} was in both arms"
            self.shown[key] = (variants, percent)

    def remember_unrecorded(self, cycle: Cycle) -> None:
        """The moves a dead process wrote but did not log: the next process must record them."""
        for key in KEYS:
            state, prior = cycle.after_state(key), cycle.before_state(key)
            if state is not None and (prior is None or prior.updated_at != state.updated_at):
                self.unrecorded[key] = state.percent

    def check_recovered(self, records: Sequence[Record]) -> None:
        """The first cycle of the next process records each move a dead process left unrecorded."""
        for key, percent in sorted(self.unrecorded.items()):
            recovered = [r for r in records if r["flag"] == key and r["action"] == "recover"]
            assert [r["to_percent"] for r in recovered] == [percent], (
                f"{key}: moved to {percent:g} % by a process that died before logging it, and not "
                f"recorded by the next one: {[r for r in records if r['flag'] == key]}"
            )
        self.unrecorded.clear()


TestOwnershipModel = OwnershipModel.TestCase
TestOwnershipModel.settings = settings.get_profile(PROFILE)


MARKS = tuple(PREFIX + name for name in ("unguarded", "unguardedSince", "unguardedNoticedAt"))
COUNTERS = (PREFIX + "absentSince", PREFIX + "absentCycles")


def unmarked(entry: dict[str, Any]) -> dict[str, Any]:
    """A flag entry without the marks a cycle may set while its owner's file fails."""
    metadata = {k: v for k, v in entry["metadata"].items() if k not in MARKS + COUNTERS}
    return {**entry, "metadata": metadata}
