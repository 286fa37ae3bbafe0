"""The Machines API's metadata endpoints (fly-go `SetMetadata` / `GetMetadata` /
`DeleteMetadata`): they change `config.metadata` without a new version, and are as strict as the
other machine endpoints about unknown machines, bad input, unreachable hosts, rate limits and
injected faults."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from flysim import Simulator

SEEDED = {
    "fly_flyctl_version": "0.3.45",
    "fly_platform_version": "v2",
    "fly-managed-postgres": "true",
    "managed-by-fly-deploy": "true",
}


def machine_ids(sim: Simulator) -> list[str]:
    return [m.id for m in sim.app("my-db").machines]


def set_key(rest: httpx.Client, machine_id: str, key: str, value: Any) -> httpx.Response:
    return rest.post(f"/machines/{machine_id}/metadata/{key}", json={"value": value})


# ------------------------------------------------------------------------------- round trip
def test_set_get_and_delete_round_trip_through_config_metadata(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine_id = machine_ids(sim)[0]
    assert sim.machine_metadata("my-db", machine_id) == SEEDED

    created = set_key(rest, machine_id, "fly-pg-external.rollout", "abc-123")
    assert created.status_code == 204 and created.content == b""
    assert "Content-Type" not in created.headers

    listed = rest.get(f"/machines/{machine_id}/metadata")
    assert listed.status_code == 200
    assert listed.json() == SEEDED | {"fly-pg-external.rollout": "abc-123"}
    assert sim.machine_metadata("my-db", machine_id) == listed.json()

    deleted = rest.delete(f"/machines/{machine_id}/metadata/fly-pg-external.rollout")
    assert deleted.status_code == 204 and deleted.content == b""
    assert sim.machine_metadata("my-db", machine_id) == SEEDED
    machine = rest.get(f"/machines/{machine_id}").json()
    assert machine["config"]["metadata"] == SEEDED


def test_the_helper_returns_a_copy(sim: Simulator) -> None:
    machine_id = machine_ids(sim)[0]
    sim.machine_metadata("my-db", machine_id)["injected"] = "x"
    assert "injected" not in sim.machine_metadata("my-db", machine_id)


def test_deleting_a_key_that_is_not_there_is_204(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = machine_ids(sim)[0]
    assert rest.delete(f"/machines/{machine_id}/metadata/never-set").status_code == 204
    assert sim.machine_metadata("my-db", machine_id) == SEEDED


def test_an_empty_string_is_a_value(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = machine_ids(sim)[0]
    assert set_key(rest, machine_id, "empty", "").status_code == 204
    assert sim.machine_metadata("my-db", machine_id)["empty"] == ""


# ------------------------------------------------------------------------ no new version
def test_setting_metadata_makes_no_new_version_no_restart_and_no_timeline_entry(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine_id = machine_ids(sim)[1]
    before = rest.get(f"/machines/{machine_id}").json()
    timeline = sim.timeline("my-db")

    assert set_key(rest, machine_id, "role-hint", "blue").status_code == 204
    assert rest.delete(f"/machines/{machine_id}/metadata/fly_flyctl_version").status_code == 204
    time.sleep(0.2)  # longer than the fixture's restart_seconds: a restart would have finished

    after = rest.get(f"/machines/{machine_id}").json()
    assert after["instance_id"] == before["instance_id"]
    assert after["state"] == before["state"] == "started"
    assert after["events"] == before["events"]
    assert after["checks"] == before["checks"]
    expected = {k: v for k, v in SEEDED.items() if k != "fly_flyctl_version"}
    assert after["config"]["metadata"] == expected | {"role-hint": "blue"}
    assert {k: v for k, v in after["config"].items() if k != "metadata"} == {
        k: v for k, v in before["config"].items() if k != "metadata"
    }
    assert sim.timeline("my-db") == timeline
    assert sim.max_machines_down("my-db") == 0
    machine = sim.app("my-db").machine(machine_id)
    assert machine is not None and machine.update_count == 0 and machine.previous_versions == []

    listed = rest.get("/machines").json()
    (shown,) = [m for m in listed if m["id"] == machine_id]
    assert shown["config"]["metadata"]["role-hint"] == "blue"
    assert shown["instance_id"] == before["instance_id"]


def test_list_machines_filters_on_a_value_set_through_the_endpoint(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine_id = machine_ids(sim)[2]
    assert set_key(rest, machine_id, "color", "green").status_code == 204
    found = rest.get("/machines", params={"metadata.color": "green"}).json()
    assert [m["id"] for m in found] == [machine_id]


def test_a_lease_held_by_someone_else_does_not_block_metadata(
    sim: Simulator, rest: httpx.Client
) -> None:
    # fly-go sends no nonce here; whether Fly refuses is UNCONFIRMED, we take that it does not.
    machine_id = machine_ids(sim)[0]
    sim.hold_lease("my-db", machine_id, owner="someone@example.com", ttl=60)
    assert set_key(rest, machine_id, "k", "v").status_code == 204
    assert rest.get(f"/machines/{machine_id}/metadata").json()["k"] == "v"
    assert rest.delete(f"/machines/{machine_id}/metadata/k").status_code == 204
    assert "k" not in sim.machine_metadata("my-db", machine_id)
    assert not any(r.has_lease_nonce for r in sim.requests)


# ------------------------------------------------------------------------ updates replace it
def test_an_update_keeps_the_metadata_its_config_carries(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine_id = machine_ids(sim)[0]
    assert set_key(rest, machine_id, "kept", "yes").status_code == 204
    machine = rest.get(f"/machines/{machine_id}").json()
    updated = rest.post(
        f"/machines/{machine_id}", json={"config": machine["config"], "region": machine["region"]}
    )
    assert updated.status_code == 200
    assert updated.json()["config"]["metadata"]["kept"] == "yes"
    assert sim.machine_metadata("my-db", machine_id)["kept"] == "yes"


def test_an_update_whose_config_lacks_the_key_erases_it(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = machine_ids(sim)[0]
    assert set_key(rest, machine_id, "erased", "soon").status_code == 204
    config = rest.get(f"/machines/{machine_id}").json()["config"]
    config["metadata"] = {k: v for k, v in config["metadata"].items() if k != "erased"}
    updated = rest.post(f"/machines/{machine_id}", json={"config": config})
    assert updated.status_code == 200
    assert updated.json()["config"]["metadata"] == SEEDED
    assert sim.machine_metadata("my-db", machine_id) == SEEDED

    del config["metadata"]  # an update without any metadata leaves none
    assert rest.post(f"/machines/{machine_id}", json={"config": config}).status_code == 200
    assert rest.get(f"/machines/{machine_id}/metadata").json() == {}
    assert set_key(rest, machine_id, "fresh", "1").status_code == 204
    assert sim.machine_metadata("my-db", machine_id) == {"fresh": "1"}


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", "/metadata"), ("POST", "/metadata/k"), ("DELETE", "/metadata/k")],
    ids=["get", "set", "delete"],
)
def test_an_unknown_app_or_machine_is_404(
    sim: Simulator, rest: httpx.Client, method: str, suffix: str
) -> None:
    body = {"value": "v"} if method == "POST" else None
    known = machine_ids(sim)[0]
    other_app = rest.request(
        method, f"{sim.flaps_base_url}/v1/apps/nope/machines/{known}{suffix}", json=body
    )
    assert (other_app.status_code, other_app.json()) == (404, {"error": "app not found"})
    missing = rest.request(method, f"/machines/0123456789abcd{suffix}", json=body)
    assert (missing.status_code, missing.json()) == (404, {"error": "machine not found"})
    destroyed = sim.app("my-db").machines[2]
    with sim.lock:
        destroyed.state = "destroyed"
    gone = rest.request(method, f"/machines/{destroyed.id}{suffix}", json=body)
    assert gone.status_code == 404


@pytest.mark.parametrize(
    "body",
    [None, {}, {"value": 1}, {"value": None}, {"value": ["a"]}, {"val": "a"}, ["a"], "a"],
    ids=["none", "empty", "int", "null", "list", "wrong-name", "array", "string"],
)
def test_a_set_without_a_string_value_is_400(sim: Simulator, rest: httpx.Client, body: Any) -> None:
    machine_id = machine_ids(sim)[0]
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    response = rest.post(f"/machines/{machine_id}/metadata/k", **kwargs)
    assert response.status_code == 400 and response.json()["error"]
    assert sim.machine_metadata("my-db", machine_id) == SEEDED


def test_a_set_whose_body_is_not_json_is_400(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = machine_ids(sim)[0]
    response = rest.post(
        f"/machines/{machine_id}/metadata/k",
        content=b"value=v",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert sim.machine_metadata("my-db", machine_id) == SEEDED


@pytest.mark.parametrize(
    "key", ["bad%20key", "a%2Fb", "k%C3%A9", "a:b", "a%40b", "..", "."], ids=repr
)
@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_key_outside_letters_digits_dot_dash_underscore_is_400(
    sim: Simulator, method: str, key: str
) -> None:
    machine_id = machine_ids(sim)[0]
    # http.client sends the path as written: httpx would resolve `.` and `..` away.
    target = urlsplit(sim.flaps_base_url)
    connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=5)
    try:
        connection.request(
            method,
            f"/v1/apps/my-db/machines/{machine_id}/metadata/{key}",
            body=json.dumps({"value": "v"}) if method == "POST" else None,
            headers={"Authorization": "Bearer fo1_testtoken", "Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        response = httpx.Response(answer.status, content=answer.read())
    finally:
        connection.close()
    assert response.status_code == 400, (key, response.text)
    assert "invalid metadata key" in response.json()["error"]
    assert sim.machine_metadata("my-db", machine_id) == SEEDED


def test_the_allowed_key_characters_are_accepted(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = machine_ids(sim)[0]
    assert set_key(rest, machine_id, "Az09_.-", "ok").status_code == 204
    assert sim.machine_metadata("my-db", machine_id)["Az09_.-"] == "ok"


def test_a_machine_on_an_unreachable_host_is_503(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = machine_ids(sim)[0]
    sim.set_host_status("my-db", machine_id, "unreachable")
    timeline = sim.timeline("my-db")
    answers = [
        rest.get(f"/machines/{machine_id}/metadata"),
        set_key(rest, machine_id, "k", "v"),
        rest.delete(f"/machines/{machine_id}/metadata/fly_platform_version"),
    ]
    assert [a.status_code for a in answers] == [503, 503, 503]
    assert all("host unreachable" in a.json()["error"] for a in answers)
    assert sim.machine_metadata("my-db", machine_id) == SEEDED
    assert sim.timeline("my-db") == timeline
    other = machine_ids(sim)[1]  # another machine's host is fine
    assert set_key(rest, other, "k", "v").status_code == 204


# ------------------------------------------------------------------------------ rate limits
def test_metadata_shares_one_bucket_per_machine_and_429s_after_a_burst_of_three(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine_id, other = machine_ids(sim)[:2]
    answers = [
        set_key(rest, machine_id, "a", "1").status_code,
        rest.get(f"/machines/{machine_id}/metadata").status_code,
        rest.delete(f"/machines/{machine_id}/metadata/a").status_code,
    ]
    assert answers == [204, 200, 204]
    limited = set_key(rest, machine_id, "b", "2")
    assert limited.status_code == 429
    assert limited.json() == {"error": "rate limit exceeded"}
    assert limited.headers["Retry-After"] == "1"
    assert "b" not in sim.machine_metadata("my-db", machine_id)  # a 429 is not processed
    (throttled,) = sim.throttled()
    assert throttled.path.endswith(f"/machines/{machine_id}/metadata/b")
    # Per machine, and apart from the machine's other actions.
    assert set_key(rest, other, "b", "2").status_code == 204
    assert rest.get(f"/machines/{machine_id}").status_code == 200
    time.sleep(1)  # one token comes back
    assert set_key(rest, machine_id, "b", "2").status_code == 204
    assert set_key(rest, machine_id, "c", "3").status_code == 429


# ----------------------------------------------------------------------------------- faults
def test_a_fault_injected_on_the_metadata_path_is_answered(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine_id = machine_ids(sim)[0]
    base = f"/v1/apps/my-db/machines/{machine_id}/metadata"
    sim.faults.fail_next(1, status=503, path=f"{base}/k")
    sim.faults.fail_next(1, status=502, path=base)

    failed = set_key(rest, machine_id, "k", "v")
    assert failed.status_code == 503 and failed.json()["error"]
    assert "k" not in sim.machine_metadata("my-db", machine_id)  # not processed
    listed = rest.get(f"/machines/{machine_id}/metadata")
    assert listed.status_code == 502
    assert sim.faults.pending == []
    assert [r.fault for r in sim.requests] == ["fail:503", "fail:502"]


def test_a_timeout_after_commit_on_the_metadata_path_keeps_the_value(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine_id = machine_ids(sim)[0]
    path = f"/v1/apps/my-db/machines/{machine_id}/metadata/k"
    sim.faults.timeout_next(1, path=path, after_commit=True)
    sim.faults.timeout_next(1, path=path, method="DELETE")

    timed_out = set_key(rest, machine_id, "k", "v")
    assert timed_out.status_code == 408
    assert timed_out.json()["error"].startswith("deadline_exceeded")
    assert sim.machine_metadata("my-db", machine_id)["k"] == "v"  # it landed
    not_deleted = rest.delete(f"/machines/{machine_id}/metadata/k")
    assert not_deleted.status_code == 408
    assert sim.machine_metadata("my-db", machine_id)["k"] == "v"  # it did not
    assert [r.fault for r in sim.requests] == ["timeout:408:after_commit", "timeout:408"]
