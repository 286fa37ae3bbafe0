"""The simulated Fly platform: its state, the lock that guards it, and the public Python API.

The state (apps, machines, addresses, the request log and the machine timeline) lives here, behind
one re-entrant lock. Tests use the seeding, fault and observation methods; flysim's own modules
use the state API (``lock``, ``require_app``, ``update_machine``, ``allocate_ip``, ...), never the
private attributes. The behaviours themselves are elsewhere: leases in :mod:`flysim.leases`,
updates, restarts, checks and failover in :mod:`flysim.lifecycle`, machine metadata in
:mod:`flysim.metadata`, addresses in :mod:`flysim.ips`, the HTTP APIs in :mod:`flysim.rest_api`,
:mod:`flysim.graphql_api` and :mod:`flysim.server`.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flysim import graphql_api, ips, leases, lifecycle, metadata, models, seeding
from flysim.errors import ApiError
from flysim.faults import Faults
from flysim.ips import AddressPool, IPHook
from flysim.lifecycle import StateChange
from flysim.models import App, IPAddress, Machine
from flysim.network import PublicNetwork
from flysim.postgres import PostgresServer
from flysim.proxy import Backend, CertificateAuthority, ProxyManager, Route
from flysim.ratelimit import RateLimiter, RateLimits
from flysim.requestlog import RequestRecord
from flysim.scheduler import Scheduler
from flysim.server import ApiServer

if TYPE_CHECKING:
    from graphql import GraphQLSchema

# Re-exported: the Machines API's error and the timeline's entries have always been here.
__all__ = ["ApiError", "Simulator", "StateChange"]


class Simulator:
    """A local Fly.io: GraphQL and Machines APIs over HTTP, plus a pg_tls proxy.

    ``restart_seconds`` is how long an updated machine stays ``replacing``; it then becomes
    ``started``, or ``created`` after a ``skip_launch`` update. ``check_grace_seconds`` is how long
    a started machine's ``checks`` list stays empty before its checks first run (all ``passing``,
    or ``critical`` under ``faults.never_healthy``).
    ``rate_limits`` are the Machines API's limits, Fly's documented ones by default
    (:class:`~flysim.ratelimit.RateLimits`; ``None`` or ``RateLimits.off()`` for none).
    ``stale_version_status`` answers an update whose ``current_version`` is not the machine's
    ``instance_id`` (no source names Fly's status, so tests try several).
    ``public_port_map`` changes the port a public service port listens on (0: a free port chosen
    once); by default the listeners use the service's own port, as Fly does.
    With ``hostname_on_loopback`` the first app exposed through a dedicated IPv4 is also served on
    127.0.0.1, standing in for ``<app>.fly.dev`` (there is no DNS here).
    ``on_ip_allocated`` (also an attribute) is called, under the lock, with every new address
    before anyone sees it: a test uses it to stamp addresses (Fly's ``createdAt`` has one-second
    resolution, and its IP ids carry no order).
    Each simulator has a test CA of its own that issues the pg_tls certificates (for
    ``<app>.fly.dev``, ``*.fly.dev`` and ``localhost``, no IP address): :attr:`ca_cert_path` is its
    certificate, to trust as a system store would (``SSL_CERT_FILE``, ``NODE_EXTRA_CA_CERTS``, a
    Java trust store) or to name in ``sslrootcert``.
    """

    def __init__(
        self,
        token: str = "fo1_testtoken",  # noqa: S107 - a test-only token, not a secret
        *,
        postgres: Backend | None = None,
        restart_seconds: float = 0.5,
        check_grace_seconds: float = 0.5,
        hostname_on_loopback: bool = True,
        host: str = "127.0.0.1",
        api_port: int = 0,
        flaps_port: int = 0,
        public_port_map: Mapping[int, int] | None = None,
        v4_prefix: str | None = None,
        lease_owner: str = "ci@example.com",
        seed: int | None = None,
        rate_limits: RateLimits | None = RateLimits.fly(),  # noqa: B008 - frozen, shared is fine
        stale_version_status: int = 400,
        on_ip_allocated: IPHook | None = None,
    ) -> None:
        if not 400 <= stale_version_status <= 599:
            raise ValueError("stale_version_status must be an error status (4xx/5xx)")
        self.token = token
        self.postgres = postgres
        self.restart_seconds = restart_seconds
        self.check_grace_seconds = check_grace_seconds
        self.hostname_on_loopback = hostname_on_loopback
        self.host = host
        self.lease_owner = lease_owner
        # UNCONFIRMED (docs/fly-behaviour.md): no source states the status of a stale
        # `current_version`; 400 is a guess, and the action's tests run against several.
        self.stale_version_status = stale_version_status
        self.on_ip_allocated = on_ip_allocated
        self._rate_limiter = RateLimiter(RateLimits.off() if rate_limits is None else rate_limits)
        self._ports = (api_port, flaps_port)
        self._rng = random.Random(seed)
        self._accepted_tokens = _token_parts(token)
        self._network = PublicNetwork(public_port_map)
        if v4_prefix is None:
            # A random /24 inside 127.0.0.0/8 (never 127.0.0.x) so simulators in parallel
            # processes rarely want the same address.
            v4_prefix = f"127.{self._rng.randrange(1, 255)}.{self._rng.randrange(1, 255)}"
        self._addresses = AddressPool(self._rng, v4_prefix)
        self._app_count = 0

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._apps: dict[str, App] = {}
        self._requests: list[RequestRecord] = []
        self._timeline: list[StateChange] = []
        self._scheduler = Scheduler()
        self._proxy: ProxyManager | None = None
        self._servers: list[ApiServer] = []
        self._tmpdir: str | None = None
        self._ca = CertificateAuthority()
        self._ca_path: str | None = None
        self._started = False
        self._stopped = False
        self.faults = Faults(self)
        self._schema: GraphQLSchema = graphql_api.build(self)

    # ============================================================================ lifecycle ====
    def start(self) -> Simulator:
        """Start serving (idempotent). A stopped simulator cannot be started again."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("this simulator was stopped; create a new one")
            if self._started:
                return self
            self._started = True
        try:
            self._tmpdir = tempfile.mkdtemp(prefix="flysim-")
            self._ca_path = self._ca.write(self._tmpdir)
            self._proxy = ProxyManager(
                lock=self._lock,
                route=self._route,
                backend=lambda: self.postgres,
                cert_dir=self._tmpdir,
                ca=self._ca,
            )
            self._scheduler.start()
            self._servers.append(ApiServer(self, "graphql", self.host, self._ports[0]))
            self._servers.append(ApiServer(self, "rest", self.host, self._ports[1]))
            self.after_change()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the HTTP servers, the proxy listeners and all timers (not the Postgres server)."""
        with self._lock:
            if not self._started or self._stopped:
                self._stopped = True
                return
            self._stopped = True
            self._changed.notify_all()
        for server in self._servers:
            server.close()
        with self._lock:
            if self._proxy is not None:
                self._proxy.close()
        self._scheduler.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def api_base_url(self) -> str:
        """For ``FLY_API_BASE_URL``: GraphQL is at ``{api_base_url}/graphql``."""
        return self._servers[0].base_url

    @property
    def flaps_base_url(self) -> str:
        """For ``FLY_FLAPS_BASE_URL``: the Machines API is at ``{flaps_base_url}/v1/...``."""
        return self._servers[1].base_url

    @property
    def ca_cert_path(self) -> str:
        """The PEM file of this simulator's test CA, which issues every pg_tls certificate.

        Trust it as a user's system store trusts Fly's CA (``SSL_CERT_FILE`` for libpq, OpenSSL
        and Python; ``NODE_EXTRA_CA_CERTS`` for Node; a trust store made with ``keytool`` for
        Java), or name it in ``sslrootcert``. It exists from :meth:`start` until :meth:`stop`.
        """
        if self._ca_path is None or self._stopped:
            raise RuntimeError("the CA certificate exists while the simulator runs")
        return self._ca_path

    # ============================================================================== seeding ====
    def add_app(
        self,
        name: str,
        machines: int = 3,
        *,
        legacy: bool = False,
        region: str = "iad",
        role: str | None = models.POSTGRES_ROLE,
        postgres: bool = True,
        org_slug: str = "personal",
        pg_version: str | None = None,
        services: list[dict[str, Any]] | None = None,
        private_v6: bool | None = None,
        public_v4: bool = False,
        public_v6: bool = False,
        shared_v4: bool = False,
        machine_states: list[str] | None = None,
        primary_index: int = 0,
    ) -> App:
        """Seed an app and return its state object.

        A Postgres app (``role="postgres_cluster"``) is a postgres-flex cluster: with
        ``legacy=False`` every machine has the 5432/5433 pg_tls services of `fly pg create` and the
        app a Flycast ``private_v6``; ``legacy=True`` has no services and no IPs. ``services``
        overrides the services of every machine. ``role=None`` seeds a plain web app.
        ``machine_states`` gives each machine's initial state (default all ``started``).
        ``postgres=False`` is shorthand for ``role=None``.
        """
        if not postgres:
            role = None
        with self._lock:
            if name in self._apps:
                raise ValueError(f"app {name!r} already exists")
            self._app_count += 1
            app = App(
                name=name,
                org_slug=org_slug,
                role=role,
                internal_numeric_id=100000 + self._app_count,
                region=region,
            )
            self._apps[name] = app
            machines_of_app = seeding.seed_machines(
                app,
                self._rng,
                count=machines,
                legacy=legacy,
                pg_version=pg_version,
                services=services,
                machine_states=machine_states,
                primary_index=primary_index,
            )
            for machine in machines_of_app:
                app.machines.append(machine)
                self.record_change(app, machine, "seed")
            if private_v6 if private_v6 is not None else (app.is_postgres and not legacy):
                self.allocate_ip(app, "private_v6", region)
            if public_v4:
                self.allocate_ip(app, "v4", "")
            if public_v6:
                self.allocate_ip(app, "v6", "")
            if shared_v4:
                self.allocate_ip(app, "shared_v4", "")
            self.after_change()
            return app

    def app(self, name: str) -> App:
        """The live state object of an app (read it; change state through the APIs)."""
        with self._lock:
            return self._apps[name]

    @property
    def apps(self) -> dict[str, App]:
        with self._lock:
            return dict(self._apps)

    def hold_lease(
        self,
        app: str,
        machine_id: str,
        owner: str = "someone@example.com",
        ttl: float = 60,
        description: str = "",
    ) -> str:
        """Make someone else hold the machine's lease for ``ttl`` seconds; returns its nonce."""
        with self._lock:
            machine = self.require_machine(self.require_app(app), machine_id)
            return leases.hold(machine, owner=owner, ttl=ttl, description=description).nonce

    def clear_lease(self, app: str, machine_id: str) -> None:
        with self._lock:
            self.require_machine(self.require_app(app), machine_id).lease = None

    def set_host_status(self, app: str, machine_id: str, status: str) -> None:
        """Make the machine's host ``unreachable`` (or ``unknown``), or ``ok`` again.

        While it is not ``ok`` the machine is down, not absent (docs/fly-behaviour.md): the API
        lists it with ``host_status``, ``config: null`` and the config as ``incomplete_config``,
        its ``state`` stays the last known one, it serves no pg_tls connection, it counts as not
        healthy, and lease, update, wait and metadata requests on it are answered 503.
        """
        lifecycle.set_host_status(self, app, machine_id, status)

    @property
    def rate_limits(self) -> RateLimits:
        """The Machines API's rate limits. Setting them starts every bucket afresh (full)."""
        return self._rate_limiter.limits

    @rate_limits.setter
    def rate_limits(self, limits: RateLimits | None) -> None:
        self._rate_limiter = RateLimiter(RateLimits.off() if limits is None else limits)

    def attach_database(self, app: str, user: str, password: str, dbname: str) -> str:
        """Create a role and database on the Postgres server and return the internal
        ``DATABASE_URL`` that `fly pg attach` would set (Flycast host, ``sslmode=disable``)."""
        if not isinstance(self.postgres, PostgresServer):
            raise RuntimeError("the simulator has no PostgresServer to create a database on")
        self.postgres.create_database(user, password, dbname)
        with self._lock:
            state = self.require_app(app)
            flycast = any(ip.type == "private_v6" for ip in state.ips)
        host = f"{app}.flycast" if flycast else f"top2.nearest.of.{app}.internal"
        return (
            f"postgres://{quote(user, safe='')}:{quote(password, safe='')}@{host}:5432/"
            f"{quote(dbname, safe='')}?sslmode=disable"
        )

    # ======================================================================= observation ====
    @property
    def requests(self) -> list[RequestRecord]:
        """Every finished request, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def mutating_requests(self) -> list[RequestRecord]:
        """REST POST/PUT/PATCH/DELETE and GraphQL mutations."""
        return [r for r in self.requests if r.is_mutating]

    def throttled(self) -> list[RequestRecord]:
        """Requests the rate limits answered 429 (not those of an injected ``rate_limit_next``):
        empty when the client never went faster than Fly allows."""
        return [r for r in self.requests if r.throttled]

    def timeline(self, app: str | None = None) -> list[StateChange]:
        """Machine state changes (seeding, updates, restarts, checks, failovers), oldest first."""
        with self._lock:
            return [c for c in self._timeline if app is None or c.app == app]

    def machine_metadata(self, app: str, machine_id: str) -> dict[str, str]:
        """The machine's metadata (``config.metadata``, what GET .../metadata answers), a copy."""
        with self._lock:
            return metadata.read(self.require_machine(self.require_app(app), machine_id))

    def max_machines_down(self, app: str) -> int:
        """The most machines of ``app`` that were at the same time not healthy (started on a
        reachable host with every defined check passing; an empty check list right after a start
        is not healthy) after having been healthy: how much capacity a rollout took away."""
        return lifecycle.max_down(self.timeline(app))

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until ``condition()`` (run under the state lock) is true; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
            return True

    def listening(self) -> dict[tuple[str, int], str]:
        """Open pg_tls listeners: (address, port) -> app."""
        with self._lock:
            return {} if self._proxy is None else self._proxy.listening()

    @property
    def listener_errors(self) -> list[str]:
        with self._lock:
            return [] if self._proxy is None else list(self._proxy.errors)

    @property
    def hostname_app(self) -> str | None:
        """The app whose ``<app>.fly.dev`` is played by 127.0.0.1 (see ``hostname_on_loopback``)."""
        with self._lock:
            return self._network.hostname_app

    def listen_port(self, service_port: int) -> int:
        """The local port a public service port listens on (see ``public_port_map``)."""
        with self._lock:
            return self._network.listen_port(service_port)

    def public_endpoint(self, app: str, port: int = 5432) -> tuple[str, int] | None:
        """Where a client reaches ``<app>.fly.dev:<port>`` now: 127.0.0.1 if this app plays the
        hostname, else its first listening IP; None when nothing listens."""
        with self._lock:
            listening = self.listening()
            return self._network.endpoint(self.require_app(app), port, listening)

    @property
    def proxied_connections(self) -> int:
        with self._lock:
            return 0 if self._proxy is None else self._proxy.connection_count

    # ============================================================================ state API ====
    # For flysim's own modules (the APIs and the behaviours), and for tests that read several
    # objects at once: hold ``lock`` while reading or changing live state objects. Every method
    # here takes the lock itself (it is re-entrant), so each call is consistent on its own.
    @property
    def lock(self) -> threading.RLock:
        """The state lock: hold it to read or change apps, machines and addresses consistently."""
        return self._lock

    @property
    def changed(self) -> threading.Condition:
        """Notified (on ``lock``) after every state change; wait on it for a machine's state."""
        return self._changed

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called: waiters give up, scheduled transitions do nothing."""
        return self._stopped

    @property
    def schema(self) -> GraphQLSchema:
        """Fly's GraphQL schema, its resolvers bound to this simulator."""
        return self._schema

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the simulator's token."""
        return bool(header) and not _token_parts(header or "").isdisjoint(self._accepted_tokens)

    def throttle(self, action: str, identifier: str) -> int | None:
        """Count one Machines API ``action`` on ``identifier`` against the rate limits: None
        when allowed, else the seconds for ``Retry-After``."""
        return self._rate_limiter.take(action, identifier)

    def log_request(self, record: RequestRecord) -> None:
        """Add a finished request to :attr:`requests`."""
        with self._lock:
            self._requests.append(record)

    def find_app(self, name: str) -> App | None:
        """The app, or None (for callers with their own "not found", such as GraphQL's)."""
        with self._lock:
            return self._apps.get(name)

    def require_app(self, name: str) -> App:
        """The app, or the Machines API's 404."""
        with self._lock:
            app = self._apps.get(name)
            if app is None:
                raise ApiError(404, "app not found")
            return app

    def require_machine(self, app: App, machine_id: str) -> Machine:
        """The app's machine, or the Machines API's 404 (a destroyed machine is gone)."""
        with self._lock:
            machine = app.machine(machine_id)
            if machine is None or machine.state == "destroyed":
                raise ApiError(404, "machine not found")
            return machine

    def update_machine(
        self, app: App, machine: Machine, body: Any, nonce: str | None
    ) -> dict[str, Any]:
        """Apply a Machines API update body (see :func:`flysim.lifecycle.update_machine`)."""
        with self._lock:
            return lifecycle.update_machine(self, app, machine, body, nonce)

    def allocate_ip(
        self,
        app: App,
        type_: str,
        region: str,
        network: str | None = None,
        service_name: str | None = None,
    ) -> IPAddress | None:
        """Allocate an address; None for ``shared_v4``, which lives in ``app.shared_ip``."""
        with self._lock:
            ip = self._addresses.allocate(
                app,
                type_,
                region,
                network,
                service_name,
                apps=self._apps.values(),
                on_allocated=self.on_ip_allocated,
            )
            self.after_change()
            return ip

    def release_ip(self, app: App, *, ip_id: str | None, address: str | None) -> bool:
        """Release the app's address with this id or this address; False if it has none."""
        with self._lock:
            if not ips.release(app, ip_id=ip_id, address=address):
                return False
            self.after_change()
            return True

    def record_change(self, app: App, machine: Machine, reason: str) -> None:
        """Add the machine's current state to the :meth:`timeline`."""
        with self._lock:
            self._timeline.append(
                StateChange(
                    at=time.monotonic(),
                    app=app.name,
                    machine_id=machine.id,
                    state=machine.state,
                    healthy=machine.healthy,
                    role=machine.role,
                    instance_id=machine.instance_id,
                    reason=reason,
                    host_status=machine.host_status,
                )
            )

    def after_change(self) -> None:
        """Open/close listeners to match the new state and wake every waiter."""
        with self._lock:
            if self._proxy is not None and not self._stopped:
                self._proxy.reconcile(
                    self._network.desired_listeners(
                        self._apps.values(), hostname_on_loopback=self.hostname_on_loopback
                    )
                )
            self._changed.notify_all()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the scheduler's thread after ``delay`` seconds (it takes the lock)."""
        self._scheduler.call_later(delay, fn)

    def cut_connections(self, route: Callable[[Route], bool]) -> None:
        """Drop every proxied pg_tls connection whose route matches."""
        with self._lock:
            if self._proxy is not None:
                self._proxy.cut(route)

    # ============================================================================ internals ====
    def _route(self, app_name: str, service_port: int) -> Route | None:
        """The proxy's question for each new connection (asked under the lock)."""
        with self._lock:
            app = self._apps.get(app_name)
            if app is None or self._stopped:
                return None
            return self._network.route(app, service_port)


def _token_parts(value: str) -> set[str]:
    """Tokens in an Authorization value: scheme stripped (repeatedly, any case), comma-split."""
    parts: set[str] = set()
    for part in value.split(","):
        token = part.strip()
        while True:
            head, _, rest = token.partition(" ")
            if rest and head.lower() in {"bearer", "flyv1"}:
                token = rest.strip()
            else:
                break
        if token:
            parts.add(token)
    return parts
