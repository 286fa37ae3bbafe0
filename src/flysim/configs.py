"""Machine configs and image references as Fly and `fly pg create` write them: the two pg_tls
services and the checks of a postgres-flex machine, a Postgres or plain web machine's config, and
the ``image_ref`` the platform derives from an image.

Seeding (:mod:`flysim.seeding`) builds machines from them; an update (:mod:`flysim.lifecycle`)
derives the new ``image_ref``.
"""

from __future__ import annotations

import copy
import hashlib
import random
from typing import Any

from flysim import _ids
from flysim.models import POSTGRES_ROLE

# The two services `fly pg create` writes onto every flex machine (fly-api.md §5.1), verbatim.
PG_TLS_SERVICES: list[dict[str, Any]] = [
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

_PG_CHECKS: dict[str, Any] = {
    name: {
        "port": 5500,
        "type": "http",
        "path": f"/flycheck/{name}",
        "interval": "15s",
        "timeout": "10s",
    }
    for name in ("pg", "role", "vm")
}

_FLEX_VERSIONS = {"16": "v0.0.62", "15": "v0.0.51"}


def parse_image(image: str) -> tuple[str, str, str, str | None]:
    """Split an image reference into registry, repository, tag and digest (Docker's rules)."""
    ref, _, digest = image.partition("@")
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, remainder = first, rest
    else:
        registry, remainder = "registry-1.docker.io", ref
    last = remainder.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = remainder.rsplit(":", 1)
    else:
        repository, tag = remainder, "latest"
    if registry == "registry-1.docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository, tag, digest or None


def image_ref_for(image: str, labels: dict[str, str]) -> dict[str, Any]:
    registry, repository, tag, digest = parse_image(image)
    if digest is None:
        # The platform resolves a tag to a digest; a stable fake is enough for comparisons.
        digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    return {
        "registry": registry,
        "repository": repository,
        "tag": tag,
        "digest": digest,
        "labels": dict(labels),
    }


def postgres_image(rng: random.Random, pg_version: str) -> tuple[str, dict[str, str]]:
    image = f"flyio/postgres-flex:{pg_version}@{_ids.sha256_digest(rng)}"
    labels = {
        "fly.app_role": POSTGRES_ROLE,
        "fly.pg-manager": "repmgr",
        "fly.pg-version": pg_version,
        "fly.version": _FLEX_VERSIONS.get(pg_version.split(".", maxsplit=1)[0], "v0.0.62"),
    }
    return image, labels


def postgres_config(
    *, image: str, region: str, volume: str, services: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """A machine config as `fly pg create` writes it (fly-api.md §5.1)."""
    config: dict[str, Any] = {
        "init": {},
        "image": image,
        "env": {"PRIMARY_REGION": region},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "metrics": {"port": 9187, "path": "/metrics"},
        "checks": copy.deepcopy(_PG_CHECKS),
        "metadata": {
            "fly_flyctl_version": "0.3.45",
            "fly_platform_version": "v2",
            "fly-managed-postgres": "true",
            "managed-by-fly-deploy": "true",
        },
        "restart": {"policy": "always"},
        "mounts": [
            {"volume": volume, "path": "/data", "name": "pg_data", "encrypted": True, "size_gb": 1}
        ],
    }
    if services is not None:
        config["services"] = copy.deepcopy(services)
    return config


def web_config(*, image: str, region: str) -> dict[str, Any]:
    """A plain HTTP app, for the "this is not a Postgres app" paths."""
    return {
        "init": {},
        "image": image,
        "env": {"PRIMARY_REGION": region},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "metadata": {"fly_platform_version": "v2", "fly_process_group": "app"},
        "restart": {"policy": "on-failure", "max_retries": 10},
        "services": [
            {
                "protocol": "tcp",
                "internal_port": 8080,
                "autostop": "stop",
                "autostart": True,
                "min_machines_running": 0,
                "ports": [
                    {"port": 80, "handlers": ["http"], "force_https": True},
                    {"port": 443, "handlers": ["http", "tls"]},
                ],
                "force_instance_key": None,
            }
        ],
    }
