"""The simulator's state objects: apps, machines, leases, checks and IP addresses.

Every object here is guarded by the simulator's lock; tests may read them freely, but should change
state only through the :class:`~flysim.Simulator` methods or the HTTP APIs.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from flysim import _ids

POSTGRES_ROLE = "postgres_cluster"

# Machine states (fly-api.md §3.8). `settled` in the wait endpoint means "not transient".
# `created` is persistent (docs `machines/machine-states`): a skip_launch update leaves the new
# version there, and it never becomes `stopped` by itself.
TRANSIENT_STATES = frozenset(
    {
        "creating",
        "starting",
        "stopping",
        "restarting",
        "suspending",
        "destroying",
        "launch_failed",
        "updating",
        "replacing",
    }
)
# The wait endpoint's `state`: the published spec's enum (Machines_wait: started, stopped,
# suspended, destroyed) plus `settled`, which flyctl waits for (internal/machine/update.go).
# Nothing documents `failed` as a wait state, and Fly may answer 400 to a value outside the
# enum: so does the simulator, so that a client relying on it fails here first.
WAITABLE_STATES = frozenset({"started", "stopped", "suspended", "destroyed", "settled"})
# `host_status` values (fly-go `machine_types.go`); anything but `ok` means flyd cannot be asked.
HOST_STATUSES = frozenset({"ok", "unknown", "unreachable"})

# What the check endpoints of postgres-flex print when healthy (the role output is set per machine).
_PASSING_OUTPUT = {
    "pg": "[✓] connections: 8 used, 3 reserved, 300 max (4.21ms)\n"
    "[✓] cluster-locks: No active locks detected (14.1µs)",
    "vm": "[✓] checkDisk: 912.3 MB (93.5%) free space on /data/ (41.2µs)\n"
    "[✓] checkLoad: load averages: 0.02 0.03 0.01 (62.8µs)",
}
_CRITICAL_OUTPUT = (
    'Get "http://[::1]:5500/flycheck": dial tcp [::1]:5500: connect: connection refused'
)


@dataclass
class Lease:
    nonce: str
    owner: str
    description: str
    expires_at: float  # wall clock (time.time()), fractional so tests can use short TTLs
    version: str

    def data(self) -> dict[str, Any]:
        # expires_at is unix seconds on the wire; round up so a client never sees it expire early.
        return {
            "nonce": self.nonce,
            "expires_at": int(-(-self.expires_at // 1)),
            "owner": self.owner,
            "description": self.description,
            "version": self.version,
        }

    def envelope(self) -> dict[str, Any]:
        return {"status": "success", "data": self.data()}


@dataclass
class Check:
    name: str
    status: str  # passing | warning | critical
    output: str
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "updated_at": _ids.rfc3339(self.updated_at),
        }


@dataclass
class Machine:
    id: str
    name: str
    region: str
    private_ip: str
    config: dict[str, Any]
    image_ref: dict[str, Any]
    state: str
    instance_id: str
    created_at: float
    updated_at: float
    role: str = ""  # "primary" / "replica" for Postgres apps, "" otherwise
    checks: list[Check] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    lease: Lease | None = None
    previous_versions: list[str] = field(default_factory=list)
    # Bumped by every update so that a stale timer from an earlier update does nothing.
    generation: int = 0
    update_count: int = 0
    # Not `ok` while the machine's host cannot be reached (Simulator.set_host_status); the API
    # then shows `known_state`, the state it had when the host was last heard from.
    host_status: str = "ok"
    known_state: str | None = None

    def active_lease(self, now: float | None = None) -> Lease | None:
        """The lease, or None once it is past ``expires_at`` (an expired lease no longer exists)."""
        if self.lease is not None and self.lease.expires_at <= (
            time.time() if now is None else now
        ):
            self.lease = None
        return self.lease

    @property
    def checks_passing(self) -> bool:
        """Every check the config defines has a status and all are ``passing``.

        Not ``all(c.status == "passing" for c in self.checks)``: right after a start the list is
        empty, and "all of nothing passes" is the bug flyctl fixed (#4952). A config without
        checks has nothing to wait for.
        """
        statuses = {check.name: check.status for check in self.checks}
        return all(statuses.get(name) == "passing" for name in check_names(self.config))

    @property
    def healthy(self) -> bool:
        """Started, on a reachable host, with every defined check passing: what a rolling update
        waits for and what serves traffic."""
        return self.state == "started" and self.host_status == "ok" and self.checks_passing

    @property
    def reported_state(self) -> str:
        """The state the API shows: the last known one while the host is unreachable."""
        if self.host_status != "ok" and self.known_state is not None:
            return self.known_state
        return self.state

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def add_event(self, type_: str, status: str, source: str = "flyd") -> None:
        event = {
            "type": type_,
            "status": status,
            "source": source,
            "timestamp": int(time.time() * 1000),
            "id": _ids.ulid(),
        }
        # Newest first, and only the recent ones, as the API returns them.
        self.events.insert(0, event)
        del self.events[10:]

    def clear_checks(self) -> None:
        """A new version has run no check yet: its runtime list is empty (not critical)."""
        self.checks = []

    def fail_checks(self, now: float) -> None:
        self.checks = [
            Check(name, "critical", _CRITICAL_OUTPUT, now) for name in check_names(self.config)
        ]

    def pass_checks(self, now: float) -> None:
        self.checks = [
            Check(name, "passing", self._passing_output(name), now)
            for name in check_names(self.config)
        ]

    def refresh_role_output(self, now: float) -> None:
        check = self.check("role")
        if check is not None and check.status == "passing":
            check.output = self.role or "unknown"
            check.updated_at = now

    def _passing_output(self, name: str) -> str:
        if name == "role":
            return self.role or "unknown"
        if name.startswith("servicecheck-"):
            return "Success"  # UNCONFIRMED: the output text of a passing service check
        return _PASSING_OUTPUT.get(name, "OK")

    def has_pg_tls_port(self, port: int) -> bool:
        return any(svc_port == port for svc_port, _ in pg_tls_ports(self.config))

    def to_json(self, *, include_lease: bool = False) -> dict[str, Any]:
        reachable = self.host_status == "ok"
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.reported_state,
            "region": self.region,
            "instance_id": self.instance_id,
            "private_ip": self.private_ip,
            "created_at": _ids.rfc3339(self.created_at),
            "updated_at": _ids.rfc3339(self.updated_at),
            # On an unreachable host only the platform's copy of the config is known, and it comes
            # as `incomplete_config` with `config` null (fly-go `machine_types.go` GetConfig).
            "config": copy.deepcopy(self.config) if reachable else None,
            "image_ref": copy.deepcopy(self.image_ref),
            "events": copy.deepcopy(self.events),
            "checks": [check.to_json() for check in self.checks],
            "host_status": self.host_status,
        }
        if not reachable:  # omitted otherwise (fly-go: `json:"incomplete_config,omitempty"`)
            body["incomplete_config"] = copy.deepcopy(self.config)
        if include_lease:
            lease = self.active_lease()
            if lease is not None:
                body["lease"] = {
                    "description": lease.description,
                    "expires_at": lease.data()["expires_at"],
                    "owner": lease.owner,
                    "nonce": lease.nonce,
                    "version": lease.version,
                }
        return body


@dataclass
class IPAddress:
    id: str
    address: str
    type: str  # v4 | v6 | private_v6 (shared_v4 lives in App.shared_ip)
    region: str
    created_at: float
    org_slug: str
    network: str | None = None
    service_name: str | None = None

    def to_graphql(self) -> dict[str, Any]:
        network = None
        if self.type == "private_v6":
            network = {"name": self.network or "default", "organization": {"slug": self.org_slug}}
        return {
            "id": self.id,
            "address": self.address,
            "type": self.type,
            "region": self.region,
            "createdAt": _ids.rfc3339(self.created_at),
            "network": network,
            "serviceName": self.service_name,
        }

    def to_assignment(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ip": self.address,
            "region": self.region,
            "service_name": self.service_name or "",
            "shared": False,
            "created_at": _ids.rfc3339(self.created_at),
        }
        if self.type == "private_v6":
            body["network"] = {"name": self.network or "default", "org_slug": self.org_slug}
        return body


@dataclass
class App:
    name: str
    org_slug: str
    role: str | None  # "postgres_cluster" or None
    internal_numeric_id: int
    region: str
    machines: list[Machine] = field(default_factory=list)
    ips: list[IPAddress] = field(default_factory=list)
    shared_ip: str | None = None
    shared_ip_created_at: float = 0.0
    primary_id: str | None = None
    # Failover fault: after this many completed machine updates the primary moves.
    failover_after: int | None = None
    updates_completed: int = 0
    updated_since_armed: set[str] = field(default_factory=set)

    def machine(self, machine_id: str) -> Machine | None:
        return next((m for m in self.machines if m.id == machine_id), None)

    @property
    def primary(self) -> Machine | None:
        return None if self.primary_id is None else self.machine(self.primary_id)

    @property
    def app_role(self) -> str:
        return self.role or ""

    @property
    def is_postgres(self) -> bool:
        return self.role == POSTGRES_ROLE

    @property
    def public_v4(self) -> list[IPAddress]:
        return [ip for ip in self.ips if ip.type == "v4"]

    @property
    def public_v6(self) -> list[IPAddress]:
        return [ip for ip in self.ips if ip.type == "v6"]

    def ip_by_address(self, address: str) -> IPAddress | None:
        return next((ip for ip in self.ips if ip.address == address), None)


def check_names(config: dict[str, Any]) -> list[str]:
    """The names of every check a config defines: the top-level ``checks`` (by key) and each
    ``services[].checks`` entry.

    Service checks are named ``servicecheck-<NN>-<type>-<port>`` as Fly's logs show them
    (``servicecheck-00-http-8080``). UNCONFIRMED: that NN counts across all services of the
    machine, and that the port is the check's own (else the service's internal port).
    """
    names = sorted(str(name) for name in config.get("checks") or {})
    index = 0
    for service in config.get("services") or []:
        if not isinstance(service, dict):
            continue
        for check in service.get("checks") or []:
            if not isinstance(check, dict):
                continue
            port = check.get("port") or service.get("internal_port")
            names.append(f"servicecheck-{index:02d}-{check.get('type') or 'tcp'}-{port}")
            index += 1
    return names


def pg_tls_ports(config: dict[str, Any]) -> list[tuple[int, int]]:
    """``(public port, internal_port)`` of each tcp service port with handlers exactly pg_tls."""
    found: list[tuple[int, int]] = []
    for service in config.get("services") or []:
        if not isinstance(service, dict) or service.get("protocol") != "tcp":
            continue
        internal = service.get("internal_port")
        for port in service.get("ports") or []:
            if (
                isinstance(port, dict)
                and port.get("handlers") == ["pg_tls"]
                and isinstance(port.get("port"), int)
                and isinstance(internal, int)
            ):
                found.append((port["port"], internal))
    return found
