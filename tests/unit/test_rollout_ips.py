"""Allocating and releasing public IPs against the in-memory Fly: never a duplicate kept, every
address the run holds recorded in its Progress."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from fake_clock import FakeClock
from fake_fly import FakeFly, plan_of

from fly_pg_external.domain import IpAddress
from fly_pg_external.errors import FlyError, FlyNotFound, FlyTimeout, FlyTransient, RunError
from fly_pg_external.progress import Progress
from fly_pg_external.rollout import ips
from fly_pg_external.rollout.ips import (
    allocate_families,
    allocate_family,
    release_ips,
    sweep_duplicates,
)

from machines_data import machine, owning

V4A = IpAddress("ip-a", "137.66.9.1", "v4", "global", "2025-06-01T00:00:00Z")
V4B = IpAddress("ip-b", "137.66.9.2", "v4", "global", "2025-06-02T00:00:00Z")
V6 = IpAddress("ip-c", "2a09:8280:9::1", "v6", "global", "2025-06-01T00:00:00Z")


@pytest.fixture
def sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    """The families one after the other, so that fake time is not shared between threads (what
    `concurrently` itself guarantees is proven in test_rollout_concurrency)."""

    def one_by_one(
        fn: Callable[[Any], Any], items: Sequence[Any], **_: object
    ) -> list[Any | Exception]:
        results: list[Any | Exception] = []
        for item in items:
            try:
                results.append(fn(item))
            except Exception as exc:
                results.append(exc)
        return results

    monkeypatch.setattr(ips, "concurrently", one_by_one)


def fly_with(clock: FakeClock, *addresses: IpAddress) -> FakeFly:
    return FakeFly(clock, [machine("m1", "primary")], ips=addresses)


def fly_owning(clock: FakeClock, *addresses: IpAddress) -> FakeFly:
    """The addresses are the action's own: its record on the machine names them, no hold."""
    own = {ip.id: ip.address for ip in addresses}
    return FakeFly(clock, [owning(machine("m1", "primary"), own)], ips=addresses)


def test_each_missing_family_is_allocated_once_and_recorded(clock: FakeClock) -> None:
    fly = fly_with(clock)
    plan = plan_of(fly)
    progress = Progress()
    assert allocate_families(fly, plan, progress, clock=clock) is False
    assert sorted(fly.targets("allocate_ip")) == ["v4", "v6"]
    assert progress.allocated_addresses == {
        "v4": fly.ip_addresses("v4")[0],
        "v6": fly.ip_addresses("v6")[0],
    }
    assert "release_ip" not in fly.names()


def test_an_existing_family_is_not_allocated_again(clock: FakeClock) -> None:
    fly = fly_with(clock, V4A)
    progress = Progress()
    allocate_families(fly, plan_of(fly), progress, clock=clock)
    assert fly.targets("allocate_ip") == ["v6"]
    assert list(progress.allocated) == ["v6"]


@pytest.mark.parametrize("theirs_older_by", [0, 1], ids=["same-second", "a-second-older"])
def test_an_allocation_race_keeps_the_oldest_and_releases_our_duplicate(
    clock: FakeClock, theirs_older_by: int
) -> None:
    fly = fly_with(clock)
    plan = plan_of(fly, ip_versions="v4")
    theirs = fly.add_ip("v4")  # another run allocated after our plan was read
    clock.advance(theirs_older_by)
    progress = Progress()
    allocate_family(fly, plan, "v4", progress, clock=clock)
    (ours,) = [a for a in fly.targets("release_ip")]
    assert ours != theirs.address
    assert progress.allocated_addresses == {"v4": theirs.address}
    assert fly.ip_addresses("v4") == [theirs.address]


def test_an_allocation_whose_answer_was_lost_is_not_sent_again(clock: FakeClock) -> None:
    fly = fly_with(clock)
    fly.fail("allocate_ip", FlyTimeout("deadline_exceeded", status=408), lands=True)
    progress = Progress()
    ambiguous = allocate_family(fly, plan_of(fly, ip_versions="v4"), "v4", progress, clock=clock)
    assert ambiguous is True  # the caller sweeps for a late duplicate
    assert fly.targets("allocate_ip") == ["v4"]
    assert progress.allocated_addresses == {"v4": fly.ip_addresses("v4")[0]}
    assert len(fly.ip_addresses("v4")) == 1


def test_an_allocation_refused_with_503_is_sent_once_more_after_a_short_look(
    clock: FakeClock,
) -> None:
    fly = fly_with(clock)
    fly.fail("allocate_ip", FlyTransient("bad gateway", status=503))
    progress = Progress()
    allocate_family(fly, plan_of(fly, ip_versions="v4"), "v4", progress, clock=clock)
    assert fly.targets("allocate_ip") == ["v4", "v4"]
    assert sum(clock.sleeps) <= 1.0
    assert progress.allocated_addresses == {"v4": fly.ip_addresses("v4")[0]}
    assert len(fly.ip_addresses("v4")) == 1


def test_a_late_duplicate_is_swept_and_the_kept_address_stays(clock: FakeClock) -> None:
    fly = fly_with(clock, V6)
    plan = plan_of(fly)  # v4 to allocate, v6 exists
    # The first request lands only after the watch (two request timeouts) gave up.
    fly.fail("allocate_ip", FlyTimeout("timed out", status=408), lands=15.0)
    progress = Progress()
    assert allocate_families(fly, plan, progress, clock=clock) is True
    kept = progress.allocated_addresses["v4"]
    assert fly.ip_addresses("v4") == [kept]
    clock.advance(10)
    late = [a for a in fly.ip_addresses("v4") if a != kept]
    assert len(late) == 1
    someone_elses = fly.add_ip("v6")  # not a family this run allocated: not ours to release
    sweep_duplicates(fly, plan, progress)
    assert fly.targets("release_ip") == late
    assert fly.ip_addresses("v4") == [kept]
    assert fly.ip_addresses("v6") == [V6.address, someone_elses.address]
    assert progress.allocated_addresses == {"v4": kept}


def test_when_one_family_fails_the_other_is_recorded_and_the_error_raised(
    clock: FakeClock,
) -> None:
    fly = fly_with(clock)
    fly.fail("allocate_ip", FlyError("IP quota exceeded", status=422), target="v6")
    progress = Progress()
    with pytest.raises(FlyError, match="IP quota exceeded"):
        allocate_families(fly, plan_of(fly), progress, clock=clock)
    assert progress.allocated_addresses == {"v4": fly.ip_addresses("v4")[0]}
    assert fly.ip_addresses("v6") == []


@pytest.mark.usefixtures("sequential")
def test_when_one_family_fails_a_late_duplicate_of_the_other_is_swept_before_raising(
    clock: FakeClock,
) -> None:
    fly = fly_with(clock)
    # v4: the first request fails with a 503 but lands 3 s later, after its resend succeeded.
    fly.fail("allocate_ip", FlyTransient("bad gateway", status=503), target="v4", lands=3.0)
    # v6: times out, is watched for 10 s, and its resend is refused.
    fly.fail("allocate_ip", FlyTimeout("timed out", status=408), target="v6")
    fly.fail("allocate_ip", FlyError("IP quota exceeded", status=422), target="v6")
    progress = Progress()
    with pytest.raises(FlyError, match="IP quota exceeded"):
        allocate_families(fly, plan_of(fly), progress, clock=clock)
    kept = progress.allocated_addresses["v4"]
    assert list(progress.allocated) == ["v4"]
    assert len(fly.targets("release_ip")) == 1  # the late v4, released before the raise
    assert fly.ip_addresses("v4") == [kept]


def test_a_failed_release_does_not_stop_the_others_and_is_raised_at_the_end(
    clock: FakeClock,
) -> None:
    # Two IPv4 (one made by hand, say): `addresses: all` releases every public address.
    fly = fly_with(clock, V4A, V4B, V6)
    plan = plan_of(fly, mode="unexpose", addresses="all")
    assert [ip.address for ip in plan.release] == [V4A.address, V4B.address, V6.address]
    fly.fail("release_ip", FlyError("address in use", status=422), target=V4B.address)
    progress = Progress()
    with pytest.raises(RunError, match=r"Releasing v4 address 137\.66\.9\.2 failed: address in"):
        release_ips(fly, plan, progress, clock=clock)
    # No later run may come to release the others: they are released all the same, and
    # recorded; the one that failed is not.
    assert progress.released == {"v4": [V4A.address], "v6": [V6.address]}
    assert fly.targets("release_ip") == [V4A.address, V4B.address, V6.address]
    assert fly.ip_addresses() == [V4B.address]


def test_a_release_whose_answer_was_lost_is_recorded_and_not_sent_again(clock: FakeClock) -> None:
    fly = fly_owning(clock, V4A)
    plan = plan_of(fly, mode="unexpose", ip_versions="v4")
    assert plan.release == (V4A,)
    fly.fail("release_ip", FlyTransient("connection reset"), lands=True)
    progress = Progress()
    release_ips(fly, plan, progress, clock=clock)
    assert fly.targets("release_ip") == [V4A.address]
    assert progress.released == {"v4": [V4A.address]}


def test_an_address_released_meanwhile_by_someone_else_counts_as_released(
    clock: FakeClock,
) -> None:
    fly = fly_owning(clock, V4A, V6)
    plan = plan_of(fly, mode="unexpose")
    assert plan.release == (V4A, V6)
    fly.ips.remove(V4A)  # another run released it after our plan was read
    progress = Progress()
    release_ips(fly, plan, progress, clock=clock)
    assert progress.released == {"v4": [V4A.address], "v6": [V6.address]}
    assert fly.ip_addresses() == []


def test_a_release_whose_target_cannot_be_read_fails_as_unknown(clock: FakeClock) -> None:
    fly = fly_owning(clock, V4A)
    plan = plan_of(fly, mode="unexpose", ip_versions="v4")
    assert plan.release == (V4A,)
    fly.fail("release_ip", FlyError("internal error", status=400))
    fly.fail("get_app", FlyNotFound("Could not find App"))
    progress = Progress()
    with pytest.raises(RunError, match="cannot be told"):
        release_ips(fly, plan, progress, clock=clock)
    assert progress.released == {}
