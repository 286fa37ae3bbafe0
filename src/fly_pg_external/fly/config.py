"""A machine's config as Fly's Machines API carries it: typed views the planner reasons with,
and the builders that make the config an update sends back.

This is the one place that knows the wire shape of a config's services, ports, handlers, image
and metadata (`fly-machines-openapi.json`: `fly.MachineConfig`, `fly.MachineService`,
`fly.MachinePort`). It does no I/O, so the core may import it: the planner asks "does this
machine serve pg_tls on 5432?" of a `Service`, not of nested dicts, and a changed config is made
here, keeping every field the action does not manage exactly as Fly sent it (an update replaces
the whole config).

Fly's answers are checked for shape when they are read (`fly/shape.py`), so the views may trust
the types they find; they still skip what they do not recognise rather than fail, because a
config can carry fields newer than this code.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Config = Mapping[str, Any]

# Postgres listens on 5432 inside every machine of `fly pg create` (HAProxy to the primary);
# pg_tls is the handler that terminates the client's TLS at Fly's proxy and passes the
# Postgres protocol on (fly.io/docs/postgres/connecting/connecting-external).
PG_INTERNAL_PORT = 5432
PG_TLS = ("pg_tls",)


@dataclass(frozen=True)
class ServicePort:
    """One external port (or range) of a service, and the handlers Fly's proxy applies."""

    port: int | None
    start_port: int | None = None
    end_port: int | None = None
    handlers: tuple[str, ...] = ()

    def covers(self, port: int) -> bool:
        if self.port is not None:
            return self.port == port
        return (
            self.start_port is not None
            and self.end_port is not None
            and self.start_port <= port <= self.end_port
        )

    @property
    def first(self) -> int | None:
        """The port a client is told about: the port, or a range's start."""
        return self.port if self.port is not None else self.start_port


@dataclass(frozen=True)
class Service:
    """A service of a machine: what its external ports reach inside the machine."""

    protocol: str
    internal_port: int | None
    ports: tuple[ServicePort, ...]
    checks: int = 0  # how many service checks it defines (their runtime names are Fly's)

    def serves_pg_tls(self, port: int) -> bool:
        """Postgres on `port` through the pg_tls handler, exactly as `fly pg create` sets it."""
        return (
            self.protocol == "tcp"
            and self.internal_port == PG_INTERNAL_PORT
            and any(p.port == port and p.handlers == PG_TLS for p in self.ports)
        )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _port(raw: Mapping[str, Any]) -> ServicePort:
    handlers = raw.get("handlers") or []
    return ServicePort(
        port=_int(raw.get("port")),
        start_port=_int(raw.get("start_port")),
        end_port=_int(raw.get("end_port")),
        handlers=tuple(str(h) for h in handlers) if isinstance(handlers, list) else (),
    )


def services(config: Config) -> tuple[Service, ...]:
    """The config's services, as typed views."""
    out: list[Service] = []
    for raw in config.get("services") or []:
        if not isinstance(raw, Mapping):
            continue
        ports = [_port(p) for p in raw.get("ports") or [] if isinstance(p, Mapping)]
        checks = raw.get("checks") or []
        out.append(
            Service(
                protocol=str(raw.get("protocol", "tcp")),
                internal_port=_int(raw.get("internal_port")),
                ports=tuple(ports),
                checks=len(checks) if isinstance(checks, list) else 0,
            )
        )
    return tuple(out)


def serves_pg_tls(config: Config, port: int) -> bool:
    return any(s.serves_pg_tls(port) for s in services(config))


def port_conflict(config: Config, port: int) -> Service | None:
    """Another service already answering on the external `port` (e.g. 5433 → Postgres)."""
    for service in services(config):
        if service.internal_port != PG_INTERNAL_PORT and any(p.covers(port) for p in service.ports):
            return service
    return None


def image(config: Config) -> str:
    return str(config.get("image", ""))


def check_names(config: Config) -> list[str]:
    """The names of the machine's top-level checks (`checks` is keyed by name)."""
    defined = config.get("checks") or {}
    return list(defined) if isinstance(defined, Mapping) else []


def metadata(config: Config) -> Mapping[str, Any]:
    found = config.get("metadata") or {}
    return found if isinstance(found, Mapping) else {}


def with_pg_tls_service(config: Config, port: int) -> dict[str, Any]:
    """A copy of `config` whose 5432 service carries `port` with pg_tls; all else unchanged."""
    new = copy.deepcopy(dict(config))
    services_: list[dict[str, Any]] = new.setdefault("services", []) or []
    new["services"] = services_
    target = next(
        (
            s
            for s in services_
            if s.get("protocol", "tcp") == "tcp" and s.get("internal_port") == PG_INTERNAL_PORT
        ),
        None,
    )
    if target is None:
        scale_to_zero = bool((new.get("env") or {}).get("FLY_SCALE_TO_ZERO"))
        # The service `fly pg create` writes (flyctl flypg/launcher.go).
        services_.append(
            {
                "protocol": "tcp",
                "internal_port": PG_INTERNAL_PORT,
                "autostart": scale_to_zero,
                "ports": [{"port": port, "handlers": list(PG_TLS)}],
                "concurrency": {"type": "connections", "hard_limit": 1000, "soft_limit": 1000},
            }
        )
        return new
    ports: list[dict[str, Any]] = target.setdefault("ports", []) or []
    target["ports"] = ports
    for p in ports:
        if p.get("port") == port:
            p["handlers"] = list(PG_TLS)
            return new
    ports.append({"port": port, "handlers": list(PG_TLS)})
    return new


def with_image(config: Config, image_: str) -> dict[str, Any]:
    """A copy of `config` that runs `image_`; all else unchanged."""
    new = copy.deepcopy(dict(config))
    new["image"] = image_
    return new


def with_metadata(config: Config, key: str, value: str) -> dict[str, Any]:
    """A copy of `config` with metadata `key` set to `value`; all else unchanged."""
    new = copy.deepcopy(dict(config))
    new["metadata"] = {**metadata(config), key: value}
    return new
