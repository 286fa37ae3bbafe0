"""The simulator is as strict as the real Fly where a kinder one would hide bugs
(docs/fly-behaviour.md): empty checks right after a start, `created` after a skip_launch update,
408 on any endpoint (also after the change landed), unreachable hosts, rate limits with
Retry-After, both wait parameters, and a refused stale `current_version`."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from flysim import Rate, RateLimits, Simulator
from flysim.models import check_names
from flysim.ratelimit import RateLimiter

TOKEN = "fo1_testtoken"  # what the `sim` fixture (tests/sim/conftest.py) accepts
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GraphQL = Callable[..., httpx.Response]

ALLOCATE = """mutation($input: AllocateIPAddressInput!) { allocateIpAddress(input: $input) {
ipAddress { id address type region createdAt } } }"""


def make(flysim: Callable[..., Simulator], **kwargs: Any) -> Simulator:
    """Like the `sim` fixture, with other simulator settings."""
    apps = kwargs.pop("apps", {"my-db": {"machines": 3}})
    return flysim(
        apps=apps, postgres=False, token=TOKEN, public_port_map={5432: 0, 5433: 0}, **kwargs
    )


def machines_api(sim: Simulator, app: str = "my-db") -> httpx.Client:
    return httpx.Client(base_url=f"{sim.flaps_base_url}/v1/apps/{app}", headers=AUTH)


def update(rest: httpx.Client, machine_id: str, **extra: Any) -> httpx.Response:
    machine = rest.get(f"/machines/{machine_id}").json()
    body = {"config": machine["config"], "region": machine["region"], "skip_secrets": False}
    return rest.post(f"/machines/{machine_id}", json=body | extra)


def statuses(sim: Simulator, machine_id: str) -> dict[str, str]:
    with machines_api(sim) as rest:
        checks = rest.get(f"/machines/{machine_id}").json()["checks"]
    return {c["name"]: c["status"] for c in checks}


# ------------------------------------------------------------- 1. empty checks after a start
def test_a_started_machine_has_no_checks_until_its_first_run(
    flysim: Callable[..., Simulator],
) -> None:
    sim = make(flysim, check_grace_seconds=1.0)
    machine = sim.app("my-db").machines[1]
    with machines_api(sim) as rest:
        updated = update(rest, machine.id).json()
        assert updated["checks"] == []
        waited = rest.get(
            f"/machines/{machine.id}/wait",
            params={"state": "started", "version": updated["instance_id"], "timeout": 5},
        )
        assert waited.status_code == 200
        started = rest.get(f"/machines/{machine.id}").json()
        assert (started["state"], started["checks"]) == ("started", [])
        # "All of no checks pass" is not healthy: that was flyctl's bug (#4952).
        assert not machine.healthy
        assert sim.wait_for(lambda: machine.healthy, timeout=5)
    assert statuses(sim, machine.id) == {"pg": "passing", "role": "passing", "vm": "passing"}
    changes = [c for c in sim.timeline("my-db") if c.machine_id == machine.id]
    assert [(c.reason, c.state, c.healthy) for c in changes] == [
        ("seed", "started", True),
        ("update", "replacing", False),
        ("restarted", "started", False),
        ("checks_passing", "started", True),
    ]
    assert changes[3].at - changes[2].at >= 0.9  # down until the first run, not until started


def test_service_checks_are_part_of_health(sim: Simulator, rest: httpx.Client) -> None:
    machine = sim.app("my-db").machines[0]
    body = rest.get(f"/machines/{machine.id}").json()
    config = body["config"]
    config["services"][0]["checks"] = [{"type": "tcp", "interval": "15s", "timeout": "2s"}]
    response = rest.post(f"/machines/{machine.id}", json={"config": config, "region": "iad"})
    assert response.status_code == 200, response.text
    assert sim.wait_for(lambda: machine.healthy)
    assert statuses(sim, machine.id) == {
        "pg": "passing",
        "role": "passing",
        "vm": "passing",
        "servicecheck-00-tcp-5432": "passing",
    }
    # A list that lacks one defined check is not healthy, whatever the others say.
    partial = copy.deepcopy(machine)
    partial.checks = [c for c in partial.checks if not c.name.startswith("servicecheck-")]
    assert partial.state == "started" and not partial.healthy
    assert check_names({"checks": {}, "services": [{"internal_port": 8080, "checks": [{}]}]}) == [
        "servicecheck-00-tcp-8080"
    ]


def test_a_machine_whose_config_has_no_checks_is_healthy_once_started(
    flysim: Callable[..., Simulator],
) -> None:
    sim = make(flysim, apps={"web": {"postgres": False, "machines": 1}}, check_grace_seconds=5)
    machine = sim.app("web").machines[0]
    with machines_api(sim, "web") as rest:
        assert update(rest, machine.id).status_code == 200
        assert sim.wait_for(lambda: machine.state == "started")
        assert rest.get(f"/machines/{machine.id}").json()["checks"] == []
    assert machine.healthy  # nothing to wait for: no grace period needed
    assert sim.timeline("web")[-1].reason == "restarted" and sim.timeline("web")[-1].healthy


def test_a_never_healthy_machine_gets_critical_checks_after_the_grace_period(
    flysim: Callable[..., Simulator],
) -> None:
    sim = make(flysim, check_grace_seconds=0.3)
    machine = sim.app("my-db").machines[2]
    sim.faults.never_healthy(machine.id)
    with machines_api(sim) as rest:
        update(rest, machine.id)
    assert sim.wait_for(lambda: machine.state == "started")
    assert statuses(sim, machine.id) == {}
    assert sim.wait_for(lambda: bool(machine.checks))
    assert statuses(sim, machine.id) == {"pg": "critical", "role": "critical", "vm": "critical"}
    assert not machine.healthy


# ---------------------------------------------------------- 2. `created` after skip_launch
def test_skip_launch_update_leaves_the_machine_created(sim: Simulator, rest: httpx.Client) -> None:
    machine = sim.app("my-db").machines[0]
    version = update(rest, machine.id, skip_launch=True).json()["instance_id"]
    settled = rest.get(
        f"/machines/{machine.id}/wait",
        params={"state": "settled", "version": version, "timeout": 10},
    )
    assert (settled.status_code, settled.json()["state"]) == (200, "created")
    got = rest.get(f"/machines/{machine.id}").json()
    assert (got["state"], got["checks"]) == ("created", [])
    # `created` is persistent: it never becomes stopped by itself.
    stopped = rest.get(
        f"/machines/{machine.id}/wait",
        params={"state": "stopped", "version": version, "timeout": 1},
    )
    assert stopped.status_code == 408
    assert stopped.json() == {
        "error": "deadline_exceeded: machine failed to reach desired state, stopped, "
        "currently created"
    }
    assert machine.state == "created" and not machine.healthy


def test_waiting_for_stopped_needs_instance_id_or_version(
    flysim: Callable[..., Simulator],
) -> None:
    sim = make(flysim, apps={"my-db": {"machines": 2, "machine_states": ["started", "stopped"]}})
    stopped = sim.app("my-db").machines[1]
    with machines_api(sim) as rest:
        wait = f"/machines/{stopped.id}/wait"
        bare = rest.get(wait, params={"state": "stopped", "timeout": 1})
        assert bare.status_code == 400 and "instance_id" in bare.json()["error"]
        mixed = rest.get(wait, params={"state": "started,stopped", "timeout": 1})
        assert mixed.status_code == 400
        named = rest.get(wait, params={"state": "stopped", "instance_id": stopped.instance_id})
        assert (named.status_code, named.json()["state"]) == (200, "stopped")


# ------------------------------------------------------------------------- 3. 408 anywhere
def test_timeout_before_commit_answers_408_and_changes_nothing(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine = sim.app("my-db").machines[0]
    old = machine.instance_id
    sim.faults.timeout_next(path=f"/v1/apps/my-db/machines/{machine.id}", method="POST")
    response = update(rest, machine.id)
    assert response.status_code == 408
    assert response.json()["error"].startswith("deadline_exceeded: ")
    assert (machine.update_count, machine.instance_id) == (0, old)
    assert [r.fault for r in sim.requests] == [None, "timeout:408"]
    assert update(rest, machine.id).status_code == 200


def test_timeout_after_commit_lands_the_update_and_answers_408(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine = sim.app("my-db").machines[0]
    old = machine.instance_id
    sim.faults.timeout_next(
        path_contains=f"/machines/{machine.id}", method="POST", after_commit=True
    )
    response = update(rest, machine.id)
    assert response.status_code == 408
    assert response.json()["error"].startswith("deadline_exceeded: ")
    assert machine.update_count == 1
    landed = rest.get(f"/machines/{machine.id}").json()
    assert landed["instance_id"] != old and landed["state"] in {"replacing", "started"}
    assert sim.wait_for(lambda: machine.healthy)
    assert [r.fault for r in sim.requests] == [None, "timeout:408:after_commit", None]


def test_timeout_after_commit_keeps_the_lease(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = sim.app("my-db").machines[0].id
    sim.faults.timeout_next(path_contains="/lease", method="POST", after_commit=True)
    assert rest.post(f"/machines/{machine_id}/lease", params={"ttl": 60}).status_code == 408
    held = rest.get(f"/machines/{machine_id}/lease")
    assert held.status_code == 200 and held.json()["data"]["owner"] == sim.lease_owner
    # A blind retry finds the lease it was never told it got.
    assert rest.post(f"/machines/{machine_id}/lease", params={"ttl": 60}).status_code == 409


def test_timeout_can_hit_every_rest_endpoint(sim: Simulator, rest: httpx.Client) -> None:
    machine_id = sim.app("my-db").machines[0].id
    body = {"config": rest.get(f"/machines/{machine_id}").json()["config"], "region": "iad"}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "", {}),
        ("GET", "/machines", {}),
        ("GET", f"/machines/{machine_id}", {}),
        ("POST", f"/machines/{machine_id}", {"json": body}),
        ("GET", f"/machines/{machine_id}/wait", {"params": {"state": "started"}}),
        ("POST", f"/machines/{machine_id}/lease", {"params": {"ttl": 60}}),
        ("GET", f"/machines/{machine_id}/lease", {}),
        ("DELETE", f"/machines/{machine_id}/lease", {}),
        ("GET", "/ip_assignments", {}),
        ("POST", "/ip_assignments", {"json": {"type": "v4"}}),
        ("DELETE", "/ip_assignments/fdaa::1", {}),
    ]
    sim.clear_requests()
    for method, path, options in calls:
        sim.faults.timeout_next(path=f"/v1/apps/my-db{path}", method=method)
        response = rest.request(method, f"{sim.flaps_base_url}/v1/apps/my-db{path}", **options)
        assert response.status_code == 408, (method, path)
        assert response.json()["error"].startswith("deadline_exceeded: ")
    assert [r.fault for r in sim.requests] == ["timeout:408"] * len(calls)
    app = sim.app("my-db")
    assert app.machines[0].update_count == 0 and app.machines[0].lease is None
    assert app.public_v4 == []


def test_timeout_on_graphql_before_and_after_commit(sim: Simulator, gql: GraphQL) -> None:
    sim.faults.timeout_next(operation="allocateIpAddress", after_commit=True)
    allocated = gql(ALLOCATE, {"input": {"appId": "my-db", "type": "v4"}})
    assert allocated.status_code == 408
    assert allocated.json()["error"].startswith("deadline_exceeded: ")
    assert len(sim.app("my-db").public_v4) == 1  # it landed: the client must re-list
    sim.faults.timeout_next(operation="app")
    assert gql('{ app(name: "my-db") { id } }').status_code == 408
    assert [r.fault for r in sim.requests] == ["timeout:408:after_commit", "timeout:408"]


def test_timeout_seconds_delays_the_408(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.timeout_next(path="/v1/apps/my-db/machines", seconds=0.3)
    started = time.monotonic()
    assert rest.get("/machines").status_code == 408
    assert time.monotonic() - started >= 0.3


# -------------------------------------------------------------------- 4. unreachable hosts
def test_unreachable_host_has_incomplete_config_only(sim: Simulator, rest: httpx.Client) -> None:
    machine = sim.app("my-db").machines[1]
    before = rest.get(f"/machines/{machine.id}").json()
    sim.set_host_status("my-db", machine.id, "unreachable")
    got = rest.get(f"/machines/{machine.id}").json()
    assert got["host_status"] == "unreachable"
    assert got["config"] is None and got["incomplete_config"] == before["config"]
    assert got["state"] == "started" and got["instance_id"] == before["instance_id"]
    listed = {m["id"]: m for m in rest.get("/machines").json()}
    assert len(listed) == 3  # down, not absent
    assert listed[machine.id]["config"] is None
    assert listed[machine.id]["incomplete_config"] == before["config"]
    others = [m for m_id, m in listed.items() if m_id != machine.id]
    assert all(m["host_status"] == "ok" and m["config"] for m in others)
    assert all("incomplete_config" not in m for m in others)  # fly-go: omitempty

    sim.set_host_status("my-db", machine.id, "ok")
    back = rest.get(f"/machines/{machine.id}").json()
    assert back["host_status"] == "ok" and "incomplete_config" not in back
    assert back["config"] == before["config"]


def test_an_unreachable_machine_refuses_lease_update_and_wait_with_503(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine, other = sim.app("my-db").machines[:2]
    nonce = sim.hold_lease("my-db", machine.id, owner=sim.lease_owner)
    config = rest.get(f"/machines/{machine.id}").json()["config"]
    sim.set_host_status("my-db", machine.id, "unreachable")
    nonce_header = {"fly-machine-lease-nonce": nonce}
    responses = [
        rest.post(f"/machines/{machine.id}/lease", params={"ttl": 60}, headers=nonce_header),
        rest.get(f"/machines/{machine.id}/lease"),
        rest.delete(f"/machines/{machine.id}/lease", headers=nonce_header),
        rest.post(
            f"/machines/{machine.id}",
            json={"config": config, "region": "iad"},
            headers=nonce_header,
        ),
        rest.get(
            f"/machines/{machine.id}/wait",
            params={"state": "started", "version": machine.instance_id},
        ),
    ]
    for response in responses:
        assert response.status_code == 503, response.request.url
        assert response.json()["error"].startswith("host unreachable")
    assert machine.update_count == 0 and machine.active_lease() is not None
    assert rest.get(f"/machines/{machine.id}").status_code == 200  # reads still work
    assert rest.post(f"/machines/{other.id}/lease", params={"ttl": 60}).status_code == 201


def test_an_unreachable_machine_is_down_in_the_timeline(sim: Simulator) -> None:
    machine = sim.app("my-db").machines[0]
    sim.set_host_status("my-db", machine.id, "unreachable")
    assert not machine.healthy and sim.max_machines_down("my-db") == 1
    sim.set_host_status("my-db", machine.id, "unreachable")  # no change, no entry
    sim.set_host_status("my-db", machine.id, "ok")
    assert machine.healthy
    changes = [c for c in sim.timeline("my-db") if c.machine_id == machine.id]
    assert [(c.reason, c.state, c.healthy, c.host_status) for c in changes] == [
        ("seed", "started", True, "ok"),
        ("host_unreachable", "started", False, "unreachable"),
        ("host_ok", "started", True, "ok"),
    ]
    with pytest.raises(ValueError, match="host status"):
        sim.set_host_status("my-db", machine.id, "gone")


def test_an_unreachable_machine_shows_its_last_known_state(
    flysim: Callable[..., Simulator],
) -> None:
    sim = make(flysim, restart_seconds=0.3)
    machine = sim.app("my-db").machines[0]
    with machines_api(sim) as rest:
        assert update(rest, machine.id).json()["state"] == "replacing"
        sim.set_host_status("my-db", machine.id, "unreachable")
        assert sim.wait_for(lambda: machine.state == "started")  # flyd went on without us
        assert rest.get(f"/machines/{machine.id}").json()["state"] == "replacing"
        sim.set_host_status("my-db", machine.id, "ok")
        assert rest.get(f"/machines/{machine.id}").json()["state"] == "started"


# ------------------------------------------------------------------------- 5. rate limits
def test_list_machines_is_rate_limited_per_app_with_retry_after(
    flysim: Callable[..., Simulator],
) -> None:
    sim = make(flysim, apps={"my-db": {"machines": 1}, "other": {"machines": 1}})
    with httpx.Client(base_url=f"{sim.flaps_base_url}/v1/apps", headers=AUTH) as api:
        assert [api.get("/my-db/machines").status_code for _ in range(3)] == [200] * 3
        limited = api.get("/my-db/machines")
        assert limited.status_code == 429
        assert limited.json() == {"error": "rate limit exceeded"}
        assert limited.headers["Retry-After"] == "1"
        assert limited.headers["fly-request-id"]
        # Per app and per action: another app's list and this app's other actions go on.
        assert api.get("/other/machines").status_code == 200
        assert api.get("/my-db").status_code == 200
        (throttled,) = sim.throttled()
        assert (throttled.path, throttled.status, throttled.fault) == (
            "/v1/apps/my-db/machines",
            429,
            None,
        )
        # One token a second comes back, not a new burst.
        time.sleep(int(limited.headers["Retry-After"]))
        assert api.get("/my-db/machines").status_code == 200
        assert api.get("/my-db/machines").status_code == 429


def test_get_machine_allows_bursts_of_ten(sim: Simulator, rest: httpx.Client) -> None:
    first, second = (m.id for m in sim.app("my-db").machines[:2])
    assert [rest.get(f"/machines/{first}").status_code for _ in range(10)] == [200] * 10
    limited = rest.get(f"/machines/{first}")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert rest.get(f"/machines/{second}").status_code == 200  # per machine
    assert len(sim.throttled()) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("GET", "/ip_assignments"),
        ("POST", "/ip_assignments"),
        ("GET", "/machines/{id}/wait?state=started"),
        ("GET", "/machines/{id}/lease"),  # a 404 counts like any other answer
    ],
    ids=["get_app", "list_ips", "assign_ip", "wait", "get_lease"],
)
def test_other_actions_allow_bursts_of_three(
    sim: Simulator, rest: httpx.Client, method: str, path: str
) -> None:
    url = f"{sim.flaps_base_url}/v1/apps/my-db{path}".format(id=sim.app("my-db").machines[0].id)
    body = {"type": "private_v6"} if method == "POST" else None
    answers = [rest.request(method, url, json=body).status_code for _ in range(4)]
    assert 429 not in answers[:3] and answers[3] == 429
    assert len(sim.throttled()) == 1


def test_a_throttled_request_is_not_processed(sim: Simulator, rest: httpx.Client) -> None:
    machine = sim.app("my-db").machines[0]
    body = {"config": rest.get(f"/machines/{machine.id}").json()["config"], "region": "iad"}
    answers = [rest.post(f"/machines/{machine.id}", json=body).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    assert machine.update_count == 3


def test_lease_operations_have_a_bucket_each_per_machine(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine, other = (m.id for m in sim.app("my-db").machines[:2])
    nonce = rest.post(f"/machines/{machine}/lease", params={"ttl": 60}).json()["data"]["nonce"]
    header = {"fly-machine-lease-nonce": nonce}
    # A refresh is the same POST as an acquisition, so it draws from the same bucket.
    refreshes = [
        rest.post(f"/machines/{machine}/lease", params={"ttl": 60}, headers=header).status_code
        for _ in range(3)
    ]
    assert refreshes == [201, 201, 429]
    assert rest.get(f"/machines/{machine}/lease").status_code == 200
    assert rest.delete(f"/machines/{machine}/lease", headers=header).status_code == 200
    assert rest.post(f"/machines/{other}/lease", params={"ttl": 60}).status_code == 201


def test_injected_429s_are_not_counted_as_throttled(sim: Simulator, rest: httpx.Client) -> None:
    sim.faults.rate_limit_next(1, retry_after=5)
    injected = rest.get("/machines")
    assert injected.status_code == 429 and injected.headers["Retry-After"] == "5"
    assert sim.throttled() == [] and sim.requests[-1].fault == "rate_limit"
    # It never reached the API, so it used no token either.
    assert [rest.get("/machines").status_code for _ in range(3)] == [200] * 3


def test_graphql_is_not_rate_limited(sim: Simulator, gql: GraphQL) -> None:
    answers = {gql('{ app(name: "my-db") { id } }').status_code for _ in range(15)}
    assert answers == {200}
    assert sim.throttled() == []


def test_rate_limits_can_be_switched_off_or_changed(flysim: Callable[..., Simulator]) -> None:
    for limits in (RateLimits.off(), None):
        unlimited = make(flysim, apps={"my-db": {"machines": 1}}, rate_limits=limits)
        with machines_api(unlimited) as rest:
            assert {rest.get("/machines").status_code for _ in range(15)} == {200}
    slow = dataclasses.replace(RateLimits.fly(), list_machines=Rate(per_second=0.5, burst=1))
    strict = make(flysim, apps={"my-db": {"machines": 1}}, rate_limits=slow)
    assert strict.rate_limits == slow and not RateLimits.off().enabled
    with machines_api(strict) as rest:
        assert rest.get("/machines").status_code == 200
        limited = rest.get("/machines")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
        strict.rate_limits = RateLimits.off()
        assert rest.get("/machines").status_code == 200


def test_retry_after_is_the_time_until_a_token_is_free_rounded_up() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimits.fly(), clock=lambda: now[0])
    assert [limiter.take("list_machines", "my-db") for _ in range(3)] == [None] * 3
    assert limiter.take("list_machines", "my-db") == 1
    assert limiter.take("list_machines", "other-app") is None
    now[0] = 0.5
    assert limiter.take("list_machines", "my-db") == 1  # half a token: 0.5 s, at least 1
    now[0] = 1.0
    assert limiter.take("list_machines", "my-db") is None
    now[0] = 100.0
    assert [limiter.take("list_machines", "my-db") for _ in range(4)] == [None] * 3 + [1]
    assert [limiter.take("get_machine", "m1") for _ in range(11)] == [None] * 10 + [1]
    slow = RateLimiter(RateLimits(wait=Rate(per_second=0.25, burst=1)), clock=lambda: now[0])
    assert [slow.take("wait", "m1"), slow.take("wait", "m1")] == [None, 4]
    with pytest.raises(ValueError, match="burst"):
        Rate(per_second=1, burst=0)
    with pytest.raises(KeyError):
        RateLimits.fly().rate("exec")


# ------------------------------------------------------------------- 6. wait parameters
def test_wait_accepts_version_and_instance_id_together(sim: Simulator, rest: httpx.Client) -> None:
    machine = sim.app("my-db").machines[0]
    both = rest.get(
        f"/machines/{machine.id}/wait",
        params={
            "state": "started",
            "version": machine.instance_id,
            "instance_id": machine.instance_id,
            "timeout": 5,
        },
    )
    assert both.status_code == 200 and both.json()["version"] == machine.instance_id
    disagree = rest.get(
        f"/machines/{machine.id}/wait",
        params={"state": "started", "version": machine.instance_id, "instance_id": "0" * 26},
    )
    assert disagree.status_code == 400


# -------------------------------------------------------------- 7. stale current_version
def test_a_stale_current_version_is_refused_with_400_by_default(
    sim: Simulator, rest: httpx.Client
) -> None:
    machine = sim.app("my-db").machines[0]
    old = machine.instance_id
    assert update(rest, machine.id, current_version=old).status_code == 200
    stale = update(rest, machine.id, current_version=old)
    assert stale.status_code == 400
    assert stale.json() == {
        "error": f"machine {machine.id} version mismatch: current_version {old} "
        f"is not {machine.instance_id}"
    }
    assert machine.update_count == 1
    current = update(rest, machine.id, current_version=machine.instance_id)
    assert current.status_code == 200 and machine.update_count == 2


@pytest.mark.parametrize("status", [409, 412, 422])
def test_the_stale_version_status_is_a_parameter(
    flysim: Callable[..., Simulator], status: int
) -> None:
    sim = make(flysim, apps={"my-db": {"machines": 1}}, stale_version_status=status)
    machine = sim.app("my-db").machines[0]
    with machines_api(sim) as rest:
        stale = update(rest, machine.id, current_version="0" * 26)
    assert stale.status_code == status and "version mismatch" in stale.json()["error"]
    assert machine.update_count == 0


def test_the_stale_version_status_must_be_an_error() -> None:
    with pytest.raises(ValueError, match="stale_version_status"):
        Simulator(stale_version_status=200)
