"""Taking, keeping and giving back machine leases, against the in-memory Fly.

How refreshes and someone else's lease are judged (Fly's semantics) is in
test_rollout_fly_semantics; here: the order leases are taken in and that none is left behind.
"""

from __future__ import annotations

import threading

import pytest
from fake_clock import FakeClock
from fake_fly import FakeFly

from fly_pg_external.domain import Lease, Machine
from fly_pg_external.errors import FlyTimeout, FlyTransient, RunError
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.rollout import leases as leases_module
from fly_pg_external.rollout.leases import LEASE_TTL, LeaseSet, leased

from machines_data import machine


@pytest.fixture
def fly(clock: FakeClock) -> FakeFly:
    return FakeFly(clock, [machine("m1", "primary"), machine("m2"), machine("m3")])


def machines(*ids: str) -> list[Machine]:
    return [machine_from_api(machine(mid)) for mid in ids]


def test_the_first_machine_is_leased_alone_then_the_rest(fly: FakeFly, clock: FakeClock) -> None:
    fly.hold_lease("m1", seconds=5)  # the first one keeps us waiting: the others are not asked
    with leased(fly, "my-db", machines("m1", "m2", "m3"), clock=clock) as held:
        assert sorted(held.leases) == ["m1", "m2", "m3"]
    asks = fly.calls_to("acquire_lease")
    assert [c.target for c in asks[:4]] == ["m1"] * 4  # refused at 0, 2 and 4 s; taken at 6 s
    assert sorted(c.target for c in asks[4:]) == ["m2", "m3"]
    assert all(c.at >= asks[3].at for c in asks[4:])


def test_when_the_first_lease_cannot_be_had_no_other_machine_is_asked(
    fly: FakeFly, clock: FakeClock
) -> None:
    fly.hold_lease("m1", seconds=600)
    with (
        pytest.raises(RunError, match="leased by someone else"),
        leased(fly, "my-db", machines("m1", "m2", "m3"), clock=clock),
    ):
        pass
    assert fly.targets("acquire_lease") == ["m1"]
    assert "release_lease" not in fly.names()


def test_every_lease_is_given_back_with_its_nonce(fly: FakeFly, clock: FakeClock) -> None:
    with leased(fly, "my-db", machines("m1", "m2", "m3"), clock=clock) as held:
        nonces = {mid: lease.nonce for mid, lease in held.leases.items()}
        assert {mid: lease.nonce for mid, lease in fly.leases.items()} == nonces
    released = {c.target: c.args["nonce"] for c in fly.calls_to("release_lease")}
    assert released == nonces
    assert fly.leases == {}
    assert held.leases == {}


def test_leases_are_given_back_when_the_block_raises(fly: FakeFly, clock: FakeClock) -> None:
    with (
        pytest.raises(KeyboardInterrupt),
        leased(fly, "my-db", machines("m1", "m2"), clock=clock),
    ):
        raise KeyboardInterrupt  # a cancellation is not an Exception either
    assert sorted(fly.targets("release_lease")) == ["m1", "m2"]
    assert fly.leases == {}


def test_leases_taken_before_a_later_one_failed_are_given_back(
    fly: FakeFly, clock: FakeClock
) -> None:
    fly.hold_lease("m3", seconds=600)
    with (
        pytest.raises(RunError, match="Machine m3 is leased by someone else"),
        leased(fly, "my-db", machines("m1", "m2", "m3"), clock=clock),
    ):
        pass
    assert sorted(fly.targets("release_lease")) == ["m1", "m2"]
    assert list(fly.leases) == ["m3"]  # theirs, untouched


def test_a_lease_taken_after_release_all_is_given_back_at_once(
    fly: FakeFly, clock: FakeClock
) -> None:
    held = LeaseSet(fly, "my-db", clock=clock)
    held.acquire(machines("m1"))
    held.release_all()
    # A concurrent acquire that only now comes back (the run was cancelled meanwhile).
    held._take(machines("m2")[0])
    assert fly.targets("release_lease") == ["m1", "m2"]
    assert held.leases == {}
    assert fly.leases == {}


def test_a_failed_first_acquire_is_sent_once_more(fly: FakeFly, clock: FakeClock) -> None:
    fly.fail("acquire_lease", FlyTransient("bad gateway", status=503))
    held = LeaseSet(fly, "my-db", clock=clock)
    held._take(machines("m1")[0])
    assert fly.targets("acquire_lease") == ["m1", "m1"]
    [pause] = clock.sleeps  # the HTTP schedule's first pause, with jitter: 0.125-0.25 s
    assert 0.125 <= pause <= 0.25
    assert held.leases["m1"].nonce == fly.leases["m1"].nonce


def test_an_acquire_that_fails_twice_raises_its_failure(fly: FakeFly, clock: FakeClock) -> None:
    fly.fail("acquire_lease", FlyTransient("bad gateway", status=503), times=2)
    held = LeaseSet(fly, "my-db", clock=clock)
    with pytest.raises(FlyTransient, match="bad gateway"):
        held._take(machines("m1")[0])
    assert fly.targets("acquire_lease") == ["m1", "m1"]


def test_a_lost_acquire_answer_is_not_blamed_on_someone_else(
    fly: FakeFly, clock: FakeClock
) -> None:
    # The first acquire landed but its answer was lost: the resend meets our own lease.
    fly.fail("acquire_lease", FlyTimeout("timed out", status=408), lands=True)
    held = LeaseSet(fly, "my-db", wait=20, clock=clock)
    with pytest.raises(RunError) as err:
        held._take(machines("m1")[0])
    assert "maybe by this run's first attempt" in str(err.value)
    assert f"expires within {LEASE_TTL} s" in str(err.value)


def test_our_own_orphaned_lease_is_waited_out_with_the_default_wait(
    fly: FakeFly, clock: FakeClock
) -> None:
    fly.fail("acquire_lease", FlyTimeout("timed out", status=408), lands=True)
    held = LeaseSet(fly, "my-db", clock=clock)  # waits 40 s, longer than the 30 s TTL
    held._take(machines("m1")[0])
    assert LEASE_TTL <= clock.now() <= LEASE_TTL + 3
    assert held.leases["m1"].nonce == fly.leases["m1"].nonce


def test_a_429_then_a_conflict_is_someone_elses_lease(fly: FakeFly, clock: FakeClock) -> None:
    # A 429 is refused before any work: it cannot have left a lease of ours behind.
    fly.fail("acquire_lease", FlyTransient("rate limited", status=429))
    fly.hold_lease("m1", seconds=600)
    held = LeaseSet(fly, "my-db", clock=clock)
    with pytest.raises(RunError, match="leased by someone else"):
        held._take(machines("m1")[0])


def test_versions_match_only_when_every_lease_names_the_version_read(
    fly: FakeFly, clock: FakeClock
) -> None:
    held = LeaseSet(fly, "my-db", clock=clock)
    held._take(machines("m1")[0])
    version = machine("m1")["instance_id"]
    assert held.versions_match({"m1": version})
    assert not held.versions_match({"m1": "01OTHER"})
    assert not held.versions_match({"m1": version, "m2": version})  # m2 is not leased


def test_a_lost_lease_stops_before_its_machine_is_changed(fly: FakeFly, clock: FakeClock) -> None:
    held = LeaseSet(fly, "my-db", clock=clock)
    held._take(machines("m1")[0])
    fly.clear_lease("m1")
    fly.hold_lease("m1", seconds=600)
    held._refresh_one("m1", held.leases["m1"])
    with pytest.raises(RunError, match=r"lease on machine m1 was lost .*stopping before"):
        held.nonce("m1")


def test_the_keep_alive_refreshes_each_lease_with_its_nonce(
    fly: FakeFly, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leases_module, "LEASE_REFRESH", 0.001)
    refreshed = threading.Event()
    acquire = fly.acquire_lease

    def watched(app: str, machine_id: str, ttl: int, *, nonce: str | None = None) -> Lease:
        lease = acquire(app, machine_id, ttl, nonce=nonce)
        if nonce is not None:
            refreshed.set()
        return lease

    monkeypatch.setattr(fly, "acquire_lease", watched)
    with leased(fly, "my-db", machines("m1"), clock=clock) as held:
        taken = held.leases["m1"].nonce
        assert refreshed.wait(5)
    refreshes = [c for c in fly.calls_to("acquire_lease") if c.args["nonce"] is not None]
    assert refreshes and {c.args["nonce"] for c in refreshes} == {taken}
    assert fly.leases == {}
