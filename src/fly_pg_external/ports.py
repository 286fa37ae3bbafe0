"""Which ports a public address opens: every service the machines define answers on it.

A cluster made by `fly pg create` has two pg_tls services on every machine (flyctl
`internal/flypg/launcher.go`): 5432, through HAProxy to the primary (read-write), and 5433,
straight to each node's Postgres, replicas included. Fly's proxy serves a machine's services on
every public address of the app, so once an address is allocated both are reachable from the
internet, not only the 5432 the URL names. The plan, log, summary and comment say so.

5433 is left as `fly pg create` made it: closing it would mean a new config, so a restart of
every machine, and Flycast clients of 5433 (read replicas used through `<app>.flycast:5433`)
would lose it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .fly.config import Config, services

PRIMARY_PORT = 5432  # HAProxy on each node: to the primary, read-write
NODE_PORT = 5433  # each node's own Postgres: a replica is read-only


@dataclass(frozen=True)
class OpenPort:
    port: int
    internal_port: int
    handlers: tuple[str, ...]

    @property
    def what(self) -> str:
        """What a client reaches there, in a few words."""
        if self.internal_port == PRIMARY_PORT:
            return "the primary, read-write, through HAProxy"
        if self.internal_port == NODE_PORT:
            return "each node directly, replicas too (read-only)"
        handlers = "+".join(self.handlers) or "raw TCP"
        return f"internal port {self.internal_port} ({handlers})"


def open_ports(configs: Iterable[Config]) -> tuple[OpenPort, ...]:
    """The external ports any of these machine configs serves, by port: what a public address
    of the app opens. A port range counts by its start (Postgres clusters have none)."""
    found: dict[int, OpenPort] = {}
    for config in configs:
        for service in services(config):
            if service.internal_port is None:
                continue
            for p in service.ports:
                if p.first is not None and p.first not in found:
                    found[p.first] = OpenPort(p.first, service.internal_port, p.handlers)
    return tuple(found[p] for p in sorted(found))


def describe(ports: Iterable[OpenPort]) -> str:
    """`5432 (the primary, …), 5433 (each node …)`, for the log and the reports."""
    return ", ".join(f"{p.port} ({p.what})" for p in ports) or "none"


def markdown(ports: tuple[OpenPort, ...]) -> str:
    """The report's paragraph on what the public addresses open; "" when they open nothing."""
    if not ports:
        return ""
    listed = " · ".join(f"`{p.port}` {p.what}" for p in ports)
    note = node_port_note(ports)
    return f"**Open on every public address:** {listed}." + (f" {note}" if note else "")


def node_port_note(ports: Iterable[OpenPort]) -> str:
    """Why 5433 is open too, when it is; "" otherwise."""
    if not any(p.port == NODE_PORT for p in ports):
        return ""
    return (
        f"Port {NODE_PORT} is open as `fly pg create` made it, and takes the same logins. "
        "Closing it takes a new config, so a restart of every machine, and Flycast clients of "
        f"{NODE_PORT} would lose it too."
    )
