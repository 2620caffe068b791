"""Red-team of ``spec.schedule`` in the loop: the gauge ``flagroll_rollout_waiting`` and `flagroll
status` over cycles of a real reconciler (flag file, decision log) at an injected clock, through a
restart, the window opening, and the policy going away.

``T0`` (2026-11-21 12:00 UTC) is a Saturday; the window is Mon–Thu 09:00–16:00 in Berlin.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.flagstore import FileFlagStore
from controller.adapters.telemetry import Telemetry
from controller.cli.status import status_rows
from controller.core.commands import pause
from controller.core.flagd import read_state, write_flag
from tests.support.environment import POLICY, Environment

SCHEDULE = """\
  schedule:
    timezone: Europe/Berlin
    windows:
      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}
"""
MONDAY = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _environment(tmp_path: Path) -> Environment:
    env = Environment(tmp_path)  # holds the plain policy 'cache'
    env.add_policy("search", "search", POLICY.format(name="search", key="search") + SCHEDULE)
    return env


def _cycle(env: Environment, telemetry: Telemetry) -> None:
    asyncio.run(env.reconciler(observer=telemetry).run(once=True))  # the loop: it tells cycle_done


def _waiting(telemetry: Telemetry) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            if sample.name == "flagroll_rollout_waiting":
                found[(sample.labels["flag"], sample.labels["reason"])] = sample.value
    return found


def _telemetry(env: Environment) -> Telemetry:
    return Telemetry(clock=lambda: env.clock.now.timestamp())


def test_the_gauge_follows_the_window_through_a_restart(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    first = _telemetry(env)
    _cycle(env, first)
    assert _waiting(first)[("search", "window")] == 1
    assert _waiting(first)[("cache", "window")] == 0
    restarted = _telemetry(env)  # a new process: nothing but the flag file and the log
    env.clock.now += timedelta(minutes=5)
    _cycle(env, restarted)
    assert _waiting(restarted)[("search", "window")] == 1
    env.clock.now = MONDAY
    _cycle(env, restarted)
    assert _waiting(restarted)[("search", "window")] == 0
    assert env.percent("search") == 1


def test_a_rollout_whose_policy_is_deleted_waits_for_no_window(tmp_path: Path) -> None:
    """The policy of a rollout waiting to start is deleted: nothing judges it any more, so nothing
    waits for a window; neither the gauge nor `flagroll status --policies` may say it does."""
    env = _environment(tmp_path)
    telemetry = _telemetry(env)
    _cycle(env, telemetry)
    assert _waiting(telemetry)[("search", "window")] == 1
    (env.policies / "search.yaml").unlink()
    env.clock.now += timedelta(minutes=1)
    _cycle(env, telemetry)
    assert _waiting(telemetry)[("search", "window")] == 0
    env.clock.now = MONDAY  # the window opens: still nothing moves it
    _cycle(env, telemetry)
    assert _waiting(telemetry)[("search", "window")] == 0
    assert env.percent("search") == 0
    rows = {r["flag"]: r for r in status_rows(FileFlagStore(env.flags), env.log, env.clock.now, env.policies)}
    assert rows["search"]["waiting"] is None


def test_a_rollout_whose_policy_comes_back_waits_again(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    telemetry = _telemetry(env)
    _cycle(env, telemetry)
    text = (env.policies / "search.yaml").read_text()
    (env.policies / "search.yaml").unlink()
    env.clock.now += timedelta(minutes=1)
    _cycle(env, telemetry)
    (env.policies / "search.yaml").write_text(text)
    env.clock.now += timedelta(minutes=1)
    _cycle(env, telemetry)
    assert _waiting(telemetry)[("search", "window")] == 1


def test_a_pause_between_two_cycles_of_its_policy_ends_the_wait_at_once(tmp_path: Path) -> None:
    """A human pauses the waiting rollout; the next cycle is for another policy only (``search``
    is not due): the gauge must not keep saying it waits for a window."""
    env = _environment(tmp_path)
    telemetry = _telemetry(env)
    _cycle(env, telemetry)
    document = json.loads(env.flags.read_text())
    state = read_state(document, "search")
    assert state is not None
    paused = pause(state, "look", env.clock.now).after
    env.flags.write_text(json.dumps(write_flag(document, "search", paused, keep_segment=True)))
    asyncio.run(_only(env, telemetry, {"cache"}))
    assert _waiting(telemetry)[("search", "window")] == 0


async def _only(env: Environment, telemetry: Telemetry, names: set[str]) -> None:
    """One cycle of the loop for the policies ``names`` (the others not due), told to the gauges."""
    reconciler = env.reconciler(observer=telemetry)
    result = await reconciler.cycle(names)
    telemetry.cycle_done(
        ok=result.ok,
        policy_errors=0,
        prometheus_answered=True,
        duration_seconds=0.1,
        states=result.states,
        unguarded=result.unguarded,
        unjudged=result.unjudged,
    )
