"""The reconciler in-process, faked at the project's own seam (the metrics source), real files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from controller.adapters.decisionlog import DecisionLog, read_records
from controller.adapters.flagstore import FileFlagStore, Snapshot
from controller.core.commands import stop
from controller.core.errors import WriteError
from controller.core.flagd import read_state, write_flag
from controller.core.queries import PlannedQuery, QueryKey, Reading
from controller.core.state import Status
from controller.reconciler import Reconciler
from controller.reconciler import record as record_module
from tests.support.environment import POLICY, T0, Environment, FakeMetrics, down, failing, healthy
from tests.support.flags import without_unguarded_marks


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    return Environment(tmp_path)


def test_a_cycle_creates_the_flag_and_logs_the_decision(env: Environment) -> None:
    records = env.cycle()
    assert [r["action"] for r in records] == ["advance"]
    assert env.percent() == 1
    assert env.actions() == ["advance"]
    assert {q.split("{")[0] for q in env.metrics.asked} == {"sum(requests", "sum(errors"}
    assert 'flag="cache"' in env.metrics.asked[-1]


def test_the_flag_climbs_then_completes(env: Environment) -> None:
    env.cycle()
    env.clock.now += timedelta(seconds=30)
    env.cycle()
    env.clock.now += timedelta(seconds=31)
    env.cycle()
    assert env.percent() == 5
    env.clock.now += timedelta(minutes=1)
    env.cycle()
    assert env.actions() == ["advance", "hold", "advance", "complete"]


def test_re_running_a_cycle_never_advances_twice(env: Environment) -> None:
    env.cycle()
    env.cycle()
    env.cycle()
    assert env.actions() == ["advance", "hold", "hold"]
    assert env.percent() == 1


def test_two_overlapping_runs_advance_once(env: Environment) -> None:
    env.cycle()
    env.clock.now += timedelta(minutes=2)

    async def both() -> None:
        await asyncio.gather(env.reconciler().cycle(), env.reconciler().cycle())

    asyncio.run(both())
    assert env.actions() == ["advance", "advance"]
    assert env.percent() == 5


def test_a_failing_guardrail_rolls_back_and_stays_rolled_back(env: Environment) -> None:
    env.cycle()
    env.metrics.answer = failing
    env.cycle()
    assert env.percent() == 0
    env.metrics.answer = healthy
    env.clock.now += timedelta(hours=1)
    env.cycle()
    assert env.percent() == 0
    assert env.actions() == ["advance", "rollback"]


def test_an_outage_only_holds_and_progress_resumes_after_it(env: Environment) -> None:
    env.cycle()
    env.metrics.answer = down
    for _ in range(5):
        env.clock.now += timedelta(minutes=1)
        env.cycle()
    assert env.percent() == 1
    assert env.actions() == ["advance"] + ["hold"] * 5
    last = list(read_records(env.log))[-1]
    assert "connection refused" in str(last["reason"])
    env.metrics.answer = healthy
    env.cycle()
    assert env.percent() == 5


def test_an_invalid_policy_is_skipped_and_its_flag_untouched(env: Environment) -> None:
    env.add_policy("other", "other")
    env.cycle()
    before = json.loads(env.flags.read_text())["flags"]["other"]
    env.add_policy("other", "other", POLICY.format(name="other", key="other").replace("max: 0.01", ""))
    env.clock.now += timedelta(minutes=2)
    result = asyncio.run(env.reconciler().cycle())
    assert [str(i.field) for i in result.policy_errors] == ["spec.guardrails[0]"]
    after = json.loads(env.flags.read_text())["flags"]["other"]
    assert without_unguarded_marks({"flags": {"other": after}}) == {"flags": {"other": before}}
    assert after["metadata"]["flagroll.unguarded"].startswith("UNGUARDED")  # loud, not silent
    assert env.percent("cache") == 5


def test_a_flag_flagroll_does_not_own_is_left_alone_unless_it_serves_off_to_everyone(
    env: Environment,
) -> None:
    original = {"flags": {"cache": {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}}}
    env.flags.write_text(json.dumps(original))
    result = asyncio.run(env.reconciler().cycle())
    assert not result.ok
    (issue,) = result.policy_errors
    assert "already exists and is not flagroll's: it serves variant 'on' (true) to everyone" in issue.message
    assert "spec.flag.adopt: replace" in issue.message
    assert json.loads(env.flags.read_text()) == original
    assert not env.log.exists()


def test_a_dry_run_writes_nothing(env: Environment) -> None:
    records = env.cycle(dry_run=True)
    assert [(r["action"], r["dry_run"]) for r in records] == [("advance", True)]
    assert not env.flags.exists()
    assert not env.log.exists()


def test_a_stop_during_the_queries_is_never_lost(env: Environment) -> None:
    env.cycle()
    env.clock.now += timedelta(minutes=2)
    store = FileFlagStore(env.flags)

    def human_says_stop() -> None:
        with store.locked(5):
            snapshot = store.read()
            state = read_state(snapshot.document, "cache")
            assert state is not None
            document = write_flag(
                snapshot.document, "cache", stop(state, "pager", T0).after, keep_segment=True
            )
            store.write(document, snapshot, ["cache"])

    env.metrics.during = human_says_stop
    records = env.cycle()
    assert records == []
    state = read_state(json.loads(env.flags.read_text()), "cache")
    assert state is not None
    assert (state.status, state.percent) == (Status.STOPPED, 0)


class BrokenDisk(FileFlagStore):
    def write(self, document: Mapping[str, Any], expected: Snapshot, changed: Collection[str]) -> None:
        raise WriteError(f"cannot write {self.path}: No space left on device; the old file is intact")


def test_a_failed_write_records_nothing_and_the_next_cycle_recovers(env: Environment) -> None:
    env.cycle()
    before = env.flags.read_bytes()
    env.clock.now += timedelta(minutes=2)
    with pytest.raises(WriteError):
        asyncio.run(env.reconciler(store=BrokenDisk(env.flags)).cycle())
    assert env.flags.read_bytes() == before
    assert env.actions() == ["advance"]
    env.cycle()
    assert env.actions() == ["advance", "advance"]


def test_run_once_reports_problems_and_the_loop_stops_on_request(env: Environment) -> None:
    reconciler = env.reconciler()
    assert asyncio.run(reconciler.run(once=True)) is True
    env.add_policy("broken", "broken", "apiVersion: flagroll/v1\nkind: RolloutPolicy\n")
    assert asyncio.run(env.reconciler().run(once=True)) is False

    async def loop_until_three_cycles() -> None:
        stop_event = asyncio.Event()
        cycles = 0

        def count() -> None:
            nonlocal cycles
            cycles += 1
            env.clock.now += timedelta(seconds=10)
            if cycles == 3:
                stop_event.set()

        env.metrics.during = count
        reconciler = env.reconciler()
        await asyncio.wait_for(reconciler.run(stop=stop_event), timeout=60)

    env.metrics.during = None
    (env.policies / "broken.yaml").unlink()
    # The loop's schedule follows the policy interval (10 s of loop time): shorten it for the test.
    text = (env.policies / "cache.yaml").read_text().replace("interval: 10s", "interval: 1s")
    (env.policies / "cache.yaml").write_text(text.replace("hold: 1m", "hold: 1s"))
    asyncio.run(loop_until_three_cycles())
    assert len(env.actions()) >= 4


def test_a_rejected_policy_leaves_a_record_saying_its_guardrails_are_off(env: Environment) -> None:
    env.cycle()
    broken = POLICY.format(name="cache", key="cache").replace("max: 0.01", "max: lots")
    env.add_policy("cache", "cache", broken)
    env.clock.now += timedelta(minutes=2)
    running = env.reconciler()
    asyncio.run(running.cycle())
    asyncio.run(running.cycle())  # a running controller records the same problem once
    records = [r for r in read_records(env.log) if r["flag"] == "cache"]
    assert [r["action"] for r in records] == ["advance", "hold"]
    assert "guardrails NOT evaluated" in str(records[-1]["reason"])
    assert "spec.guardrails[0].max" in str(records[-1]["reason"])
    assert env.percent() == 1


def test_a_second_policy_for_a_running_flag_does_not_disarm_the_first(env: Environment) -> None:
    env.cycle()
    env.add_policy("cache-copy", "cache")
    env.metrics.answer = failing
    result = asyncio.run(env.reconciler().cycle())
    assert [i.field for i in result.policy_errors] == ["spec.flag.key"]
    assert "already rolled out by policy 'cache'" in result.policy_errors[0].message
    assert [r["action"] for r in result.records] == ["rollback", "reject"]
    assert "cache-copy.yaml" in str(result.records[1]["reason"])  # the flag's history names the newcomer
    assert env.percent() == 0


def test_a_move_is_on_stdout_even_when_the_decision_log_cannot_be_written(env: Environment) -> None:
    env.log.mkdir()  # a directory where the log should be: appends fail
    with capture_logs() as logs:
        result = asyncio.run(env.reconciler().cycle())
    assert not result.ok  # the cycle reports the failed append as a problem …
    assert any("cannot append" in p for p in result.problems)
    assert [r["action"] for r in result.records] == ["advance"]  # … and still hands on what it decided
    assert env.percent() == 1
    events = [entry["event"] for entry in logs]
    assert events.index("decision") < events.index("decision_log_write_failed")
    decision = next(entry for entry in logs if entry["event"] == "decision")
    assert (decision["action"], decision["to_percent"]) == ("advance", 1)


def test_the_loop_survives_an_unexpected_error_and_forgets_removed_policies(env: Environment) -> None:
    calls = 0

    async def flaky(queries: Sequence[PlannedQuery]) -> dict[QueryKey, Reading]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        if calls == 3:
            stop_event.set()
        return {q.key: healthy(q.promql) for q in queries}

    stop_event = asyncio.Event()
    env.metrics.query_all = flaky  # type: ignore[method-assign]
    text = (env.policies / "cache.yaml").read_text().replace("interval: 10s", "interval: 1s")
    (env.policies / "cache.yaml").write_text(text.replace("hold: 1m", "hold: 1s"))
    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(env.reconciler().run(stop=stop_event), timeout=30))
    assert "cycle_crashed" in [entry["event"] for entry in logs]
    assert calls == 3


def test_a_change_whose_record_was_lost_in_a_crash_is_recorded_once_by_the_next_controller(
    env: Environment,
) -> None:
    env.cycle()  # the rollout starts: 1 %
    env.log.unlink()  # as if the process died after writing the flag file, before appending
    env.clock.now += timedelta(seconds=10)
    reconciler = env.reconciler()
    with capture_logs() as logs:
        records = asyncio.run(reconciler.cycle()).records
    assert [r["action"] for r in records] == ["recover", "hold"]
    recovered = records[0]
    assert recovered["to_percent"] == 1.0
    assert recovered["time"] == "2026-11-21T12:00:00.000Z"  # when the flag file changed
    assert "no decision record" in str(recovered["reason"])
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["decision_record_recovered"]
    assert [r["action"] for r in read_records(env.log)] == ["recover", "hold"]
    env.clock.now += timedelta(seconds=10)
    assert [r["action"] for r in asyncio.run(reconciler.cycle()).records] == ["hold"]
    assert [r["action"] for r in env.cycle()] == ["hold"]  # a fresh process finds nothing missing


def test_an_unguarded_notice_whose_record_was_lost_in_a_crash_is_recorded_by_the_next_controller(
    env: Environment,
) -> None:
    env.cycle()  # the rollout starts: 1 %
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(seconds=10)
    kept = env.log.read_bytes()
    noticed = env.cycle()
    assert [r["guarded"] for r in noticed] == [False]  # marked in the flag file and recorded
    env.log.write_bytes(kept)  # as if the process died after marking the flag, before appending
    env.clock.now += timedelta(seconds=10)
    with capture_logs() as logs:
        records = env.cycle()
    assert [(r["action"], r["guarded"]) for r in records] == [("recover", False)]
    assert str(records[0]["reason"]).startswith("UNGUARDED: 1 % exposed")
    assert "no decision record" in str(records[0]["reason"])
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["decision_record_recovered"]
    env.clock.now += timedelta(seconds=10)
    assert env.cycle() == []  # recorded now: a fresh process owes nothing until the reminder


def test_a_lost_start_and_a_lost_unguarded_notice_are_recovered_as_of_the_notice(env: Environment) -> None:
    env.cycle()  # the rollout starts: 1 %
    (env.policies / "cache.yaml").unlink()
    env.clock.now += timedelta(minutes=8)
    env.cycle()  # noticed unguarded
    env.log.unlink()  # both records lost, as if each process died before appending
    env.clock.now += timedelta(minutes=2)
    records = env.cycle()
    assert [(r["action"], r["guarded"]) for r in records] == [("recover", False)]
    assert records[0]["time"] == "2026-11-21T12:08:00.000Z"  # the notice: a reminder is due 10 min on


def test_leftover_temporary_files_of_a_killed_writer_are_swept_by_the_next_write(env: Environment) -> None:
    env.cycle()
    leftover = env.flags.parent / ".flags.json.abc123.tmp"
    leftover.write_text('{"half": ')
    unrelated = env.flags.parent / ".other.json.abc123.tmp"
    unrelated.write_text("{}")
    env.clock.now += timedelta(minutes=1)
    assert [r["action"] for r in env.cycle()] == ["advance"]
    assert not leftover.exists()
    assert unrelated.exists()


def test_a_rollout_partial_past_its_review_date_is_recorded_stale(env: Environment) -> None:
    text = POLICY.format(name="cache", key="cache").replace(
        "  interval: 10s\n", "  interval: 10s\n  review: 2026-11-20\n"
    )
    env.add_policy("cache", "cache", text)
    records = env.cycle()
    assert records[0]["review"] == "2026-11-20"
    assert records[0]["stale"] is True  # at 1 % on 2026-11-21, after its review date


def test_rollouts_in_one_cycle_are_judged_on_their_own_answers(env: Environment) -> None:
    # Both policies have traffic and a guardrail called "errors": their answers must not mix.
    env.add_policy("search", "search")

    def search_fails(promql: str) -> Reading:
        if promql.startswith("sum(errors") and 'flag="search"' in promql and 'v="on"' in promql:
            return Reading.of(0.5)
        return healthy(promql)

    env.cycle()
    env.metrics.answer = search_fails
    env.clock.now += timedelta(seconds=30)
    records = {str(r["flag"]): r for r in env.cycle()}
    assert records["search"]["action"] == "rollback"
    assert records["cache"]["action"] == "hold"
    assert env.percent("cache") == 1
    assert env.percent("search") == 0


class BlockedMetrics(FakeMetrics):
    """Answers a query that names ``flag="slow"`` only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def query_all(self, queries: Sequence[PlannedQuery]) -> dict[QueryKey, Reading]:
        if any('flag="slow"' in q.promql for q in queries):
            await self.release.wait()
        return await super().query_all(queries)


def test_a_rollout_with_a_slow_query_does_not_hold_the_others_back(env: Environment) -> None:
    every_second = POLICY.replace("interval: 10s", "interval: 1s")
    env.add_policy("cache", "cache", every_second.format(name="cache", key="cache"))
    env.add_policy("slow", "slow", every_second.format(name="slow", key="slow"))
    metrics = BlockedMetrics()
    env.metrics = metrics

    def decisions(flag: str) -> int:
        return sum(1 for r in read_records(env.log) if r["flag"] == flag)

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + 20
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def go() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(env.reconciler().run(stop=stop))
        await until(lambda: decisions("cache") >= 3, "three cycles of the fast rollout")
        assert decisions("slow") == 0  # its first cycle is still waiting for Prometheus
        metrics.release.set()
        await until(lambda: decisions("slow") >= 1, "the slow rollout's decision")
        stop.set()
        assert await running

    asyncio.run(go())


class Chunks:
    """An observer that keeps the record chunks it is handed."""

    def __init__(self) -> None:
        self.chunks: list[list[dict[str, Any]]] = []

    def recorded(self, records: Sequence[dict[str, Any]]) -> None:
        self.chunks.append(list(records))

    def beat(self) -> None: ...

    def cycle_done(self, **_: Any) -> None: ...

    def cycle_failed(self, duration_seconds: float) -> None: ...

    def follower(self) -> None: ...


def five_rollouts_in_chunks_of_two(env: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_module, "RECORD_CHUNK", 2)
    for name in ("b", "c", "d", "e"):
        env.add_policy(name, name)


def test_a_commit_hands_on_its_records_a_chunk_at_a_time_and_keeps_none_when_told(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    five_rollouts_in_chunks_of_two(env, monkeypatch)
    observer = Chunks()
    reconciler = Reconciler(
        policies=env.policies,
        store=FileFlagStore(env.flags),
        prometheus=env.metrics,
        decision_log=DecisionLog(env.log),
        clock=env.clock,
        observer=observer,
        keep_records=False,
    )
    with capture_logs() as logs:
        result = asyncio.run(reconciler.cycle())
    assert result.records == []
    assert result.decisions == 5
    assert [len(chunk) for chunk in observer.chunks] == [2, 2, 1]
    handed = [record for chunk in observer.chunks for record in chunk]
    assert handed == list(read_records(env.log))  # every record, in the order written
    assert sorted(str(r["flag"]) for r in handed) == ["b", "c", "cache", "d", "e"]
    assert [entry["flag"] for entry in logs if entry["event"] == "decision"] == [r["flag"] for r in handed]


def test_a_log_that_fails_mid_cycle_is_tried_once_and_the_rest_wait_for_it(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    five_rollouts_in_chunks_of_two(env, monkeypatch)
    reconciler = env.reconciler()
    attempts = 0
    append = DecisionLog.append

    def full_once(log: DecisionLog, records: Sequence[dict[str, Any]]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise WriteError(f"cannot append to {log.path}: No space left on device")
        append(log, records)

    monkeypatch.setattr(DecisionLog, "append", full_once)
    with capture_logs() as logs:
        first = asyncio.run(reconciler.cycle())
    assert attempts == 1  # not once more per chunk
    assert [p for p in first.problems if "No space left" in p] == [first.problems[0]]
    assert [entry["event"] for entry in logs].count("decision_log_write_failed") == 1
    assert not env.log.exists()
    env.clock.now += timedelta(seconds=10)
    second = asyncio.run(reconciler.cycle())
    assert second.ok
    logged = list(read_records(env.log))
    assert [r["action"] for r in logged] == ["advance"] * 5 + ["hold"] * 5  # none lost, in order
    assert logged[:5] == first.records


def test_the_cycle_states_show_each_flag_as_the_cycle_left_it(env: Environment) -> None:
    result = asyncio.run(env.reconciler().cycle())
    assert result.states["cache"].percent == 1  # written by this cycle: the telemetry gauges follow
    env.clock.now += timedelta(minutes=2)
    result = asyncio.run(env.reconciler().cycle())
    assert [r["action"] for r in result.records] == ["advance"]
    assert result.states["cache"].percent == 5
    env.clock.now += timedelta(minutes=2)
    result = asyncio.run(env.reconciler(dry_run=True).cycle())
    assert [r["status"] for r in result.records] == ["completed"]  # what it would do …
    assert result.states["cache"].status is Status.PROGRESSING  # … is not what the flag file holds


def test_rollouts_asking_the_same_queries_are_asked_in_one_call(env: Environment) -> None:
    flag_free = POLICY.replace(',flag="{{{{flag}}}}"', "")
    (env.policies / "cache.yaml").write_text(flag_free.format(name="cache", key="cache"))
    for name in ("b", "c"):
        env.add_policy(name, name, flag_free.format(name=name, key=name))
    env.add_policy("own", "own")  # its error query names its flag: asked on its own
    calls: list[int] = []
    answer = env.metrics.query_all

    async def counting(queries: Sequence[PlannedQuery]) -> dict[QueryKey, Reading]:
        calls.append(len(queries))
        return await answer(queries)

    env.metrics.query_all = counting  # type: ignore[method-assign]
    result = asyncio.run(env.reconciler().cycle())
    assert sorted(calls) == [4, 12]  # 2 arms × (traffic, errors): one rollout; three alike
    assert sorted(str(r["flag"]) for r in result.records) == ["b", "c", "cache", "own"]
    assert {str(r["action"]) for r in result.records} == {"advance"}  # each judged on its own answers
    assert {str(c["verdict"]) for r in result.records for c in r["checks"]} == {"pass"}


def test_a_record_the_log_refused_is_appended_by_the_next_commit_even_with_nothing_new(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler = env.reconciler()
    asyncio.run(reconciler.cycle())
    append = DecisionLog.append
    full = True

    def full_for_now(log: DecisionLog, records: Sequence[dict[str, Any]]) -> None:
        if full:
            raise WriteError(f"cannot append to {log.path}: No space left on device")
        append(log, records)

    monkeypatch.setattr(DecisionLog, "append", full_for_now)
    env.metrics.answer = failing
    env.clock.now += timedelta(seconds=10)
    rolled_back = asyncio.run(reconciler.cycle())
    assert [r["action"] for r in rolled_back.records] == ["rollback"]
    assert [r["action"] for r in read_records(env.log)] == ["advance"]
    full = False
    env.clock.now += timedelta(seconds=10)
    quiet = asyncio.run(reconciler.cycle())  # rolled back: nothing new to record
    assert quiet.records == []
    assert quiet.ok
    assert [r["action"] for r in read_records(env.log)] == ["advance", "rollback"]


def test_an_observer_that_fails_costs_no_record(env: Environment) -> None:
    class Broken(Chunks):
        def recorded(self, records: Sequence[dict[str, Any]]) -> None:
            raise RuntimeError("a bug in the metrics")

    reconciler = Reconciler(
        policies=env.policies,
        store=FileFlagStore(env.flags),
        prometheus=env.metrics,
        decision_log=DecisionLog(env.log),
        clock=env.clock,
        observer=Broken(),
    )
    with capture_logs() as logs:
        result = asyncio.run(reconciler.cycle())
    assert [r["action"] for r in result.records] == ["advance"]
    assert [r["action"] for r in read_records(env.log)] == ["advance"]
    assert "observer_failed" in [entry["event"] for entry in logs]


def test_the_settings_are_fixed_once_the_reconciler_is_built(env: Environment) -> None:
    """The phases are built from the settings: changing one afterwards would reach only some of
    them (a dry run that still writes), so they cannot be changed."""
    reconciler = env.reconciler()
    for name, value in (("dry_run", True), ("store", None), ("clock", None), ("observer", None)):
        with pytest.raises(AttributeError):
            setattr(reconciler, name, value)
    assert reconciler.dry_run is False


def test_records_of_one_commit_follow_the_order_of_the_policies(env: Environment) -> None:
    """Answers that land together are committed in the policies' order, not in the order a set of
    tasks happens to iterate: the log, stdout and a new flag file read the same on every run."""
    names = [f"rollout-{i:02d}" for i in range(12)]
    for name in names:
        env.add_policy(name, name)
    expected = sorted([*names, "cache"])
    for _ in range(5):
        for path in (env.flags, env.log):
            path.unlink(missing_ok=True)
        records = env.cycle()
        assert [r["flag"] for r in records] == expected
        assert list(json.loads(env.flags.read_text())["flags"]) == expected


def test_a_rejected_newcomer_is_recorded_once_across_runs_of_a_cronjob(env: Environment) -> None:
    """Each ``run --once`` is a new process: the decision log tells it the rejection was recorded."""
    env.cycle()
    env.add_policy("cache-copy", "cache")
    rejects = []
    for _ in range(3):
        env.clock.now += timedelta(minutes=2)
        rejects += [r for r in env.cycle() if r["action"] == "reject"]  # a new Reconciler each time
    assert len(rejects) == 1
    assert "cache-copy.yaml" in str(rejects[0]["reason"])


def test_a_long_running_controller_looks_a_recorded_rejection_up_once(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rejection stays for as long as the bad file does; once its record is rotated into a gzipped
    generation, looking it up every cycle would decompress the generations under the flag lock. One
    process looks it up once: later cycles know it was told."""
    from controller.adapters import decisionlog
    from controller.reconciler import commit

    lookups: list[object] = []
    real = decisionlog.last_by_flag

    def counted(*args: object, **kwargs: object) -> object:
        lookups.append(args[1])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(commit, "last_by_flag", counted)
    reconciler = env.reconciler()
    asyncio.run(reconciler.cycle())
    env.add_policy("cache-copy", "cache")
    rejects = []
    for _ in range(5):
        env.clock.now += timedelta(minutes=2)
        rejects += [r for r in asyncio.run(reconciler.cycle()).records if r["action"] == "reject"]
    assert len(rejects) == 1
    assert [keys for keys in lookups if keys == ["cache"]] == [["cache"]]
