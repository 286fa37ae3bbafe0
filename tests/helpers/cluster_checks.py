"""What the reliability suite checks on the simulator after (and during) a run."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from flysim import Simulator
from flysim.requestlog import RequestRecord

_UPDATE_PATH = re.compile(r"/v1/apps/[^/]+/machines/[^/]+")
_METADATA_PATH = re.compile(r"/v1/apps/[^/]+/machines/[^/]+/metadata/(?P<key>[^/]+)")


def machine_id_of(record: RequestRecord) -> str | None:
    parts = record.path.split("/machines/", 1)
    return parts[1].split("/", 1)[0] if len(parts) == 2 else None


def update_path(app: str, machine_id: str) -> str:
    """The exact path of a machine update (for a fault's `path=`)."""
    return f"/v1/apps/{app}/machines/{machine_id}"


def is_update(record: RequestRecord) -> bool:
    """A machine update: exactly POST /v1/apps/<app>/machines/<id> (not a lease, not a start,
    not a metadata write)."""
    return (
        record.api == "rest"
        and record.method == "POST"
        and _UPDATE_PATH.fullmatch(record.path) is not None
    )


def is_metadata_write(
    record: RequestRecord, key: str | None = None, *, method: str = "POST"
) -> bool:
    """`method` (POST: set, DELETE: delete) /v1/apps/<app>/machines/<id>/metadata/<key> (of
    `key`, when given)."""
    m = _METADATA_PATH.fullmatch(record.path)
    return (
        record.api == "rest"
        and record.method == method
        and m is not None
        and (key is None or m.group("key") == key)
    )


def is_lease(record: RequestRecord, method: str = "POST") -> bool:
    return record.api == "rest" and record.method == method and record.path.endswith("/lease")


def is_allocation(record: RequestRecord) -> bool:
    return "allocateIpAddress" in record.graphql_fields


def updates(sim: Simulator, app: str, *, since: int = 0) -> list[RequestRecord]:
    """Machine updates the simulator carried out, oldest first (from request `since` on); one
    whose response was lost after it took effect counts."""
    prefix = f"/v1/apps/{app}/machines/"
    return [
        r
        for r in sim.requests[since:]
        if is_update(r)
        and r.path.startswith(prefix)
        and (r.status == 200 or r.fault == "reset:after_commit")
    ]


def faults_fired(sim: Simulator, *, since: int = 0) -> int:
    """Requests the simulator shaped with an injected fault."""
    return sum(1 for r in sim.requests[since:] if r.fault)


def ips(sim: Simulator, app: str, family: str) -> list[str]:
    return [ip.address for ip in sim.app(app).ips if ip.type == family]


def active_leases(sim: Simulator, app: str) -> dict[str, str]:
    """Machine id → owner of every lease still in force."""
    with sim.lock:  # the simulator's own lock: read a consistent state
        out = {}
        for m in sim.app(app).machines:
            lease = m.active_lease()
            if lease is not None:
                out[m.id] = lease.owner
        return out


def has_pg_tls(sim: Simulator, app: str, machine_id: str, port: int = 5432) -> bool:
    machine = sim.app(app).machine(machine_id)
    return machine is not None and machine.has_pg_tls_port(port)


def assert_cluster_serving(sim: Simulator, app: str) -> None:
    """Every machine started with all checks passing, a primary, and no lease left behind."""
    state = sim.app(app)
    with sim.lock:
        down = [
            (m.id, m.state, [c.status for c in m.checks]) for m in state.machines if not m.healthy
        ]
        primary = state.primary
    assert not down, f"machines not serving: {down}"
    assert primary is not None and primary.healthy, "no healthy primary"
    assert active_leases(sim, app) == {}, f"leases left behind: {active_leases(sim, app)}"


def wait_cluster_healthy(sim: Simulator, app: str, timeout: float = 30) -> bool:
    return sim.wait_for(lambda: all(m.healthy for m in sim.app(app).machines), timeout)


def rollout_order(sim: Simulator, app: str) -> list[str]:
    """The order the action rolls a healthy cluster out in: replicas by id, the primary last."""
    state = sim.app(app)
    return [m.id for m in sorted(state.machines, key=lambda m: (m.id == state.primary_id, m.id))]


def when(
    sim: Simulator,
    condition: Callable[[list[RequestRecord]], bool],
    action: Callable[[], Any],
    timeout: float = 60,
) -> threading.Thread:
    """Run `action` (e.g. arm a fault) as soon as the request log satisfies `condition`."""

    def watch() -> None:
        if sim.wait_for(lambda: condition(sim.requests), timeout):
            action()

    thread = threading.Thread(target=watch, name="fault-arming", daemon=True)
    thread.start()
    return thread
