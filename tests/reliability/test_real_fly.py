"""The action against the simulator where it behaves as strictly as the real Fly.

One test (at least) per way the real platform differs from a kind one
(docs/fly-behaviour.md lists them with their sources): checks that are empty right after a start,
`created` after a skip_launch update, 408 on any endpoint, unreachable hosts, rate limits, both
wait parameters, stale versions, and leases held by someone else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flysim import Simulator

from action_run import run_inprocess, run_subprocess

APP = "my-db"
GROUP = "Fault matrix"


def legacy(flysim: Any, machines: int = 3, **kwargs: Any) -> Simulator:
    options = {"machines": machines, "legacy": True, **kwargs.pop("app_options", {})}
    sim: Simulator = flysim(apps={APP: options}, **kwargs)
    return sim


def machine_ids(sim: Simulator) -> list[str]:
    return [m.id for m in sim.app(APP).machines]


def update_requests(sim: Simulator) -> list[Any]:
    return [
        r
        for r in sim.requests
        if r.api == "rest"
        and r.method == "POST"
        and r.path.count("/") == 5
        and "/machines/" in r.path
    ]


def assert_leases_released(sim: Simulator) -> None:
    assert all(m.active_lease() is None for m in sim.app(APP).machines)


# -- 1. empty checks right after a start -----------------------------------------------------


def test_the_next_machine_waits_until_the_updated_one_has_run_its_checks(
    flysim: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "empty-checks",
        injected="each started machine reports no checks for 1 s before they pass",
        checked="≤ 1 machine down; each update sent only after the previous machine's checks "
        "passed",
    )
    # Checks stay empty for a while after each start: long enough for an action that counts
    # "no checks" as healthy to restart the next machine meanwhile.
    sim = legacy(flysim, restart_seconds=0.2, check_grace_seconds=1.0)
    result = run_inprocess(sim, tmp_path, {"app": APP})
    assert result.code == 0, result.log
    assert sim.max_machines_down(APP) == 1
    assert all(m.update_count == 1 for m in sim.app(APP).machines)
    # Each update after the first was sent only once the previous machine's checks passed.
    passing = [c for c in sim.timeline(APP) if c.reason == "checks_passing"]
    updates = update_requests(sim)
    assert len(updates) == 3
    for previous_pass, update in zip(passing, updates[1:], strict=False):
        assert update.started >= previous_pass.at
    scenario.outcome = (
        "≤ 1 machine down; each update sent only after the previous machine's checks passed"
    )
    scenario.add("faults_injected")
    scenario.add("faults_survived")


# -- 2. created after a skip_launch update ----------------------------------------------------


def test_a_stopped_machine_updated_with_skip_launch_stays_created_and_the_run_goes_on(
    flysim: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "created-after-skip-launch",
        injected="a stopped machine's skip_launch update leaves it `created` (never `stopped`)",
        checked="exit 0; the machine stays created; every machine updated once; leases released",
    )
    sim = legacy(flysim, app_options={"machine_states": ["started", "stopped", "started"]})
    stopped = machine_ids(sim)[1]
    result = run_inprocess(sim, tmp_path, {"app": APP, "wait-timeout": "30"})
    assert result.code == 0, result.log
    machines = {m.id: m for m in sim.app(APP).machines}
    assert machines[stopped].state == "created"
    assert all(m.update_count == 1 for m in machines.values())
    assert_leases_released(sim)
    scenario.outcome = (
        "exit 0; the machine stays created; every machine updated once; leases released"
    )
    scenario.add("faults_injected")
    scenario.add("faults_survived")


# -- 3. 408 on any endpoint -------------------------------------------------------------------


def test_an_update_answered_408_after_it_landed_is_not_rolled_back(
    flysim: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "408-update-landed",
        injected="a machine update carried out, then answered 408",
        checked="exit 0; every machine updated once, none rolled back",
    )
    sim = legacy(flysim)
    first = sorted(machine_ids(sim))[0]
    sim.faults.timeout_next(
        path=f"/v1/apps/{APP}/machines/{first}", method="POST", after_commit=True
    )
    result = run_inprocess(sim, tmp_path, {"app": APP}, {"FLY_PG_EXTERNAL_HTTP_TIMEOUT": "2"})
    assert result.code == 0, result.log
    assert [r.fault for r in sim.requests if r.fault] == ["timeout:408:after_commit"]
    # Updated once, never restored to its old config: the change that landed is the one kept.
    assert all(m.update_count == 1 for m in sim.app(APP).machines)
    assert all(m.has_pg_tls_port(5432) for m in sim.app(APP).machines)
    scenario.outcome = "exit 0; every machine updated once, none rolled back"
    scenario.add("faults_injected")
    scenario.add("faults_survived")


def test_reads_answered_408_are_retried(flysim: Any, tmp_path: Path, scenario: Any) -> None:
    scenario.describe(
        GROUP,
        "408-read",
        injected="List Machines answered 408",
        checked="the read is resent; exit 0",
    )
    sim = legacy(flysim)
    sim.faults.timeout_next(path=f"/v1/apps/{APP}/machines", method="GET")
    result = run_inprocess(sim, tmp_path, {"app": APP, "dry-run": "true"})
    assert result.code == 0, result.log
    statuses = [r.status for r in sim.requests if r.path == f"/v1/apps/{APP}/machines"]
    assert statuses == [408, 200]
    scenario.outcome = "the read is resent; exit 0"
    scenario.add("faults_injected")
    scenario.add("faults_survived")


# -- 4. unreachable hosts ---------------------------------------------------------------------


def test_a_machine_on_an_unreachable_host_stops_the_rollout_before_any_change(
    flysim: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "unreachable-host",
        injected="a replica's host unreachable (no config, only incomplete_config)",
        checked="exit 1 naming the machine; no request that changes anything",
    )
    sim = legacy(flysim)
    down = machine_ids(sim)[2]
    sim.set_host_status(APP, down, "unreachable")
    result = run_inprocess(sim, tmp_path, {"app": APP})
    assert result.code == 1
    assert any(down in e and "cannot reach" in e for e in result.errors()), result.log
    assert sim.mutating_requests() == []
    assert all(m.update_count == 0 for m in sim.app(APP).machines)
    scenario.outcome = "exit 1 naming the machine; no request that changes anything"
    scenario.add("faults_injected")
    scenario.add("faults_stopped_safely")


def test_the_plan_names_a_machine_on_an_unreachable_host_as_down(
    flysim: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "unreachable-host-plan",
        injected="a machine's host unreachable, dry run",
        checked="a warning naming it as down and saying the run would stop; it is in the summary",
    )
    sim = legacy(flysim)
    down = machine_ids(sim)[0]
    sim.set_host_status(APP, down, "unreachable")
    result = run_inprocess(sim, tmp_path, {"app": APP, "dry-run": "true"})
    assert result.code == 0, result.log
    warnings = [line for line in result.log.splitlines() if line.startswith("::warning")]
    assert any(down in w and "counts as down" in w and "would stop" in w for w in warnings)
    assert down in result.summary
    scenario.outcome = (
        "a warning naming it as down and saying the run would stop; it is in the summary"
    )
    scenario.add("faults_injected")
    scenario.add("faults_survived")


def test_an_exposure_needing_no_restart_goes_on_with_an_unreachable_machine_reported(
    flysim: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "unreachable-host-no-restart",
        injected="a machine's host unreachable on a cluster that needs no restart",
        checked="exit 0 with the IPs allocated; the machine named as down",
    )
    sim: Simulator = flysim(apps={APP: {"machines": 3}})
    down = machine_ids(sim)[1]
    sim.set_host_status(APP, down, "unreachable")
    result = run_inprocess(sim, tmp_path, {"app": APP})
    assert result.code == 0, result.log
    assert result.outputs["ipv4"]
    assert any(down in line and "counts as down" in line for line in result.log.splitlines())
    scenario.outcome = "exit 0 with the IPs allocated; the machine named as down"
    scenario.add("faults_injected")
    scenario.add("faults_survived")


# -- 5. rate limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("machines", [3, 10])
def test_a_legacy_rollout_provokes_no_429_and_keeps_one_machine_down_at_most(
    flysim: Any, tmp_path: Path, machines: int, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        f"rate-limits × {machines}",
        injected="Fly's rate limits (1/s per action and machine or app, bursts of 3; Get Machine "
        "5/s, bursts of 10) on a legacy rollout",
        checked="0 requests answered 429; ≤ 1 machine down; every machine updated once; leases "
        "released",
    )
    sim = legacy(flysim, machines, restart_seconds=0.3, check_grace_seconds=0.6)
    result = run_inprocess(sim, tmp_path, {"app": APP})
    assert result.code == 0, result.log
    assert sim.throttled() == []
    assert sim.max_machines_down(APP) == 1
    assert all(m.update_count == 1 for m in sim.app(APP).machines)
    assert_leases_released(sim)
    scenario.outcome = (
        f"{len(sim.requests)} requests, 0 answered 429; at most "
        f"{sim.max_machines_down(APP)} machine down; {machines} machines updated once"
    )
    scenario.figures["requests"] = len(sim.requests)
    scenario.add("faults_injected")
    scenario.add("faults_survived")


# -- 6. wait parameters -----------------------------------------------------------------------


def test_every_wait_names_the_version_under_both_names(
    flysim: Any, tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "wait-parameters",
        injected="a wait endpoint that may honour only `instance_id` (the docs) or only `version` "
        "(fly-go)",
        checked="every wait sends both, equal",
    )
    sim = legacy(flysim, 2)
    result = run_inprocess(sim, tmp_path, {"app": APP})
    assert result.code == 0, result.log
    waits = [r for r in sim.requests if r.path.endswith("/wait")]
    assert waits
    for wait in waits:
        assert wait.query.get("version")
        assert wait.query.get("instance_id") == wait.query["version"]
    scenario.outcome = "every wait sends both, equal"
    scenario.add("faults_injected")
    scenario.add("faults_survived")


@pytest.mark.parametrize("status", [400, 409, 412, 422])
def test_a_late_update_that_lands_before_its_resend_restarts_the_machine_once(
    flysim: Any, tmp_path: Path, status: int, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        f"stale-version {status}",
        injected="an update that lands after the client gave up on it; the conditional resend "
        "refused with an unknown status",
        checked="exit 0; the machine restarted once (its instance_id decides, not the status)",
    )
    # The first update lands only after the client gave up on it (2 s) and stopped watching
    # (2 s later); the resend, conditional on the old version, reaches Fly after that and is
    # refused with a status no source names.
    sim = legacy(flysim, 2, stale_version_status=status)
    first = sorted(machine_ids(sim))[0]
    update_path = f"/v1/apps/{APP}/machines/{first}"
    # The client gives up after 2 s and watches for 4 s more (its last read at about 5.8 s);
    # the first update lands at 6.3 s, and the resend (sent at about 5.8 s) is handled at
    # about 7.3 s, still within its own 2 s.
    sim.faults.slow_next(path=update_path, method="POST", seconds=6.3)
    sim.faults.slow_next(path=update_path, method="POST", seconds=1.5)
    result = run_inprocess(sim, tmp_path, {"app": APP}, {"FLY_PG_EXTERNAL_HTTP_TIMEOUT": "2"})
    assert result.code == 0, result.log
    updates = [r for r in sim.requests if r.path == update_path and r.method == "POST"]
    assert len(updates) == 2 and updates[1].status == status  # the resend met the stale case
    assert all(m.update_count == 1 for m in sim.app(APP).machines)
    assert_leases_released(sim)
    scenario.outcome = (
        "exit 0; the machine restarted once (its instance_id decides, not the status)"
    )
    scenario.add("faults_injected")
    scenario.add("faults_survived")


# -- 7. leases held by someone else -----------------------------------------------------------


def test_a_lease_that_ends_soon_is_waited_for(flysim: Any, tmp_path: Path, scenario: Any) -> None:
    scenario.describe(
        GROUP,
        "lease-held-briefly",
        injected="someone else holds a machine's lease for 2 more seconds",
        checked="the run waits for it, then completes",
    )
    sim = legacy(flysim, 2)
    sim.hold_lease(APP, machine_ids(sim)[0], owner="deploy@example.com", ttl=2)
    result = run_subprocess(sim, tmp_path, {"app": APP})
    assert result.code == 0, result.log
    assert "waiting up to" in result.log
    assert all(m.update_count == 1 for m in sim.app(APP).machines)
    scenario.outcome = "the run waits for it, then completes"
    scenario.add("faults_injected")
    scenario.add("faults_survived")
