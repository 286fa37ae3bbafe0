"""The Machines API is as strict as Fly's: auth, leases and nonces, full configs, wait."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from flysim import RateLimits, Simulator

TOKEN = "fo1_testtoken"  # what the `sim` fixture (tests/sim/conftest.py) accepts
AUTH = {"Authorization": f"Bearer {TOKEN}"}

HELD_BY = re.compile(
    r"^machine ID [0-9a-f]{14} lease currently held by (?P<owner>\S+), "
    r"expires at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
)


def first(sim: Simulator) -> str:
    return sim.app("my-db").machines[0].id


def update_body(rest: httpx.Client, machine_id: str) -> dict[str, Any]:
    machine = rest.get(f"/machines/{machine_id}").json()
    return {"config": machine["config"], "region": machine["region"], "skip_secrets": False}


def lease(rest: httpx.Client, machine_id: str, ttl: int = 60) -> str:
    response = rest.post(f"/machines/{machine_id}/lease", params={"ttl": ttl})
    assert response.status_code == 201, response.text
    nonce: str = response.json()["data"]["nonce"]
    return nonce


# ---------------------------------------------------------------------------------------- auth
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer fo1_wrong"}, {"Authorization": "FlyV1 fm2_wrong,fm2_other"}],
    ids=["missing", "wrong-bearer", "wrong-flyv1"],
)
def test_requests_without_the_right_token_get_401(sim: Simulator, headers: dict[str, str]) -> None:
    response = httpx.get(f"{sim.flaps_base_url}/v1/apps/my-db/machines", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Authenticate: token validation error"}
    assert response.headers["fly-request-id"]


@pytest.mark.parametrize(
    "value",
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"FlyV1 fm2_macaroon,{TOKEN}", f"FlyV1 Bearer {TOKEN}"],
)
def test_bearer_flyv1_and_comma_separated_tokens_are_accepted(sim: Simulator, value: str) -> None:
    response = httpx.get(f"{sim.flaps_base_url}/v1/apps/my-db", headers={"Authorization": value})
    assert response.status_code == 200


def test_the_request_log_keeps_the_auth_scheme_but_never_the_token(
    sim: Simulator, rest: httpx.Client
) -> None:
    rest.get("/machines")
    httpx.get(f"{sim.flaps_base_url}/v1/apps/my-db", headers={"Authorization": f"FlyV1 {TOKEN}"})
    records = sim.requests
    assert [r.auth_scheme for r in records] == ["Bearer", "FlyV1"]
    assert TOKEN not in repr(records)


# ------------------------------------------------------------------------------- apps/machines
def test_unknown_app_and_machine_are_404_with_flys_error_text(
    sim: Simulator, rest: httpx.Client
) -> None:
    other = httpx.get(f"{sim.flaps_base_url}/v1/apps/nope/machines", headers=AUTH)
    assert (other.status_code, other.json()) == (404, {"error": "app not found"})
    missing = rest.get("/machines/0123456789abcd")
    assert (missing.status_code, missing.json()) == (404, {"error": "machine not found"})
    assert other.headers["fly-request-id"] and missing.headers["fly-request-id"]


def test_app_reports_its_role(flysim: Callable[..., Simulator]) -> None:
    sim = flysim(apps={"my-db": {}, "web": {"postgres": False}}, postgres=False, token=TOKEN)
    pg = httpx.get(f"{sim.flaps_base_url}/v1/apps/my-db", headers=AUTH).json()
    web = httpx.get(f"{sim.flaps_base_url}/v1/apps/web", headers=AUTH).json()
    assert pg["app_role"] == "postgres_cluster" and pg["machine_count"] == 3
    assert web["app_role"] == ""


def test_seeded_flex_machines_look_like_fly_pg_create(sim: Simulator, rest: httpx.Client) -> None:
    machines = rest.get("/machines").json()
    assert len(machines) == 3
    for machine in machines:
        config = machine["config"]
        assert re.fullmatch(r"flyio/postgres-flex:16\.4@sha256:[0-9a-f]{64}", config["image"])
        assert [s["internal_port"] for s in config["services"]] == [5432, 5433]
        assert all(s["ports"][0]["handlers"] == ["pg_tls"] for s in config["services"])
        assert config["mounts"][0]["name"] == "pg_data" and config["mounts"][0]["path"] == "/data"
        assert set(config["checks"]) == {"pg", "role", "vm"}
        assert machine["image_ref"]["labels"]["fly.pg-manager"] == "repmgr"
        assert len(machine["instance_id"]) == 26
    roles = sorted(next(c["output"] for c in m["checks"] if c["name"] == "role") for m in machines)
    assert roles == ["primary", "replica", "replica"]
    assert [ip.type for ip in sim.app("my-db").ips] == ["private_v6"]


def test_machine_list_filters(sim: Simulator, rest: httpx.Client) -> None:
    sim.rate_limits = RateLimits.off()  # four lists in a row: this is about the filters
    machine_id = first(sim)
    lease(rest, machine_id)
    started = rest.get("/machines", params={"state": "started,stopped", "summary": "true"})
    assert len(started.json()) == 3
    assert rest.get("/machines", params={"state": "stopped"}).json() == []
    with_leases = rest.get("/machines", params={"include_leases": "true"}).json()
    assert [m["id"] for m in with_leases if "lease" in m] == [machine_id]
    assert len(rest.get("/machines", params={"metadata.fly-managed-postgres": "true"}).json()) == 3


# -------------------------------------------------------------------------------------- leases
def test_lease_lifecycle_acquire_refresh_get_release(sim: Simulator, rest: httpx.Client) -> None:
    machine = sim.app("my-db").machines[0]
    acquired = rest.post(f"/machines/{machine.id}/lease", json={"ttl": 30, "description": "x"})
    assert acquired.status_code == 201
    envelope = acquired.json()
    assert envelope["status"] == "success"
    data = envelope["data"]
    assert set(data) == {"nonce", "expires_at", "owner", "description", "version"}
    assert data["version"] == machine.instance_id and data["description"] == "x"

    refreshed = rest.post(
        f"/machines/{machine.id}/lease",
        params={"ttl": 120},
        headers={"fly-machine-lease-nonce": data["nonce"]},
    )
    assert refreshed.status_code == 201
    assert refreshed.json()["data"]["nonce"] == data["nonce"]
    assert refreshed.json()["data"]["expires_at"] >= data["expires_at"] + 80

    assert rest.get(f"/machines/{machine.id}/lease").json()["data"]["nonce"] == data["nonce"]
    no_nonce = rest.delete(f"/machines/{machine.id}/lease")
    assert no_nonce.status_code == 400
    wrong = rest.delete(
        f"/machines/{machine.id}/lease", headers={"fly-machine-lease-nonce": "000000000000"}
    )
    assert wrong.status_code == 409
    released = rest.delete(
        f"/machines/{machine.id}/lease", headers={"fly-machine-lease-nonce": data["nonce"]}
    )
    assert released.json() == {"status": "success", "data": {"ok": True}}
    gone = rest.get(f"/machines/{machine.id}/lease")
    assert gone.status_code == 404 and " lease not found" in gone.json()["error"]


def test_a_lease_held_by_someone_else_is_a_409_naming_the_owner(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine_id = first(sim)
    sim.hold_lease("my-db", machine_id, owner="someone@example.com", ttl=60)
    response = rest.post(f"/machines/{machine_id}/lease", params={"ttl": 120})
    assert response.status_code == 409
    match = HELD_BY.match(response.json()["error"])
    assert match and match["owner"] == "someone@example.com"


def test_a_lease_past_its_ttl_no_longer_exists(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = first(sim)
    sim.hold_lease("my-db", machine_id, owner="someone@example.com", ttl=0.3)
    assert rest.post(f"/machines/{machine_id}/lease").status_code == 409
    time.sleep(0.35)
    assert rest.post(f"/machines/{machine_id}/lease", params={"ttl": 5}).status_code == 201


def test_lease_ttl_must_be_a_positive_whole_number(sim: Simulator, rest: httpx.Client) -> None:
    sim.rate_limits = RateLimits.off()  # four acquisitions in a row: this is about validation
    for ttl in ("0", "-3", "1.5", "soon"):
        assert rest.post(f"/machines/{first(sim)}/lease", params={"ttl": ttl}).status_code == 400


# ------------------------------------------------------------------------------------- updates
def test_update_while_leased_needs_the_current_nonce(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = first(sim)
    nonce = lease(rest, machine_id)
    body = update_body(rest, machine_id)
    missing = rest.post(f"/machines/{machine_id}", json=body)
    assert missing.status_code == 409 and HELD_BY.match(missing.json()["error"])
    wrong = rest.post(
        f"/machines/{machine_id}", json=body, headers={"fly-machine-lease-nonce": "deadbeef0000"}
    )
    assert wrong.status_code == 409
    assert sim.app("my-db").machines[0].update_count == 0
    ok = rest.post(f"/machines/{machine_id}", json=body, headers={"fly-machine-lease-nonce": nonce})
    assert ok.status_code == 200


def test_update_without_a_lease_needs_no_nonce(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = first(sim)
    assert rest.post(f"/machines/{machine_id}", json=update_body(rest, machine_id)).is_success


def test_a_nonce_of_a_released_lease_is_refused(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = first(sim)
    nonce = lease(rest, machine_id)
    rest.delete(f"/machines/{machine_id}/lease", headers={"fly-machine-lease-nonce": nonce})
    stale = rest.post(
        f"/machines/{machine_id}",
        json=update_body(rest, machine_id),
        headers={"fly-machine-lease-nonce": nonce},
    )
    assert stale.status_code == 409


def test_update_needs_the_whole_config(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = first(sim)
    body = update_body(rest, machine_id)
    del body["config"]["image"]
    no_image = rest.post(f"/machines/{machine_id}", json=body)
    assert no_image.status_code == 422 and "image" in no_image.json()["error"]
    no_config = rest.post(f"/machines/{machine_id}", json={"region": "iad"})
    assert no_config.status_code == 422
    assert sim.app("my-db").machines[0].update_count == 0


def test_update_cannot_move_region_or_drop_the_volume(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = first(sim)
    moved = update_body(rest, machine_id) | {"region": "ord"}
    assert rest.post(f"/machines/{machine_id}", json=moved).status_code == 400
    unmounted = update_body(rest, machine_id)
    unmounted["config"]["mounts"] = []
    assert rest.post(f"/machines/{machine_id}", json=unmounted).status_code == 422


def test_update_rejects_unknown_handlers(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = first(sim)
    body = update_body(rest, machine_id)
    body["config"]["services"][0]["ports"][0]["handlers"] = ["pgtls"]
    assert rest.post(f"/machines/{machine_id}", json=body).status_code == 422


def test_update_replaces_the_machine_with_a_new_instance_id(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine = sim.app("my-db").machines[1]
    old_instance = machine.instance_id
    body = update_body(rest, machine.id)
    body["config"]["image"] = "registry-1.docker.io/flyio/postgres-flex:16.6"
    response = rest.post(f"/machines/{machine.id}", json=body)
    updated = response.json()
    assert updated["state"] == "replacing"
    assert len(updated["instance_id"]) == 26 and updated["instance_id"] != old_instance
    assert updated["checks"] == []  # the new version has run no check yet
    ref = updated["image_ref"]
    assert (ref["registry"], ref["repository"], ref["tag"]) == (
        "registry-1.docker.io",
        "flyio/postgres-flex",
        "16.6",
    )
    assert ref["digest"].startswith("sha256:") and ref["labels"]["fly.pg-manager"] == "repmgr"

    waited = rest.get(
        f"/machines/{machine.id}/wait",
        params={"state": "started", "timeout": 10, "version": updated["instance_id"]},
    )
    assert waited.status_code == 200
    assert waited.json()["ok"] is True and waited.json()["state"] == "started"
    assert sim.wait_for(lambda: machine.healthy)
    after = rest.get(f"/machines/{machine.id}").json()
    assert {c["name"]: c["output"] for c in after["checks"]}["role"] == "replica"
    assert after["events"][0]["status"] == "started"


# ----------------------------------------------------------------------------------------- wait
def test_wait_times_out_with_408_deadline_exceeded(flysim: Callable[..., Simulator]) -> None:
    sim = flysim(apps={"my-db": {"machines": 1}}, postgres=False, token=TOKEN, restart_seconds=30)
    machine_id = sim.app("my-db").machines[0].id
    base = f"{sim.flaps_base_url}/v1/apps/my-db/machines/{machine_id}"
    config = httpx.get(base, headers=AUTH).json()["config"]
    httpx.post(base, json={"config": config, "region": "iad"}, headers=AUTH)
    started = time.monotonic()
    response = httpx.get(f"{base}/wait", params={"state": "started", "timeout": 1}, headers=AUTH)
    assert time.monotonic() - started >= 0.9
    assert response.status_code == 408
    assert response.json() == {
        "error": "deadline_exceeded: machine failed to reach desired state, started, "
        "currently replacing"
    }


@pytest.mark.parametrize(
    "params",
    [
        {"state": "started", "timeout": "61"},
        {"state": "started", "timeout": "soon"},
        {"state": "running"},
    ],
)
def test_wait_rejects_bad_arguments_with_400(
    sim: Simulator, rest: httpx.Client, params: dict[str, str]
) -> None:
    assert rest.get(f"/machines/{first(sim)}/wait", params=params).status_code == 400


def test_wait_takes_repeated_or_comma_states_and_the_legacy_instance_id(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine = sim.app("my-db").machines[0]
    repeated = rest.get(
        f"/machines/{machine.id}/wait?state=stopped&state=started&instance_id={machine.instance_id}"
    )
    assert repeated.status_code == 200 and repeated.json()["version"] == machine.instance_id
    comma = rest.get(
        f"/machines/{machine.id}/wait",
        params={"state": "stopped,started", "version": machine.instance_id},
    )
    assert comma.status_code == 200
    unknown = rest.get(f"/machines/{machine.id}/wait", params={"version": "01" + "X" * 24})
    assert unknown.status_code == 404


def test_wait_for_an_old_version_sees_it_replaced(sim: Simulator, rest: httpx.Client) -> None:
    machine = sim.app("my-db").machines[0]
    old = machine.instance_id
    rest.post(f"/machines/{machine.id}", json=update_body(rest, machine.id))
    settled = rest.get(
        f"/machines/{machine.id}/wait", params={"state": "settled", "version": old, "timeout": 5}
    )
    assert settled.json()["state"] == "replaced"


# ------------------------------------------------------------------------------ ip_assignments
def test_ip_assignments_share_the_graphql_ip_store(sim: Simulator, rest: httpx.Client) -> None:
    created = rest.post(
        "/ip_assignments",
        json={"type": "v4", "region": "", "org_slug": "", "network": "", "service_name": ""},
    )
    assert created.status_code == 200
    address = created.json()["ip"]
    assert created.json()["region"] == "global" and created.json()["shared"] is False
    assert [ip.address for ip in sim.app("my-db").public_v4] == [address]
    rest.post("/ip_assignments", json={"type": "shared_v4"})
    listed = rest.get("/ip_assignments").json()["ips"]
    assert {(ip["ip"], ip["shared"]) for ip in listed} >= {
        (address, False),
        (sim.app("my-db").shared_ip, True),
    }
    flycast = next(ip for ip in listed if ip["ip"].startswith("fdaa:"))
    assert flycast["network"]["name"] == "default"
    assert rest.delete(f"/ip_assignments/{address}").status_code == 204
    assert sim.app("my-db").public_v4 == []
    assert rest.delete(f"/ip_assignments/{address}").status_code == 404


def test_a_body_that_is_not_json_is_a_400(sim: Simulator, rest: httpx.Client) -> None:
    response = rest.post(
        f"/machines/{first(sim)}", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "error" in response.json()
