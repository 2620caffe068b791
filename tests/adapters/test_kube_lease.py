"""Leader election on a Lease, against the in-process fake API, with clocks the tests move."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.kube.errors import KubePermissionError
from controller.adapters.kube.lease import LeaseElector
from controller.adapters.kube.objects import ObjectRef
from controller.adapters.kube.stores import ConfigMapFlagStore
from controller.core.errors import LeadershipLostError, PermanentError
from controller.reconciler import Reconciler
from tests.support.environment import POLICY, Clock, FakeMetrics
from tests.support.kubefake import FakeKubeApi

LEASE = ObjectRef("team", "flagroll")
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class Clocks:
    """A monotonic clock and a wall clock that move together, as tests say."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)


@pytest.fixture
def fake() -> FakeKubeApi:
    return FakeKubeApi(token="t")


def elector(fake: FakeKubeApi, identity: str, clocks: Clocks) -> LeaseElector:
    return LeaseElector(
        fake.client("team"),
        LEASE,
        identity,
        lease_duration_seconds=15,
        renew_deadline_seconds=10,
        retry_period_seconds=2,
        monotonic=clocks.monotonic,
        wall=clocks.wall,
    )


def holder(fake: FakeKubeApi) -> str | None:
    spec = fake.get("leases", "team", "flagroll")["spec"]
    value = spec.get("holderIdentity")
    return None if value is None else str(value)


def test_the_first_replica_creates_the_lease_and_leads(fake: FakeKubeApi) -> None:
    clocks = Clocks()
    a = elector(fake, "pod-a", clocks)
    assert a.try_acquire_or_renew()
    assert a.is_leader()
    spec = fake.get("leases", "team", "flagroll")["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    # a whole second is sent with a microsecond: the API server needs six fractional digits
    assert spec["renewTime"] == "2026-11-21T12:16:40.000001Z"


def test_a_second_replica_follows_while_the_leader_renews(fake: FakeKubeApi) -> None:
    clocks = Clocks()
    a, b = elector(fake, "pod-a", clocks), elector(fake, "pod-b", clocks)
    assert a.try_acquire_or_renew()
    for _ in range(20):  # 40 s: far past one lease duration, but renewed every 2 s
        clocks.seconds += 2
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert a.is_leader()
    assert not b.is_leader()
    assert holder(fake) == "pod-a"
    renews = fake.get("leases", "team", "flagroll")["spec"]
    assert renews["renewTime"] == "2026-11-21T12:17:20.000001Z"
    assert renews["acquireTime"] == "2026-11-21T12:16:40.000001Z"


def test_an_expired_lease_is_taken_over(fake: FakeKubeApi) -> None:
    clocks = Clocks()
    a, b = elector(fake, "pod-a", clocks), elector(fake, "pod-b", clocks)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees a's record now
    clocks.seconds += 14  # a has died; not yet a full lease duration since b saw the record
    assert not b.try_acquire_or_renew()
    assert not a.is_leader()  # a's own renew deadline (10 s) passed long before b may take over
    clocks.seconds += 1.5
    assert b.try_acquire_or_renew()
    spec = fake.get("leases", "team", "flagroll")["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("pod-b", 1)
    # a comes back: it sees another holder and stays a follower
    assert not a.try_acquire_or_renew()
    assert holder(fake) == "pod-b"


def test_a_newly_started_replica_waits_a_full_lease_duration_whatever_the_renew_time_says(
    fake: FakeKubeApi,
) -> None:
    """Expiry is measured on our own clock from when we first saw the record: clock skew between
    nodes cannot make a replica take a lease that is still being renewed."""
    fake.add(
        "leases",
        "team",
        "flagroll",
        {
            "spec": {
                "holderIdentity": "pod-a",
                "leaseDurationSeconds": 15,
                "renewTime": "2020-01-01T00:00:00.000000Z",
            }
        },
    )
    clocks = Clocks()
    b = elector(fake, "pod-b", clocks)
    assert not b.try_acquire_or_renew()
    clocks.seconds += 16
    assert b.try_acquire_or_renew()


def test_a_slow_read_counts_the_lease_from_when_its_answer_arrived(fake: FakeKubeApi) -> None:
    """A follower's read that is slow to be answered can carry a renewal the leader began long after
    the read was sent: the lease duration counts from the answer, or the follower would take over
    while the leader may still write (two leaders)."""
    clocks = Clocks()
    a, b = elector(fake, "pod-a", clocks), elector(fake, "pod-b", clocks)
    assert a.try_acquire_or_renew()  # t = 1000
    clocks.seconds = 1002.0

    def the_leader_renews_while_the_read_is_in_flight() -> None:
        clocks.seconds = 1011.0
        assert a.try_acquire_or_renew()  # a may write until 1021
        clocks.seconds = 1012.0  # b's answer arrives

    fake.before("GET", "leases", the_leader_renews_while_the_read_is_in_flight)
    assert not b.try_acquire_or_renew()  # sent at 1002, answered at 1012 with a's renewal of 1011
    clocks.seconds = 1017.5  # a has died since; 15 s after b sent its read, 5.5 s after the answer
    assert a.is_leader()
    assert not b.try_acquire_or_renew()
    clocks.seconds = 1027.5
    assert not a.is_leader()
    assert b.try_acquire_or_renew()


def test_two_replicas_taking_over_at_once_cannot_both_win(fake: FakeKubeApi) -> None:
    clocks = Clocks()
    a, b, c = (elector(fake, name, clocks) for name in ("pod-a", "pod-b", "pod-c"))
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert not c.try_acquire_or_renew()
    clocks.seconds += 16
    won: list[bool] = []
    fake.before("PUT", "leases", lambda: won.append(c.try_acquire_or_renew()))
    assert not b.try_acquire_or_renew()  # c's takeover lands between b's read and b's write
    assert won == [True]
    assert c.is_leader()
    assert not b.is_leader()
    assert holder(fake) == "pod-c"
    assert len(fake.conflicts("leases")) == 1


def test_a_failed_renewal_ends_leadership_at_once(fake: FakeKubeApi) -> None:
    clocks = Clocks()
    a = elector(fake, "pod-a", clocks)
    assert a.try_acquire_or_renew()
    clocks.seconds += 2
    fake.fail("PUT", "leases", 500)
    with capture_logs() as logs:
        assert not a.try_acquire_or_renew()
    assert not a.is_leader()  # although the renew deadline is 8 s away
    assert [e["event"] for e in logs] == ["leadership_lost", "leader_election_failed"]
    clocks.seconds += 2
    assert a.try_acquire_or_renew()  # the lease still names us: we lead again


def test_another_holder_appearing_ends_leadership_at_once(fake: FakeKubeApi) -> None:
    clocks = Clocks()
    a = elector(fake, "pod-a", clocks)
    assert a.try_acquire_or_renew()
    fake.edit("leases", "team", "flagroll", lambda o: o["spec"].update(holderIdentity="intruder"))
    assert not a.try_acquire_or_renew()
    assert not a.is_leader()


def test_leadership_lapses_without_a_renewal(fake: FakeKubeApi) -> None:
    clocks = Clocks()
    a = elector(fake, "pod-a", clocks)
    assert a.try_acquire_or_renew()
    clocks.seconds += 9.9
    assert a.is_leader()
    clocks.seconds += 0.2
    assert not a.is_leader()


def test_giving_the_lease_up_lets_another_replica_lead_at_once(fake: FakeKubeApi) -> None:
    clocks = Clocks()
    a, b = elector(fake, "pod-a", clocks), elector(fake, "pod-b", clocks)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader()
    assert holder(fake) is None
    assert b.try_acquire_or_renew()  # no waiting for the lease to expire
    assert holder(fake) == "pod-b"


def test_forbidden_on_the_lease_is_a_clear_permanent_error(fake: FakeKubeApi) -> None:
    a = elector(fake, "pod-a", Clocks())
    fake.fail("GET", "leases", 403)
    with pytest.raises(
        KubePermissionError, match=r"verb 'get' on resource 'leases\.coordination\.k8s\.io'"
    ) as caught:
        a.try_acquire_or_renew()
    assert isinstance(caught.value, PermanentError)
    assert not a.is_leader()


# --- the reconciler under leader election ----------------------------------------------------------


class Replica:
    def __init__(self, fake: FakeKubeApi, root: Path, identity: str, clocks: Clocks) -> None:
        policies = root / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "cache.yaml").write_text(POLICY.format(name="cache", key="cache"))
        self.elector = elector(fake, identity, clocks)
        self.clock = Clock()
        self.reconciler = Reconciler(
            policies=policies,
            store=ConfigMapFlagStore(fake.client("team"), ObjectRef("team", "flags")),
            prometheus=FakeMetrics(),
            decision_log=DecisionLog(root / f"{identity}.jsonl"),
            clock=self.clock,
            leader=self.elector,
        )


@pytest.fixture
def flags(fake: FakeKubeApi) -> FakeKubeApi:
    fake.add("configmaps", "team", "flags", {"data": {}})
    return fake


def test_only_the_leader_reconciles(flags: FakeKubeApi, tmp_path: Path) -> None:
    clocks = Clocks()
    a = Replica(flags, tmp_path, "pod-a", clocks)
    b = Replica(flags, tmp_path, "pod-b", clocks)
    assert a.elector.try_acquire_or_renew()
    assert not b.elector.try_acquire_or_renew()
    reads_before = len([r for r in flags.requests if "configmaps" in r.path])
    assert asyncio.run(b.reconciler.run(once=True))  # a follower is not a failure
    assert len([r for r in flags.requests if "configmaps" in r.path]) == reads_before
    assert asyncio.run(a.reconciler.run(once=True))
    assert len(flags.writes("configmaps")) == 1


def test_a_lease_lost_during_a_cycle_stops_its_write(flags: FakeKubeApi, tmp_path: Path) -> None:
    clocks = Clocks()
    a = Replica(flags, tmp_path, "pod-a", clocks)
    assert a.elector.try_acquire_or_renew()
    reads = 0

    def lose_on_the_second_read() -> None:  # the cycle's read under "lock", just before deciding
        nonlocal reads
        reads += 1
        if reads == 2:
            flags.fail("PUT", "leases", 500)
            assert not a.elector.try_acquire_or_renew()

    flags.before("GET", "configmaps", lose_on_the_second_read, times=2)
    with pytest.raises(LeadershipLostError, match="not the leader"):
        asyncio.run(a.reconciler.cycle())
    assert flags.writes("configmaps") == []
    assert flags.get("configmaps", "team", "flags")["data"] == {}
    assert not (tmp_path / "pod-a.jsonl").exists()


def test_the_run_loop_renews_and_hands_over_on_shutdown(flags: FakeKubeApi, tmp_path: Path) -> None:
    """The real elector loop (real clocks) beside the reconciler loop: the leader writes, gives the
    Lease up when stopped, and the follower then leads without waiting for expiry."""
    a = Replica(flags, tmp_path, "pod-a", Clocks())
    a.elector.monotonic = time.monotonic
    a.elector.wall = lambda: datetime.now(UTC)

    async def scenario() -> None:
        stop = asyncio.Event()
        renewing = asyncio.create_task(a.elector.run(stop))
        running = asyncio.create_task(a.reconciler.run(stop=stop))
        deadline = asyncio.get_running_loop().time() + 10
        while not flags.writes("configmaps"):
            assert asyncio.get_running_loop().time() < deadline, "the leader never wrote"
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(renewing, running)
        await asyncio.to_thread(a.elector.release)

    asyncio.run(scenario())
    assert holder(flags) is None
    b = elector(flags, "pod-b", Clocks())
    b.monotonic = time.monotonic
    assert b.try_acquire_or_renew()
