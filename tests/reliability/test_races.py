"""Two runs of the action on the same app at the same time.

Whatever the interleaving, the app must end with at most one dedicated address of each family
(a second IPv4 is billed), never two machines of the cluster down at once, and each machine
restarted at most once for the change.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cluster_checks import assert_cluster_serving, has_pg_tls, ips, wait_cluster_healthy
from reliability_runs import Background

from flysim import Simulator

from action_run import ActionResult

GROUP = "Races"
ROUNDS = 3


def race(sim: Simulator, tmp_path: Path, app: str) -> list[ActionResult]:
    runs = [Background(sim, tmp_path / f"run{i}", {"app": app}) for i in range(2)]
    return [run.finish(timeout=120) for run in runs]


def assert_no_double_allocation(sim: Simulator, app: str, results: list[ActionResult]) -> None:
    v4, v6 = ips(sim, app, "v4"), ips(sim, app, "v6")
    assert len(v4) <= 1 and len(v6) <= 1, f"duplicates: v4 {v4}, v6 {v6}"
    for r in results:
        if r.code == 0:
            assert r.outputs["ipv4"] == ",".join(v4) and r.outputs["ipv6"] == ",".join(v6)


def test_two_runs_on_a_legacy_cluster(
    flysim: Callable[..., Simulator], tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        f"rollout race × {ROUNDS}",
        injected=f"two runs started together on a legacy 3-machine cluster, {ROUNDS} times",
        checked="≤ 1 IP per family; never 2 machines down; each machine restarted once; the "
        "loser exits 0 (nothing left to do) or 1 with 'leased by someone else'; leases released",
    )
    apps = [f"race-{i}" for i in range(ROUNDS)]
    sim = flysim(
        apps={a: {"machines": 3, "legacy": True} for a in apps},
        postgres=False,
        restart_seconds=0.2,
        check_grace_seconds=0.1,
        public_port_map={5432: 0, 5433: 0},
    )
    verdicts = []
    for app in apps:
        results = race(sim, tmp_path / app, app)
        codes = sorted(r.code for r in results)
        assert 0 in codes, [r.log for r in results]
        for r in results:
            if r.code != 0:
                assert any("leased by someone else" in e for e in r.errors()), r.log
        assert_no_double_allocation(sim, app, results)
        assert sim.max_machines_down(app) <= 1
        assert all(has_pg_tls(sim, app, m.id) for m in sim.app(app).machines)
        assert {m.update_count for m in sim.app(app).machines} == {1}
        assert_cluster_serving(sim, app)
        verdicts.append("/".join(str(c) for c in codes))
        scenario.add("races")
    scenario.outcome = f"exit codes per race {', '.join(verdicts)}; 1 IP per family; max 1 down"


@pytest.mark.finding(1)
def test_two_runs_allocating_in_the_same_second_keep_one_address(
    flysim: Callable[..., Simulator],
    tmp_path: Path,
    scenario: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario.describe(
        GROUP,
        "IP-only race, same second",
        injected="two runs on an exposed-but-unaddressed cluster (no rollout, no lease); both "
        "allocations stamped with the same createdAt second, as Fly's 1 s resolution allows",
        checked="the app ends with one IPv4 and one IPv6, and both runs report them",
    )
    sim = flysim(
        apps={"my-db": {"machines": 3}}, postgres=False, public_port_map={5432: 0, 5433: 0}
    )
    stamp = time.time()
    newer_first = itertools.count()

    def same_second(ip: Any) -> None:
        if ip.type in ("v4", "v6"):
            ip.created_at = stamp  # createdAt has 1 s resolution: same-second ties happen
            ip.id = f"ip_{99 - next(newer_first):02d}race"  # ids carry no order on Fly

    monkeypatch.setattr(sim, "on_ip_allocated", same_second)
    # Hold the first allocation 2 s so that both runs read the app before either allocates.
    sim.faults.slow_next(1, seconds=2.0, operation="allocateIpAddress")
    results = race(sim, tmp_path, "my-db")
    v4, v6 = ips(sim, "my-db", "v4"), ips(sim, "my-db", "v6")
    scenario.outcome = f"{len(v4)} IPv4 and {len(v6)} IPv6 left on the app"
    scenario.add("races")
    assert [r.code for r in results] == [0, 0], [r.log for r in results]
    assert_no_double_allocation(sim, "my-db", results)


@pytest.mark.finding(5)
def test_run_delayed_behind_another_does_not_restart_machines_again(
    flysim: Callable[..., Simulator], tmp_path: Path, scenario: Any
) -> None:
    scenario.describe(
        GROUP,
        "stale plan",
        injected="run B reads the cluster, its first lease request is held 4 s; run A does the "
        "whole rollout meanwhile",
        checked="each machine restarted once (B finds the work done); ≤ 1 IP per family",
    )
    sim = flysim(
        apps={"my-db": {"machines": 3, "legacy": True}},
        postgres=False,
        public_port_map={5432: 0, 5433: 0},
    )
    sim.faults.slow_next(1, seconds=4.0, method="POST", path_contains="/lease")
    late = Background(sim, tmp_path / "late", {"app": "my-db"})
    # B has read the app and the machines: its lease request is what the simulator holds now.
    assert sim.wait_for(lambda: len(sim.requests) >= 2, timeout=30)
    first = Background(sim, tmp_path / "first", {"app": "my-db"}).finish(timeout=60)
    second = late.finish(timeout=60)
    assert first.code == 0, first.log
    assert wait_cluster_healthy(sim, "my-db")
    restarts = sorted(m.update_count for m in sim.app("my-db").machines)
    scenario.outcome = f"B exit {second.code}; restarts per machine {restarts}"
    scenario.add("races")
    assert_no_double_allocation(sim, "my-db", [first, second])
    assert sim.max_machines_down("my-db") <= 1
    assert restarts == [1, 1, 1], f"restarts per machine: {restarts}"
    assert_cluster_serving(sim, "my-db")
