"""Verified serving in the loop: after a write that takes a flag to 0 % (a rollback, a stop, an
onDelete rollback) or changes its shares (an advance), the reconciler asks the flag server over OFREP
until it serves what the flag file says, or reports loudly that it does not; it never moves a flag
and never holds a cycle up.

The flag server is the in-process fake of tests/support/ofrepfake.py (a real HTTP server evaluating
the flag file with the Python flagd evaluator): the flagd daemon cannot run here. The loop is the
real reconciler on real files, with the fake clock and metrics of tests/support/environment.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.ofrep import OfrepClient
from controller.adapters.promserver import free_port
from controller.adapters.telemetry import Telemetry
from controller.cli import main
from controller.core.commands import resume, stop
from controller.core.flagd import read_state, render_document, write_flag
from controller.core.guarding import Grace
from controller.core.serving import Check, Expectation, Outcome, Verification, verification_record
from controller.core.state import Status
from controller.reconciler import Reconciler
from controller.reconciler.verify import ServingSettings
from tests.support.environment import RAMP, Clock, Environment, failing, healthy
from tests.support.ofrepfake import OfrepFake

SAMPLE = 300  # keys asked per round: enough to see a 20 % arm, quick against the fake


class RunningClock(Clock):
    """The test's clock, but running in real time from where the test set it: the seconds from a
    write to the server serving it are real seconds."""

    def __init__(self) -> None:
        super().__init__()
        self._started = time.monotonic()

    def __call__(self) -> datetime:
        return self.now + timedelta(seconds=time.monotonic() - self._started)


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    env = Environment(tmp_path)
    env.add_policy("cache", "cache", RAMP)
    return env


@pytest.fixture
def fake(env: Environment) -> Iterator[OfrepFake]:
    with OfrepFake(env.flags) as server:
        yield server


@contextlib.asynccontextmanager
async def verifying(
    env: Environment, url: str, *, observer: Telemetry | None = None, **settings: Any
) -> AsyncIterator[Reconciler]:
    """A reconciler verifying against ``url``; verifications still running are abandoned after."""
    options: dict[str, Any] = {"sample": SAMPLE, "timeout_seconds": 5.0, "poll_seconds": 0.1, **settings}
    async with OfrepClient(url, timeout_seconds=options.pop("request_timeout_seconds", 2.0)) as client:
        reconciler = env.reconciler(serving=ServingSettings(client, **options), observer=observer)
        try:
            yield reconciler
        finally:
            assert reconciler.verifier is not None
            await reconciler.verifier.close(wait=False)


async def cycle(env: Environment, reconciler: Reconciler, seconds: float = 0.0) -> None:
    env.clock.now += timedelta(seconds=seconds)
    await reconciler.cycle()


async def settled(reconciler: Reconciler) -> None:
    """Until every verification under way has its outcome (each is bounded by its deadline)."""
    assert reconciler.verifier is not None
    await reconciler.verifier.close(wait=True)


async def exposed_then_rolled_back(
    env: Environment, reconciler: Reconciler, before_rollback: Callable[[], None]
) -> None:
    """Start at 20 %, then a failing guardrail rolls back; ``before_rollback`` runs in between."""
    await cycle(env, reconciler)
    assert env.percent() == 20
    before_rollback()
    env.metrics.answer = failing
    await cycle(env, reconciler, 10)
    assert env.percent() == 0


def verifications(env: Environment) -> list[dict[str, Any]]:
    return [r for r in read_records(env.log) if r["action"] == "verify"]


def test_a_rollback_is_confirmed_with_the_seconds_from_the_write_to_the_server_serving_off(
    env: Environment, fake: OfrepFake
) -> None:
    env.clock = RunningClock()
    fake.reload_delay_seconds = 0.6  # the server serves a change this long after it sees it
    telemetry = Telemetry()

    async def scenario() -> None:
        async with verifying(env, fake.url, observer=telemetry, share=False) as reconciler:
            await exposed_then_rolled_back(env, reconciler, fake.load)  # the server serves 20 %
            await settled(reconciler)

    asyncio.run(scenario())
    assert env.actions() == ["advance", "rollback", "verify"]
    rollback, verify = list(read_records(env.log))[1:]
    serving = verify["serving"]
    assert (serving["check"], serving["outcome"], serving["served"]) == ("off", "confirmed", {"off": SAMPLE})
    assert serving["written_at"] == rollback["time"]
    assert 0.55 <= serving["seconds"] < 5
    assert serving["rounds"] >= 2  # the first rounds still saw the treatment
    assert verify["reason"].startswith(
        f"serving verified: the flag server ({fake.url}) serves off to all {SAMPLE}"
    )
    assert (verify["status"], verify["to_percent"]) == ("rolled_back", 0.0)
    assert all(set(body) == {"context"} and set(body["context"]) == {"targetingKey"} for body in fake.bodies)
    last_round = {body["context"]["targetingKey"] for body in fake.bodies[-SAMPLE:]}
    assert last_round == {f"flagroll-verify-{i}" for i in range(SAMPLE)}
    found = metrics(telemetry)
    assert found[("flagroll_serving_verified_seconds_count", (("check", "off"),))] == 1
    assert found[("flagroll_serving_verified_seconds_sum", (("check", "off"),))] == serving["seconds"]
    assert found[("flagroll_serving_unverified", (("flag", "cache"),))] == 0
    assert ("flagroll_decisions_total", (("action", "verify"), ("flag", "cache"))) not in found


def test_a_server_that_never_reloads_is_reported_loudly_and_the_flag_is_left_alone(
    env: Environment, fake: OfrepFake
) -> None:
    telemetry = Telemetry()

    async def scenario() -> str:
        async with verifying(
            env, fake.url, observer=telemetry, timeout_seconds=2.0, share=False
        ) as reconciler:
            await exposed_then_rolled_back(env, reconciler, fake.freeze)
            written = env.flags.read_text()
            with capture_logs() as logs:
                await settled(reconciler)
            assert [e["event"] for e in logs if e["log_level"] == "error"] == ["serving_unverified"]
            return written

    written = asyncio.run(scenario())
    assert env.flags.read_text() == written  # verification never writes the flag file
    assert env.actions() == ["advance", "rollback", "verify"]
    (verify,) = verifications(env)
    serving = verify["serving"]
    assert serving["outcome"] == "unverified"
    assert serving["served"]["on"] > 0
    assert serving["served"]["control"] > 0
    # it kept asking until the deadline: it stops when one more poll (0.1 s) would pass it
    assert 2.0 - 0.1 <= serving["waited_seconds"] < 5
    assert fake.requests > SAMPLE
    assert verify["reason"].startswith("SERVING NOT VERIFIED after the write at")
    assert f"still serves on to {serving['served']['on']} of {SAMPLE} sampled keys" in verify["reason"]
    state = read_state(json.loads(env.flags.read_text()), "cache")
    assert state is not None
    assert (state.status, state.percent) == (Status.ROLLED_BACK, 0)
    found = metrics(telemetry)
    assert found[("flagroll_serving_unverified", (("flag", "cache"),))] == 1
    assert found[("flagroll_serving_verifications_total", (("check", "off"), ("outcome", "unverified")))] == 1


def metrics(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(telemetry.exposition().decode())
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("misbehaviour", "said"),
    [
        ("errors", "HTTP 503: overloaded"),
        ("malformed", "HTTP 200 but not a JSON object"),
        ("hang", f"a round of {SAMPLE} questions was still unanswered at the deadline (1s)"),
        ("serves on", f"still serves on to {SAMPLE} of {SAMPLE} sampled keys"),
        ("another flag file", "the flag server does not know the flag (HTTP 404 FLAG_NOT_FOUND"),
        ("unreachable", "cannot connect to http://127.0.0.1:"),
    ],
)
def test_a_server_that_errs_is_reported_with_what_it_said(
    env: Environment, fake: OfrepFake, tmp_path: Path, misbehaviour: str, said: str
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"flags": {}}')

    def misbehave() -> None:
        if misbehaviour == "errors":
            fake.status = (503, b'{"errorDetails": "overloaded"}')
        elif misbehaviour == "malformed":
            fake.malformed = True
        elif misbehaviour == "hang":
            fake.hang.set()
        elif misbehaviour == "serves on":
            fake.variant = "on"
        elif misbehaviour == "another flag file":
            fake.flags = elsewhere

    url = f"http://127.0.0.1:{free_port()}" if misbehaviour == "unreachable" else fake.url
    # A hanging server is judged at a 1 s deadline; the others get 3 s, so that a loaded machine
    # answers a whole round of SAMPLE questions before it (a round cut short says "unanswered").
    timeout_seconds = 1.0 if misbehaviour == "hang" else 3.0

    async def scenario() -> None:
        async with verifying(env, url, timeout_seconds=timeout_seconds, share=False) as reconciler:
            await exposed_then_rolled_back(env, reconciler, misbehave)
            await settled(reconciler)

    asyncio.run(scenario())
    (verify,) = verifications(env)
    assert verify["serving"]["outcome"] == "unverified"
    assert said in verify["reason"]
    assert env.percent() == 0
    assert env.actions() == ["advance", "rollback", "verify"]


def test_a_stop_typed_by_a_human_is_verified_at_the_next_cycle(
    env: Environment, fake: OfrepFake, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> None:
        async with verifying(env, fake.url, share=False) as reconciler:
            await cycle(env, reconciler)
            assert main(["stop", "cache", "--flags", str(env.flags), "--reason", "paged"]) == 0
            await cycle(env, reconciler, 10)
            await settled(reconciler)

    asyncio.run(scenario())
    assert env.actions() == ["advance", "stop", "verify"]
    stop, verify = list(read_records(env.log))[1:]
    assert verify["serving"]["outcome"] == "confirmed"
    assert verify["serving"]["written_at"] == stop["time"]
    assert verify["status"] == "stopped"
    capsys.readouterr()


def test_an_on_delete_rollback_is_verified(env: Environment, fake: OfrepFake) -> None:
    env.add_policy(
        "cache", "cache", RAMP.replace("  interval: 10s\n", "  interval: 10s\n  onDelete: rollback\n")
    )
    env.add_policy("other", "other")
    env.grace = Grace(cycles=1, seconds=0)

    async def scenario() -> None:
        async with verifying(env, fake.url, share=False) as reconciler:
            await cycle(env, reconciler)
            (env.policies / "cache.yaml").unlink()
            await cycle(env, reconciler, 10)
            await settled(reconciler)

    asyncio.run(scenario())
    cache = [r for r in read_records(env.log) if r["flag"] == "cache"]
    assert [r["action"] for r in cache] == ["advance", "rollback", "verify"]
    assert cache[1]["reason"].startswith("policy deleted; onDelete: rollback")
    assert cache[2]["serving"]["outcome"] == "confirmed"


def test_each_step_is_verified_as_a_plausible_share_not_key_by_key(env: Environment, fake: OfrepFake) -> None:
    async def scenario() -> None:
        async with verifying(env, fake.url) as reconciler:
            await cycle(env, reconciler)  # a new flag at 20 %
            await settled(reconciler)
            await cycle(env, reconciler, 61)  # 50 %
            await settled(reconciler)

    asyncio.run(scenario())
    assert env.actions() == ["advance", "verify", "advance", "verify"]
    first, second = verifications(env)
    for record, percent in ((first, 20), (second, 50)):
        serving = record["serving"]
        assert (serving["check"], serving["outcome"], serving["percent"]) == ("share", "confirmed", percent)
        low, high = serving["plausible"]["on"]
        assert low <= serving["served"]["on"] <= high
        assert low < SAMPLE * percent / 100 < high
    assert first["reason"].startswith("serving verified: the flag server")


def test_a_server_stuck_at_the_last_step_is_reported_after_an_advance(
    env: Environment, fake: OfrepFake
) -> None:
    async def scenario() -> None:
        async with verifying(env, fake.url, timeout_seconds=3.0) as reconciler:
            await cycle(env, reconciler)
            await settled(reconciler)
            fake.freeze()  # serves 20 % from now on
            await cycle(env, reconciler, 61)
            await settled(reconciler)

    asyncio.run(scenario())
    _, stuck = verifications(env)
    serving = stuck["serving"]
    assert (serving["check"], serving["outcome"], serving["percent"]) == ("share", "unverified", 50)
    low, _ = serving["plausible"]["on"]
    assert serving["served"]["on"] < low
    assert "not plausible for what the flag file says" in stuck["reason"]
    assert env.percent() == 50  # a mismatch never moves a flag


def test_a_segmented_flag_is_verified_at_zero_but_its_shares_are_not(
    env: Environment, fake: OfrepFake
) -> None:
    env.add_policy(
        "cache",
        "cache",
        RAMP.replace("  interval: 10s\n", '  interval: 10s\n  segment: {"==": [{"var": "tier"}, "gold"]}\n'),
    )

    async def scenario() -> None:
        async with verifying(env, fake.url) as reconciler:
            with capture_logs() as logs:
                await cycle(env, reconciler)
                await settled(reconciler)
            assert any(e["event"] == "serving_not_verified" and "segment" in e["note"] for e in logs)
            env.metrics.answer = failing
            await cycle(env, reconciler, 10)
            await settled(reconciler)

    asyncio.run(scenario())
    assert env.actions() == ["advance", "rollback", "verify"]
    (verify,) = verifications(env)
    assert (verify["serving"]["check"], verify["serving"]["outcome"]) == ("off", "confirmed")


def test_verification_never_holds_a_cycle_up(env: Environment, fake: OfrepFake) -> None:
    async def scenario() -> None:
        async with verifying(env, fake.url, timeout_seconds=20.0, share=False) as reconciler:
            await exposed_then_rolled_back(env, reconciler, fake.hang.set)
            assert reconciler.verifier is not None
            assert reconciler.verifier.running == ["cache"]
            started = time.monotonic()
            await cycle(env, reconciler, 10)
            assert time.monotonic() - started < 1.0
            with capture_logs() as logs:
                await reconciler.verifier.close(wait=False)
            assert [e["event"] for e in logs] == ["serving_verification_abandoned"]

    asyncio.run(scenario())
    assert verifications(env) == []


def test_a_new_move_supersedes_the_verification_of_the_last_one(env: Environment, fake: OfrepFake) -> None:
    async def scenario() -> None:
        async with verifying(env, fake.url, timeout_seconds=20.0) as reconciler:
            await cycle(env, reconciler)
            await settled(reconciler)
            await exposed_then_rolled_back(env, reconciler, fake.hang.set)
            assert reconciler.verifier is not None
            assert reconciler.verifier.running == ["cache"]
            resumed(env)
            env.metrics.answer = healthy
            with capture_logs() as logs:
                await cycle(env, reconciler, 10)  # the ramp starts again at 20 %
            assert [e["event"] for e in logs if e["event"].startswith("serving")] == [
                "serving_verification_superseded"
            ]
            fake.hang.clear()
            await settled(reconciler)

    asyncio.run(scenario())
    assert [r["serving"]["check"] for r in verifications(env)] == ["share", "share"]  # no off record
    assert env.actions()[-3:] == ["rollback", "advance", "verify"]


def test_a_run_with_once_waits_for_its_verifications(env: Environment, fake: OfrepFake) -> None:
    env.cycle()
    env.metrics.answer = failing
    env.clock.now += timedelta(seconds=10)

    async def scenario() -> None:
        async with verifying(env, fake.url, share=False) as reconciler:
            assert await reconciler.run(once=True)

    asyncio.run(scenario())
    assert env.actions() == ["advance", "rollback", "verify"]


def test_a_record_that_cannot_get_the_lock_waits_for_the_next_append(
    env: Environment, fake: OfrepFake
) -> None:
    fake.reload_delay_seconds = 0.5

    async def scenario() -> None:
        async with OfrepClient(fake.url) as client:
            reconciler = Reconciler(
                policies=env.policies,
                store=FileFlagStore(env.flags),
                prometheus=env.metrics,
                decision_log=DecisionLog(env.log),
                clock=env.clock,
                lock_timeout_seconds=0.3,
                serving=ServingSettings(
                    client, sample=SAMPLE, timeout_seconds=5, poll_seconds=0.1, share=False
                ),
            )
            await exposed_then_rolled_back(env, reconciler, lambda: None)
            with FileFlagStore(env.flags).locked(1.0), capture_logs() as logs:
                await settled(reconciler)  # confirmed while another writer holds the lock
            assert "decision_log_append_deferred" in [e["event"] for e in logs]
            assert env.actions() == ["advance", "rollback"]
            await cycle(env, reconciler, 10)  # the next commit appends it

    asyncio.run(scenario())
    assert env.actions()[:3] == ["advance", "rollback", "verify"]


def test_the_unverified_gauge_clears_once_the_flag_serves_something_else(
    env: Environment, fake: OfrepFake
) -> None:
    telemetry = Telemetry()

    async def scenario() -> None:
        async with verifying(
            env, fake.url, observer=telemetry, timeout_seconds=0.5, share=False
        ) as reconciler:
            await exposed_then_rolled_back(env, reconciler, fake.freeze)
            await settled(reconciler)
            telemetry.cycle_done(
                ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states=states(env)
            )
            assert metrics(telemetry)[("flagroll_serving_unverified", (("flag", "cache"),))] == 1
            resumed(env)
            env.metrics.answer = healthy
            await cycle(env, reconciler, 10)  # the ramp starts again: 20 %
            telemetry.cycle_done(
                ok=True, policy_errors=0, prometheus_answered=True, duration_seconds=0.1, states=states(env)
            )

    asyncio.run(scenario())
    assert metrics(telemetry)[("flagroll_serving_unverified", (("flag", "cache"),))] == 0


def resumed(env: Environment) -> None:
    """What `flagroll resume cache` writes (without its record, and without the command's logging
    set-up, which would take the log lines from these tests)."""
    document = json.loads(env.flags.read_text())
    state = read_state(document, "cache")
    assert state is not None
    after = resume(state, "", env.clock()).after
    env.flags.write_text(render_document(write_flag(document, "cache", after, keep_segment=True)))


def states(env: Environment) -> dict[str, Any]:
    state = read_state(json.loads(env.flags.read_text()), "cache")
    assert state is not None
    return {"cache": state}


def test_a_verification_record_never_stands_in_for_a_lost_move_record(env: Environment) -> None:
    env.cycle()  # 20 %, recorded
    document = json.loads(env.flags.read_text())
    exposed = read_state(document, "cache")
    assert exposed is not None
    stopped = stop(exposed, "paged", env.clock.now + timedelta(seconds=10)).after
    env.flags.write_text(render_document(write_flag(document, "cache", stopped, keep_segment=True)))
    # ... and the process that wrote the stop died before appending its record, while a verification
    # of the earlier write (20 %) finished later and was appended.
    wanted = Expectation("cache", Check.SHARE, exposed, 0.0)
    late = Verification(wanted, Outcome.CONFIRMED, "http://flagd:8016", SAMPLE, 1, 0.5, 30.0, seconds=0.5)
    DecisionLog(env.log).append([verification_record(late, env.clock.now + timedelta(seconds=20))])
    env.clock.now += timedelta(seconds=30)
    recovered = [r for r in env.cycle() if r["action"] == "recover"]
    assert [(r["status"], r["to_percent"]) for r in recovered] == [("stopped", 0.0)]
