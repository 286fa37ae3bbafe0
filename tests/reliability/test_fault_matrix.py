"""Fault matrix: API failures injected into a rolling update of a 3-machine legacy cluster.

Every run is `python entrypoint.py` against the simulator. A fault the client can absorb must
leave the run successful with every machine updated exactly once, replicas first and the primary
last, never two machines down and one IP of each family. A fault it cannot absorb must stop the
run with a clear error, leases released and the cluster serving, and a re-run must then finish
the job.

The runs use FLY_PG_EXTERNAL_HTTP_TIMEOUT=2: after an ambiguous failure of a change (a 5xx, a
reset, a timeout) the action watches for twice the HTTP timeout (at most 30 s) before resending,
which with the default 30 s timeout would make the suite slow without changing what it shows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster_checks import (
    active_leases,
    assert_cluster_serving,
    faults_fired,
    has_pg_tls,
    ips,
    is_allocation,
    is_lease,
    is_update,
    machine_id_of,
    rollout_order,
    update_path,
    updates,
    wait_cluster_healthy,
    when,
)
from reliability_runs import checked

from fly_pg_external.rollout import leases
from flysim import Simulator

from action_run import TOKEN, ActionResult

APP = "my-db"
GROUP = "Fault matrix"
FAST = {"FLY_PG_EXTERNAL_HTTP_TIMEOUT": "2"}


@pytest.fixture
def sim(flysim: Callable[..., Simulator]) -> Simulator:
    """A legacy cluster (no pg_tls service, no public IP): exposing it is a full rollout."""
    return flysim(
        apps={APP: {"machines": 3, "legacy": True}},
        postgres=False,
        restart_seconds=0.1,
        check_grace_seconds=0.1,
        public_port_map={5432: 0, 5433: 0},
    )


def assert_completed(sim: Simulator, result: ActionResult) -> None:
    """The job is done and was done safely."""
    assert result.code == 0, result.log
    assert result.outputs["changed"] == "true"
    app = sim.app(APP)
    for m in app.machines:
        assert has_pg_tls(sim, APP, m.id), f"machine {m.id} has no pg_tls service"
    assert len(ips(sim, APP, "v4")) == 1 and len(ips(sim, APP, "v6")) == 1, app.ips
    assert result.outputs["ipv4"] == ips(sim, APP, "v4")[0]
    assert sim.max_machines_down(APP) <= 1
    assert_cluster_serving(sim, APP)


def assert_rolled_out_once(sim: Simulator, order: list[str]) -> None:
    done = [r.path.rsplit("/", 1)[1] for r in updates(sim, APP)]
    assert done == order, f"updates {done}, expected each machine once in order {order}"
    restarts = {m.id: m.update_count for m in sim.app(APP).machines}
    assert restarts == dict.fromkeys(order, 1), f"restarts per machine: {restarts}"


# -- faults the run must survive --------------------------------------------------------------


@dataclass(frozen=True)
class Survivable:
    id: str
    injected: str
    arm: Callable[[Simulator, list[str]], Any]
    # The fault is armed as soon as the first machine update went through (a fault meant for an
    # update must not be taken by the lease request on the same machine path).
    after_first_update: bool = False


def _second_update(fault: str, **kw: Any) -> Callable[[Simulator, list[str]], Any]:
    def arm(sim: Simulator, order: list[str]) -> None:
        getattr(sim.faults, fault)(1, method="POST", path=update_path(APP, order[1]), **kw)

    return arm


SURVIVABLE = [
    Survivable(
        "429-reads",
        "2 × 429 with Retry-After: 1 on Machines API reads",
        lambda s, _: s.faults.rate_limit_next(2, retry_after=1, method="GET"),
    ),
    Survivable(
        "429-allocation",
        "2 × 429 with Retry-After: 1 on the IP allocation mutation",
        lambda s, _: s.faults.rate_limit_next(2, retry_after=1, operation="allocateIpAddress"),
    ),
    Survivable(
        "502-graphql",
        "3 × 502 on the GraphQL app query",
        lambda s, _: s.faults.fail_next(3, status=502, operation="app"),
    ),
    Survivable(
        "503-machine-reads",
        "3 × 503 on Machines API reads",
        lambda s, _: s.faults.fail_next(3, status=503, method="GET", path_contains="/machines"),
    ),
    Survivable(
        "504-wait",
        "3 × 504 on the wait endpoint",
        lambda s, _: s.faults.fail_next(3, status=504, path_contains="/wait"),
    ),
    Survivable(
        "reset-reads",
        "3 × connection reset (no response) on GET requests",
        lambda s, _: s.faults.reset_next(3, method="GET"),
    ),
    Survivable(
        "408-wait",
        "3 × 408 deadline_exceeded from the wait endpoint",
        lambda s, _: s.faults.wait_timeout_next(3),
    ),
    Survivable(
        "503-allocation",
        "503 on the IPv4 allocation mutation (not carried out)",
        lambda s, _: s.faults.fail_next(1, status=503, operation="allocateIpAddress", ip_type="v4"),
    ),
    Survivable(
        "lost-allocation",
        "IPv4 allocation carried out, then the connection reset (response lost)",
        lambda s, _: s.faults.lose_allocation_response(1, ip_type="v4"),
    ),
    Survivable(
        "503-lease",
        "503 on the first lease request (sent once more)",
        lambda s, o: s.faults.fail_next(
            1, status=503, method="POST", path_contains=f"/machines/{o[0]}/lease"
        ),
    ),
    Survivable(
        "503-update",
        "503 on a machine update (not carried out)",
        _second_update("fail_next", status=503),
        after_first_update=True,
    ),
    Survivable(
        "reset-update",
        "connection reset before a machine update is carried out",
        _second_update("reset_next"),
        after_first_update=True,
    ),
    Survivable(
        "reset-update-after-commit",
        "machine update carried out, then the connection reset (response lost)",
        _second_update("reset_next", after_commit=True),
        after_first_update=True,
    ),
    Survivable(
        "malformed-update-answer",
        "machine update carried out, then answered 200 with its config a list",
        _second_update("malformed_next", at="config", value=[]),
        after_first_update=True,
    ),
    Survivable(
        "malformed-allocation-answer",
        "IPv4 allocation carried out, then answered 200 with its address null",
        lambda s, _: s.faults.malformed_next(
            1, at="data.allocateIpAddress.ipAddress", value=None, operation="allocateIpAddress"
        ),
    ),
    Survivable(
        "latency",
        "100 ms added to every API request",
        lambda s, _: setattr(s.faults, "latency", 0.1),
    ),
]


@pytest.mark.parametrize("fault", SURVIVABLE, ids=[f.id for f in SURVIVABLE])
def test_survives(fault: Survivable, sim: Simulator, tmp_path: Path, scenario: Any) -> None:
    scenario.describe(
        GROUP,
        fault.id,
        injected=fault.injected,
        checked="exit 0; every machine updated once, replicas first, primary last; "
        "≤ 1 machine down; 1 IP per family; leases released; cluster healthy",
    )
    order = rollout_order(sim, APP)
    watcher = None
    if fault.after_first_update:
        watcher = when(sim, lambda reqs: bool(updates(sim, APP)), lambda: fault.arm(sim, order))
    else:
        fault.arm(sim, order)

    result = checked(sim, tmp_path, {"app": APP}, FAST)

    if watcher is not None:
        watcher.join(timeout=5)
    sim.faults.latency = 0
    # Latency shapes every request without marking it; the others mark what they shaped.
    fired = len(sim.requests) if fault.id == "latency" else faults_fired(sim)
    assert fired >= 1 and sim.faults.pending == [], "the fault was not (fully) injected"
    assert_completed(sim, result)
    assert_rolled_out_once(sim, order)
    if fault.id.startswith("429"):
        # Retry-After was honoured: the retry of a 429 came at least ~1 s later.
        log = sim.requests
        for i, r in enumerate(log):
            if r.status == 429 and r.ended is not None:
                # The same call again (the families' allocations go out concurrently).
                retry = next(
                    x
                    for x in log[i + 1 :]
                    if (x.method, x.path, x.graphql_fields, x.graphql_variables)
                    == (r.method, r.path, r.graphql_fields, r.graphql_variables)
                )
                assert retry.started - r.ended >= 0.9, "Retry-After: 1 was not honoured"
    if fault.id in {"lost-allocation", "503-allocation"}:
        # The failed allocation was not resent blindly: the app's IPs were read first.
        log = sim.requests
        failed = next(i for i, r in enumerate(log) if is_allocation(r) and r.fault)
        family = log[failed].graphql_variables
        after = log[failed + 1 :]
        first_read = next(i for i, r in enumerate(after) if "app" in r.graphql_fields)
        # (The other family's allocation runs concurrently and may be logged in between.)
        assert not any(
            is_allocation(r) and r.graphql_variables == family for r in after[:first_read]
        ), "resent without a look"
    scenario.outcome = f"survived: exit 0, 3/3 machines updated once, {fired} fault(s) absorbed"
    scenario.add("faults_injected", fired)
    scenario.add("faults_survived", fired)


# -- slow responses past the client timeout ---------------------------------------------------
# FLY_PG_EXTERNAL_HTTP_TIMEOUT shortens the action's per-request timeout (30 s by default).

SHORT_TIMEOUT = {"FLY_PG_EXTERNAL_HTTP_TIMEOUT": "1"}


def test_slow_read_past_client_timeout_is_retried(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "slow-read",
        injected="machine list answered after 2.5 s, client timeout 1 s",
        checked="exit 0; the read retried; every machine updated once; ≤ 1 down",
    )
    order = rollout_order(sim, APP)
    sim.faults.slow_next(1, seconds=2.5, method="GET", path_contains="/machines")
    result = checked(sim, tmp_path, {"app": APP}, SHORT_TIMEOUT)
    assert_completed(sim, result)
    assert_rolled_out_once(sim, order)
    scenario.outcome = "survived: the timed-out read was retried"
    scenario.add("faults_injected")
    scenario.add("faults_survived")


@pytest.mark.finding(2)
def test_slow_allocation_past_client_timeout_leaves_one_ip(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "slow-allocation",
        injected="IPv4 allocation carried out 2 s late, client timeout 1 s",
        checked="exit 0; exactly one IPv4 on the app once the late request landed",
    )
    sim.faults.slow_next(1, seconds=2.0, operation="allocateIpAddress")
    result = checked(sim, tmp_path, {"app": APP}, SHORT_TIMEOUT)
    # The late request lands 2 s after it was sent: wait for it before counting addresses.
    assert sim.wait_for(
        lambda: any(is_allocation(r) and r.fault == "slow" for r in sim.requests), timeout=10
    )
    scenario.outcome = f"{len(ips(sim, APP, 'v4'))} IPv4 address(es) on the app after the run"
    scenario.add("faults_injected")
    assert result.code == 0, result.log
    assert ips(sim, APP, "v4") == [result.outputs["ipv4"]], "a second, billed IPv4 was left"
    scenario.add("faults_survived")


@pytest.mark.finding(3)
def test_slow_update_past_client_timeout_restarts_machine_once(
    flysim: Callable[..., Simulator], tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "slow-update",
        injected="first machine update carried out 2.5 s late, client timeout 1 s",
        checked="exit 0; every machine updated once; never two machines down",
    )
    sim = flysim(
        apps={APP: {"machines": 3, "legacy": True}},
        postgres=False,
        restart_seconds=0.5,
        check_grace_seconds=0.5,
        public_port_map={5432: 0, 5433: 0},
    )
    order = rollout_order(sim, APP)
    # Only the update's exact path: not the machine's lease, nor its metadata (the ownership
    # record is written to every machine before the first update).
    sim.faults.slow_next(1, seconds=2.5, method="POST", path=update_path(APP, order[0]))
    result = checked(sim, tmp_path, {"app": APP}, SHORT_TIMEOUT)
    assert sim.wait_for(
        lambda: any(
            is_update(r) and r.fault == "slow" and machine_id_of(r) == order[0]
            for r in sim.requests
        ),
        timeout=10,
    ), "the slow fault did not hit the first update"
    assert wait_cluster_healthy(sim, APP)
    restarts = {m.id: m.update_count for m in sim.app(APP).machines}
    down = sim.max_machines_down(APP)
    scenario.outcome = f"restarts per machine {sorted(restarts.values())}, max down {down}"
    scenario.add("faults_injected")
    assert result.code == 0, result.log
    assert restarts == dict.fromkeys(order, 1), f"restarts per machine: {restarts}"
    assert down <= 1
    scenario.add("faults_survived")


# -- platform faults --------------------------------------------------------------------------


def test_machine_never_healthy_is_rolled_back(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "never-healthy",
        injected="the second machine starts but its checks never pass after the update",
        checked="exit 1 with a clear error; that machine's previous config restored; the "
        "primary untouched; leases released; cluster serving; a re-run completes",
    )
    order = rollout_order(sim, APP)
    broken = order[1]
    before = {m.id: m.config for m in sim.app(APP).machines}
    sim.faults.never_healthy(broken)
    # The previous config is a good one: once the rollback is sent, the machine can pass again.
    rolled = when(
        sim,
        lambda _: sim.app(APP).machine(broken).update_count >= 2,  # type: ignore[union-attr]
        lambda: sim.faults.healthy_again(broken),
    )
    result = checked(sim, tmp_path, {"app": APP, "wait-timeout": "3"}, FAST)
    rolled.join(timeout=5)

    assert result.code == 1
    assert any("did not become healthy" in e for e in result.errors()), result.log
    after = {m.id: m.config for m in sim.app(APP).machines}
    assert after[broken] == before[broken]
    assert after[order[2]] == before[order[2]]
    assert has_pg_tls(sim, APP, order[0])
    assert result.outputs["database-url"] == ""
    assert sim.max_machines_down(APP) <= 1
    assert wait_cluster_healthy(sim, APP)
    assert_cluster_serving(sim, APP)

    again = checked(sim, tmp_path / "rerun", {"app": APP}, FAST)
    assert_completed(sim, again)
    scenario.outcome = "stopped safely: rolled back, cluster serving; re-run completed"
    scenario.add("faults_injected")
    scenario.add("faults_stopped_safely")


def test_machine_that_fails_to_start_is_seen_within_a_wait_slice_and_rolled_back(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    """The action waits only for `started` (a state the spec documents), one slice at a time,
    and reads the machine after each slice: a machine that ends `failed` is seen long before
    the wait's own deadline, and rolled back."""
    scenario.describe(
        GROUP,
        "fails-to-start",
        injected="the second machine's update ends in `failed` (its new version exits at start)",
        checked="exit 1 naming the failed machine, within a wait slice (not the wait-timeout); "
        "its previous config restored and started; the primary untouched; cluster serving; a "
        "re-run completes; no wait request names an undocumented state",
    )
    order = rollout_order(sim, APP)
    broken = order[1]
    before = {m.id: m.config for m in sim.app(APP).machines}
    sim.faults.fails_to_start(broken)
    started = time.monotonic()
    result = checked(sim, tmp_path, {"app": APP, "wait-timeout": "120"}, FAST)
    took = time.monotonic() - started

    assert result.code == 1
    assert any(f"machine {broken} failed to start" in e for e in result.errors()), result.log
    assert took < 60, f"{took:.0f} s: the failure was not seen within a wait slice"
    after = {m.id: m.config for m in sim.app(APP).machines}
    assert after[broken] == before[broken] and after[order[2]] == before[order[2]]
    assert has_pg_tls(sim, APP, order[0])
    waits = [r for r in sim.requests if r.path.endswith("/wait")]
    assert waits and all(r.status != 400 for r in waits)
    assert wait_cluster_healthy(sim, APP)
    assert_cluster_serving(sim, APP)

    again = checked(sim, tmp_path / "rerun", {"app": APP}, FAST)
    assert_completed(sim, again)
    scenario.outcome = f"failure seen and rolled back in {took:.0f} s; re-run completed"
    scenario.add("faults_injected")
    scenario.add("faults_stopped_safely")


def test_primary_failover_mid_rollout_keeps_current_primary_last(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "failover",
        injected="the primary role moves to a not-yet-updated replica after the first update",
        checked="exit 0; the machine that is primary when the rollout ends is updated last; "
        "≤ 1 down; every machine updated once",
    )
    planned = rollout_order(sim, APP)
    old_primary = planned[-1]
    sim.faults.failover_after_updates(APP, 1)
    result = checked(sim, tmp_path, {"app": APP}, FAST)
    assert_completed(sim, result)
    new_primary = sim.app(APP).primary_id
    assert new_primary != old_primary, "the failover did not happen"
    done = [r.path.rsplit("/", 1)[1] for r in updates(sim, APP)]
    assert sorted(done) == sorted(planned) and done[-1] == new_primary, done
    scenario.outcome = "survived: roles re-read, the new primary updated last"
    scenario.add("faults_injected")
    scenario.add("faults_survived")


# -- faults beyond the retry budget: a clean stop, then a re-run finishes --------------------


@dataclass(frozen=True)
class Fatal:
    id: str
    injected: str
    arm: Callable[[Simulator, list[str]], Any]
    error: str  # in the ::error:: line
    after_first_update: bool = False


FATAL = [
    Fatal(
        "allocation-503-twice",
        "503 on the IPv4 allocation, twice (the action tries it twice)",
        lambda s, _: s.faults.fail_next(2, status=503, operation="allocateIpAddress", ip_type="v4"),
        "Fly API error",
    ),
    Fatal(
        "update-503-twice",
        "503 on a machine update, twice (update, resend): the machine still runs its old "
        "version, so there is nothing to roll back",
        lambda s, o: s.faults.fail_next(2, status=503, method="POST", path=update_path(APP, o[1])),
        "was not carried out",
        after_first_update=True,
    ),
    Fatal(
        "reads-503-beyond-budget",
        "503 on the GraphQL app query, 5 times (the retry budget)",
        lambda s, _: s.faults.fail_next(5, status=503, operation="app"),
        "Fly API error",
    ),
    Fatal(
        "malformed-machine-list",
        "the machine list answered 200 with a machine's config a list",
        lambda s, _: s.faults.malformed_next(
            1, at="1.config", value=[], method="GET", path=f"/v1/apps/{APP}/machines"
        ),
        f"GET /v1/apps/{APP}/machines: machines[1].config is a list, expected an object",
    ),
    Fatal(
        "malformed-ip-list",
        "the GraphQL app query answered 200 with its IP list null",
        lambda s, _: s.faults.malformed_next(
            1, at="data.app.ipAddresses.nodes", value=None, operation="app"
        ),
        "GraphQL query app (POST /graphql): data.app.ipAddresses.nodes is null",
    ),
    Fatal(
        "app-query-not-json",
        "the GraphQL app query answered 200 with JSON cut short",
        lambda s, _: s.faults.malformed_next(1, operation="app"),
        "GraphQL query app (POST /graphql) answered with a body that is not JSON",
    ),
    Fatal(
        "lease-503-twice",
        "503 on the first lease request, twice (a failed acquire is sent once more)",
        lambda s, o: s.faults.fail_next(
            2, status=503, method="POST", path_contains=f"/machines/{o[0]}/lease"
        ),
        "Fly API error",
    ),
]


@pytest.mark.parametrize("fault", FATAL, ids=[f.id for f in FATAL])
def test_stops_cleanly_then_rerun_completes(
    fault: Fatal, sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        fault.id,
        injected=fault.injected,
        checked="exit 1 with a clear ::error::; no lease left; cluster serving; ≤ 1 down; "
        "a re-run completes the job",
    )
    order = rollout_order(sim, APP)
    watcher = None
    if fault.after_first_update:
        watcher = when(sim, lambda reqs: bool(updates(sim, APP)), lambda: fault.arm(sim, order))
    else:
        fault.arm(sim, order)
    result = checked(sim, tmp_path, {"app": APP}, FAST)
    if watcher is not None:
        watcher.join(timeout=5)
    fired = faults_fired(sim)
    assert sim.faults.pending == []

    assert result.code == 1, result.log
    errors = result.errors()
    assert any(fault.error in e for e in errors), result.log
    assert not any("Traceback" in line for line in result.log.splitlines())
    # Each machine has either its old config or the new one, and restarted at most twice (its
    # update and the rollback of it).
    for m in sim.app(APP).machines:
        assert m.update_count <= 2, (m.id, m.update_count)
        assert has_pg_tls(sim, APP, m.id) or "services" not in m.config
    assert len(ips(sim, APP, "v4")) <= 1 and len(ips(sim, APP, "v6")) <= 1
    # The outputs describe what is true on Fly at exit, addresses allocated before the stop
    # included (the v6 allocation runs alongside the failing v4 one).
    assert result.outputs.get("ipv4", "") == ",".join(ips(sim, APP, "v4"))
    assert result.outputs.get("ipv6", "") == ",".join(ips(sim, APP, "v6"))
    assert sim.max_machines_down(APP) <= 1
    assert wait_cluster_healthy(sim, APP)
    assert_cluster_serving(sim, APP)

    again = checked(sim, tmp_path / "rerun", {"app": APP}, FAST)
    assert_completed(sim, again)
    message = re.sub(r" \[fly-request-id [^\]]*\]", "", errors[0][len("::error::") :])
    scenario.outcome = f"stopped safely ({fired} fault(s)): {message[:100]}…; re-run completed"
    scenario.add("faults_injected", fired)
    scenario.add("faults_stopped_safely", fired)


def test_lease_taken_but_answer_lost_stops_and_names_the_cause(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "lost-lease-answer",
        injected="first lease granted, then the connection reset (answer lost)",
        checked="exit 1 naming this run's own lease as a possible holder; nothing changed; the "
        "orphaned lease expires within its TTL; a re-run then completes",
    )
    order = rollout_order(sim, APP)
    sim.faults.reset_next(
        1, method="POST", path_contains=f"/machines/{order[0]}/lease", after_commit=True
    )
    # Not waited for here: the lease would end within 30 s and the run would then go on
    # (tests/e2e/test_real_fly_behaviour.py covers the wait).
    result = checked(sim, tmp_path, {"app": APP}, {**FAST, "FLY_PG_EXTERNAL_LEASE_WAIT": "1"})
    assert result.code == 1, result.log
    assert any("maybe by this run's first attempt" in e for e in result.errors()), result.log
    assert updates(sim, APP) == [] and ips(sim, APP, "v4") == [] and ips(sim, APP, "v6") == []
    # Only the lease whose answer was lost is left, and it runs out by itself (30 s TTL; the
    # SIGKILL scenario waits one out for real, here it is cleared once its expiry is checked).
    left = active_leases(sim, APP)
    assert list(left) == [order[0]]
    lease = sim.app(APP).machine(order[0]).active_lease()
    assert lease is not None and lease.expires_at - time.time() <= 31
    sim.clear_lease(APP, order[0])
    again = checked(sim, tmp_path / "rerun", {"app": APP}, FAST)
    assert_completed(sim, again)
    scenario.outcome = "stopped safely, naming its own lease as a possible holder; re-run completed"
    scenario.add("faults_injected")
    scenario.add("faults_stopped_safely")


def test_lease_refused_after_rate_limits_blames_someone_else(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "429-then-409-lease",
        injected="another owner holds the first machine's lease; the first acquire is answered "
        "429 on every HTTP try (refused before any work), so it is sent once more and gets 409",
        checked="exit 1 naming someone else as the holder, not this run's own lost attempt; "
        "nothing changed; no lease of this run left",
    )
    order = rollout_order(sim, APP)
    sim.hold_lease(APP, order[0], owner="someone@example.com", ttl=60)
    # Five tries: the HTTP layer's whole budget for a 429 (RetryPolicy.attempts).
    sim.faults.rate_limit_next(
        5, retry_after=0, method="POST", path_contains=f"/machines/{order[0]}/lease"
    )
    result = checked(sim, tmp_path, {"app": APP}, FAST)
    assert sim.faults.pending == []
    assert result.code == 1, result.log
    errors = result.errors()
    assert any("leased by someone else" in e for e in errors), result.log
    assert not any("first attempt" in e for e in errors), result.log
    assert updates(sim, APP) == [] and ips(sim, APP, "v4") == [] and ips(sim, APP, "v6") == []
    assert active_leases(sim, APP) == {order[0]: "someone@example.com"}
    sim.clear_lease(APP, order[0])
    scenario.outcome = "stopped safely, blaming the other holder"
    scenario.add("faults_injected", 5)
    scenario.add("faults_stopped_safely", 5)


def test_first_lease_is_refreshed_while_the_others_are_taken(
    sim: Simulator, tmp_path: Path, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario.describe(
        GROUP,
        "slow-lease-keep-alive",
        injected="the second machine's lease answered 1.5 s late, leases refreshed every 0.2 s "
        "(in-process run; 10 s against a 30 s TTL in production)",
        checked="exit 0; the first lease is refreshed while the second is still being taken, "
        "so a slow acquire (a resend, each within the HTTP timeout) cannot let it expire",
    )
    monkeypatch.setattr(leases, "LEASE_REFRESH", 0.2)
    order = rollout_order(sim, APP)
    sim.faults.slow_next(1, seconds=1.5, method="POST", path_contains=f"/machines/{order[1]}/lease")
    result = checked(sim, tmp_path, {"app": APP}, FAST, inprocess=True)
    assert_completed(sim, result)
    [slow] = [r for r in sim.requests if r.fault == "slow"]
    assert slow.ended is not None
    refreshes = [
        r
        for r in sim.requests
        if is_lease(r) and r.has_lease_nonce and r.path.endswith(f"/machines/{order[0]}/lease")
    ]
    assert any(r.started < slow.ended for r in refreshes), (
        "the first lease was not refreshed until every lease was taken"
    )
    scenario.outcome = f"survived: {len(refreshes)} refresh(es) of the first lease"
    scenario.add("faults_injected")
    scenario.add("faults_survived")


def test_both_allocations_failing_are_both_reported(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "allocation-503-both-families",
        injected="503 on both the IPv4 and the IPv6 allocation, twice each",
        checked="exit 1; the IPv4 failure is the run's error and the IPv6 one a warning; "
        "nothing changed; leases released",
    )
    for family in ("v4", "v6"):
        sim.faults.fail_next(2, status=503, operation="allocateIpAddress", ip_type=family)
    result = checked(sim, tmp_path, {"app": APP}, FAST)
    assert sim.faults.pending == []
    assert result.code == 1, result.log
    assert any("Fly API error" in e for e in result.errors()), result.log
    warnings = [line for line in result.log.splitlines() if line.startswith("::warning")]
    assert any(
        w.startswith("::warning title=Address allocation failed::")
        and "v6 address failed as well" in w
        for w in warnings
    ), result.log
    assert updates(sim, APP) == [] and ips(sim, APP, "v4") == [] and ips(sim, APP, "v6") == []
    assert result.outputs.get("changed", "false") == "false"
    assert_cluster_serving(sim, APP)
    scenario.outcome = "stopped safely, both failures reported"
    scenario.add("faults_injected", 4)
    scenario.add("faults_stopped_safely", 4)


def test_late_duplicate_is_swept_when_the_other_family_fails(
    sim: Simulator, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "late-duplicate-then-allocation-fails",
        injected="the IPv6 allocation's answer is lost (it is found by listing) and a second "
        "IPv6 shows up afterwards, as a late request would; the IPv4 allocation fails twice",
        checked="exit 1; the extra IPv6 released before the run stops; the one kept is the "
        "ipv6 output; leases released",
    )
    sim.faults.lose_allocation_response(1, ip_type="v6")
    sim.faults.fail_next(2, status=503, operation="allocateIpAddress", ip_type="v4")
    base = f"{sim.flaps_base_url}/v1/apps/{APP}/ip_assignments"
    # While the v4 allocation is still failing (it watches for 1 s after each 503).
    late = when(
        sim,
        lambda reqs: any(is_allocation(r) and r.fault == "lose_allocation" for r in reqs),
        lambda: httpx.post(base, json={"type": "v6"}, headers={"Authorization": f"Bearer {TOKEN}"}),
    )
    result = checked(sim, tmp_path, {"app": APP}, FAST)
    late.join(timeout=5)
    assert sim.faults.pending == []
    assert result.code == 1, result.log
    assert any("Fly API error" in e for e in result.errors()), result.log
    assert "a late duplicate of this run's" in result.log, result.log
    assert ips(sim, APP, "v6") == [result.outputs["ipv6"]], sim.app(APP).ips
    assert ips(sim, APP, "v4") == [] and updates(sim, APP) == []
    assert_cluster_serving(sim, APP)
    scenario.outcome = "stopped safely; the late IPv6 duplicate released"
    scenario.add("faults_injected", 3)
    scenario.add("faults_stopped_safely", 3)
