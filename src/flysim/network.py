"""The public network: which local addresses and ports listen for which app, and which machine a
new pg_tls connection reaches.

:class:`PublicNetwork` keeps what only the network needs (the listen ports chosen, the app that
plays ``<app>.fly.dev`` on 127.0.0.1, the round-robin position); the state core passes it the
apps, under its lock, and hands the answers to the :class:`~flysim.proxy.ProxyManager`.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterable, Mapping

from flysim import models
from flysim.models import App, Machine
from flysim.proxy import HAPROXY_PORT, Route


class PublicNetwork:
    """Listeners and routing for the apps' public pg_tls services (see ``Simulator``'s
    ``public_port_map`` and ``hostname_on_loopback``)."""

    def __init__(self, public_port_map: Mapping[int, int] | None) -> None:
        self._public_port_map = dict(public_port_map or {})
        self._resolved_ports: dict[int, int] = {}
        self._round_robin = itertools.count()
        # Set by every `desired_listeners`: the app 127.0.0.1 stands in for, if any.
        self.hostname_app: str | None = None

    def listen_port(self, service_port: int) -> int:
        """The local port a public service port listens on (a free one, once, for a 0)."""
        mapped = self._public_port_map.get(service_port, service_port)
        if mapped != 0:
            return mapped
        if service_port not in self._resolved_ports:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self._resolved_ports[service_port] = probe.getsockname()[1]
        return self._resolved_ports[service_port]

    def desired_listeners(
        self, apps: Iterable[App], *, hostname_on_loopback: bool
    ) -> dict[tuple[str, int], tuple[str, int]]:
        """(address, local port) -> (app, service port) for every listener the apps need."""
        desired: dict[tuple[str, int], tuple[str, int]] = {}
        self.hostname_app = None
        for app in apps:
            ports = sorted(
                {
                    port
                    for m in app.machines
                    if m.state != "destroyed"
                    for port, _ in models.pg_tls_ports(m.config)
                }
            )
            if not ports:
                continue
            # Only a dedicated v4 and the loopback v6 can be listened on. A shared v4 does not
            # carry raw pg_tls (fly-api.md §7.2) and documentation v6 addresses are not local.
            addresses = [ip.address for ip in app.public_v4]
            addresses += [ip.address for ip in app.public_v6 if ip.address == "::1"]
            for port in ports:
                for address in addresses:
                    desired[(address, self.listen_port(port))] = (app.name, port)
            # 127.0.0.1 plays the A record of <app>.fly.dev, so it needs a dedicated v4: an app
            # with only a v6 stays unreachable by name, as it is from GitHub's IPv4-only runners.
            if hostname_on_loopback and self.hostname_app is None and app.public_v4:
                self.hostname_app = app.name
                for port in ports:
                    desired[("127.0.0.1", self.listen_port(port))] = (app.name, port)
        return desired

    def endpoint(
        self, app: App, port: int, listening: Mapping[tuple[str, int], str]
    ) -> tuple[str, int] | None:
        """Where a client reaches ``<app>.fly.dev:<port>``: 127.0.0.1 if this app plays the
        hostname, else its first IP in ``listening`` (the open listeners); None when none is."""
        local = self.listen_port(port)
        candidates = [("127.0.0.1", local)] if self.hostname_app == app.name else []
        candidates += [(ip.address, local) for ip in app.public_v4 + app.public_v6]
        return next((c for c in candidates if listening.get(c) == app.name), None)

    def route(self, app: App, service_port: int) -> Route | None:
        """Where a new connection to the app's ``service_port`` goes; None refuses it."""
        candidates: list[tuple[Machine, int]] = []
        for machine in app.machines:
            # Only a started machine on a reachable host serves: not stopped, not created
            # (a skip_launch update never launched it), not replacing.
            if machine.state != "started" or machine.host_status != "ok":
                continue
            for port, internal in models.pg_tls_ports(machine.config):
                if port == service_port:
                    candidates.append((machine, internal))
                    break
        if not candidates:
            return None
        if candidates[0][1] == HAPROXY_PORT:
            primary = app.primary
            if primary is None or primary.state != "started" or primary.host_status != "ok":
                return None
            via = next((m for m, _ in candidates if m.id == primary.id), candidates[0][0])
            return Route(app.name, primary.id, via.id, haproxy=True)
        machine = candidates[next(self._round_robin) % len(candidates)][0]
        return Route(app.name, machine.id, machine.id, haproxy=False)
