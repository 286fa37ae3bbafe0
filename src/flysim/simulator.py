"""The simulated Fly platform: state, time-based machine transitions and the public Python API."""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flysim import _ids, graphql_api, models
from flysim.faults import Faults
from flysim.models import App, IPAddress, Lease, Machine
from flysim.postgres import PostgresServer
from flysim.proxy import HAPROXY_PORT, Backend, ProxyManager, Route
from flysim.ratelimit import RateLimiter, RateLimits
from flysim.requestlog import RequestRecord

if TYPE_CHECKING:
    from graphql import GraphQLSchema

    from flysim.server import ApiServer

log = logging.getLogger("flysim")

_VALID_HANDLERS = frozenset({"http", "tls", "pg_tls", "proxy_proto", "edge_http"})


class ApiError(Exception):
    """An error answer of the Machines API: ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class StateChange:
    """One entry of the machine timeline (see :meth:`Simulator.timeline`)."""

    at: float  # time.monotonic()
    app: str
    machine_id: str
    state: str
    healthy: bool  # started on a reachable host with every defined check passing
    role: str
    instance_id: str
    # seed / update / restarted / checks_passing / checks_critical / failover / host_<status>
    reason: str
    host_status: str = "ok"


class _Scheduler:
    """Runs callbacks at monotonic deadlines on one thread, in deadline order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="flysim-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + max(delay, 0.0), next(self._seq), fn))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, fn = heapq.heappop(self._heap)
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cv.wait(timeout)
            try:
                fn()
            except Exception:  # a broken transition must not stop time
                log.exception("scheduled transition failed")


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
        self._rate_limiter = RateLimiter(RateLimits.off() if rate_limits is None else rate_limits)
        self._ports = (api_port, flaps_port)
        self._rng = random.Random(seed)
        self._accepted_tokens = _token_parts(token)
        self._public_port_map = dict(public_port_map or {})
        self._resolved_ports: dict[int, int] = {}
        if v4_prefix is None:
            # A random /24 inside 127.0.0.0/8 (never 127.0.0.x) so simulators in parallel
            # processes rarely want the same address.
            v4_prefix = f"127.{self._rng.randrange(1, 255)}.{self._rng.randrange(1, 255)}"
        self._v4_prefix = v4_prefix
        self._counters = {"v4": 0, "v6": 1, "private_v6": 0, "shared_v4": 0, "app": 0}

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._apps: dict[str, App] = {}
        self._requests: list[RequestRecord] = []
        self._timeline: list[StateChange] = []
        self._scheduler = _Scheduler()
        self._proxy: ProxyManager | None = None
        self._servers: list[ApiServer] = []
        self._tmpdir: str | None = None
        self._hostname_app: str | None = None
        self._round_robin = itertools.count()
        self._started = False
        self._stopped = False
        self.faults = Faults(self)
        self._schema: GraphQLSchema = graphql_api.build(self)

    # ============================================================================ lifecycle ====
    def start(self) -> Simulator:
        """Start serving (idempotent). A stopped simulator cannot be started again."""
        # Imported here: the server's route handlers import this module.
        from flysim.server import ApiServer

        with self._lock:
            if self._stopped:
                raise RuntimeError("this simulator was stopped; create a new one")
            if self._started:
                return self
            self._started = True
        try:
            self._tmpdir = tempfile.mkdtemp(prefix="flysim-")
            self._proxy = ProxyManager(
                lock=self._lock,
                route=self._route,
                backend=lambda: self.postgres,
                cert_dir=self._tmpdir,
            )
            self._scheduler.start()
            self._servers.append(ApiServer(self, "graphql", self.host, self._ports[0]))
            self._servers.append(ApiServer(self, "rest", self.host, self._ports[1]))
            with self._lock:
                self._after_change()
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
            self._counters["app"] += 1
            app = App(
                name=name,
                org_slug=org_slug,
                role=role,
                internal_numeric_id=100000 + self._counters["app"],
                region=region,
            )
            self._apps[name] = app
            now = time.time()
            org_hex = f"{self._rng.randrange(0x10, 0xFFF):x}"
            is_pg = role == models.POSTGRES_ROLE
            labels: dict[str, str] = {}
            if is_pg:
                image, labels = models.postgres_image(
                    self._rng, pg_version or ("15.3" if legacy else "16.4")
                )
            else:
                image = f"registry.fly.io/{name}:deployment-{_ids.ulid(now)}"
            if services is None and is_pg and not legacy:
                services = models.PG_TLS_SERVICES
            for index in range(machines):
                if is_pg:
                    config = models.postgres_config(
                        image=image,
                        region=region,
                        volume=_ids.volume_id(self._rng),
                        services=services,
                    )
                else:
                    config = models.web_config(image=image, region=region)
                    if services is not None:
                        config["services"] = copy.deepcopy(services)
                state = machine_states[index] if machine_states else "started"
                machine = Machine(
                    id=_ids.machine_id(self._rng),
                    name=_ids.machine_name(self._rng),
                    region=region,
                    private_ip=self._private_ip(org_hex),
                    config=config,
                    image_ref=models.image_ref_for(image, labels),
                    state=state,
                    instance_id=_ids.ulid(now - 3600),
                    created_at=now - 86400,
                    updated_at=now - 3600,
                )
                if is_pg:
                    machine.role = "primary" if index == primary_index else "replica"
                    if index == primary_index:
                        app.primary_id = machine.id
                machine.add_event("launch", "created", source="user")
                if state == "started":
                    machine.add_event("start", "started")
                    machine.pass_checks(now)
                elif state == "created":
                    machine.clear_checks()  # never launched: no check has ever run
                else:
                    # UNCONFIRMED: what a stopped machine's list shows; critical (its last run
                    # failed as it went down) is the reading no client can mistake for healthy.
                    machine.fail_checks(now)
                app.machines.append(machine)
                self._record(app, machine, "seed")
            if private_v6 if private_v6 is not None else (is_pg and not legacy):
                self._allocate_ip(app, "private_v6", region)
            if public_v4:
                self._allocate_ip(app, "v4", "")
            if public_v6:
                self._allocate_ip(app, "v6", "")
            if shared_v4:
                self._allocate_ip(app, "shared_v4", "")
            self._after_change()
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
            machine = self._require_machine(self._require_app(app), machine_id)
            lease = Lease(
                nonce=_ids.lease_nonce(),
                owner=owner,
                description=description,
                expires_at=time.time() + ttl,
                version=machine.instance_id,
            )
            machine.lease = lease
            return lease.nonce

    def clear_lease(self, app: str, machine_id: str) -> None:
        with self._lock:
            self._require_machine(self._require_app(app), machine_id).lease = None

    def set_host_status(self, app: str, machine_id: str, status: str) -> None:
        """Make the machine's host ``unreachable`` (or ``unknown``), or ``ok`` again.

        While it is not ``ok`` the machine is down, not absent (docs/fly-behaviour.md): the API
        lists it with ``host_status``, ``config: null`` and the config as ``incomplete_config``,
        its ``state`` stays the last known one, it serves no pg_tls connection, it counts as not
        healthy, and lease, update and wait requests on it are answered 503.
        """
        if status not in models.HOST_STATUSES:
            raise ValueError(f"host status must be one of {sorted(models.HOST_STATUSES)}")
        with self._lock:
            state = self._require_app(app)
            machine = self._require_machine(state, machine_id)
            if machine.host_status == status:
                return
            if status == "ok":
                machine.known_state = None
            elif machine.host_status == "ok":
                machine.known_state = machine.state
            machine.host_status = status
            self._record(state, machine, f"host_{status}")
            if status != "ok" and self._proxy is not None:
                # Connections through the machine's proxy or to its Postgres die with the host.
                self._proxy.cut(
                    lambda r: r.app == app and machine_id in (r.backend_machine, r.via_machine)
                )
            self._after_change()

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
            state = self._require_app(app)
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

    def max_machines_down(self, app: str) -> int:
        """The most machines of ``app`` that were at the same time not healthy (started on a
        reachable host with every defined check passing; an empty check list right after a start
        is not healthy) after having been healthy: how much capacity a rollout took away."""
        down: set[str] = set()
        peak = 0
        was_healthy: set[str] = set()
        for change in self.timeline(app):
            if change.healthy:
                down.discard(change.machine_id)
                was_healthy.add(change.machine_id)
            elif change.machine_id in was_healthy:
                down.add(change.machine_id)
            peak = max(peak, len(down))
        return peak

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
            return self._hostname_app

    def listen_port(self, service_port: int) -> int:
        """The local port a public service port listens on (see ``public_port_map``)."""
        with self._lock:
            return self._listen_port(service_port)

    def public_endpoint(self, app: str, port: int = 5432) -> tuple[str, int] | None:
        """Where a client reaches ``<app>.fly.dev:<port>`` now: 127.0.0.1 if this app plays the
        hostname, else its first listening IP; None when nothing listens."""
        with self._lock:
            listening = self.listening()
            local = self._listen_port(port)
            state = self._require_app(app)
            candidates = [("127.0.0.1", local)] if self._hostname_app == app else []
            candidates += [(ip.address, local) for ip in state.public_v4 + state.public_v6]
            return next((c for c in candidates if listening.get(c) == app), None)

    @property
    def proxied_connections(self) -> int:
        with self._lock:
            return 0 if self._proxy is None else self._proxy.connection_count

    # ============================================================================ internals ====
    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _authorized(self, header: str | None) -> bool:
        return bool(header) and not _token_parts(header or "").isdisjoint(self._accepted_tokens)

    def _require_app(self, name: str) -> App:
        app = self._apps.get(name)
        if app is None:
            raise ApiError(404, "app not found")
        return app

    def _require_machine(self, app: App, machine_id: str) -> Machine:
        machine = app.machine(machine_id)
        if machine is None or machine.state == "destroyed":
            raise ApiError(404, "machine not found")
        return machine

    def _private_ip(self, org_hex: str) -> str:
        parts = [f"{self._rng.randrange(0x10, 0xFFFF):x}" for _ in range(3)]
        return f"fdaa:0:{org_hex}:a7b:{':'.join(parts)}:2"

    def _record(self, app: App, machine: Machine, reason: str) -> None:
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

    def _after_change(self) -> None:
        """Open/close listeners to match the new state and wake every waiter."""
        if self._proxy is not None and not self._stopped:
            self._proxy.reconcile(self._desired_listeners())
        self._changed.notify_all()

    def _set_state(self, app: App, machine: Machine, state: str, reason: str) -> None:
        machine.state = state
        self._record(app, machine, reason)
        if state != "started" and self._proxy is not None:
            # The machine's HAProxy/Postgres is gone: connections through it or to it drop.
            self._proxy.cut(
                lambda r: r.app == app.name and machine.id in (r.backend_machine, r.via_machine)
            )

    # -- network ---------------------------------------------------------------------------------
    def _listen_port(self, service_port: int) -> int:
        mapped = self._public_port_map.get(service_port, service_port)
        if mapped != 0:
            return mapped
        if service_port not in self._resolved_ports:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self._resolved_ports[service_port] = probe.getsockname()[1]
        return self._resolved_ports[service_port]

    def _desired_listeners(self) -> dict[tuple[str, int], tuple[str, int]]:
        desired: dict[tuple[str, int], tuple[str, int]] = {}
        self._hostname_app = None
        for app in self._apps.values():
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
                    desired[(address, self._listen_port(port))] = (app.name, port)
            # 127.0.0.1 plays the A record of <app>.fly.dev, so it needs a dedicated v4: an app
            # with only a v6 stays unreachable by name, as it is from GitHub's IPv4-only runners.
            if self.hostname_on_loopback and self._hostname_app is None and app.public_v4:
                self._hostname_app = app.name
                for port in ports:
                    desired[("127.0.0.1", self._listen_port(port))] = (app.name, port)
        return desired

    def _route(self, app_name: str, service_port: int) -> Route | None:
        with self._lock:
            app = self._apps.get(app_name)
            if app is None or self._stopped:
                return None
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

    # -- machine lifecycle -----------------------------------------------------------------------
    def _check_nonce(self, machine: Machine, nonce: str | None) -> None:
        lease = machine.active_lease()
        if lease is not None:
            if nonce != lease.nonce:
                raise ApiError(409, held_by(machine.id, lease))
        elif nonce:
            # UNCONFIRMED: a nonce for a lease that expired or was released. Refusing it (the
            # strict reading) exposes clients that let their lease lapse mid-update.
            raise ApiError(409, f"machine ID {machine.id} lease not found or expired")

    def _validate_update(self, machine: Machine, body: Any) -> tuple[dict[str, Any], bool]:
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        config = body.get("config")
        if not isinstance(config, dict):
            raise ApiError(422, "config is required: an update replaces the whole machine config")
        image = config.get("image")
        if not isinstance(image, str) or not image.strip():
            raise ApiError(422, "invalid config: image is required (updates are not partial)")
        region = body.get("region")
        if region not in (None, "", machine.region):
            raise ApiError(
                400,
                f"cannot change region of machine {machine.id} from {machine.region} to {region}",
            )
        name = body.get("name")
        if name not in (None, "", machine.name):
            raise ApiError(400, f"cannot rename machine {machine.id}")
        skip_launch = body.get("skip_launch", False)
        if not isinstance(skip_launch, bool):
            raise ApiError(400, "skip_launch must be a boolean")
        current_version = body.get("current_version")
        if current_version not in (None, "", machine.instance_id):
            # UNCONFIRMED: no source states the status (412 appears nowhere); it is the
            # `stale_version_status` parameter so that tests can try the plausible ones.
            raise ApiError(
                self.stale_version_status,
                f"machine {machine.id} version mismatch: current_version {current_version} "
                f"is not {machine.instance_id}",
            )
        _validate_services(config.get("services"))
        # UNCONFIRMED: we refuse an update that detaches or swaps the machine's volume. A
        # Postgres machine without its /data volume would come up empty, so be strict.
        old = sorted((m.get("volume"), m.get("path")) for m in machine.config.get("mounts") or [])
        mounts = config.get("mounts") or []
        if not isinstance(mounts, list) or not all(isinstance(m, dict) for m in mounts):
            raise ApiError(422, "invalid config: mounts must be a list of objects")
        new = sorted((m.get("volume"), m.get("path")) for m in mounts)
        if old != new:
            raise ApiError(
                422,
                f"invalid config: mounts of machine {machine.id} cannot change ({old} -> {new})",
            )
        return copy.deepcopy(config), skip_launch

    def _update_machine(
        self, app: App, machine: Machine, body: Any, nonce: str | None
    ) -> dict[str, Any]:
        self._check_nonce(machine, nonce)
        config, skip_launch = self._validate_update(machine, body)
        now = time.time()
        machine.previous_versions.append(machine.instance_id)
        machine.instance_id = _ids.ulid(now)
        machine.config = config
        machine.image_ref = models.image_ref_for(
            config["image"], dict(machine.image_ref.get("labels") or {})
        )
        machine.generation += 1
        machine.update_count += 1
        machine.updated_at = now
        machine.add_event("update", "replacing", source="user")
        machine.clear_checks()  # the new version has run no check yet
        self._set_state(app, machine, "replacing", "update")
        generation, app_name, machine_id = machine.generation, app.name, machine.id
        self._scheduler.call_later(
            self.restart_seconds,
            lambda: self._finish_restart(app_name, machine_id, generation, skip_launch),
        )
        self._after_change()
        return machine.to_json()

    def _finish_restart(
        self, app_name: str, machine_id: str, generation: int, skip_launch: bool
    ) -> None:
        with self._lock:
            app = self._apps.get(app_name)
            machine = app.machine(machine_id) if app else None
            if app is None or machine is None or machine.generation != generation or self._stopped:
                return
            now = time.time()
            # A skip_launch update leaves the new version `created`, a persistent state: it is
            # never launched, so it neither starts nor becomes `stopped` by itself (docs
            # `machines/machine-states`).
            state = "created" if skip_launch else "started"
            machine.updated_at = now
            machine.add_event("start" if state == "started" else "update", state)
            self._set_state(app, machine, state, "restarted")
            app.updates_completed += 1
            app.updated_since_armed.add(machine.id)
            self._maybe_failover(app)
            if state == "started":
                # Until its checks first run, the list stays empty: a client that reads
                # "no checks" as "all passing" moves on too early (flyctl #4952).
                self._scheduler.call_later(
                    self.check_grace_seconds,
                    lambda: self._run_checks(app_name, machine_id, generation),
                )
            self._after_change()

    def _run_checks(self, app_name: str, machine_id: str, generation: int) -> None:
        """The first run of a started machine's checks: every defined check gets a status."""
        with self._lock:
            app = self._apps.get(app_name)
            machine = app.machine(machine_id) if app else None
            if app is None or machine is None or machine.generation != generation:
                return
            if machine.state != "started" or self._stopped:
                return
            if self.faults.is_never_healthy(machine.id):
                machine.fail_checks(time.time())  # and they stay so until the next update
                self._record(app, machine, "checks_critical")
            else:
                machine.pass_checks(time.time())
                self._record(app, machine, "checks_passing")
            self._after_change()

    def _arm_failover(self, app_name: str, updates: int) -> None:
        with self._lock:
            app = self._require_app(app_name)
            app.failover_after = app.updates_completed + updates
            app.updated_since_armed = set()

    def _maybe_failover(self, app: App) -> None:
        if app.failover_after is None or app.updates_completed < app.failover_after:
            return
        app.failover_after = None
        others = [m for m in app.machines if m.id != app.primary_id and m.state != "destroyed"]
        # Prefer a started machine the rollout has not reached yet: that is the case that breaks
        # a "primary last" plan computed before the rollout began.
        ranked = sorted(
            others,
            key=lambda m: (
                m.state != "started" or m.host_status != "ok",
                m.id in app.updated_since_armed,
            ),
        )
        if ranked:
            self._set_primary(app, ranked[0].id, "failover")

    def _set_primary(self, app: App, machine_id: str, reason: str) -> None:
        old = app.primary_id
        app.primary_id = machine_id
        now = time.time()
        for machine in app.machines:
            role = "primary" if machine.id == machine_id else "replica"
            if machine.role != role:
                machine.role = role
                machine.refresh_role_output(now)
                self._record(app, machine, reason)
        if self._proxy is not None and old is not None:
            self._proxy.cut(lambda r: r.app == app.name and r.haproxy and r.backend_machine == old)

    # -- IP addresses ----------------------------------------------------------------------------
    def _allocate_ip(
        self,
        app: App,
        type_: str,
        region: str,
        network: str | None = None,
        service_name: str | None = None,
    ) -> IPAddress | None:
        """Allocate an address; None for ``shared_v4``, which lives in ``app.shared_ip``."""
        now = time.time()
        if type_ == "shared_v4":
            if app.shared_ip is None:
                self._counters["shared_v4"] += 1
                # TEST-NET-1: clearly not routable, and nothing listens there (a shared v4 does
                # not carry pg_tls anyway).
                app.shared_ip = f"192.0.2.{self._counters['shared_v4']}"
                app.shared_ip_created_at = now
            self._after_change()
            return None
        if type_ == "v4":
            self._counters["v4"] += 1
            if self._counters["v4"] > 254:
                raise ApiError(422, "the simulator ran out of IPv4 addresses")
            address = f"{self._v4_prefix}.{self._counters['v4']}"
        elif type_ == "v6":
            # Only ::1 is a local IPv6 address we can listen on, so the first v6 (while nobody
            # holds it) is ::1; later ones come from the documentation prefix 2001:db8::/32 and
            # are never listened on.
            if any(ip.address == "::1" for a in self._apps.values() for ip in a.ips):
                self._counters["v6"] += 1
                address = f"2001:db8::{self._counters['v6']:x}"
            else:
                address = "::1"
        elif type_ == "private_v6":
            self._counters["private_v6"] += 1
            address = (
                f"fdaa:0:{app.internal_numeric_id % 0xFFFF:x}:0:1::{self._counters['private_v6']:x}"
            )
        else:
            raise ApiError(422, f"invalid IP address type {type_!r}")
        ip = IPAddress(
            id=_ids.ip_id(self._rng),
            address=address,
            type=type_,
            # Anycast addresses allocated without a region are "global" (fly-api.md §2.1).
            region=region or "global",
            created_at=now,
            org_slug=app.org_slug,
            network=(network or "default") if type_ == "private_v6" else None,
            service_name=service_name or None,
        )
        app.ips.append(ip)
        self._after_change()
        return ip

    def _release_ip(self, app: App, *, ip_id: str | None, address: str | None) -> bool:
        if address is not None and address == app.shared_ip:
            app.shared_ip = None
            self._after_change()
            return True
        for ip in app.ips:
            if (ip_id is not None and ip.id == ip_id) or (
                address is not None and ip.address == address
            ):
                app.ips.remove(ip)
                self._after_change()
                return True
        return False

    # -- GraphQL resolvers -----------------------------------------------------------------------
    def _graphql_app(self, name: str) -> dict[str, Any]:
        with self._lock:
            app = self._apps.get(name)
            if app is None:
                raise graphql_api.NotFoundError("Could not find App")
            return self._app_graphql(app)

    def _app_graphql(self, app: App) -> dict[str, Any]:
        org = {
            "id": f"org_{app.org_slug}",
            "internalNumericId": str(app.internal_numeric_id * 7),
            "slug": app.org_slug,
            "name": app.org_slug,
            "paidPlan": True,
        }
        nodes = [ip.to_graphql() for ip in app.ips]
        return {
            "id": app.name,  # Fly's App.id is the app name
            "name": app.name,
            "internalNumericId": app.internal_numeric_id,
            "hostname": f"{app.name}.fly.dev",
            "cnameTarget": None,
            "appUrl": f"https://{app.name}.fly.dev",
            "deployed": bool(app.machines),
            "status": "deployed" if app.machines else "pending",
            "platformVersion": "machines",
            "network": "default",
            "organization": org,
            "role": {"name": app.role} if app.role else None,
            "ipAddresses": {"nodes": nodes, "totalCount": len(nodes)},
            "sharedIpAddress": app.shared_ip,
            "egressIpAddresses": {"nodes": []},
            "currentReleaseUnprocessed": None,
        }

    def _graphql_allocate(self, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            app = self._apps.get(str(data.get("appId") or ""))
            if app is None:
                raise graphql_api.NotFoundError("Could not find App")
            try:
                ip = self._allocate_ip(
                    app,
                    str(data["type"]),
                    str(data.get("region") or ""),
                    data.get("network"),
                    data.get("serviceName"),
                )
            except ApiError as exc:
                raise graphql_api.InvalidInputError(exc.message) from exc
            return {
                "ipAddress": ip.to_graphql() if ip is not None else None,
                "app": self._app_graphql(app),
                "clientMutationId": data.get("clientMutationId"),
            }

    def _graphql_release(self, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            ip_id, address = data.get("ipAddressId"), data.get("ip")
            if not ip_id and not address:
                raise graphql_api.InvalidInputError("ipAddressId or ip is required")
            if data.get("appId"):
                app = self._apps.get(str(data["appId"]))
                if app is None:
                    raise graphql_api.NotFoundError("Could not find App")
                apps = [app]
            else:
                apps = list(self._apps.values())
            for candidate in apps:
                if self._release_ip(candidate, ip_id=ip_id, address=address):
                    return {
                        "app": self._app_graphql(candidate),
                        "clientMutationId": data.get("clientMutationId"),
                    }
            raise graphql_api.NotFoundError("Could not find IPAddress")


def held_by(machine_id: str, lease: Lease) -> str:
    """The 409 text of the Machines API when someone else holds the lease."""
    expires = _ids.rfc3339(lease.data()["expires_at"])
    return f"machine ID {machine_id} lease currently held by {lease.owner}, expires at {expires}"


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


def _validate_services(services: Any) -> None:
    if services is None:
        return
    if not isinstance(services, list):
        raise ApiError(422, "invalid config: services must be a list")
    for index, service in enumerate(services):
        where = f"invalid config: services[{index}]"
        if not isinstance(service, dict):
            raise ApiError(422, f"{where} must be an object")
        if service.get("protocol") not in {"tcp", "udp"}:
            raise ApiError(422, f"{where}.protocol must be tcp or udp")
        internal = service.get("internal_port")
        if (
            not isinstance(internal, int)
            or isinstance(internal, bool)
            or not 1 <= internal <= 65535
        ):
            raise ApiError(422, f"{where}.internal_port must be a port number")
        ports = service.get("ports") or []
        if not isinstance(ports, list):
            raise ApiError(422, f"{where}.ports must be a list")
        for j, port in enumerate(ports):
            if not isinstance(port, dict):
                raise ApiError(422, f"{where}.ports[{j}] must be an object")
            number = port.get("port")
            if number is not None and (not isinstance(number, int) or not 1 <= number <= 65535):
                raise ApiError(422, f"{where}.ports[{j}].port must be a port number")
            if number is None and port.get("start_port") is None:
                raise ApiError(422, f"{where}.ports[{j}] needs port or start_port/end_port")
            handlers = port.get("handlers") or []
            if not isinstance(handlers, list) or not all(h in _VALID_HANDLERS for h in handlers):
                raise ApiError(422, f"{where}.ports[{j}].handlers has an unknown handler")
