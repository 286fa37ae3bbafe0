"""The simulated platform's state core: apps, machines and addresses behind one re-entrant lock,
the request log, the machine timeline, the armed faults, and the operations every behaviour
shares (finding an app or machine, allocating and releasing addresses, recording a change,
scheduling one, reconciling the pg_tls listeners).

The behaviours (:mod:`flysim.lifecycle`, :mod:`flysim.leases`, :mod:`flysim.metadata`,
:mod:`flysim.ips`) and the APIs (:mod:`flysim.rest_api`, :mod:`flysim.graphql_api`,
:mod:`flysim.server`) work on a :class:`State`. The :class:`~flysim.simulator.Simulator` builds
it, starts and stops what serves it (:mod:`flysim.serving`), and is the tests' API. This module
imports only what holds data (models, the address pool, the network, the proxy's listeners, the
armed faults): whatever acts on the state imports it, never the other way round.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping

from flysim import ips
from flysim.errors import ApiError
from flysim.faultrules import ArmedFaults
from flysim.ips import AddressPool, IPHook
from flysim.models import App, IPAddress, Machine
from flysim.network import PublicNetwork
from flysim.proxy import ProxyManager, Route
from flysim.ratelimit import RateLimiter, RateLimits
from flysim.requestlog import RequestRecord
from flysim.scheduler import Scheduler
from flysim.timeline import StateChange


class State:
    """Everything the platform knows, and the lock that guards it.

    Hold :attr:`lock` while reading or changing live state objects (apps, machines, addresses).
    Every method here takes the lock itself (it is re-entrant), so each call is consistent on its
    own. The tuning attributes (``restart_seconds`` and the others set from the ``Simulator``'s
    arguments of the same names) are read by the behaviours each time they act.
    """

    def __init__(
        self,
        *,
        token: str,
        restart_seconds: float,
        check_grace_seconds: float,
        hostname_on_loopback: bool,
        public_port_map: Mapping[int, int] | None,
        v4_prefix: str | None,
        lease_owner: str,
        seed: int | None,
        rate_limits: RateLimits | None,
        stale_version_status: int,
        on_ip_allocated: IPHook | None,
    ) -> None:
        self.restart_seconds = restart_seconds
        self.check_grace_seconds = check_grace_seconds
        self.hostname_on_loopback = hostname_on_loopback
        self.lease_owner = lease_owner
        self.stale_version_status = stale_version_status
        self.on_ip_allocated = on_ip_allocated
        self.rate_limiter = RateLimiter(RateLimits.off() if rate_limits is None else rate_limits)
        # One generator for every identifier, so that a seeded simulator is reproducible.
        self.rng = random.Random(seed)
        self._accepted_tokens = _token_parts(token)
        self.network = PublicNetwork(public_port_map)
        if v4_prefix is None:
            # A random /24 inside 127.0.0.0/8 (never 127.0.0.x) so simulators in parallel
            # processes rarely want the same address.
            v4_prefix = f"127.{self.rng.randrange(1, 255)}.{self.rng.randrange(1, 255)}"
        self._addresses = AddressPool(self.rng, v4_prefix)
        self.armed = ArmedFaults()
        self.scheduler = Scheduler()
        # The pg_tls listeners, from Simulator.start on: listeners follow every change.
        self.proxy: ProxyManager | None = None

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopped = False
        self._app_count = 0
        self._apps: dict[str, App] = {}
        self._requests: list[RequestRecord] = []
        self._timeline: list[StateChange] = []

    # ============================================================================ the lock ====
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
        """Whether the simulator stopped: waiters give up, scheduled transitions do nothing."""
        return self._stopped

    def stop(self) -> None:
        """Mark the platform stopped and wake every waiter, so that none outlives it."""
        with self._lock:
            self._stopped = True
            self._changed.notify_all()

    # ============================================================================ requests ====
    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the simulator's token."""
        return bool(header) and not _token_parts(header or "").isdisjoint(self._accepted_tokens)

    def throttle(self, action: str, identifier: str) -> int | None:
        """Count one Machines API ``action`` on ``identifier`` against the rate limits: None
        when allowed, else the seconds for ``Retry-After``."""
        return self.rate_limiter.take(action, identifier)

    def log_request(self, record: RequestRecord) -> None:
        """Add a finished request to the request log."""
        with self._lock:
            self._requests.append(record)

    def requests(self) -> list[RequestRecord]:
        """Every finished request, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ================================================================================ apps ====
    def new_app(self, name: str, *, org_slug: str, role: str | None, region: str) -> App:
        """Register an app without machines or addresses (seeding adds them)."""
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
            return app

    def apps(self) -> dict[str, App]:
        """Every app by name (a copy of the mapping; the apps are the live objects)."""
        with self._lock:
            return dict(self._apps)

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

    # =========================================================================== addresses ====
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

    # ============================================================================= changes ====
    def record_change(self, app: App, machine: Machine, reason: str) -> None:
        """Add the machine's current state to the timeline."""
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

    def timeline(self, app: str | None = None) -> list[StateChange]:
        """The recorded changes (of one app, or all), oldest first."""
        with self._lock:
            return [c for c in self._timeline if app is None or c.app == app]

    def after_change(self) -> None:
        """Open/close listeners to match the new state and wake every waiter."""
        with self._lock:
            if self.proxy is not None and not self._stopped:
                self.proxy.reconcile(
                    self.network.desired_listeners(
                        self._apps.values(), hostname_on_loopback=self.hostname_on_loopback
                    )
                )
            self._changed.notify_all()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the scheduler's thread after ``delay`` seconds (it takes the lock)."""
        self.scheduler.call_later(delay, fn)

    def cut_connections(self, route: Callable[[Route], bool]) -> None:
        """Drop every proxied pg_tls connection whose route matches."""
        with self._lock:
            if self.proxy is not None:
                self.proxy.cut(route)

    def route(self, app_name: str, service_port: int) -> Route | None:
        """The proxy's question for each new connection (asked under the lock)."""
        with self._lock:
            app = self._apps.get(app_name)
            if app is None or self._stopped:
                return None
            return self.network.route(app, service_port)


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
