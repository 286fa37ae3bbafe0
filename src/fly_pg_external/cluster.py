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
    def healthy(self) -> bool:
        return self.state == "started" and all(c.get("status") == "passing" for c in self.checks)

    @property
    def services(self) -> list[dict[str, Any]]:
        return list(self.config.get("services") or [])

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Machine:
        return cls(
            id=str(data.get("id", "")),
            region=str(data.get("region", "")),
            state=str(data.get("state", "")),
            instance_id=str(data.get("instance_id", "")),
            # Our own copy: plans derive new configs from it and must not alias API data.
            config=copy.deepcopy(data.get("config") or {}),
            checks=tuple(
                c
                for c in (data.get("checks") or [])
                if isinstance(c, dict)
                and not str(c.get("name", "")).startswith("bg_deployments_compat")
            ),
        )


def is_active(data: dict[str, Any]) -> bool:
    if not data.get("config") or data.get("state") in INACTIVE_STATES:
        return False
    metadata = (data.get("config") or {}).get("metadata") or {}
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

    def public_ips(self, family: str) -> list[IpAddress]:
        """Dedicated public addresses of a family: `v4` or `v6` only (no shared, no Flycast)."""
        return [ip for ip in self.app.ips if ip.type == family]
