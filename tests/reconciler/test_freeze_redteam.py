"""Red-team of ``kind: Freeze`` documents (docs/policy-reference.md "Freeze documents") in the loop:
Freeze files written, renamed, copied, broken and mended, replaced by policies and back, and labels
edited, between cycles of a real reconciler (policy directory, flag file, decision log) at an
injected clock. The promises: while a valid Freeze covers the rollout, or any Freeze document does
not validate, its exposure never rises; a failing guardrail still rolls it back; ``flagroll status``
lists the freezes in force; ``flagroll validate`` fails on a broken one."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller import cli
from controller.cli.status import active_freezes
from controller.core.commands import resume
from controller.core.flagd import read_state, write_flag
from controller.core.state import Status
from tests.support.environment import POLICY, Environment, failing, healthy

RAMP = (
    POLICY.format(name="cache", key="cache")
    .replace("metadata: {name: cache}", "metadata: {name: cache, labels: {team: TEAM}}")
    .replace(
        "    - {percent: 5, hold: 1m}\n",
        "    - {percent: 5, hold: 1m}\n    - {percent: 20, hold: 1m}\n    - {percent: 50, hold: 1m}\n",
    )
)
VALID = """\
apiVersion: flagroll/v1
kind: Freeze
metadata: {{name: {name}}}
spec:
  from: 2026-01-01
  reason: stop the line
{selector}"""
CHECKOUT = "  selector: {matchLabels: {team: checkout}}\n"

# Freeze documents that do not validate or cannot be read through, each a form a person may write.
BROKEN = {
    "unknown field": VALID.format(name="f", selector="").replace("reason:", "reasn:"),
    "broken YAML": "apiVersion: flagroll/v1\nkind: Freeze\nmetadata: {name: f}\nspec: {from: 2026-01-01\n",
    "broken JSON": '{"apiVersion": "flagroll/v1", "kind": "Freeze", "metadata": {"name": "f"}, '
    '"spec": {"from": "2026-01-01"}',
    "an anchored kind": "apiVersion: flagroll/v1\nkind: &k Freeze\nmetadata: {name: f}\nspec: {from: 2026-01\n",
    "a tagged kind": "apiVersion: flagroll/v1\nkind: !!str Freeze\nmetadata: {name: f}\nspec: {from: 2026-0\n",
    "a list, not a mapping": "- apiVersion: flagroll/v1\n  kind: Freeze\n  metadata: {name: f}\n"
    "  spec: {from: 2026-01-01}\n",
    "a misspelt kind": VALID.format(name="f", selector="").replace("kind: Freeze", "kind: Freez"),
    "a plural kind": VALID.format(name="f", selector="").replace("kind: Freeze", "kind: Freezes"),
    "kind given as a list": "apiVersion: flagroll/v1\nkind: [Freeze]\nmetadata: {name: f}\n"
    "spec: {from: 2026-01-01}\n",
}


def _waiting_reason(record: dict[str, object]) -> object:
    waiting = record["waiting"]
    assert isinstance(waiting, dict)
    return waiting.get("reason")


def _ramp(team: str) -> str:
    return RAMP.replace("TEAM", team)


def _started(root: Path) -> Environment:
    """``cache`` (labels team: checkout) at its first step, 1 %, its hold over."""
    env = Environment(root)
    env.add_policy("cache", "cache", _ramp("checkout"))
    env.cycle()
    assert env.percent() == 1
    env.clock.now += timedelta(minutes=2)
    return env


@pytest.mark.parametrize(("name", "suffix"), [(n, s) for n in BROKEN for s in (".yaml", ".json")])
def test_a_broken_freeze_in_any_form_holds_and_guardrails_stay_armed(
    tmp_path: Path, name: str, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _started(tmp_path)
    (env.policies / f"freeze{suffix}").write_text(BROKEN[name])
    [held] = env.cycle()
    assert held["action"] == "hold"
    assert env.percent() == 1
    assert "does not validate" in str(held["reason"])
    assert _waiting_reason(held) == "freeze"
    assert cli.main(["validate", str(env.policies)]) != 0
    [listed] = active_freezes(env.policies, [], env.clock.now)
    assert listed["valid"] is False
    capsys.readouterr()
    env.metrics.answer = failing
    env.clock.now += timedelta(seconds=10)
    [rolled] = env.cycle()
    assert (rolled["action"], env.percent()) == ("rollback", 0)


# --- a sequence of edits of the policy directory ---------------------------------------------------

SLOTS = ("a.yaml", "b.yml", "c.json")
CONTENTS = ("every", "checkout", "broken", "policy")


class FreezeDirectory(RuleBasedStateMachine):
    """Each slot of the policy directory holds nothing, a Freeze for every rollout, one for team
    checkout, a broken Freeze, or another rollout's policy; ``cache``'s team label flips."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp())
        self.env = _started(self.root)
        self.team = "checkout"
        self.held: dict[str, str | None] = dict.fromkeys(SLOTS)
        self.names: dict[str, str] = {}  # the Freeze name each slot's document has
        self.saved: dict[str, tuple[str | None, str, str]] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # the model ---------------------------------------------------------------------------------

    def covered(self) -> bool:
        kinds = set(self.held.values())
        return bool(kinds & {"every", "broken"}) or ("checkout" in kinds and self.team == "checkout")

    def text(self, slot: str, content: str) -> str:
        stem = slot.split(".")[0]
        self.names[slot] = f"freeze-{stem}"
        if content == "every":
            return VALID.format(name=f"freeze-{stem}", selector="")
        if content == "checkout":
            return VALID.format(name=f"freeze-{stem}", selector=CHECKOUT)
        if content == "broken":
            return BROKEN["broken YAML" if stem != "c" else "broken JSON"]
        return POLICY.format(name=f"other-{stem}", key=f"other-{stem}")

    # edits ---------------------------------------------------------------------------------------

    @rule(slot=st.sampled_from(SLOTS), content=st.sampled_from(CONTENTS))
    def write(self, slot: str, content: str) -> None:
        (self.env.policies / slot).write_text(self.text(slot, content))
        self.held[slot] = content

    @rule(slot=st.sampled_from(SLOTS))
    def delete(self, slot: str) -> None:
        path = self.env.policies / slot
        if path.exists():
            self.saved[slot] = (self.held[slot], path.read_text(), self.names.get(slot, ""))
            path.unlink()
        self.held[slot] = None

    @rule(slot=st.sampled_from(SLOTS))
    def restore(self, slot: str) -> None:
        if slot in self.saved:
            self.held[slot], text, self.names[slot] = self.saved[slot]
            (self.env.policies / slot).write_text(text)

    @rule(source=st.sampled_from(SLOTS), dest=st.sampled_from(SLOTS), keep=st.booleans())
    def rename_or_copy(self, source: str, dest: str, keep: bool) -> None:
        """`git mv` (or `cp`): the same text under another name (a Freeze name then used twice)."""
        if source == dest or self.held[source] is None:
            return
        (self.env.policies / dest).write_text((self.env.policies / source).read_text())
        self.held[dest] = self.held[source]
        self.names[dest] = self.names.get(source, "")
        if not keep:
            (self.env.policies / source).unlink()
            self.held[source] = None

    @rule(team=st.sampled_from(("checkout", "search")))
    def label(self, team: str) -> None:
        self.env.add_policy("cache", "cache", _ramp(team))
        self.team = team

    # cycles --------------------------------------------------------------------------------------

    @rule()
    def cycle(self) -> None:
        before = self.env.percent()
        self.env.clock.now += timedelta(seconds=70)
        self.env.metrics.answer = healthy
        records = [r for r in self.env.cycle() if r["flag"] == "cache"]
        if self.covered():
            assert self.env.percent() <= before, self.held
            for record in records:
                if "due:" in str(record["reason"]):
                    assert _waiting_reason(record) == "freeze"

    @precondition(lambda self: self.env.percent() > 0)
    @rule()
    def guardrail_fails(self) -> None:
        self.env.clock.now += timedelta(seconds=10)
        self.env.metrics.answer = failing
        self.env.cycle()
        assert self.env.percent() == 0

    @rule()
    def resume(self) -> None:
        document = json.loads(self.env.flags.read_text())
        state = read_state(document, "cache")
        assert state is not None
        if state.status is Status.ROLLED_BACK:
            after = resume(state, "fixed", self.env.clock.now).after
            self.env.flags.write_text(json.dumps(write_flag(document, "cache", after, keep_segment=True)))

    # what status says ---------------------------------------------------------------------------

    @invariant()
    def status_lists_the_freezes_in_force(self) -> None:
        listed = active_freezes(self.env.policies, [], self.env.clock.now)
        broken = [f for f in listed if not f["valid"]]
        assert bool(broken) == ("broken" in self.held.values())
        by_file = {Path(f["where"].rsplit(":", 1)[0]).name: f for f in listed if f["valid"]}
        for slot, content in self.held.items():
            if content in {"every", "checkout"}:
                listed_here = by_file[slot]
                assert listed_here["name"] == self.names[slot]
                covered = content == "every" or self.team == "checkout"
                assert ("cache" in listed_here["covers"]) == covered


TestFreezeDirectory = FreezeDirectory.TestCase
TestFreezeDirectory.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
