"""``spec.alerts`` in the loop: a real reconciler (flag file, decision log) at an injected clock, with
an alert that fires, resolves and fires again, through a restart and a pause. The gauge
``flagroll_rollout_waiting{reason="alert"}`` is 1 exactly while a progressing rollout holds for it;
exposure never rises while it fires; `flagroll status` says the alert."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import httpx
import respx

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.telemetry import Telemetry
from controller.cli.status import status_rows
from controller.core.commands import pause, resume
from controller.core.flagd import read_state, write_flag
from controller.core.queries import Reading
from controller.reconciler import Reconciler
from tests.reconciler.test_schedule_redteam import _cycle, _telemetry, _waiting
from tests.support.environment import POLICY, Environment, healthy

ALERTS = "  alerts:\n    - name: pages\n      selector: '{severity=\"page\"}'\n"
PAGE = 'Down{severity="page"}'
URL = "http://prometheus.test:9090"


def _answer(env: Environment, firing: bool) -> None:
    listed = Reading.listed([PAGE] if firing else [])
    env.metrics.answer = lambda promql: listed if promql.startswith("ALERTS") else healthy(promql)


def _human(env: Environment, act: object) -> None:
    document = json.loads(env.flags.read_text())
    state = read_state(document, "paged")
    assert state is not None
    after = act(state, "on-call", env.clock.now).after  # type: ignore[operator]
    env.flags.write_text(json.dumps(write_flag(document, "paged", after, keep_segment=True)))


def test_the_gauge_and_exposure_follow_a_flapping_alert_through_a_restart_and_a_pause(tmp_path: Path) -> None:
    env = Environment(tmp_path)  # holds the plain policy 'cache', no alerts
    env.add_policy("paged", "paged", POLICY.format(name="paged", key="paged") + ALERTS)
    telemetry = _telemetry(env)
    _answer(env, firing=True)
    _cycle(env, telemetry)
    assert env.percent("paged") == 0
    assert _waiting(telemetry)[("paged", "alert")] == 1
    assert _waiting(telemetry)[("cache", "alert")] == 0

    restarted: Telemetry = _telemetry(env)  # a new process: nothing but the flag file and the log
    env.clock.now += timedelta(seconds=30)
    _cycle(env, restarted)
    assert env.percent("paged") == 0
    assert _waiting(restarted)[("paged", "alert")] == 1
    (row,) = [
        r
        for r in status_rows(FileFlagStore(env.flags), env.log, env.clock.now, env.policies)
        if r["flag"] == "paged"
    ]
    assert row["waiting"]["reason"] == "alert"
    assert row["waiting"]["alerts"] == [{"name": "pages", "firing": [PAGE]}]

    _answer(env, firing=False)
    env.clock.now += timedelta(seconds=30)
    _cycle(env, restarted)
    assert env.percent("paged") == 1
    assert _waiting(restarted)[("paged", "alert")] == 0

    _answer(env, firing=True)  # flaps back: the step's hold keeps counting, nothing rises
    for _ in range(4):
        env.clock.now += timedelta(minutes=5)
        _cycle(env, restarted)
        assert env.percent("paged") == 1
        assert _waiting(restarted)[("paged", "alert")] == 1

    _human(env, pause)  # paused while it fires: waits for the human, not for the alert
    env.clock.now += timedelta(seconds=30)
    _cycle(env, restarted)
    assert _waiting(restarted)[("paged", "alert")] == 0
    assert env.percent("paged") == 1
    _human(env, resume)
    env.clock.now += timedelta(seconds=30)
    _cycle(env, restarted)
    assert env.percent("paged") == 1
    assert _waiting(restarted)[("paged", "alert")] == 1

    _answer(env, firing=False)  # the hold (restarted by the resume) is long over: the next cycle moves
    env.clock.now += timedelta(minutes=30)
    _cycle(env, restarted)
    assert env.percent("paged") == 5
    assert _waiting(restarted)[("paged", "alert")] == 0


def test_a_dry_run_says_the_rollback_a_firing_alert_would_make_and_writes_nothing(tmp_path: Path) -> None:
    env = Environment(tmp_path)
    env.add_policy(
        "paged", "paged", POLICY.format(name="paged", key="paged") + ALERTS + "      onFiring: rollback\n"
    )
    _answer(env, firing=False)
    env.cycle()
    assert env.percent("paged") == 1
    _answer(env, firing=True)
    env.clock.now += timedelta(seconds=30)
    flags = env.flags.read_text()
    (said,) = [r for r in env.cycle(dry_run=True) if r["flag"] == "paged"]
    assert (said["action"], said["dry_run"], said["to_percent"]) == ("rollback", True, 0)
    assert str(said["reason"]).startswith(
        f"alert firing: alert pages: 1 alert firing ({PAGE}); onFiring: rollback"
    )
    assert env.flags.read_text() == flags
    (done,) = [r for r in env.cycle() if r["flag"] == "paged"]
    assert (done["action"], done["dry_run"]) == ("rollback", False)
    assert env.percent("paged") == 0


def test_rollouts_asking_different_queries_still_share_one_request_per_selector(tmp_path: Path) -> None:
    """The loop asks each set of rollouts with the same queries apart: rollouts whose guardrails
    differ but whose alert selector is the same (spelled apart) still make one request for it."""
    env = Environment(tmp_path)
    env.add_policy("cache", "cache", POLICY.format(name="cache", key="cache") + ALERTS)
    spelled = ALERTS.replace('{severity="page"}', 'ALERTS{ severity = "page" }')
    env.add_policy("paged", "paged", POLICY.format(name="paged", key="paged") + spelled)
    asked: list[str] = []

    def reply(request: httpx.Request) -> httpx.Response:
        query = httpx.QueryParams(request.content.decode())["query"]
        asked.append(query)
        result = (
            [] if query.startswith("ALERTS") else [{"metric": {}, "value": [1, str(healthy(query).value)]}]
        )
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    async def cycle() -> None:
        async with PrometheusClient(URL) as client:
            reconciler = Reconciler(
                policies=env.policies,
                store=FileFlagStore(env.flags),
                prometheus=client,
                decision_log=DecisionLog(env.log),
                clock=env.clock,
            )
            await reconciler.cycle()

    with respx.mock() as router:
        router.post(f"{URL}/api/v1/query").mock(side_effect=reply)
        asyncio.run(cycle())
    assert [q for q in asked if q.startswith("ALERTS")] == ['ALERTS{alertstate="firing", severity="page"}']
    assert {'sum(errors{v="on",flag="cache"})', 'sum(errors{v="on",flag="paged"})'} <= set(asked)  # apart
    assert env.percent("cache") == env.percent("paged") == 1
