"""The process stopped in the middle of a rollout: SIGTERM (a cancelled workflow) and SIGKILL.

`python entrypoint.py` runs against a legacy 3-machine cluster whose machines take a while to
restart; the signal is sent as soon as the simulator accepted the first machine update.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cluster_checks import (
    active_leases,
    assert_cluster_serving,
    has_pg_tls,
    ips,
    is_allocation,
    is_lease,
    rollout_order,
    updates,
    wait_cluster_healthy,
)
from reliability_runs import Background, checked

from flysim import Simulator
from flysim.requestlog import RequestRecord

from action_run import ActionResult

APP = "my-db"
GROUP = "Interrupted runs"
LEASE_TTL = 30  # rollout.LEASE_TTL


@pytest.fixture
def sim(flysim: Callable[..., Simulator]) -> Simulator:
    return flysim(
        apps={APP: {"machines": 3, "legacy": True}},
        postgres=False,
        restart_seconds=1.5,
        check_grace_seconds=0.1,
        public_port_map={5432: 0, 5433: 0},
    )


def start_and_wait_for_first_update(sim: Simulator, tmp_path: Path) -> Background:
    run = Background(sim, tmp_path, {"app": APP})
    if not sim.wait_for(lambda: bool(updates(sim, APP)), timeout=60):
        run.kill()
        pytest.fail("the run never updated a machine")
    return run


def assert_rerun_completes(sim: Simulator, result: ActionResult, order: list[str]) -> None:
    assert result.code == 0, result.log
    assert result.outputs["changed"] == "true"
    assert all(has_pg_tls(sim, APP, m) for m in order)
    assert len(ips(sim, APP, "v4")) == 1 and len(ips(sim, APP, "v6")) == 1
    # the machine the first run updated is not restarted again
    assert {m.id: m.update_count for m in sim.app(APP).machines} == dict.fromkeys(order, 1)
    assert_cluster_serving(sim, APP)


def test_sigterm_releases_leases_and_rerun_completes(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "SIGTERM mid-rollout",
        injected="SIGTERM (workflow cancelled) while the first machine restarts",
        checked="exit 1 with an ::error:: about the cancellation and the leases; every lease "
        "released; ≤ 1 machine down; a re-run (once that machine is back) completes",
    )
    order = rollout_order(sim, APP)
    run = start_and_wait_for_first_update(sim, tmp_path / "cancelled")
    sent = time.monotonic()
    run.signal(signal.SIGTERM)
    result = run.finish(timeout=30)
    exit_seconds = time.monotonic() - sent

    assert result.code == 1
    [error] = [e for e in result.errors() if "Cancelled" in e]
    assert "SIGTERM" in error and "lease" in error and "Re-run" in error
    assert active_leases(sim, APP) == {}
    released = {r.path.split("/")[-2] for r in sim.requests if is_lease(r, "DELETE")}
    assert released == set(order)
    assert [r.path.rsplit("/", 1)[1] for r in updates(sim, APP)] == order[:1]
    assert sim.max_machines_down(APP) <= 1
    # The outputs name the addresses Fly holds: the run allocated both before the signal.
    held = {"ipv4": ",".join(ips(sim, APP, "v4")), "ipv6": ",".join(ips(sim, APP, "v6"))}
    assert all(held.values())
    assert {k: result.outputs.get(k) for k in held} == held
    assert result.outputs["changed"] == "true"

    assert wait_cluster_healthy(sim, APP)
    again = checked(sim, tmp_path / "rerun", {"app": APP})
    assert_rerun_completes(sim, again, order)
    assert sim.max_machines_down(APP) <= 1
    scenario.outcome = (
        f"stopped in {exit_seconds:.1f} s, leases released; re-run updated the other "
        f"{len(order) - 1} machines"
    )
    scenario.figures["sigterm_exit_s"] = round(exit_seconds, 2)
    scenario.add("faults_injected")
    scenario.add("faults_stopped_safely")


def allocation_type(record: RequestRecord) -> str | None:
    given = (record.graphql_variables or {}).get("input")
    return given.get("type") if is_allocation(record) and isinstance(given, dict) else None


def assert_stopped_promptly(
    sim: Simulator, run: Background, released: set[str], *, bound: float = 5.0
) -> float:
    """SIGTERM now; the run must exit within `bound` s (the runner SIGKILLs 7.5-10 s after it
    cancels) saying so, with the leases in `released` given back and nothing restarted."""
    sent = time.monotonic()
    run.signal(signal.SIGTERM)
    result = run.finish(timeout=60)
    exit_seconds = time.monotonic() - sent
    assert result.code == 1, result.log
    assert any("Cancelled (SIGTERM)" in e for e in result.errors()), result.log
    assert exit_seconds < bound, f"exit took {exit_seconds:.1f} s after SIGTERM"
    assert {r.path.split("/")[-2] for r in sim.requests if is_lease(r, "DELETE")} == released
    assert active_leases(sim, APP) == {}
    assert updates(sim, APP) == []
    return exit_seconds


def test_sigterm_during_a_slow_allocation_stops_promptly(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "SIGTERM during a slow allocation",
        injected="SIGTERM while the IPv6 allocation (run alongside IPv4) is answered 15 s late",
        checked="exit 1 within 5 s, not once the allocation settles; every lease released; "
        "no machine restarted",
    )
    order = rollout_order(sim, APP)
    sim.faults.slow_next(1, seconds=15, operation="allocateIpAddress", ip_type="v6")
    run = Background(sim, tmp_path, {"app": APP})
    # The v6 request is held by the simulator (its rule taken) and v4's answer is back: the run
    # has nothing left to do but wait for v6.
    if not sim.wait_for(
        lambda: (
            not sim.faults.pending
            and any(allocation_type(r) == "v4" and r.status == 200 for r in sim.requests)
        ),
        timeout=30,
    ):
        run.kill()
        pytest.fail("the run never got to the allocations")
    exit_seconds = assert_stopped_promptly(sim, run, set(order))
    scenario.outcome = f"stopped in {exit_seconds:.1f} s with the allocation still pending"
    scenario.figures["sigterm_slow_allocation_exit_s"] = round(exit_seconds, 2)
    scenario.add("faults_injected")
    scenario.add("faults_stopped_safely")


def test_sigterm_during_a_slow_lease_acquire_stops_promptly(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "SIGTERM during a slow lease acquire",
        injected="SIGTERM while one of the concurrent lease requests is answered 15 s late",
        checked="exit 1 within 5 s; the leases held released (the unanswered one can only "
        "expire by its TTL); no machine restarted",
    )
    order = rollout_order(sim, APP)
    slow = order[1]
    sim.faults.slow_next(1, seconds=15, method="POST", path_contains=f"/machines/{slow}/lease")
    run = Background(sim, tmp_path, {"app": APP})
    held = {m for m in order if m != slow}
    granted = {f"/machines/{m}/lease" for m in held}
    if not sim.wait_for(
        lambda: (
            not sim.faults.pending
            and granted
            <= {
                "/machines/" + r.path.split("/machines/")[1]
                for r in sim.requests
                if r.status == 201
            }
        ),
        timeout=30,
    ):
        run.kill()
        pytest.fail("the run never got to the leases")
    exit_seconds = assert_stopped_promptly(sim, run, held)
    scenario.outcome = f"stopped in {exit_seconds:.1f} s with a lease request still pending"
    scenario.figures["sigterm_slow_lease_exit_s"] = round(exit_seconds, 2)
    scenario.add("faults_injected")
    scenario.add("faults_stopped_safely")


@pytest.mark.finding(4)
def test_rerun_right_after_cancel_never_has_two_machines_down(
    flysim: Callable[..., Simulator], tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "re-run right after SIGTERM",
        injected="SIGTERM mid-rollout, then an immediate re-run while the interrupted machine "
        "is still restarting",
        checked="the re-run completes and never has two machines down at once",
    )
    # A slow restart, so the re-run certainly starts while the interrupted machine is down.
    sim = flysim(
        apps={APP: {"machines": 3, "legacy": True}},
        postgres=False,
        restart_seconds=2.5,
        check_grace_seconds=0.1,
        public_port_map={5432: 0, 5433: 0},
    )
    order = rollout_order(sim, APP)
    run = start_and_wait_for_first_update(sim, tmp_path / "cancelled")
    run.signal(signal.SIGTERM)
    assert run.finish(timeout=30).code == 1
    interrupted = sim.app(APP).machine(order[0])
    assert interrupted is not None and not interrupted.healthy  # still restarting
    again = checked(sim, tmp_path / "rerun", {"app": APP})
    down = sim.max_machines_down(APP)
    scenario.outcome = f"re-run exit {again.code}; at most {down} machine(s) down at once"
    scenario.add("faults_injected")
    assert_rerun_completes(sim, again, order)
    assert down <= 1, f"{down} machines were down at the same time"
    scenario.add("faults_stopped_safely")


@pytest.mark.slow
def test_sigkill_orphan_lease_blocks_only_until_its_ttl(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "SIGKILL mid-rollout",
        injected="SIGKILL (runner lost) while the first machine restarts",
        checked="the leases stay until their TTL; a run that may not wait for them fails with "
        "'leased by someone else' and changes nothing; a run that may (the default) waits for "
        "them to expire, then completes",
    )
    order = rollout_order(sim, APP)
    run = start_and_wait_for_first_update(sim, tmp_path / "killed")
    run.signal(signal.SIGKILL)
    killed = run.finish(timeout=10, killed=True)  # what it printed before dying is scanned too
    assert killed.code == -signal.SIGKILL
    leases = {m.id: m.active_lease() for m in sim.app(APP).machines}
    assert set(leases) == set(order) and all(lease is not None for lease in leases.values())
    now = time.time()
    expiry = max(lease.expires_at for lease in leases.values() if lease is not None)
    assert expiry - now <= LEASE_TTL + 1

    before = len(sim.requests)
    no_wait = {"FLY_PG_EXTERNAL_LEASE_WAIT": "1"}
    blocked = checked(sim, tmp_path / "blocked", {"app": APP}, no_wait)
    assert blocked.code == 1
    assert any("leased by someone else" in e for e in blocked.errors()), blocked.log
    meanwhile = sim.requests[before:]
    assert not [r for r in meanwhile if r.is_mutating and r.status not in (409, None)], [
        (r.method, r.path, r.status) for r in meanwhile if r.is_mutating
    ]
    assert not [r for r in meanwhile if is_allocation(r)]
    assert blocked.outputs.get("changed", "false") == "false"

    # The default run waits for the orphaned leases (they end within the 30 s TTL) and goes on.
    again = checked(sim, tmp_path / "rerun", {"app": APP})
    blocked_for = time.time() - now
    assert "waiting up to" in again.log
    assert blocked_for >= expiry - now - 2
    assert_rerun_completes(sim, again, order)
    scenario.outcome = (
        f"a run without waiting stopped with a clear error; the default run waited "
        f"{blocked_for:.0f} s for the orphaned leases (TTL {LEASE_TTL} s), then completed"
    )
    scenario.figures["orphan_lease_block_s"] = round(blocked_for, 1)
    scenario.add("faults_injected")
    scenario.add("faults_stopped_safely")
