"""An in-memory Fly for the rollout's unit tests: one app, its IPs, machines and leases.

It implements `FlyApi` and runs on a `FakeClock`: an update gives the machine a new instance_id
and a timeline (`Boot`: started after a second or so, checks passing a little later), applied
as fake time passes; the wait endpoint moves the clock to the moment the state is reached (time
spent inside a request, so it is not in `clock.sleeps`). Nothing here sleeps for real.

Faults are scripted per method with `fail`: the error to answer, for which machine, family or
address, and whether the write was carried out anyway (now, `lands` seconds later, or just
before the next call of the same kind, as a late request overtaken by its resend). Every call is
recorded in `calls`.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fake_clock import FakeClock

from fly_pg_external.domain import AppInfo, IpAddress, IpFamily, Lease, Machine, UpdateRequest
from fly_pg_external.errors import FlyConflict, FlyError, FlyNotFound, FlyTimeout
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.plan import Plan, make_plan
from fly_pg_external.rollout import read_cluster
from fly_pg_external.settings import Settings, from_environ

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # fake time 0, for `created_at` stamps
SETTLED = frozenset({"started", "stopped", "suspended", "created", "failed"})
Landing = bool | float | Literal["before-next"]


@dataclass(frozen=True)
class Boot:
    """What a machine does after an update, in fake seconds."""

    start_after: float = 1.0  # until `started` (`created` after a skip_launch update)
    checks_after: float = 2.0  # from the start until every configured check has a result
    healthy: bool = True  # False: the checks come back critical, and stay so
    fails: bool = False  # ends `failed` instead of `started`


@dataclass
class Fault:
    error: BaseException
    target: str | None  # the machine ID, IP family or address it is for; None: any
    # Whether the write is carried out anyway: True at once, a number of seconds later, or
    # "before-next": just before the next call of the same method and target (a late request
    # overtaken by its resend).
    lands: Landing


@dataclass(frozen=True)
class Call:
    method: str
    target: str  # machine ID, family or address ("" for app-wide calls)
    at: float
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Lease:
    nonce: str
    owner: str
    until: float  # fake time


class FakeFly:
    def __init__(
        self,
        clock: FakeClock,
        machines: Iterable[dict[str, Any]] = (),
        *,
        app: str = "my-db",
        ips: Iterable[IpAddress] = (),
        role: str | None = "postgres_cluster",
        request_timeout: float = 5.0,
    ) -> None:
        self.clock = clock
        self.app = app
        self.role = role
        self.request_timeout = request_timeout
        self.ips: list[IpAddress] = list(ips)
        self.machines: dict[str, dict[str, Any]] = {m["id"]: copy.deepcopy(m) for m in machines}
        for data in self.machines.values():  # the role it reports once its checks pass again
            roles = [c.get("output") for c in data.get("checks") or [] if c.get("name") == "role"]
            data.setdefault("role", roles[0] if roles else "replica")
        self.leases: dict[str, _Lease] = {}
        self.boots: dict[str, list[Boot]] = {}  # per machine, used by its next updates in turn
        self.stale_status = 412  # how an update with a stale current_version is refused
        self.most_down = 0  # the most machines down at one time, restarts by `restart` included
        self.calls: list[Call] = []
        self._faults: list[tuple[str, Fault]] = []
        self._timeline: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self._later: list[tuple[float, Callable[[], object]]] = []
        self._next_call: dict[tuple[str, str], Callable[[], object]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- scripting -----------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        error: BaseException,
        *,
        target: str | None = None,
        lands: Landing = False,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `method` (for `target`) answer `error`."""
        with self._lock:
            self._faults += [(method, Fault(error, target, lands))] * times

    def boot(self, machine_id: str, *boots: Boot) -> None:
        """How the machine behaves after its next updates (the default `Boot()` afterwards)."""
        self.boots.setdefault(machine_id, []).extend(boots)

    def hold_lease(
        self, machine_id: str, seconds: float, owner: str = "deploy@example.com"
    ) -> None:
        """Someone else leases the machine for `seconds` of fake time."""
        with self._lock:
            self.leases[machine_id] = _Lease(
                f"theirs-{next(self._ids)}", owner, self._now + seconds
            )

    def clear_lease(self, machine_id: str) -> None:
        """`fly machine leases clear`: the lease is gone, whoever held it."""
        with self._lock:
            self.leases.pop(machine_id, None)

    def set_role(self, machine_id: str, role: str) -> None:
        """A failover: the `role` check of the machine answers `role` from now on."""
        with self._lock:
            data = self.machines[machine_id]
            data["role"] = role
            for check in data.get("checks") or []:
                if check.get("name") == "role":
                    check["output"] = role

    def make_unreachable(self, machine_id: str) -> None:
        """The machine's host drops out: Fly sends `incomplete_config` and a host_status."""
        with self._lock:
            data = self.machines[machine_id]
            data["incomplete_config"] = data.pop("config")
            data["host_status"] = "unreachable"

    def restart(self, machine_id: str, boot: Boot | None = None) -> None:
        """The machine restarts by itself (same version): down for a while."""
        with self._lock:
            self._start(machine_id, boot or Boot(), skip_launch=False)

    def add_ip(self, family: IpFamily) -> IpAddress:
        """An address allocated by someone else (another run)."""
        with self._lock:
            return self._allocate(family)

    # -- reading the record --------------------------------------------------------------------

    def names(self) -> list[str]:
        return [c.method for c in self.calls]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def targets(self, method: str) -> list[str]:
        return [c.target for c in self.calls_to(method)]

    def ip_addresses(self, family: str | None = None) -> list[str]:
        """The app's addresses as of now on the fake clock."""
        with self._lock:
            self._tick()
            return [ip.address for ip in self.ips if family is None or ip.type == family]

    def machine(self, machine_id: str) -> Machine:
        """The machine as of now on the fake clock, without recording a call."""
        with self._lock:
            self._tick()
            return machine_from_api(copy.deepcopy(self.machines[machine_id]))

    # -- FlyApi --------------------------------------------------------------------------------

    def get_app(self, app: str) -> AppInfo:
        with self._call("get_app", app, ""):
            return AppInfo("app1", self.app, self.role, tuple(self.ips), None)

    def allocate_ip(self, app: str, family: IpFamily) -> tuple[IpAddress, tuple[IpAddress, ...]]:
        with self._call("allocate_ip", app, family, write=lambda: self._allocate(family)):
            return self._allocate(family), tuple(self.ips)

    def release_ip(self, app: str, address: str) -> None:
        with self._call("release_ip", app, address, write=lambda: self._release(address)):
            if address not in {ip.address for ip in self.ips}:
                raise FlyNotFound(f"Could not find IP address {address}")
            self._release(address)

    def list_machines(self, app: str) -> list[Machine]:
        with self._call("list_machines", app, ""):
            return [machine_from_api(copy.deepcopy(m)) for m in self.machines.values()]

    def get_machine(self, app: str, machine_id: str) -> Machine:
        with self._call("get_machine", app, machine_id):
            return machine_from_api(copy.deepcopy(self._machine(machine_id)))

    def update_machine(
        self, app: str, machine_id: str, request: UpdateRequest, *, nonce: str | None
    ) -> Machine:
        def write() -> None:
            self._update(machine_id, request, nonce)

        version = request.current_version
        with self._call(
            "update_machine", app, machine_id, write=write, nonce=nonce, current_version=version
        ):
            self._update(machine_id, request, nonce)
            return machine_from_api(copy.deepcopy(self.machines[machine_id]))

    def wait_machine(
        self, app: str, machine_id: str, *, states: Sequence[str], version: str, timeout: int
    ) -> str | None:
        with self._call("wait_machine", app, machine_id, states=tuple(states), timeout=timeout):
            data = self._machine(machine_id)
            if data["instance_id"] != version:  # what Fly answers is undocumented: an error
                raise FlyError(f"machine {machine_id} is not at version {version}", status=400)
            wanted = SETTLED if "settled" in states else set(states)
            if data["state"] in wanted:
                return str(data["state"])
            for at, changes in self._timeline.get(machine_id, []):
                if changes.get("state") in wanted and at <= self._now + timeout:
                    self._advance(at - self._now)  # the server holds the request until then
                    return str(data["state"])
            self._advance(timeout)
            raise FlyTimeout(f"machine {machine_id} did not reach {states[0]}", status=408)

    def acquire_lease(
        self, app: str, machine_id: str, ttl: int, *, nonce: str | None = None
    ) -> Lease:
        def write() -> None:
            self._lease(machine_id, ttl, nonce)

        with self._call("acquire_lease", app, machine_id, write=write, nonce=nonce):
            lease = self._lease(machine_id, ttl, nonce)
            wall = self.clock.wall() + lease.until - self._now
            version = str(self.machines[machine_id]["instance_id"])
            return Lease(nonce=lease.nonce, expires_at=int(wall), owner="me", version=version)

    def release_lease(self, app: str, machine_id: str, nonce: str) -> None:
        with self._call("release_lease", app, machine_id, nonce=nonce):
            held = self._held(machine_id)
            if held is None or held.nonce != nonce:
                raise FlyConflict(f"lease on machine {machine_id} not held with that nonce")
            del self.leases[machine_id]

    def set_metadata(self, app: str, machine_id: str, key: str, value: str) -> None:
        def write() -> None:
            self._set_metadata(machine_id, key, value)

        with self._call("set_metadata", app, machine_id, write=write, key=key):
            self._set_metadata(machine_id, key, value)

    def metadata(self, machine_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self.machines[machine_id].get("config", {}).get("metadata") or {})

    def _set_metadata(self, machine_id: str, key: str, value: str) -> None:
        # No new version and no restart (Fly docs): only the config's metadata changes.
        config = self._machine(machine_id).setdefault("config", {})
        config.setdefault("metadata", {})[key] = value

    def close(self) -> None:
        pass

    # -- inside --------------------------------------------------------------------------------

    @property
    def _now(self) -> float:
        return self.clock.now()

    def _advance(self, seconds: float) -> None:
        self.clock.advance(max(0.0, seconds))
        self._tick()

    def _tick(self) -> None:
        """Apply whatever fake time has brought about."""
        for machine_id, timeline in self._timeline.items():
            while timeline and timeline[0][0] <= self._now:
                self._apply(machine_id, timeline.pop(0)[1])
        due = sorted((e for e in self._later if e[0] <= self._now), key=lambda e: e[0])
        for event in due:
            self._later.remove(event)
            event[1]()

    @contextmanager
    def _call(
        self,
        method: str,
        app: str,
        target: str,
        *,
        write: Callable[[], object] | None = None,
        **args: Any,
    ) -> Iterator[None]:
        """Record the call, then answer a scripted fault if one is due (carrying out `write`
        when the fault says it lands), else let the caller's block answer; under the lock."""
        with self._lock:
            self._tick()
            self.calls.append(Call(method, target, self._now, args))
            overtaken = self._next_call.pop((method, target), None)
            if overtaken is not None:
                overtaken()  # a late request of ours arrives just before this one
            if app != self.app:
                raise FlyNotFound(f"Could not find App {app!r}")
            fault = self._take_fault(method, target)
            if fault is not None:
                if write is not None:
                    if fault.lands is True:
                        write()
                    elif fault.lands == "before-next":
                        self._next_call[(method, target)] = write
                    elif fault.lands is not False:
                        self._later.append((self._now + float(fault.lands), write))
                raise fault.error
            yield

    def _take_fault(self, method: str, target: str) -> Fault | None:
        for i, (name, fault) in enumerate(self._faults):
            if name == method and fault.target in (None, target):
                del self._faults[i]
                return fault
        return None

    def _machine(self, machine_id: str) -> dict[str, Any]:
        if machine_id not in self.machines:
            raise FlyNotFound(f"machine {machine_id} not found")
        return self.machines[machine_id]

    def _allocate(self, family: IpFamily) -> IpAddress:
        n = next(self._ids)
        address = f"137.66.0.{n}" if family == "v4" else f"2a09:8280:1::{n:x}"
        stamp = (EPOCH + timedelta(seconds=int(self._now))).strftime("%Y-%m-%dT%H:%M:%SZ")
        ip = IpAddress(f"ip{n}", address, family, "global", stamp)
        self.ips.append(ip)
        return ip

    def _release(self, address: str) -> None:
        self.ips = [ip for ip in self.ips if ip.address != address]

    def _held(self, machine_id: str) -> _Lease | None:
        held = self.leases.get(machine_id)
        return held if held is not None and held.until > self._now else None

    def _lease(self, machine_id: str, ttl: int, nonce: str | None) -> _Lease:
        self._machine(machine_id)
        held = self._held(machine_id)
        if held is not None and held.nonce != nonce:
            stamp = datetime.fromtimestamp(self.clock.wall() + held.until - self._now, UTC)
            raise FlyConflict(
                f"machine ID {machine_id} lease currently held by {held.owner}, expires at "
                f"{stamp:%Y-%m-%dT%H:%M:%SZ}",
                status=409,
            )
        if held is not None:  # a refresh of ours
            held.until = self._now + ttl
            return held
        lease = _Lease(f"nonce-{next(self._ids)}", "me", self._now + ttl)
        self.leases[machine_id] = lease
        return lease

    def _update(self, machine_id: str, request: UpdateRequest, nonce: str | None) -> None:
        data = self._machine(machine_id)
        held = self._held(machine_id)
        if held is not None and held.nonce != nonce:
            raise FlyConflict(f"machine {machine_id} is leased by {held.owner}", status=409)
        if request.current_version != data["instance_id"]:
            raise FlyError("machine version mismatch", status=self.stale_status)
        data["config"] = copy.deepcopy(request.config)
        data["instance_id"] = f"01VERSION{next(self._ids):04d}"
        queued = self.boots.get(machine_id)
        self._start(machine_id, queued.pop(0) if queued else Boot(), request.skip_launch)

    def _start(self, machine_id: str, boot: Boot, skip_launch: bool) -> None:
        """The machine goes down now and comes back as `boot` says."""
        self._apply(machine_id, {"state": "replacing", "checks": []})
        at = self._now + boot.start_after
        if skip_launch:
            timeline = [(at, {"state": "created"})]
        elif boot.fails:
            timeline = [(at, {"state": "failed"})]
        else:
            status = "passing" if boot.healthy else "critical"
            timeline = [(at, {"state": "started"}), (at + boot.checks_after, {"checks": status})]
        self._timeline[machine_id] = timeline

    def _apply(self, machine_id: str, changes: dict[str, Any]) -> None:
        data = self.machines[machine_id]
        status = changes.get("checks")
        if isinstance(status, str):
            changes = {**changes, "checks": _checks(data, status)}
        data.update(changes)
        self.most_down = max(self.most_down, sum(map(_down, self.machines.values())))


def _down(data: dict[str, Any]) -> bool:
    """Not serving, by the fake's own reckoning: neither at rest nor started with every check
    passing."""
    if data.get("host_status", "ok") != "ok":
        return True
    if data["state"] in ("created", "stopped", "suspended"):
        return False
    checks = data.get("checks") or []
    return (
        data["state"] != "started"
        or not checks
        or any(c.get("status") != "passing" for c in checks)
    )


def _checks(data: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """A result for every check the config defines: named checks, then service checks."""
    config = data.get("config") or {}
    role = data.get("role", "replica")
    checks = [
        {"name": name, "status": status, "output": role if name == "role" else "ok"}
        for name in config.get("checks") or {}
    ]
    for n, service in enumerate(config.get("services") or []):
        for check in service.get("checks") or []:
            port = service.get("internal_port")
            name = f"servicecheck-{n:02d}-{check.get('type', 'tcp')}-{port}"
            checks.append({"name": name, "status": status, "output": ""})
    return checks


# -- a plan of what is on the fake ---------------------------------------------------------------


def settings(**inputs: str) -> Settings:
    """The action's settings for app `my-db`, with these inputs (`ip-versions="v4"`, ...)."""
    env = {"INPUT_APP": "my-db", "INPUT_FLY-API-TOKEN": "fo1_x"}
    env.update({f"INPUT_{k.upper().replace('_', '-')}": v for k, v in inputs.items()})
    return from_environ(env, lambda n: env.get("INPUT_" + n.upper()))


def plan_of(fly: FakeFly, **inputs: str) -> Plan:
    """The plan a run makes from what `fly` holds now."""
    return make_plan(settings(**inputs).intent, read_cluster(fly, fly.app))
