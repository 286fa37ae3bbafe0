"""`exposed` and `mode: connect` (exposure.py): reachable once every requested family has a
public address and every machine Fly can read serves pg_tls on the port."""

from __future__ import annotations

from dataclasses import replace

from fly_pg_external.domain import AppInfo, ClusterState, IpAddress
from fly_pg_external.exposure import exposure_of
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.outcome import build_outcome
from fly_pg_external.plan import make_plan
from fly_pg_external.progress import Progress
from fly_pg_external.settings import Settings, from_environ

from machines_data import machine

V4 = IpAddress("ip1", "137.66.1.2", "v4", "global", "2026-01-02T00:00:00Z")
V6 = IpAddress("ip2", "2a09:8280:1::1", "v6", "global", "2026-01-02T00:00:00Z")


def settings(**inputs: str) -> Settings:
    env = {"INPUT_APP": "my-db", "INPUT_FLY-API-TOKEN": "fo1_x"}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return from_environ(env, lambda n: env.get("INPUT_" + n.upper()))


def cluster(ips: tuple[IpAddress, ...], *, legacy: bool = False) -> ClusterState:
    app = AppInfo("app1", "my-db", "postgres_cluster", ips, None)
    machines = [machine("m1", "primary", legacy=legacy), machine("m2", legacy=legacy)]
    return ClusterState.of(app, [machine_from_api(m) for m in machines])


def test_an_exposed_cluster_is_exposed() -> None:
    plan = make_plan(settings().intent, cluster((V4, V6)))
    exposure = exposure_of(plan, build_outcome(plan))
    assert exposure.exposed and exposure.gaps(5432) == []


def test_a_dry_run_is_judged_as_things_are_now() -> None:
    plan = make_plan(settings(**{"dry-run": "true"}).intent, cluster((V6,), legacy=True))
    exposure = exposure_of(plan, build_outcome(plan))
    assert not exposure.exposed
    assert exposure.gaps(5432) == [
        "no dedicated IPv4 (v4)",
        "machine(s) m1, m2 serve no pg_tls service on port 5432",
    ]


def test_only_the_requested_families_count() -> None:
    plan = make_plan(settings(**{"ip-versions": "v4", "dry-run": "true"}).intent, cluster((V4,)))
    assert exposure_of(plan, build_outcome(plan)).exposed


def test_a_machine_counts_once_its_update_is_done() -> None:
    plan = make_plan(settings().intent, cluster((V4, V6), legacy=True))
    progress = Progress()
    progress.machines["m2"] = "updated"
    progress.machines["m1"] = "rolled-back"
    outcome = build_outcome(plan, progress)
    exposure = exposure_of(plan, outcome)
    assert exposure.not_serving == ("m1",) and exposure.serving == 1
    assert not exposure.exposed
    done = replace(outcome, machines=[replace(m, result="updated") for m in outcome.machines])
    assert exposure_of(plan, done).exposed
