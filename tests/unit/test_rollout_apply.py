"""`apply` and `read_cluster` against the in-memory Fly: the order of the steps, what stops a run
before it changes anything, and that Progress keeps whatever was done however the run ends."""

from __future__ import annotations

import json

import pytest
from fake_clock import FakeClock
from fake_fly import Boot, FakeFly, plan_of

from fly_pg_external.domain import IpAddress
from fly_pg_external.errors import FlyError, FlyNotFound, FlyTransient, RunError
from fly_pg_external.outcome import build_outcome
from fly_pg_external.ownership import RECORD_KEY
from fly_pg_external.plan import Plan
from fly_pg_external.progress import Progress
from fly_pg_external.rollout import apply, read_cluster

from machines_data import machine, owning

V4 = IpAddress("ip-a", "137.66.9.1", "v4", "global", "2025-06-01T00:00:00Z")
V6 = IpAddress("ip-c", "2a09:8280:9::1", "v6", "global", "2025-06-01T00:00:00Z")


class Cancelled(BaseException):
    """Stands in for main.Cancelled, raised by the signal handler in the main thread."""


def legacy(clock: FakeClock, *ips: IpAddress) -> FakeFly:
    return FakeFly(
        clock,
        [machine("m1", "primary", legacy=True), machine("m2", legacy=True)],
        ips=ips,
    )


def run(fly: FakeFly, plan: Plan, clock: FakeClock, progress: Progress) -> None:
    apply(fly, plan, progress, wait_timeout=15.0, clock=clock)


def first(fly: FakeFly, method: str) -> int:
    return fly.names().index(method)


def last(fly: FakeFly, method: str) -> int:
    return len(fly.names()) - 1 - fly.names()[::-1].index(method)


def test_leases_then_addresses_then_restarts_then_every_lease_released(clock: FakeClock) -> None:
    fly = legacy(clock)
    plan = plan_of(fly)
    progress = Progress()
    run(fly, plan, clock, progress)
    assert last(fly, "acquire_lease") < first(fly, "allocate_ip")
    assert last(fly, "allocate_ip") < first(fly, "update_machine")
    assert last(fly, "update_machine") < first(fly, "release_lease")
    assert progress.allocated_addresses == {
        "v4": fly.ip_addresses("v4")[0],
        "v6": fly.ip_addresses("v6")[0],
    }
    assert progress.machines == {"m2": "updated", "m1": "updated"}
    assert fly.leases == {}
    assert build_outcome(plan, progress).status == "applied"


def test_an_unreachable_machine_stops_a_run_that_restarts_before_anything_changes(
    clock: FakeClock,
) -> None:
    fly = FakeFly(
        clock,
        [machine("m1", "primary", legacy=True), machine("m2", legacy=True), machine("m3")],
    )
    fly.make_unreachable("m3")
    plan = plan_of(fly)
    reads = len(fly.calls)
    progress = Progress()
    with pytest.raises(RunError) as err:
        run(fly, plan, clock, progress)
    assert str(err.value) == (
        "Machine(s) m3 (host_status unreachable) on a host Fly cannot reach count as down, and "
        "2 machine(s) need a restart: nothing was changed."
    )
    assert fly.calls[reads:] == []  # not a lease, not an allocation
    assert not progress.changed and progress.machines == {}


def test_an_unreachable_machine_does_not_stop_a_run_that_restarts_nothing(
    clock: FakeClock,
) -> None:
    fly = FakeFly(clock, [machine("m1", "primary"), machine("m2")])
    fly.make_unreachable("m2")
    plan = plan_of(fly, ip_versions="v4")
    progress = Progress()
    run(fly, plan, clock, progress)
    assert progress.allocated_addresses == {"v4": fly.ip_addresses("v4")[0]}
    # Only the record's turn, on the first machine Fly can reach; never the unreachable one.
    assert fly.targets("acquire_lease") == ["m1"] and fly.targets("release_lease") == ["m1"]
    assert "update_machine" not in fly.names()


def test_unexpose_releases_the_addresses_and_touches_no_machine(clock: FakeClock) -> None:
    # The addresses are the action's own (its record on the machines names them), no hold left.
    own = {ip.id: ip.address for ip in (V4, V6)}
    fly = FakeFly(
        clock,
        [
            owning(machine("m1", "primary", legacy=True), own),
            owning(machine("m2", legacy=True), own),
        ],
        ips=(V4, V6),
    )
    versions = {mid: fly.machine(mid).instance_id for mid in ("m1", "m2")}
    plan = plan_of(fly, mode="unexpose")
    progress = Progress()
    run(fly, plan, clock, progress)
    assert progress.released == {"v4": [V4.address], "v6": [V6.address]}
    assert fly.ip_addresses() == []
    assert {"update_machine", "allocate_ip"}.isdisjoint(fly.names())
    # One lease, on the first machine, makes releasing runs take turns on the record: held
    # from before the first release until the record is rewritten, then given back.
    assert fly.targets("acquire_lease") == ["m1"] and fly.targets("release_lease") == ["m1"]
    assert last(fly, "acquire_lease") < first(fly, "release_ip")
    assert last(fly, "set_metadata") < first(fly, "release_lease")
    assert fly.leases == {}
    # Only the record changes: emptied on each machine, one generation up (never deleted, so
    # no stale copy can outrank it), and each machine keeps its version.
    assert sorted(fly.targets("set_metadata")) == ["m1", "m2"]
    assert "delete_metadata" not in fly.names()
    for mid in ("m1", "m2"):
        assert json.loads(fly.metadata(mid)[RECORD_KEY]) == {
            "v": 2,
            "gen": 1,
            "ips": {},
            "holds": {},
        }
    assert {mid: fly.machine(mid).instance_id for mid in ("m1", "m2")} == versions


def test_a_failure_in_the_rollout_after_an_allocation_keeps_the_allocation_in_progress(
    clock: FakeClock,
) -> None:
    fly = legacy(clock)
    plan = plan_of(fly, ip_versions="v4")
    fly.fail("update_machine", FlyError("invalid config", status=422), target="m2")
    progress = Progress()
    with pytest.raises(RunError, match="The update of machine m2 was not carried out"):
        run(fly, plan, clock, progress)
    address = fly.ip_addresses("v4")[0]
    assert progress.allocated_addresses == {"v4": address}
    outcome = build_outcome(plan, progress, "stopped")
    assert outcome.addresses("v4") == [address]  # the outputs name what Fly holds
    assert fly.leases == {}


def test_a_cancelled_run_keeps_its_allocation_in_progress_and_releases_its_leases(
    clock: FakeClock,
) -> None:
    fly = legacy(clock)
    plan = plan_of(fly, ip_versions="v4")
    fly.fail("wait_machine", Cancelled("SIGTERM"))  # while the first machine restarts
    progress = Progress()
    with pytest.raises(Cancelled):
        run(fly, plan, clock, progress)
    assert progress.allocated_addresses == {"v4": fly.ip_addresses("v4")[0]}
    assert sorted(fly.targets("release_lease")) == ["m1", "m2"]
    assert fly.leases == {}


def test_someone_elses_lease_stops_the_run_before_any_allocation(clock: FakeClock) -> None:
    fly = legacy(clock)
    plan = plan_of(fly)
    fly.hold_lease("m1", seconds=600)
    progress = Progress()
    with pytest.raises(RunError, match="leased by someone else"):
        run(fly, plan, clock, progress)
    assert "allocate_ip" not in fly.names()
    assert "update_machine" not in fly.names()
    assert not progress.changed and progress.machines == {}
    assert list(fly.leases) == ["m1"]  # theirs; ours (m2) given back


def test_a_failed_allocation_stops_the_run_before_any_restart(clock: FakeClock) -> None:
    fly = legacy(clock)
    plan = plan_of(fly, ip_versions="v4")
    fly.fail("allocate_ip", FlyError("IP quota exceeded", status=422))
    progress = Progress()
    with pytest.raises(FlyError, match="IP quota exceeded"):
        run(fly, plan, clock, progress)
    assert "update_machine" not in fly.names()
    assert fly.leases == {}
    assert not progress.changed and progress.machines == {}


def test_a_late_duplicate_allocation_is_swept_after_the_rollout(clock: FakeClock) -> None:
    fly = legacy(clock)
    plan = plan_of(fly, ip_versions="v4")
    # Refused with a 503, resent; the first request lands after all, 3 s later.
    fly.fail("allocate_ip", FlyTransient("bad gateway", status=503), lands=3.0)
    progress = Progress()
    run(fly, plan, clock, progress)
    assert fly.ip_addresses("v4") == [progress.allocated_addresses["v4"]]
    assert len(fly.targets("release_ip")) == 1
    assert last(fly, "update_machine") < first(fly, "release_ip")


def test_a_late_duplicate_allocation_is_swept_when_the_rollout_fails(clock: FakeClock) -> None:
    fly = legacy(clock)
    plan = plan_of(fly, ip_versions="v4")
    fly.fail("allocate_ip", FlyTransient("bad gateway", status=503), lands=3.0)
    fly.boot("m2", Boot(start_after=5.0, fails=True), Boot())
    progress = Progress()
    with pytest.raises(RunError, match="did not become healthy"):
        run(fly, plan, clock, progress)
    assert fly.ip_addresses("v4") == [progress.allocated_addresses["v4"]]
    assert progress.machines == {"m2": "rolled-back"}


def test_read_cluster_reads_the_app_and_its_active_machines(clock: FakeClock) -> None:
    gone = machine("m9", legacy=True, state="destroyed")
    fly = FakeFly(clock, [machine("m2"), machine("m1", "primary"), gone], ips=(V4,))
    cluster = read_cluster(fly, "my-db")
    assert [m.id for m in cluster.machines] == ["m1", "m2"]
    assert cluster.app.ips == (V4,)
    assert sorted(fly.names()) == ["get_app", "list_machines"]


def test_read_cluster_of_an_unknown_app_says_which(clock: FakeClock) -> None:
    fly = FakeFly(clock, [machine("m1")])
    with pytest.raises(RunError, match='Fly app "other" was not found, or the token cannot see'):
        read_cluster(fly, "other")
    fly.fail("get_app", FlyNotFound("Could not find App"))
    with pytest.raises(RunError, match='"my-db" was not found') as err:
        read_cluster(fly, "my-db")
    # A Managed Postgres cluster is not an app: its name is never found. Say what to do.
    assert "Managed Postgres" in err.value.explained and "fly mpg proxy" in err.value.explained


def test_read_cluster_refuses_an_app_that_is_not_fly_postgres(clock: FakeClock) -> None:
    fly = FakeFly(clock, [machine("m1")], role=None)
    with pytest.raises(RunError, match="is not a Fly Postgres app \\(its role is none") as err:
        read_cluster(fly, "my-db")
    assert "fly mpg proxy" in err.value.explained
