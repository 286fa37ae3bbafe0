"""The domain's own types: the app, its IP addresses, its machines and their leases.

The core (settings, plan, rollout, outcome, report) speaks only these; `fly/` turns Fly's wire
data into them and back, so nothing here knows a JSON field name it does not need to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .fly import config as machine_config

IpFamily = Literal["v4", "v6"]
IP_FAMILIES: tuple[IpFamily, ...] = ("v4", "v6")
Mode = Literal["expose", "unexpose", "sweep"]
MODES: tuple[Mode, ...] = ("expose", "unexpose", "sweep")
Lifetime = Literal["persistent", "job"]
LIFETIMES: tuple[Lifetime, ...] = ("persistent", "job")
ImagePolicy = Literal["keep", "major"]
IMAGE_POLICIES: tuple[ImagePolicy, ...] = ("keep", "major")
SslMode = Literal["require", "verify-ca", "verify-full"]
SSL_MODES: tuple[SslMode, ...] = ("require", "verify-ca", "verify-full")
# What a plan warns about: the log titles each kind, the report restates some in its own words.
WarningKind = Literal[
    "shared-ipv4", "ipv6-only", "unreachable-host", "restarts", "billing", "kept", "record"
]

POSTGRES_ROLE = "postgres_cluster"
INACTIVE_STATES = frozenset({"destroyed", "destroying"})
# flyctl's ListActive skips release-command and console machines: they are not part of the app.
NON_APP_GROUPS = frozenset({"fly_app_release_command", "fly_app_console", "release_command"})


@dataclass(frozen=True)
class IpAddress:
    id: str
    address: str
    type: str  # v4 | v6 | private_v6 | shared_v4
    region: str
    created_at: str


@dataclass(frozen=True)
class AppInfo:
    id: str
    name: str
    role: str | None
    ips: tuple[IpAddress, ...]
    shared_ipv4: str | None

    @property
    def is_postgres(self) -> bool:
        return self.role == POSTGRES_ROLE


@dataclass(frozen=True)
class Lease:
    nonce: str
    expires_at: int
    owner: str
    version: str


@dataclass(frozen=True)
class UpdateRequest:
    """A machine update: the whole config (the Machines API has no partial updates), made
    conditional on the version it was computed from."""

    config: dict[str, Any] = field(repr=False)
    region: str
    skip_launch: bool
    current_version: str


@dataclass(frozen=True)
class Machine:
    id: str
    region: str
    state: str
    instance_id: str
    config: dict[str, Any] = field(repr=False)
    checks: tuple[dict[str, Any], ...] = field(repr=False, default=())
    # Not "ok" when flaps cannot reach the machine's host: Fly then sends no `config`, only
    # `incomplete_config` (fly-go `machine_types.go` GetConfig), and `state` is the last known.
    host_status: str = "ok"

    @property
    def reachable(self) -> bool:
        return self.host_status == "ok"

    @property
    def image(self) -> str:
        return machine_config.image(self.config)

    @property
    def role(self) -> str:
        """From the `role` check, as flyctl reads it: its output if passing, else `error`."""
        for check in self.checks:
            if check.get("name") == "role":
                if check.get("status") == "passing":
                    return str(check.get("output", "")).strip() or "unknown"
                return "error"
        return "unknown"

    @property
    def pending_checks(self) -> list[str]:
        """The checks that keep the machine from counting as healthy: failing ones by name, and
        those its config defines that have no status yet.

        A freshly started machine reports no checks at all until they first run, so "every
        reported check passes" is vacuously true then; flyctl had exactly that bug (#4952,
        `WaitForHealthchecksToPass`). What the config defines is what must pass: the top-level
        `checks` by name, and the service checks (whose runtime names Fly makes up) by count.
        """
        reported = {str(c.get("name", "")): str(c.get("status", "")) for c in self.checks}
        pending = [name for name, status in reported.items() if status != "passing"]
        named = machine_config.check_names(self.config)
        pending += [f"{name} (not yet run)" for name in named if name not in reported]
        service_checks = sum(s.checks for s in machine_config.services(self.config))
        unnamed = len([n for n in reported if n not in named])
        if unnamed < service_checks:
            pending.append(f"{service_checks - unnamed} service check(s) (not yet run)")
        return pending

    @property
    def healthy(self) -> bool:
        return self.reachable and self.state == "started" and not self.pending_checks

    @property
    def active(self) -> bool:
        """Part of the app's Postgres cluster: not destroyed, not a release or console machine.

        A machine on an unreachable host has no config; it stays in (flyctl keeps it in its
        list and only skips its lease): it is down, not absent.
        """
        if self.state in INACTIVE_STATES:
            return False
        if not self.config and self.reachable:
            return False
        metadata = machine_config.metadata(self.config)
        group = metadata.get("fly_process_group") or metadata.get("process_group")
        return group not in NON_APP_GROUPS


@dataclass(frozen=True)
class ClusterState:
    app: AppInfo
    machines: tuple[Machine, ...]

    @classmethod
    def of(cls, app: AppInfo, machines: list[Machine]) -> ClusterState:
        """The cluster: the app's active machines, by ID."""
        active = [m for m in machines if m.active]
        return cls(app=app, machines=tuple(sorted(active, key=lambda m: m.id)))

    @property
    def unreachable(self) -> tuple[Machine, ...]:
        return tuple(m for m in self.machines if not m.reachable)

    def public_ips(self, family: str) -> list[IpAddress]:
        """Dedicated public addresses of a family: `v4` or `v6` only (no shared, no Flycast)."""
        return [ip for ip in self.app.ips if ip.type == family]


@dataclass(frozen=True)
class PlanWarning:
    """One thing the reader should know before (or after) the change. For `kept`, `subject` is
    the address and `hint` how to release it; `text` always says it all in one sentence."""

    kind: WarningKind
    text: str
    subject: str = ""
    hint: str = ""

    def __str__(self) -> str:
        return self.text
