"""Rollout rules that depend on how the real Fly answers, proven without a server.

Each test sets the in-memory Fly up the way Fly's sources say it behaves (empty checks on a
fresh start, 408 on a write that landed, a stale `current_version` answered with an unknown
status, lease refreshes that fail once or come back with another nonce) and runs one rollout
function against it on a fake clock.
"""

from __future__ import annotations

import itertools
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_clock import FakeClock
from fake_fly import Boot, FakeFly

from fly_pg_external.domain import AppInfo, ClusterState, Machine, UpdateRequest
from fly_pg_external.errors import FlyError, FlyTimeout, FlyTransient, RunError
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.fly.ratelimit import DEFAULT, GET_MACHINE, Limit, Limiter
from fly_pg_external.rollout.leases import LeaseSet, lease_expiry
from fly_pg_external.rollout.machine import HealthWait, down, update_machine, wait_healthy

from machines_data import machine as machine_json


def with_state(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**data, **changes}


def started(fly: FakeFly, clock: FakeClock, boot: Boot, *, skip_launch: bool = False) -> str:
    """Update m1 (no lease needed: nobody holds one) and return its new version."""
    current = fly.machine("m1")
    request = UpdateRequest(current.config, current.region, skip_launch, current.instance_id)
    fly.boot("m1", boot)
    return update_machine(fly, "my-db", "m1", request, nonce="", clock=clock).instance_id


# -- 1. empty checks ---------------------------------------------------------------------------


def test_a_started_machine_with_no_check_results_yet_is_not_healthy() -> None:
    fresh = machine_from_api(with_state(machine_json("m1"), checks=[]))
    assert fresh.state == "started"
    assert not fresh.healthy  # all([]) would say yes: flyctl #4952
    assert "pg (not yet run)" in fresh.pending_checks
    assert down(fresh) is not None


def test_a_machine_is_healthy_only_when_every_configured_check_passes() -> None:
    data = machine_json("m1")
    partial = with_state(data, checks=[c for c in data["checks"] if c["name"] != "vm"])
    assert not machine_from_api(partial).healthy
    assert machine_from_api(data).healthy


def test_service_checks_count_even_without_a_name_in_the_config() -> None:
    data = machine_json("m1")
    data["config"]["services"] = [
        {"protocol": "tcp", "internal_port": 5432, "checks": [{"type": "tcp", "interval": "15s"}]}
    ]
    assert not machine_from_api(data).healthy  # the service check has not run yet
    service_check = {"name": "servicecheck-00-tcp-5432", "status": "passing", "output": ""}
    ran = with_state(data, checks=[*data["checks"], service_check])
    assert machine_from_api(ran).healthy


def test_wait_healthy_keeps_polling_while_checks_are_empty(clock: FakeClock) -> None:
    fly = FakeFly(clock, [machine_json("m1")])
    version = started(fly, clock, Boot(start_after=1.0, checks_after=3.0))
    how = HealthWait(version=version, want_started=True, deadline=60.0)
    result = wait_healthy(fly, "my-db", "m1", how, clock=clock)
    assert result.machine.healthy
    assert fly.names().count("get_machine") > 3  # empty checks were read, and read again
    assert clock.now() >= 4.0


def test_wait_healthy_counts_service_checks_that_run_after_the_named_ones(
    clock: FakeClock,
) -> None:
    data = machine_json("m1")
    data["config"]["services"][0]["checks"] = [{"type": "tcp", "interval": "15s"}]
    fly = FakeFly(clock, [data])
    version = started(fly, clock, Boot())
    settled = wait_healthy(
        fly, "my-db", "m1", HealthWait(version, True, deadline=60.0), clock=clock
    )
    assert "servicecheck-00-tcp-5432" in {c["name"] for c in settled.machine.checks}


def test_health_polls_read_the_one_machine_not_the_list(clock: FakeClock) -> None:
    fly = FakeFly(clock, [machine_json("m1")])
    version = started(fly, clock, Boot(start_after=1.0, checks_after=30.0))
    how = HealthWait(version=version, want_started=True, deadline=600.0)
    wait_healthy(fly, "my-db", "m1", how, clock=clock)
    assert set(fly.names()) == {"get_machine", "update_machine", "wait_machine"}


@pytest.mark.parametrize(
    ("limit", "fly_rate", "fly_burst"), [(DEFAULT, 1.0, 3), (GET_MACHINE, 5.0, 10)]
)
def test_the_client_never_sends_faster_than_flys_published_limits(
    limit: Limit, fly_rate: float, fly_burst: int
) -> None:
    # Requests as fast as the caller can make them, with up to 0.2 s of jitter on the way
    # (a request may arrive late, the next one on time): Fly's own bucket never runs dry.
    clock = FakeClock(start=0.0)
    limiter = Limiter(clock)
    jitter = itertools.cycle([0.2, 0.0, 0.1, 0.0])
    arrivals = []
    for _ in range(200):
        limiter.take("get", "m1", limit)
        arrivals.append(clock.now() + next(jitter))
    tokens, then = float(fly_burst), 0.0
    for at in sorted(arrivals):
        tokens = min(float(fly_burst), tokens + (at - then) * fly_rate) - 1
        then = at
        assert tokens >= 0, f"Fly would answer 429 at {at:.2f} s"


# -- 2. created after a skip_launch update -----------------------------------------------------


def test_a_skip_launch_update_that_stays_created_is_done(clock: FakeClock) -> None:
    fly = FakeFly(clock, [machine_json("m1", state="stopped")])
    version = started(fly, clock, Boot(start_after=0.5), skip_launch=True)
    how = HealthWait(version=version, want_started=False, deadline=300.0)
    result = wait_healthy(fly, "my-db", "m1", how, clock=clock)
    assert result.machine.state == "created"
    assert result.machine.checks == ()
    (wait_call,) = fly.calls_to("wait_machine")
    assert wait_call.args["states"] == ("settled",)
    assert clock.now() < 1


def test_resting_machines_do_not_block_the_one_down_rule() -> None:
    for state in ("created", "stopped", "suspended"):
        assert down(machine_from_api(machine_json("m1", state=state))) is None


# -- 4. unreachable hosts ----------------------------------------------------------------------


def test_a_machine_on_an_unreachable_host_is_down_not_absent() -> None:
    data = machine_json("m2")
    unreachable = with_state(
        data, config=None, incomplete_config=data["config"], host_status="unreachable"
    )
    app = AppInfo("db", "db", "postgres_cluster", (), None)
    cluster = ClusterState.of(
        app, [machine_from_api(machine_json("m1", "primary")), machine_from_api(unreachable)]
    )
    assert [m.id for m in cluster.machines] == ["m1", "m2"]
    (is_down,) = cluster.unreachable
    assert is_down.image == data["config"]["image"]
    assert down(is_down) == "on a host Fly cannot reach (host_status unreachable)"
    # Even with no config at all: the host is unknown, the machine is not gone.
    bare = with_state(data, config=None, host_status="unknown")
    assert [m.id for m in ClusterState.of(app, [machine_from_api(bare)]).unreachable] == ["m2"]


# -- 3 and 6. ambiguous updates ----------------------------------------------------------------


def _update(fly: FakeFly, clock: FakeClock) -> Machine:
    current = fly.machine("m1")
    request = UpdateRequest({"image": "new"}, "iad", False, current.instance_id)
    return update_machine(fly, "my-db", "m1", request, nonce="", clock=clock)


def test_an_update_answered_408_that_landed_is_not_sent_again(clock: FakeClock) -> None:
    fly = FakeFly(clock, [machine_json("m1")])
    fly.fail("update_machine", FlyTimeout("deadline_exceeded", status=408), lands=True)
    landed = _update(fly, clock)
    assert landed.instance_id != machine_json("m1")["instance_id"]
    assert landed.instance_id == fly.machine("m1").instance_id
    assert fly.names().count("update_machine") == 1


@pytest.mark.parametrize("status", [400, 409, 412, 422])
def test_a_stale_version_answer_is_judged_by_the_instance_id_whatever_its_status(
    clock: FakeClock, status: int
) -> None:
    # The first update lands only after the watch gave up, just ahead of its resend; the resend,
    # conditional on the old version, is then refused with a status no source names.
    fly = FakeFly(clock, [machine_json("m1")])
    fly.stale_status = status
    fly.fail("update_machine", FlyTimeout("timed out"), lands="before-next")
    landed = _update(fly, clock)
    assert landed.instance_id == fly.machine("m1").instance_id
    assert landed.instance_id != machine_json("m1")["instance_id"]
    assert fly.names().count("update_machine") == 2


def test_a_refused_resend_of_an_update_that_never_landed_is_an_error(clock: FakeClock) -> None:
    fly = FakeFly(clock, [machine_json("m1")])
    fly.fail("update_machine", FlyTransient("reset"))
    fly.fail("update_machine", FlyError("bad request", status=400))
    with pytest.raises(FlyError, match="bad request"):
        _update(fly, clock)
    assert fly.machine("m1").instance_id == machine_json("m1")["instance_id"]


# -- 7. lease hygiene --------------------------------------------------------------------------


def _leases(clock: FakeClock, *, wait: float = 40.0) -> tuple[FakeFly, LeaseSet]:
    fly = FakeFly(clock, [machine_json("m1")])
    leases = LeaseSet(fly, "my-db", wait=wait, clock=clock)
    leases._take(machine_from_api(machine_json("m1")))
    return fly, leases


def test_one_failed_refresh_is_not_a_lost_lease(clock: FakeClock) -> None:
    fly, leases = _leases(clock)
    fly.fail("acquire_lease", FlyTimeout("deadline_exceeded"))
    clock.advance(10)
    leases._refresh_one("m1", leases.leases["m1"])
    nonce = leases.nonce("m1")
    clock.advance(10)
    leases._refresh_one("m1", leases.leases["m1"])
    clock.advance(25)  # 35 s after the first refresh failed, 25 s after the last success
    assert leases.nonce("m1") == nonce == fly.leases["m1"].nonce


def test_a_lease_not_refreshed_before_its_ttl_counts_as_lost(clock: FakeClock) -> None:
    fly, leases = _leases(clock)
    fly.fail("acquire_lease", FlyTransient("503", status=503), times=3)
    for _ in range(3):
        clock.advance(10)
        leases._refresh_one("m1", leases.leases["m1"])
    with pytest.raises(RunError, match="lost"):
        leases.nonce("m1")


def test_a_refresh_that_returns_another_nonce_loses_the_lease(clock: FakeClock) -> None:
    fly, leases = _leases(clock)
    fly.clear_lease("m1")  # `fly machine leases clear`: the refresh makes a new lease
    leases._refresh_one("m1", leases.leases["m1"])
    with pytest.raises(RunError, match="another nonce"):
        leases.nonce("m1")


def test_a_refresh_refused_because_someone_else_holds_the_lease_loses_it(
    clock: FakeClock,
) -> None:
    fly, leases = _leases(clock)
    fly.clear_lease("m1")
    fly.hold_lease("m1", seconds=600)
    leases._refresh_one("m1", leases.leases["m1"])
    with pytest.raises(RunError, match=r"lease currently held by deploy@example\.com"):
        leases.nonce("m1")


def test_a_lease_held_by_someone_else_is_waited_for_while_it_ends_soon(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fly = FakeFly(clock, [machine_json("m1")])
    fly.hold_lease("m1", seconds=5)
    leases = LeaseSet(fly, "my-db", wait=40.0, clock=clock)
    leases._take(machine_from_api(machine_json("m1")))
    assert leases.nonce("m1") == fly.leases["m1"].nonce
    # Asked again every 2 s (the holder may let go before the stated expiry): 3 refusals.
    assert clock.now() == 6.0
    assert clock.sleeps == [2.0, 2.0, 2.0]
    assert fly.names() == ["acquire_lease"] * 4
    assert caplog.text.count("waiting up to 40 s") == 1


def test_a_lease_held_for_longer_than_the_wait_fails_at_once(clock: FakeClock) -> None:
    fly = FakeFly(clock, [machine_json("m1")])
    fly.hold_lease("m1", seconds=600)
    leases = LeaseSet(fly, "my-db", wait=40.0, clock=clock)
    with pytest.raises(RunError, match="leased by someone else"):
        leases._take(machine_from_api(machine_json("m1")))
    assert clock.now() == 0
    assert fly.names() == ["acquire_lease"]


def test_lease_expiry_is_read_from_flys_conflict_text() -> None:
    text = "machine ID 2879325b42d318 lease currently held by x@tokens.fly.io, expires at "
    assert lease_expiry(text + "2026-05-14T10:41:08Z") == 1778755268.0
    assert lease_expiry(text + "2026-05-14T10:41:08Z.") == 1778755268.0
    assert lease_expiry("lease held") is None
    assert lease_expiry(text + "soon") is None
    stamp = datetime.fromtimestamp(time.time() + 5, UTC)
    assert lease_expiry(text + f"{stamp:%Y-%m-%dT%H:%M:%SZ}") == pytest.approx(
        time.time() + 5, abs=1.5
    )
