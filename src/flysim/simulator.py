"""The simulated Fly platform as tests use it: :class:`Simulator`, the facade in front of the
state core.

The state itself (apps, machines, addresses, the request log, the timeline, the armed faults)
and the operations the behaviours share are :class:`~flysim.state.State`. The behaviours are
elsewhere: leases in :mod:`flysim.leases`, updates, restarts, checks and failover in
:mod:`flysim.lifecycle`, machine metadata in :mod:`flysim.metadata`, addresses in
:mod:`flysim.ips`, the HTTP APIs in :mod:`flysim.rest_api`, :mod:`flysim.graphql_api` and
:mod:`flysim.server`. What serves a running simulator (the HTTP servers, the proxy, the timers)
is :mod:`flysim.serving`; what tests observe is :mod:`flysim.observation`. This module builds and
wires them, and no module of flysim imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar, overload
from urllib.parse import quote

from flysim import leases, lifecycle, models, seeding
from flysim.errors import ApiError
from flysim.faults import Faults
from flysim.ips import IPHook
from flysim.models import App, IPAddress
from flysim.observation import Observation
from flysim.postgres import PostgresServer
from flysim.proxy import Backend
from flysim.ratelimit import RateLimiter, RateLimits
from flysim.serving import Serving
from flysim.state import State
from flysim.timeline import StateChange

# Re-exported: the Machines API's error and the timeline's entries have always been here.
__all__ = ["ApiError", "Simulator", "StateChange"]

T = TypeVar("T")


class _OnState(Generic[T]):
    """A simulator attribute kept on its state core, where the behaviours read it each time they
    act: ``sim.restart_seconds = 2`` changes what the next update does."""

    def __set_name__(self, owner: type[Simulator], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, sim: None, owner: type[Simulator]) -> _OnState[T]: ...
    @overload
    def __get__(self, sim: Simulator, owner: type[Simulator]) -> T: ...
    def __get__(self, sim: Simulator | None, owner: type[Simulator]) -> T | _OnState[T]:
        if sim is None:
            return self
        value: T = getattr(sim._state, self._name)
        return value

    def __set__(self, sim: Simulator, value: T) -> None:
        setattr(sim._state, self._name, value)


class Simulator(Observation):
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

    restart_seconds = _OnState[float]()
    check_grace_seconds = _OnState[float]()
    hostname_on_loopback = _OnState[bool]()
    lease_owner = _OnState[str]()
    # UNCONFIRMED (docs/fly-behaviour.md): no source states the status of a stale
    # `current_version`; 400 is a guess, and the action's tests run against several.
    stale_version_status = _OnState[int]()
    on_ip_allocated = _OnState[IPHook | None]()

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
        self.host = host
        self._state = State(
            token=token,
            restart_seconds=restart_seconds,
            check_grace_seconds=check_grace_seconds,
            hostname_on_loopback=hostname_on_loopback,
            public_port_map=public_port_map,
            v4_prefix=v4_prefix,
            lease_owner=lease_owner,
            seed=seed,
            rate_limits=rate_limits,
            stale_version_status=stale_version_status,
            on_ip_allocated=on_ip_allocated,
        )
        self.faults = Faults(self._state)
        self._serving = Serving(
            self._state, host=host, ports=(api_port, flaps_port), backend=lambda: self.postgres
        )
        self._started = False

    # ============================================================================ lifecycle ====
    def start(self) -> Simulator:
        """Start serving (idempotent). A stopped simulator cannot be started again."""
        with self._state.lock:
            if self._state.stopped:
                raise RuntimeError("this simulator was stopped; create a new one")
            if self._started:
                return self
            self._started = True
        try:
            self._serving.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the HTTP servers, the proxy listeners and all timers (not the Postgres server)."""
        with self._state.lock:
            running = self._started and not self._state.stopped
            self._state.stop()
        if running:
            self._serving.stop()

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
        return self._serving.api_base_url

    @property
    def flaps_base_url(self) -> str:
        """For ``FLY_FLAPS_BASE_URL``: the Machines API is at ``{flaps_base_url}/v1/...``."""
        return self._serving.flaps_base_url

    @property
    def ca_cert_path(self) -> str:
        """The PEM file of this simulator's test CA, which issues every pg_tls certificate.

        Trust it as a user's system store trusts Fly's CA (``SSL_CERT_FILE`` for libpq, OpenSSL
        and Python; ``NODE_EXTRA_CA_CERTS`` for Node; a trust store made with ``keytool`` for
        Java), or name it in ``sslrootcert``. It exists from :meth:`start` until :meth:`stop`.
        """
        path = self._serving.ca_path
        if path is None or self._state.stopped:
            raise RuntimeError("the CA certificate exists while the simulator runs")
        return path

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
        state = self._state
        with state.lock:
            app = state.new_app(
                name, org_slug=org_slug, role=role if postgres else None, region=region
            )
            for machine in seeding.seed_machines(
                app,
                state.rng,
                count=machines,
                legacy=legacy,
                pg_version=pg_version,
                services=services,
                machine_states=machine_states,
                primary_index=primary_index,
            ):
                app.machines.append(machine)
                state.record_change(app, machine, "seed")
            if private_v6 if private_v6 is not None else (app.is_postgres and not legacy):
                state.allocate_ip(app, "private_v6", region)
            for type_, wanted in (("v4", public_v4), ("v6", public_v6), ("shared_v4", shared_v4)):
                if wanted:
                    state.allocate_ip(app, type_, "")
            state.after_change()
            return app

    def app(self, name: str) -> App:
        """The live state object of an app (read it; change state through the APIs)."""
        with self._state.lock:
            app = self._state.find_app(name)
            if app is None:
                raise KeyError(name)
            return app

    @property
    def apps(self) -> dict[str, App]:
        return self._state.apps()

    def find_app(self, name: str) -> App | None:
        """The live state object of an app, or None."""
        return self._state.find_app(name)

    def hold_lease(
        self,
        app: str,
        machine_id: str,
        owner: str = "someone@example.com",
        ttl: float = 60,
        description: str = "",
    ) -> str:
        """Make someone else hold the machine's lease for ``ttl`` seconds; returns its nonce."""
        state = self._state
        with state.lock:
            machine = state.require_machine(state.require_app(app), machine_id)
            return leases.hold(machine, owner=owner, ttl=ttl, description=description).nonce

    def clear_lease(self, app: str, machine_id: str) -> None:
        state = self._state
        with state.lock:
            state.require_machine(state.require_app(app), machine_id).lease = None

    def set_host_status(self, app: str, machine_id: str, status: str) -> None:
        """Make the machine's host ``unreachable`` (or ``unknown``), or ``ok`` again.

        While it is not ``ok`` the machine is down, not absent (docs/fly-behaviour.md): the API
        lists it with ``host_status``, ``config: null`` and the config as ``incomplete_config``,
        its ``state`` stays the last known one, it serves no pg_tls connection, it counts as not
        healthy, and lease, update, wait and metadata requests on it are answered 503.
        """
        lifecycle.set_host_status(self._state, app, machine_id, status)

    @property
    def rate_limits(self) -> RateLimits:
        """The Machines API's rate limits. Setting them starts every bucket afresh (full)."""
        return self._state.rate_limiter.limits

    @rate_limits.setter
    def rate_limits(self, limits: RateLimits | None) -> None:
        self._state.rate_limiter = RateLimiter(RateLimits.off() if limits is None else limits)

    def attach_database(self, app: str, user: str, password: str, dbname: str) -> str:
        """Create a role and database on the Postgres server and return the internal
        ``DATABASE_URL`` that `fly pg attach` would set (Flycast host, ``sslmode=disable``)."""
        if not isinstance(self.postgres, PostgresServer):
            raise RuntimeError("the simulator has no PostgresServer to create a database on")
        self.postgres.create_database(user, password, dbname)
        with self._state.lock:
            flycast = any(ip.type == "private_v6" for ip in self._state.require_app(app).ips)
        host = f"{app}.flycast" if flycast else f"top2.nearest.of.{app}.internal"
        return (
            f"postgres://{quote(user, safe='')}:{quote(password, safe='')}@{host}:5432/"
            f"{quote(dbname, safe='')}?sslmode=disable"
        )

    # ================================================================ changing as a client ====
    # Tests that play another client, or read several objects at once, use these: hold ``lock``
    # while reading live state objects.
    @property
    def lock(self) -> threading.RLock:
        """The state lock: hold it to read or change apps, machines and addresses consistently."""
        return self._state.lock

    def allocate_ip(
        self,
        app: App,
        type_: str,
        region: str,
        network: str | None = None,
        service_name: str | None = None,
    ) -> IPAddress | None:
        """Allocate an address as another client would; None for ``shared_v4``, which lives in
        ``app.shared_ip``."""
        return self._state.allocate_ip(app, type_, region, network, service_name)

    def release_ip(self, app: App, *, ip_id: str | None, address: str | None) -> bool:
        """Release the app's address with this id or this address; False if it has none."""
        return self._state.release_ip(app, ip_id=ip_id, address=address)
