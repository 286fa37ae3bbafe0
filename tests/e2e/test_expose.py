"""The action end to end: `python entrypoint.py` against the Fly simulator."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from cluster_checks import is_lease, is_metadata_write, is_update, machine_id_of

from fly_pg_external import ownership
from flysim import Simulator
from flysim.requestlog import RequestRecord

from action_run import run_inprocess, run_subprocess


def lease_and_update_paths(sim: Simulator) -> list[tuple[str, str]]:
    """Lease takes/releases and machine updates (exactly POST .../machines/<id>), in order; a
    metadata write is neither."""
    out = []
    for r in sim.requests:
        mid = machine_id_of(r)
        if mid is None:
            continue
        if is_lease(r, "POST") or is_lease(r, "DELETE"):
            out.append((f"{r.method} lease", mid))
        elif is_update(r):
            out.append(("POST update", mid))
    return out


def record_writes(sim: Simulator) -> list[RequestRecord]:
    return [r for r in sim.requests if is_metadata_write(r, ownership.RECORD_KEY)]


def recorded(sim: Simulator, app: str, machine_id: str) -> ownership.Ownership | None:
    text = sim.machine_metadata(app, machine_id).get(ownership.RECORD_KEY)
    return None if text is None else ownership.decode(text)


def public_ips(sim: Simulator, app: str) -> dict[str, str]:
    """IP ID -> address of the app's public (v4/v6) addresses."""
    return {ip.id: ip.address for ip in sim.app(app).ips if ip.type in ("v4", "v6")}


def allocations(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if "allocateIpAddress" in r.graphql_fields]


@pytest.fixture
def current_sim(flysim: Any) -> Simulator:
    sim: Simulator = flysim(apps={"my-db": {"machines": 3}})
    return sim


@pytest.fixture
def legacy_sim(flysim: Any) -> Simulator:
    sim: Simulator = flysim(apps={"my-db": {"machines": 3, "legacy": True}})
    return sim


def test_first_exposure_of_current_cluster_allocates_ips_and_restarts_nothing(
    current_sim: Simulator, tmp_path: Path
) -> None:
    result = run_subprocess(current_sim, tmp_path, {"app": "my-db"})
    assert result.code == 0, result.log
    out = result.outputs
    assert out["changed"] == "true"
    assert out["ipv4"].startswith("127.") and "," not in out["ipv4"]
    assert out["ipv6"]
    assert out["config-diff"] == ""
    assert out["host"] == "my-db.fly.dev" and out["port"] == "5432"
    assert out["database-url"] == "" and out["comment-url"] == ""
    # One of each family (sent at the same time, so in either order).
    assert sorted(r.graphql_variables["input"]["type"] for r in allocations(current_sim)) == [
        "v4",
        "v6",
    ]
    # No machine update; only the record's turn: the first machine's lease, taken before the
    # allocations and given back after the record is written.
    machines = sorted(m.id for m in current_sim.app("my-db").machines)
    turn = lease_and_update_paths(current_sim)
    assert [(kind, mid) for kind, mid in turn] == [
        ("POST lease", machines[0]),
        ("DELETE lease", machines[0]),
    ], turn
    # The ownership record: one metadata write per machine, once both addresses exist.
    writes = record_writes(current_sim)
    assert sorted(machine_id_of(r) or "" for r in writes) == machines
    last_alloc = max(r.ended or float("inf") for r in allocations(current_sim))
    assert all(r.started >= last_alloc and r.status == 204 for r in writes)
    # the two reads, the turn (lease, the two reads again, lease back), the two allocations,
    # the record writes: nothing else
    assert len(current_sim.requests) == 8 + len(machines)
    app = current_sim.app("my-db")
    assert {ip.type for ip in app.ips} == {"private_v6", "v4", "v6"}
    for mid in machines:
        record = recorded(current_sim, "my-db", mid)
        assert record is not None and dict(record.addresses) == public_ips(current_sim, "my-db")
        assert set(record.holds) == {f"acme/infra#{ownership.PERSISTENT}"}


def test_rerun_on_exposed_app_makes_no_change(current_sim: Simulator, tmp_path: Path) -> None:
    first = run_inprocess(current_sim, tmp_path / "1", {"app": "my-db"})
    current_sim.clear_requests()
    # With latency, sequential reads could not overlap: overlap proves one round trip.
    current_sim.faults.latency = 0.3
    second = run_subprocess(current_sim, tmp_path / "2", {"app": "my-db"})
    assert second.code == 0, second.log
    assert second.outputs["changed"] == "false"
    for name in ("ipv4", "ipv6", "host", "port", "config-diff"):
        assert second.outputs[name] == first.outputs[name]
    assert current_sim.mutating_requests() == []  # no record write either: it is current
    assert len(current_sim.requests) == 2
    # both reads were in flight at the same time: one round trip
    a, b = current_sim.requests
    assert a.ended is not None and b.ended is not None
    assert max(a.started, b.started) < min(a.ended, b.ended)


def test_plan_mode_changes_nothing_and_reports_what_expose_would_do(
    legacy_sim: Simulator, tmp_path: Path
) -> None:
    before = {m.id: m.instance_id for m in legacy_sim.app("my-db").machines}
    result = run_subprocess(legacy_sim, tmp_path, {"app": "my-db", "dry-run": "true"})
    assert result.code == 0, result.log
    assert result.outputs["changed"] == "true"
    assert result.outputs["ipv4"] == "" and result.outputs["ipv6"] == ""
    assert "+[[services]]" in result.outputs["config-diff"]
    assert legacy_sim.mutating_requests() == []
    assert {m.id: m.instance_id for m in legacy_sim.app("my-db").machines} == before
    assert "would update machine" in result.stdout


def test_legacy_cluster_rolls_out_replicas_first_primary_last_one_at_a_time(
    legacy_sim: Simulator, tmp_path: Path
) -> None:
    app = legacy_sim.app("my-db")
    primary = app.primary.id
    # a copy: the metadata endpoint changes the live config in place
    configs_before = {m.id: copy.deepcopy(m.config) for m in app.machines}
    result = run_subprocess(legacy_sim, tmp_path, {"app": "my-db"})
    assert result.code == 0, result.log
    steps = lease_and_update_paths(legacy_sim)
    updates = [mid for kind, mid in steps if kind == "POST update"]
    assert len(updates) == 3 and updates[-1] == primary
    # every lease is taken before anything changes, and released at the end
    first_update = steps.index(("POST update", updates[0]))
    assert {mid for kind, mid in steps[:first_update] if kind == "POST lease"} == set(updates)
    assert sorted(mid for kind, mid in steps if kind == "DELETE lease") == sorted(updates)
    # every lease is held before the first allocation is sent
    first_alloc = min(r.started for r in allocations(legacy_sim))
    lease_posts = [
        r for r in legacy_sim.requests if r.path.endswith("/lease") and r.method == "POST"
    ]
    acquired = lease_posts[: len(updates)]
    assert all(r.ended is not None and r.ended <= first_alloc for r in acquired)
    assert legacy_sim.max_machines_down("my-db") == 1
    # The ownership record is written to every machine after the allocations, before the first
    # update (which carries it in the new config, so the update does not erase it).
    writes = record_writes(legacy_sim)
    assert sorted(machine_id_of(r) or "" for r in writes) == sorted(updates)
    last_alloc = max(r.ended or float("inf") for r in allocations(legacy_sim))
    first_update_sent = min(r.started for r in legacy_sim.requests if is_update(r))
    assert all(last_alloc <= r.started and (r.ended or 0) <= first_update_sent for r in writes)
    for m in app.machines:
        services = m.config["services"]
        assert services[0]["internal_port"] == 5432
        assert services[0]["ports"] == [{"port": 5432, "handlers": ["pg_tls"]}]
        record = recorded(legacy_sim, "my-db", m.id)
        assert record is not None and dict(record.addresses) == public_ips(legacy_sim, "my-db")
        # all else unchanged: the other metadata keys too
        rest = {k: v for k, v in m.config.items() if k != "services"}
        rest["metadata"] = {
            k: v for k, v in (rest.get("metadata") or {}).items() if k != ownership.RECORD_KEY
        }
        before = {k: v for k, v in configs_before[m.id].items() if k != "services"}
        before["metadata"] = before.get("metadata") or {}
        assert rest == before
    diff = result.outputs["config-diff"]
    assert diff.startswith("--- fly.toml (current)") and 'handlers = ["pg_tls"]' in diff
    written = [text for path, text in result.files.items() if path.endswith("fly.toml")]
    assert written and "pg_tls" in written[0]


def test_bad_input_fails_before_any_request(current_sim: Simulator, tmp_path: Path) -> None:
    result = run_subprocess(current_sim, tmp_path, {"app": "my-db", "ip-versions": "shared-v4"})
    assert result.code == 1
    assert any('Input "ip-versions"' in e for e in result.errors())
    assert current_sim.requests == []


@pytest.mark.parametrize(
    ("inputs", "extra_env", "expected"),
    [
        ({"app": "nope-db"}, {}, "was not found"),
        # A Managed Postgres cluster's name is not an app: the error says what to do instead.
        ({"app": "nope-db"}, {}, "cannot be opened to the internet, by this action or otherwise"),
        ({"app": "web"}, {}, "is not a Fly Postgres app"),
        ({"app": "web"}, {}, "fly mpg proxy"),
        ({"app": "my-db", "fly-api-token": "fo1_wrong_token"}, {}, "refused the API token"),
    ],
)
def test_fly_side_errors_are_clear_and_change_nothing(
    flysim: Any, tmp_path: Path, inputs: dict[str, str], extra_env: dict[str, str], expected: str
) -> None:
    sim: Simulator = flysim(apps={"my-db": {"machines": 1}, "web": {"postgres": False}})
    result = run_subprocess(sim, tmp_path, inputs, extra_env)
    assert result.code == 1, result.log
    assert any(expected in e for e in result.errors()), result.log
    assert sim.mutating_requests() == []


def test_lease_held_by_someone_else_stops_before_any_change(
    legacy_sim: Simulator, tmp_path: Path
) -> None:
    victim = legacy_sim.app("my-db").machines[1].id
    legacy_sim.hold_lease("my-db", victim, owner="deploy@example.com", ttl=120)
    result = run_subprocess(legacy_sim, tmp_path, {"app": "my-db"})
    assert result.code == 1
    assert any("leased by someone else" in e for e in result.errors()), result.log
    assert allocations(legacy_sim) == []
    assert [k for k, _ in lease_and_update_paths(legacy_sim) if k == "POST update"] == []
    # what we took was given back
    for m in legacy_sim.app("my-db").machines:
        if m.id != victim:
            assert m.active_lease() is None
    assert result.outputs["changed"] == "false"
