"""The cluster as read from Fly: the app, its IPs and its active machines with their roles."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .fly.graphql import AppInfo, IpAddress

INACTIVE_STATES = frozenset({"destroyed", "destroying"})
# flyctl's ListActive skips release-command and console machines: they are not part of the app.
NON_APP_GROUPS = frozenset({"fly_app_release_command", "fly_app_console"})


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
        return str(self.config.get("image", ""))

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
        defined = self.config.get("checks") or {}
        named = list(defined) if isinstance(defined, dict) else []
        pending += [f"{name} (not yet run)" for name in named if name not in reported]
        service_checks = sum(
            len(svc.get("checks") or []) for svc in self.services if isinstance(svc, dict)
        )
        unnamed = len([n for n in reported if n not in named])
        if unnamed < service_checks:
            pending.append(f"{service_checks - unnamed} service check(s) (not yet run)")
        return pending

    @property
    def healthy(self) -> bool:
        return self.reachable and self.state == "started" and not self.pending_checks

    @property
    def services(self) -> list[dict[str, Any]]:
        return list(self.config.get("services") or [])

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Machine:
        host_status = str(data.get("host_status") or "ok")
        config = _config_of(data)
        return cls(
            id=str(data.get("id", "")),
            region=str(data.get("region", "")),
            state=str(data.get("state", "")),
            instance_id=str(data.get("instance_id", "")),
            # Our own copy: plans derive new configs from it and must not alias API data.
            config=copy.deepcopy(config),
            checks=tuple(
                c
                for c in (data.get("checks") or [])
                if isinstance(c, dict)
                and not str(c.get("name", "")).startswith("bg_deployments_compat")
            ),
            host_status=host_status,
        )


def _config_of(data: dict[str, Any]) -> dict[str, Any]:
    """`config`, or for a machine on an unreachable host the `incomplete_config` Fly sends
    instead: good enough to name its image and services, never to send back in an update."""
    for key in ("config", "incomplete_config"):
        value = data.get(key)
        if isinstance(value, dict) and value:
            return value
    return {}


def is_active(data: dict[str, Any]) -> bool:
    """Part of the app's Postgres cluster: not destroyed, not a release or console machine.

    A machine on an unreachable host has no `config`; it stays in (flyctl keeps it in its list
    and only skips its lease): it is down, not absent.
    """
    if data.get("state") in INACTIVE_STATES:
        return False
    config = _config_of(data)
    if not config and str(data.get("host_status") or "ok") == "ok":
        return False
    metadata = config.get("metadata") or {}
    group = metadata.get("fly_process_group") or metadata.get("process_group")
    return group not in NON_APP_GROUPS and group != "release_command"


@dataclass(frozen=True)
class ClusterState:
    app: AppInfo
    machines: tuple[Machine, ...]

    @classmethod
    def from_api(cls, app: AppInfo, machines: list[dict[str, Any]]) -> ClusterState:
        active = [Machine.from_api(m) for m in machines if is_active(m)]
        return cls(app=app, machines=tuple(sorted(active, key=lambda m: m.id)))

    @property
    def unreachable(self) -> tuple[Machine, ...]:
        return tuple(m for m in self.machines if not m.reachable)

    def public_ips(self, family: str) -> list[IpAddress]:
        """Dedicated public addresses of a family: `v4` or `v6` only (no shared, no Flycast)."""
        return [ip for ip in self.app.ips if ip.type == family]
