"""What the ownership and lifetime tests share: reaching the simulator's APIs directly (as a
person or another tool would, not through the action), the ownership record as the machines
carry it, pull request events, and real connections through the public endpoint."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from flysim import Simulator
from flysim.requestlog import RequestRecord

from action_run import TOKEN

RECORD_KEY = "pg_external_owner"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ALLOCATE = """mutation($input: AllocateIPAddressInput!) { allocateIpAddress(input: $input) {
ipAddress { id address type } } }"""


# -- the APIs, used directly -----------------------------------------------------------------


def allocate_by_hand(sim: Simulator, app: str, family: str) -> tuple[str, str]:
    """Allocate a public address through Fly's GraphQL API, as `fly ips allocate-v4` does;
    returns (IP id, address)."""
    response = httpx.post(
        f"{sim.api_base_url}/graphql",
        json={"query": ALLOCATE, "variables": {"input": {"appId": app, "type": family}}},
        headers=AUTH,
        timeout=10,
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    ip = body["data"]["allocateIpAddress"]["ipAddress"]
    return ip["id"], ip["address"]


def _machines_api(sim: Simulator, method: str, path: str, **kw: Any) -> httpx.Response:
    """A Machines API request, waiting out the rate limits (1/s per machine and action)."""
    deadline = time.monotonic() + 20
    while True:
        response = httpx.request(
            method, f"{sim.flaps_base_url}{path}", headers=AUTH, timeout=10, **kw
        )
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        time.sleep(float(response.headers.get("retry-after") or 1))


def set_metadata(sim: Simulator, app: str, machine_id: str, key: str, value: str) -> None:
    r = _machines_api(
        sim, "POST", f"/v1/apps/{app}/machines/{machine_id}/metadata/{key}", json={"value": value}
    )
    assert r.status_code == 204, r.text


def delete_metadata(sim: Simulator, app: str, machine_id: str, key: str) -> None:
    r = _machines_api(sim, "DELETE", f"/v1/apps/{app}/machines/{machine_id}/metadata/{key}")
    assert r.status_code == 204, r.text


def rewrite_config_without(sim: Simulator, app: str, machine_id: str, key: str) -> None:
    """Update the machine with its own config minus metadata `key` (what a `fly machine update`
    or a deploy that builds the config afresh does), and wait until it serves again."""
    got = _machines_api(sim, "GET", f"/v1/apps/{app}/machines/{machine_id}")
    assert got.status_code == 200, got.text
    config = got.json()["config"]
    config["metadata"] = {k: v for k, v in (config.get("metadata") or {}).items() if k != key}
    r = _machines_api(sim, "POST", f"/v1/apps/{app}/machines/{machine_id}", json={"config": config})
    assert r.status_code == 200, r.text
    machine = sim.app(app).machine(machine_id)
    assert machine is not None
    assert sim.wait_for(lambda: machine.healthy, 15), f"{machine_id} did not come back"


# -- the ownership record --------------------------------------------------------------------


def records(sim: Simulator, app: str) -> dict[str, dict[str, Any] | None]:
    """Machine id → the record it carries (decoded), or None."""
    out: dict[str, dict[str, Any] | None] = {}
    for m in sim.app(app).machines:
        text = sim.machine_metadata(app, m.id).get(RECORD_KEY)
        out[m.id] = json.loads(text) if text is not None else None
    return out


def the_record(sim: Simulator, app: str) -> dict[str, Any]:
    """The record, which every machine must carry, identically."""
    found = records(sim, app)
    texts = {json.dumps(r, sort_keys=True) for r in found.values()}
    assert len(texts) == 1 and None not in found.values(), f"machines disagree: {found}"
    record = next(iter(found.values()))
    assert record is not None
    return record


def write_record_everywhere(sim: Simulator, app: str, record: dict[str, Any]) -> None:
    text = json.dumps(record, separators=(",", ":"), sort_keys=True)
    for m in sim.app(app).machines:
        set_metadata(sim, app, m.id, RECORD_KEY, text)


def public_ips(sim: Simulator, app: str) -> dict[str, str]:
    """IP id → address of the app's public v4/v6 addresses, as Fly has them now."""
    with sim.lock:
        return {ip.id: ip.address for ip in sim.app(app).ips if ip.type in ("v4", "v6")}


def addresses(sim: Simulator, app: str, family: str) -> list[str]:
    with sim.lock:
        return [ip.address for ip in sim.app(app).ips if ip.type == family]


# -- what the simulator saw ------------------------------------------------------------------


def released(requests: list[RequestRecord]) -> list[str]:
    """Addresses of the release mutations that were answered 200, in order."""
    return [
        r.graphql_variables["input"]["ip"]
        for r in requests
        if "releaseIpAddress" in r.graphql_fields and r.graphql_variables and r.status == 200
    ]


def graphql_mutations(requests: list[RequestRecord]) -> list[str]:
    return [f for r in requests if r.api == "graphql" and r.is_mutating for f in r.graphql_fields]


def rest_writes(requests: list[RequestRecord]) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in requests if r.api == "rest" and r.is_mutating]


def only_record_writes(requests: list[RequestRecord]) -> bool:
    """Every Machines API write was to the ownership record's metadata key, or the lease a
    releasing run takes on the first machine to change the record in turn: no update, no
    start/stop."""
    return all(
        path.endswith((f"/metadata/{RECORD_KEY}", "/lease")) for _, path in rest_writes(requests)
    )


# -- pull request events ---------------------------------------------------------------------

REPO = "acme/infra"


def pr_event(tmp_path: Path, number: int, action: str = "synchronize") -> dict[str, str]:
    """Environment of a run on a `pull_request` event for PR `number` (`action`: synchronize,
    closed...)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"event-pr-{number}-{action}.json"
    payload = {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": "closed" if action == "closed" else "open",
            "head": {"sha": f"{number:040x}", "repo": {"full_name": REPO}},
            "base": {"sha": "b" * 40, "repo": {"full_name": REPO}},
        },
    }
    path.write_text(json.dumps(payload), encoding="utf-8")
    return {
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_RUN_ID": str(1000 + number),
    }


def job_env(run_id: str = "4242", attempt: str = "1", job: str = "integration") -> dict[str, str]:
    """The runner's variables that name a job (the `lifetime: job` holder)."""
    return {"GITHUB_RUN_ID": run_id, "GITHUB_RUN_ATTEMPT": attempt, "GITHUB_JOB": job}


# -- real connections ------------------------------------------------------------------------


def select_one(url: str) -> None:
    """Log in with the URL over TLS and run a query; raises when that is not possible."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def refused(address: str, port: int = 5432) -> bool:
    """A TCP connect to address:port is actively refused (nothing listens any more)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        try:
            s.connect((address, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def accepts(address: str, port: int = 5432) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        try:
            s.connect((address, port))
        except OSError:
            return False
        return True
