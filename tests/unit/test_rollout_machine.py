"""One machine: its update sent once, the wait until it is healthy, and when it counts as down."""

from __future__ import annotations

from typing import Any

import pytest
from fake_clock import FakeClock
from fake_fly import Boot, FakeFly, plan_of

from fly_pg_external.domain import Machine, UpdateRequest
from fly_pg_external.errors import FlyConflict, FlyError, FlyTimeout, FlyTransient
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.rollout.machine import (
    POLL_DENSE,
    WAIT_SLICE,
    HealthWait,
    Settled,
    down,
    read_version,
    update_machine,
    wait_healthy,
)

from machines_data import machine


@pytest.fixture
def fly(clock: FakeClock) -> FakeFly:
    return FakeFly(
        clock,
        [
            machine("m1", "primary", legacy=True),
            machine("m2", legacy=True),
            machine("m3", legacy=True, state="stopped"),
        ],
    )


def request_for(fly: FakeFly, machine_id: str) -> UpdateRequest:
    return next(u for u in plan_of(fly).updates if u.machine.id == machine_id).request()


def update(fly: FakeFly, clock: FakeClock, machine_id: str = "m1", *boots: Boot) -> Machine:
    """The planned update of the machine, sent under our lease; the machine as updated."""
    fly.boot(machine_id, *boots)
    nonce = fly.acquire_lease("my-db", machine_id, 30).nonce
    return update_machine(
        fly, "my-db", machine_id, request_for(fly, machine_id), nonce=nonce, clock=clock
    )


def wait(
    fly: FakeFly, clock: FakeClock, new: Machine, *, within: float = 60.0, **options: Any
) -> Settled:
    options.setdefault("want_started", True)
    how = HealthWait(version=new.instance_id, deadline=clock.now() + within, **options)
    return wait_healthy(fly, "my-db", new.id, how, clock=clock)


# -- update_machine ----------------------------------------------------------------------------


def test_an_update_carries_our_lease_nonce_and_answers_the_new_version(
    fly: FakeFly, clock: FakeClock
) -> None:
    before = fly.machine("m1")
    request = request_for(fly, "m1")
    new = update(fly, clock)
    assert new.instance_id != before.instance_id
    (sent,) = fly.calls_to("update_machine")
    assert sent.args["nonce"] == fly.leases["m1"].nonce
    assert fly.machine("m1").config == request.config
    assert fly.machine("m1").instance_id == new.instance_id


def test_an_update_refused_for_a_wrong_nonce_is_not_carried_out(
    fly: FakeFly, clock: FakeClock
) -> None:
    fly.acquire_lease("my-db", "m1", 30)
    with pytest.raises(FlyConflict, match="leased"):
        update_machine(fly, "my-db", "m1", request_for(fly, "m1"), nonce="stale", clock=clock)
    assert fly.names().count("update_machine") == 1
    assert fly.names().count("get_machine") == 1  # judged by one read
    assert fly.machine("m1").instance_id == machine("m1")["instance_id"]


def test_an_update_reset_before_landing_is_sent_once_more_and_lands_once(
    fly: FakeFly, clock: FakeClock
) -> None:
    fly.fail("update_machine", FlyTransient("connection reset"))
    new = update(fly, clock)
    assert fly.names().count("update_machine") == 2
    assert 8.0 <= fly.calls_to("update_machine")[1].at <= 10.0  # after two request timeouts
    assert fly.machine("m1").instance_id == new.instance_id
    assert new.instance_id != machine("m1")["instance_id"]


# -- wait_healthy ------------------------------------------------------------------------------


def test_wait_healthy_returns_once_every_check_passes_and_learns_how_long_they_took(
    fly: FakeFly, clock: FakeClock
) -> None:
    new = update(fly, clock, "m1", Boot(start_after=1.0, checks_after=2.0))
    settled = wait(fly, clock, new)
    assert settled.machine.healthy and settled.machine.instance_id == new.instance_id
    assert 3.0 <= clock.now() <= 3.5
    assert settled.checks_took is not None and 1.5 <= settled.checks_took <= 2.5
    assert fly.names().count("wait_machine") == 1


def test_the_next_machine_is_read_right_when_its_checks_are_expected_to_pass(
    fly: FakeFly, clock: FakeClock
) -> None:
    new = update(fly, clock, "m2", Boot(start_after=1.0, checks_after=2.0))
    reads_before = fly.names().count("get_machine")
    wait(fly, clock, new, checks_expected=2.0)
    reads = fly.calls_to("get_machine")[reads_before:]
    assert len(reads) == 1
    assert reads[0].at == pytest.approx(3.0)  # started at 1 s, checks expected 2 s later


def test_checks_a_little_later_than_expected_are_seen_within_a_dense_poll(
    fly: FakeFly, clock: FakeClock
) -> None:
    new = update(fly, clock, "m2", Boot(start_after=1.0, checks_after=2.25))
    wait(fly, clock, new, checks_expected=2.0)
    # Read every 0.04 s around the expected moment: seen at most that long after they passed.
    assert 3.25 <= clock.now() <= 3.25 + POLL_DENSE + 1e-9


def test_on_started_runs_once_after_the_start_before_the_checks_pass(
    fly: FakeFly, clock: FakeClock
) -> None:
    new = update(fly, clock, "m1", Boot(start_after=1.0, checks_after=2.0))
    seen: list[tuple[float, str, bool]] = []

    def on_started() -> None:
        now = fly.machine("m1")
        seen.append((clock.now(), now.state, now.healthy))

    how = HealthWait(version=new.instance_id, want_started=True, deadline=60.0)
    wait_healthy(fly, "my-db", "m1", how, clock=clock, on_started=on_started)
    assert seen == [(1.0, "started", False)]


def test_a_machine_that_fails_to_start_is_an_error(fly: FakeFly, clock: FakeClock) -> None:
    new = update(fly, clock, "m1", Boot(fails=True))
    with pytest.raises(FlyError, match="machine m1 failed to start"):
        wait(fly, clock, new)


def test_checks_that_never_pass_time_out_at_the_deadline_naming_them(
    fly: FakeFly, clock: FakeClock
) -> None:
    new = update(fly, clock, "m1", Boot(healthy=False))
    with pytest.raises(FlyTimeout, match="m1 is started but its checks pg, role, vm are not"):
        wait(fly, clock, new, within=20.0)
    assert clock.now() <= 20.0
    assert max(c.at for c in fly.calls_to("get_machine")) <= 20.0


def test_a_machine_that_never_starts_times_out(fly: FakeFly, clock: FakeClock) -> None:
    new = update(fly, clock, "m1", Boot(start_after=100.0))
    with pytest.raises(FlyTimeout, match="did not reach started in time"):
        wait(fly, clock, new, within=30.0)
    assert clock.now() <= 31.0  # a wait slice is at least 1 s


def test_a_failed_wait_call_is_retried_after_a_pause(fly: FakeFly, clock: FakeClock) -> None:
    new = update(fly, clock)
    fly.fail("wait_machine", FlyTransient("bad gateway", status=503))
    assert wait(fly, clock, new).machine.healthy
    assert fly.names().count("wait_machine") == 2
    assert clock.sleeps[0] == 0.5


def test_a_skip_launch_wait_goes_in_short_slices_reading_the_machine_after_each(
    fly: FakeFly, clock: FakeClock
) -> None:
    new = update(fly, clock, "m3", Boot(start_after=25.0))  # m3 is stopped: skip_launch
    settled = wait(fly, clock, new, within=100.0, want_started=False)
    assert settled.machine.state == "created"
    waits = fly.calls_to("wait_machine")
    assert [c.args["timeout"] for c in waits] == [WAIT_SLICE] * 3
    assert all(c.args["states"] == ("settled",) for c in waits)
    kinds = [n for n in fly.names() if n in ("wait_machine", "get_machine")]
    assert kinds == ["wait_machine", "get_machine"] * 3


def test_read_version_refuses_another_version_and_a_failed_machine(fly: FakeFly) -> None:
    version = machine("m1")["instance_id"]
    assert read_version(fly, "my-db", "m1", version).id == "m1"
    with pytest.raises(FlyError, match=r"now runs version .* someone else changed it"):
        read_version(fly, "my-db", "m1", "01OURS")
    fly.machines["m1"]["state"] = "failed"
    with pytest.raises(FlyError, match="machine m1 failed to start"):
        read_version(fly, "my-db", "m1", version)


# -- down --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({}, None),
        ({"state": "replacing"}, "replacing"),
        ({"state": "failed"}, "failed"),
        ({"checks": [{"name": "pg", "status": "critical"}]}, "started with checks not passing"),
        ({"host_status": "unknown"}, "on a host Fly cannot reach (host_status unknown)"),
    ],
    ids=["healthy", "replacing", "failed", "failing-checks", "host-unknown"],
)
def test_down_says_why_a_machine_is_not_serving(changes: dict[str, Any], why: str | None) -> None:
    said = down(machine_from_api({**machine("m1"), **changes}))
    if why is None:
        assert said is None
    else:
        assert said is not None and said.startswith(why)
