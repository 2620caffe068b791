"""Revisions through the reconciler, with real files: an administrative edit (owner, aim, review…)
is not a new revision, and a flag file written before administrative fields left the revision (its
revision is the hash of the whole policy) is taken as the same revision, not as an edit."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from controller.adapters.decisionlog import read_records
from controller.core.flagd import PREFIX, read_state
from controller.core.queries import Reading
from controller.core.state import RolloutState, Status
from tests.support.environment import POLICY, Environment, failing, healthy

# The revision the previous version wrote for the environment's ``cache`` policy (the hash of the
# whole policy, owner and aim included): what a flag file written before the upgrade holds.
OLD_STYLE_REVISION = "079374286570"

CACHE = POLICY.format(name="cache", key="cache")


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    return Environment(tmp_path)


def _state(env: Environment) -> RolloutState:
    state = read_state(json.loads(env.flags.read_text()), "cache")
    assert state is not None
    return state


def _rolled_back(env: Environment) -> None:
    env.cycle()
    env.metrics.answer = failing
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    env.metrics.answer = healthy
    assert _state(env).status is Status.ROLLED_BACK


def _stamp(env: Environment, revision: str) -> None:
    """Rewrite the flag's stored revision, as an earlier version of flagroll would have written it."""
    document = json.loads(env.flags.read_text())
    document["flags"]["cache"]["metadata"][PREFIX + "revision"] = revision
    env.flags.write_text(json.dumps(document))


def test_an_owner_edit_updates_a_rolled_back_flag_and_does_not_restart_it(env: Environment) -> None:
    _rolled_back(env)
    revision = _state(env).revision
    env.add_policy("cache", "cache", CACHE.replace("owner: sre-lead", "owner: platform-team"))
    env.clock.now += timedelta(hours=1)
    env.cycle()
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    state = _state(env)
    assert (state.status, state.percent, state.revision) == (Status.ROLLED_BACK, 0.0, revision)
    assert state.owner == "platform-team"
    last = list(read_records(env.log))[-1]
    assert (last["owner"], last["action"], last["status"]) == ("platform-team", "hold", "rolled_back")


def test_a_rolled_back_flag_written_with_an_old_style_revision_stays_rolled_back(env: Environment) -> None:
    _rolled_back(env)
    _stamp(env, OLD_STYLE_REVISION)
    env.clock.now += timedelta(hours=1)
    env.cycle()
    state = _state(env)
    assert (state.status, state.percent) == (Status.ROLLED_BACK, 0.0)
    assert state.revision != OLD_STYLE_REVISION  # restamped with the revision computed the new way
    notes = list(read_records(env.log))[-1]["notes"]
    assert any(OLD_STYLE_REVISION in note and "same revision" in note for note in notes)
    # Once restamped, an administrative edit is still not a new revision...
    env.add_policy("cache", "cache", CACHE.replace("aim: Cut p95 from 450ms to 250ms.", "aim: Faster."))
    env.clock.now += timedelta(minutes=1)
    env.cycle()
    assert (_state(env).status, env.percent()) == (Status.ROLLED_BACK, 0.0)
    # ...and a change of how it is judged is one: the rollout restarts.
    env.add_policy("cache", "cache", CACHE.replace("max: 0.01", "max: 0.02"))
    env.clock.now += timedelta(minutes=1)
    env.cycle()
    assert (_state(env).status, env.percent()) == (Status.PROGRESSING, 1.0)


def test_a_running_flag_written_with_an_old_style_revision_keeps_its_step_and_hold(
    env: Environment,
) -> None:
    env.cycle()
    env.clock.now += timedelta(minutes=1)
    env.cycle()
    assert env.percent() == 5
    started = _state(env).step_started_at
    _stamp(env, OLD_STYLE_REVISION)
    env.clock.now += timedelta(seconds=20)
    env.cycle()
    state = _state(env)
    assert (state.step, state.percent, state.step_started_at) == (1, 5.0, started)
    notes = list(read_records(env.log))[-1]["notes"]
    assert not any("policy revision" in note for note in notes)
    env.clock.now += timedelta(minutes=1)
    env.cycle()
    assert env.actions()[-1] == "complete"


def test_an_edited_copy_never_takes_the_place_of_an_owner_stored_with_an_old_style_revision(
    env: Environment,
) -> None:
    """The owner's original is the copy whose revision the flag records, in either way of computing
    it: an edited copy in a file that sorts first must not judge in its place."""
    env.cycle()
    _stamp(env, OLD_STYLE_REVISION)
    (env.policies / "a-copy.yaml").write_text(CACHE.replace("max: 0.01", "max: 0.9"))

    def breaching(promql: str) -> Reading:
        if promql.startswith("sum(errors") and 'v="on"' in promql:
            return Reading.of(0.05)  # above the owner's 0.01, below the copy's 0.9
        return healthy(promql)

    env.metrics.answer = breaching
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    assert env.percent() == 0.0  # the owner's guardrail rolled it back
