"""Faults fire exactly when armed, and the request log / timeline record what happened."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from flysim import Simulator

GraphQL = Callable[..., httpx.Response]

ALLOCATE = """mutation($input: AllocateIPAddressInput!) { allocateIpAddress(input: $input) {
ipAddress { id address type region createdAt } } }"""


def update(rest: httpx.Client, machine_id: str, nonce: str | None = None) -> httpx.Response:
    machine = rest.get(f"/machines/{machine_id}").json()
    headers = {"fly-machine-lease-nonce": nonce} if nonce else {}
    return rest.post(
        f"/machines/{machine_id}",
        json={"config": machine["config"], "region": machine["region"]},
        headers=headers,
    )


def test_fail_next_hits_only_matching_requests(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.fail_next(2, status=503, path_contains="/machines")
    assert rest.get(f"{sim.flaps_base_url}/v1/apps/my-db").status_code == 200  # no match
    first = rest.get("/machines")
    assert first.status_code == 503 and first.json()["error"]
    assert first.headers["fly-request-id"]
    assert rest.get("/machines").status_code == 503
    assert rest.get("/machines").status_code == 200
    assert [r.fault for r in sim.requests] == [None, "fail:503", "fail:503", None]
    assert sim.faults.pending == []


def test_fail_next_can_target_a_graphql_operation(
    sim: Simulator, gql: GraphQL, rest: httpx.Client
) -> None:
    sim.faults.fail_next(1, status=502, operation="allocateIpAddress")
    assert gql('{ app(name: "my-db") { id } }').status_code == 200
    assert rest.post("/machines/nope/lease").status_code == 404
    assert gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v4"}}).status_code == 502
    assert sim.app("my-db").public_v4 == []


def test_allocation_faults_can_target_one_ip_type(sim: Simulator, gql: GraphQL) -> None:
    # Each rule is first offered an allocation of the other type, which must leave it armed:
    # without the filter, that allocation would take it.
    sim.faults.fail_next(1, status=503, operation="allocateIpAddress", ip_type="v6")
    assert gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v4"}}).status_code == 200
    assert [(r.kind, r.ip_type) for r in sim.faults.pending] == [("fail", "v6")]
    assert gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v6"}}).status_code == 503
    assert sim.faults.pending == []
    assert len(sim.app("my-db").public_v4) == 1 and sim.app("my-db").public_v6 == []

    sim.faults.lose_allocation_response(1, ip_type="v4")
    assert gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v6"}}).status_code == 200
    assert [(r.kind, r.ip_type) for r in sim.faults.pending] == [("lose_allocation", "v4")]
    with pytest.raises(httpx.TransportError):  # v4 committed, its answer lost
        gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v4"}})
    assert sim.faults.pending == []
    assert len(sim.app("my-db").public_v4) == 2 and len(sim.app("my-db").public_v6) == 1
    assert [r.fault for r in sim.requests] == [None, "fail:503", None, "lose_allocation"]


def test_ip_type_filter_reads_the_rest_allocation_body(sim: Simulator, rest: httpx.Client) -> None:
    # The Machines API's ip_assignments carries the type in its JSON body, not in variables.
    sim.faults.fail_next(1, status=503, ip_type="v6")
    sim.faults.lose_allocation_response(1, ip_type="v4")
    assert rest.post("/ip_assignments", json={"type": "shared_v4"}).status_code == 200
    assert len(sim.faults.pending) == 2
    assert rest.post("/ip_assignments", json={"type": "v6"}).status_code == 503
    with pytest.raises(httpx.TransportError):  # committed, its answer lost
        rest.post("/ip_assignments", json={"type": "v4"})
    assert sim.faults.pending == []
    assert len(sim.app("my-db").public_v4) == 1 and sim.app("my-db").public_v6 == []


def test_rate_limit_sends_retry_after_when_asked(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.rate_limit_next(1, retry_after=2)
    sim.faults.rate_limit_next(1, retry_after=None)
    limited = rest.get("/machines")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    bare = rest.get("/machines")
    assert bare.status_code == 429 and "Retry-After" not in bare.headers
    assert rest.get("/machines").status_code == 200


def test_reset_closes_the_connection_without_an_answer(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.reset_next(1, method="GET")
    with pytest.raises(httpx.TransportError):
        rest.get("/machines")
    assert rest.get("/machines").status_code == 200
    reset, ok = sim.requests
    assert reset.status is None and reset.fault == "reset"
    assert ok.status == 200


def test_reset_after_commit_keeps_the_effect(sim: Simulator, rest: httpx.Client) -> None:
    machine = sim.app("my-db").machines[0]
    sim.faults.reset_next(1, path_contains="/lease", method="POST", after_commit=True)
    with pytest.raises(httpx.TransportError):
        rest.post(f"/machines/{machine.id}/lease", params={"ttl": 60})
    assert machine.active_lease() is not None
    assert rest.post(f"/machines/{machine.id}/lease").status_code == 409


def test_lost_allocation_response_still_allocates(
    sim: Simulator, gql: GraphQL, rest: httpx.Client
) -> None:
    sim.faults.lose_allocation_response(1)
    # A failed allocation does not use the fault up.
    assert gql(ALLOCATE, {"input": {"appId": "nope", "type": "v4"}}).json()["errors"]
    with pytest.raises(httpx.TransportError):
        gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v4", "region": ""}})
    assert len(sim.app("my-db").public_v4) == 1  # committed: the client must re-list
    assert rest.post("/ip_assignments", json={"type": "v4"}).status_code == 200
    assert len(sim.app("my-db").public_v4) == 2


def test_slow_next_delays_the_answer(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.slow_next(1, seconds=0.5, path_contains="/machines")
    with pytest.raises(httpx.ReadTimeout):
        rest.get("/machines", timeout=0.2)
    started = time.monotonic()
    assert rest.get("/machines").status_code == 200
    assert time.monotonic() - started < 0.5


def test_latency_applies_to_every_request(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.latency = 0.15
    rest.get(f"{sim.flaps_base_url}/v1/apps/my-db")
    (record,) = sim.requests
    assert record.duration is not None and record.duration >= 0.15


def test_wait_timeout_next_answers_408(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = sim.app("my-db").machines[0].id
    sim.faults.wait_timeout_next(1)
    timed_out = rest.get(f"/machines/{machine_id}/wait", params={"state": "started"})
    assert timed_out.status_code == 408
    assert timed_out.json()["error"].startswith("deadline_exceeded: ")
    assert rest.get(f"/machines/{machine_id}/wait", params={"state": "started"}).status_code == 200


def test_a_never_healthy_machine_starts_but_keeps_failing_checks(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine = sim.app("my-db").machines[2]
    sim.faults.never_healthy(machine.id)
    update(rest, machine.id)
    waited = rest.get(f"/machines/{machine.id}/wait", params={"state": "started", "timeout": 5})
    assert waited.status_code == 200
    # The checks run after the grace period, fail, and keep failing.
    assert sim.wait_for(lambda: bool(machine.checks))
    assert not sim.wait_for(lambda: machine.checks_passing, timeout=0.5)
    checks = rest.get(f"/machines/{machine.id}").json()["checks"]
    assert {c["name"] for c in checks} == {"pg", "role", "vm"}
    assert {c["status"] for c in checks} == {"critical"}
    assert sim.max_machines_down("my-db") == 1
    assert [c.reason for c in sim.timeline("my-db") if c.machine_id == machine.id][-1] == (
        "checks_critical"
    )


def test_failover_after_k_updates_moves_the_primary(sim: Simulator, rest: httpx.Client) -> None:
    app = sim.app("my-db")
    primary = app.primary_id
    replicas = [m for m in app.machines if m.id != primary]
    sim.faults.failover_after_updates("my-db", 2)
    update(rest, replicas[0].id)
    assert sim.wait_for(lambda: replicas[0].healthy)
    assert app.primary_id == primary
    update(rest, replicas[1].id)
    assert sim.wait_for(lambda: app.primary_id != primary)
    assert sim.wait_for(lambda: replicas[1].healthy)
    roles = {
        m["id"]: next(c["output"] for c in m["checks"] if c["name"] == "role")
        for m in rest.get("/machines").json()
    }
    assert sorted(roles.values()) == ["primary", "replica", "replica"]
    assert roles[primary or ""] == "replica"
    assert any(c.reason == "failover" for c in sim.timeline("my-db"))


def test_max_machines_down_measures_concurrent_restarts(sim: Simulator, rest: httpx.Client) -> None:
    machines = sim.app("my-db").machines
    for machine in machines[:2]:
        update(rest, machine.id)
        assert sim.wait_for(lambda m=machine: m.healthy)  # type: ignore[misc]
    assert sim.max_machines_down("my-db") == 1
    sim.restart_seconds = 0.5  # long enough for the three updates below to overlap
    for machine in machines:
        update(rest, machine.id)
    assert sim.wait_for(lambda: all(m.healthy for m in machines))
    assert sim.max_machines_down("my-db") == 3
    reasons = [c.reason for c in sim.timeline("my-db") if c.machine_id == machines[0].id]
    assert reasons == ["seed"] + ["update", "restarted", "checks_passing"] * 2


def test_request_log_records_what_tests_assert_on(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = sim.app("my-db").machines[0].id
    lease = rest.post(f"/machines/{machine_id}/lease", json={"ttl": 30})
    nonce = lease.json()["data"]["nonce"]
    rest.get(f"/machines/{machine_id}/wait?state=started&state=suspended&timeout=5")
    update(rest, machine_id, nonce)
    rest.delete(f"/machines/{machine_id}/lease", headers={"fly-machine-lease-nonce": nonce})
    records = sim.requests
    acquire, wait, get, post, release = records
    assert acquire.json == {"ttl": 30} and acquire.content_type == "application/json"
    assert wait.query == {"state": "started,suspended", "timeout": "5"}
    assert (post.method, post.has_lease_nonce, post.status) == ("POST", True, 200)
    assert release.has_lease_nonce and not get.has_lease_nonce
    assert all(r.ended is not None and r.ended >= r.started for r in records)
    assert all(r.request_id for r in records)
    assert sim.mutating_requests() == [acquire, post, release]
    sim.clear_requests()
    assert sim.requests == []
