"""Machine JSON as the Machines API returns it, for unit tests of the planning core."""

from __future__ import annotations

import copy
from typing import Any

IMAGE = "flyio/postgres-flex:16.4@sha256:" + "ab" * 32

PG_SERVICES = [
    {
        "protocol": "tcp",
        "internal_port": 5432,
        "autostart": False,
        "ports": [{"port": 5432, "handlers": ["pg_tls"]}],
        "concurrency": {"type": "connections", "hard_limit": 1000, "soft_limit": 1000},
    },
    {
        "protocol": "tcp",
        "internal_port": 5433,
        "autostart": False,
        "ports": [{"port": 5433, "handlers": ["pg_tls"]}],
        "concurrency": {"type": "connections", "hard_limit": 1000, "soft_limit": 1000},
    },
]


def machine(
    mid: str,
    role: str = "replica",
    *,
    legacy: bool = False,
    state: str = "started",
    role_status: str = "passing",
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "image": IMAGE,
        "env": {"PRIMARY_REGION": "iad"},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "metrics": {"port": 9187, "path": "/metrics"},
        "checks": {
            name: {
                "port": 5500,
                "type": "http",
                "path": f"/flycheck/{name}",
                "interval": "15s",
                "timeout": "10s",
            }
            for name in ("pg", "role", "vm")
        },
        "metadata": {"fly-managed-postgres": "true"},
        "restart": {"policy": "always"},
        "mounts": [{"volume": f"vol_{mid}", "path": "/data", "name": "pg_data"}],
    }
    if not legacy:
        config["services"] = copy.deepcopy(PG_SERVICES)
    return {
        "id": mid,
        "region": "iad",
        "state": state,
        "instance_id": "01HQ73A7BFFDF1B6WMGHFZZ4E7",
        "config": config,
        "checks": [
            {"name": "role", "status": role_status, "output": role},
            {"name": "pg", "status": "passing", "output": "ok"},
            {"name": "vm", "status": "passing", "output": "ok"},
        ],
    }


def owning(data: dict[str, Any], addresses: dict[str, str]) -> dict[str, Any]:
    """`data` (machine JSON) carrying the action's ownership record of `addresses` (IP ID →
    address) with no hold: those addresses are the action's own, released by an unexpose."""
    from fly_pg_external.ownership import RECORD_KEY, Ownership, encode

    data["config"].setdefault("metadata", {})[RECORD_KEY] = encode(Ownership(addresses, {}))
    return data
