"""Closing the exposure again (`mode: unexpose`) and reading the URL in a later job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cluster_checks import is_lease, is_metadata_write, machine_id_of

from fly_pg_external import ownership
from flysim import Simulator

from action_run import run_inprocess, run_subprocess


@pytest.fixture
def exposed(flysim: Any, tmp_path: Path) -> Simulator:
    sim: Simulator = flysim(apps={"my-db": {"machines": 2}})
    first = run_inprocess(sim, tmp_path / "expose", {"app": "my-db"})
    assert first.code == 0, first.log
    sim.clear_requests()
    return sim


def releases(sim: Simulator) -> list[str]:
    return [
        r.graphql_variables["input"]["ip"]
        for r in sim.requests
        if "releaseIpAddress" in r.graphql_fields
    ]


def test_unexpose_releases_public_ips_but_never_flycast(exposed: Simulator, tmp_path: Path) -> None:
    app = exposed.app("my-db")
    public = {ip.address for ip in app.ips if ip.type in ("v4", "v6")}
    result = run_subprocess(
        exposed, tmp_path, {"app": "my-db", "mode": "unexpose", "verify": "true"}
    )
    assert result.code == 0, result.log
    assert set(releases(exposed)) == public
    assert [ip.type for ip in exposed.app("my-db").ips] == ["private_v6"]
    out = result.outputs
    assert (out["changed"], out["ipv4"], out["ipv6"], out["database-url"]) == ("true", "", "", "")
    assert "no longer accepts connections" in result.stdout
    # The record of the addresses (written by the expose) goes with them: emptied on each
    # machine, one generation up, through the metadata endpoint, which makes no new version.
    deletes = [r for r in exposed.requests if is_metadata_write(r, ownership.RECORD_KEY)]
    machines = sorted(m.id for m in app.machines)
    assert sorted(machine_id_of(r) or "" for r in deletes) == machines
    for mid in machines:
        text = exposed.machine_metadata("my-db", mid)[ownership.RECORD_KEY]
        emptied = ownership.decode(text)
        assert emptied.empty and emptied.generation >= 1
    # Machines and their services are left alone otherwise: no update, and only the lease a
    # releasing run takes on one machine while it changes the record, given back.
    taken = [machine_id_of(r) for r in exposed.requests if is_lease(r, "POST")]
    given_back = [machine_id_of(r) for r in exposed.requests if is_lease(r, "DELETE")]
    assert len(taken) == 1 and given_back == taken
    others = [r for r in exposed.requests if r.api == "rest" and r.method != "GET"]
    assert [r for r in others if r not in deletes and not is_lease(r, r.method)] == []
    assert {m.id: m.update_count for m in app.machines} == dict.fromkeys(machines, 0)


def test_unexpose_is_idempotent(exposed: Simulator, tmp_path: Path) -> None:
    run_inprocess(exposed, tmp_path / "1", {"app": "my-db", "mode": "unexpose"})
    exposed.clear_requests()
    again = run_subprocess(exposed, tmp_path / "2", {"app": "my-db", "mode": "unexpose"})
    assert again.code == 0
    assert again.outputs["changed"] == "false"
    assert exposed.mutating_requests() == []


def test_unexpose_only_the_requested_family_and_dry_run(exposed: Simulator, tmp_path: Path) -> None:
    dry = run_subprocess(
        exposed,
        tmp_path / "dry",
        {"app": "my-db", "mode": "unexpose", "dry-run": "true", "ip-versions": "v4"},
    )
    assert dry.code == 0
    assert dry.outputs["changed"] == "true" and dry.outputs["ipv4"]
    assert exposed.mutating_requests() == []
    assert "would release v4" in dry.stdout
    real = run_subprocess(
        exposed, tmp_path / "real", {"app": "my-db", "mode": "unexpose", "ip-versions": "v4"}
    )
    assert real.outputs["ipv4"] == "" and real.outputs["ipv6"] != ""
    assert {ip.type for ip in exposed.app("my-db").ips} == {"private_v6", "v6"}


def test_connect_on_exposed_app_is_a_cheap_read_that_sets_the_url(
    exposed: Simulator, tmp_path: Path
) -> None:
    url = "postgres://u:pw-123456@my-db.flycast:5432/db?sslmode=disable"
    result = run_subprocess(
        exposed, tmp_path, {"app": "my-db", "mode": "connect", "database-url": url}
    )
    assert result.code == 0
    assert (
        result.outputs["database-url"]
        == "postgres://u:pw-123456@my-db.fly.dev:5432/db?sslmode=require"
    )
    assert result.outputs["changed"] == "false"
    assert len(exposed.requests) == 2 and exposed.mutating_requests() == []
    assert (result.outputs["user"], result.outputs["database"]) == ("u", "db")
