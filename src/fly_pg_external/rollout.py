"""Applying a plan: reading the cluster, leases, IP allocation, the rolling update, rollback.

Order matters for safety. Leases on every machine to update are taken first, so a run stopped by
someone else's lease has changed nothing. IPs are allocated next, then machines are updated one
at a time (failing role checks first, replicas, the primary last), each waited on until it is
started with every check passing. A machine that fails gets its previous config back. Leases are
refreshed in the background, as `fly deploy` does, and released on every path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .cluster import ClusterState, Machine
from .fly.errors import FlyConflict, FlyError, FlyNotFound, FlyTimeout, FlyTransient
from .fly.graphql import AppInfo, GraphQL, IpAddress
from .fly.http import FlyHttp
from .fly.machines import Lease, Machines
from .outcome import IpChange, IpFamily, MachineChange, Outcome
from .plan import MachineUpdate, Plan, rollout_order

LEASE_TTL = 30  # seconds; an orphaned lease (the runner killed) blocks others at most this long
LEASE_REFRESH = 10.0
ROLLBACK_WAIT_MAX = 120.0


class Log(Protocol):
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...


class RunError(Exception):
    """A failure with a message for the person reading the log."""


class Fly:
    """Both Fly APIs over one HTTP client."""

    def __init__(self, http: FlyHttp, graphql: GraphQL, machines: Machines) -> None:
        self.http = http
        self.graphql = graphql
        self.machines = machines

    def close(self) -> None:
        self.http.close()


def read_cluster(fly: Fly, app: str) -> ClusterState:
    """The app (role, IPs) and its machines, read concurrently: one round trip."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        app_f = pool.submit(fly.graphql.get_app, app)
        machines_f = pool.submit(fly.machines.list, app)
        try:
            info = app_f.result()
        except FlyNotFound:
            raise RunError(
                f'Fly app "{app}" was not found, or the token cannot see it. Check the app input '
                "and that the token is a deploy token of that app (fly tokens create deploy -a "
                f"{app})."
            ) from None
        if not info.is_postgres:
            raise RunError(
                f'Fly app "{app}" is not a Fly Postgres app (its role is '
                f"{info.role or 'none'}, expected postgres_cluster). This action only exposes "
                "clusters made by fly pg create."
            )
        try:
            machines = machines_f.result()
        except FlyNotFound:
            raise RunError(f'Fly app "{app}" has no Machines API record.') from None
    return ClusterState.from_api(info, machines)


# -- IPs --------------------------------------------------------------------------------------


def _oldest(ips: list[IpAddress]) -> IpAddress:
    return min(ips, key=lambda ip: (ip.created_at, ip.id))


def allocate_ips(fly: Fly, plan: Plan, log: Log) -> list[IpChange]:
    """Allocate one IP per family in `plan.allocate`; never leave a duplicate this run created.

    A lost response is not retried blindly: the app's IPs are re-listed first, and the
    allocation is repeated only if nothing of that family exists. After allocating, the list is
    read again: if another run allocated one of the same family at the same time, the oldest
    address is kept and the one this run created is released.
    """
    changes: list[IpChange] = []
    for family in plan.allocate:
        created: IpAddress | None = None
        listed: tuple[IpAddress, ...] = ()
        for attempt in (1, 2):
            try:
                created, listed = fly.graphql.allocate_ip(plan.app, family)
                break
            except (FlyTransient, FlyTimeout) as exc:
                log.warning(
                    f"Allocating the {family} address failed ({exc}); checking the app's IPs."
                )
                listed = fly.graphql.get_app(plan.app).ips
                found = [ip for ip in listed if ip.type == family]
                if found:
                    created = _oldest(found)
                    log.info(f"The {family} address {created.address} exists after all.")
                    break
                if attempt == 2:
                    raise
        assert created is not None
        current = [ip for ip in listed if ip.type == family] or [created]
        keep = _oldest(current)
        if keep.address != created.address:
            log.warning(
                f"Another run allocated {family} {keep.address} at the same time; releasing the "
                f"duplicate {created.address} this run created."
            )
            fly.graphql.release_ip(plan.app, created.address)
        else:
            log.info(f"Allocated {family} address {created.address}.")
        changes.append(IpChange(family, "allocate", (keep.address,), done=True))
    return changes


def release_ips(fly: Fly, plan: Plan, log: Log) -> tuple[list[IpChange], str | None]:
    """Release the planned addresses; return what was released and the error that stopped it."""
    released: dict[IpFamily, list[str]] = {}
    error: str | None = None
    for ip in plan.release:
        try:
            fly.graphql.release_ip(plan.app, ip.address)
        except FlyError as exc:
            # The response may be lost while the release happened: look before calling it failed.
            try:
                still = {i.address for i in fly.graphql.get_app(plan.app).ips}
            except FlyError:
                still = {ip.address}
            if ip.address in still:
                error = f"Releasing {ip.type} address {ip.address} failed: {exc}"
                break
        log.info(f"Released {ip.type} address {ip.address}.")
        family: IpFamily = "v4" if ip.type == "v4" else "v6"
        released.setdefault(family, []).append(ip.address)
    changes = [IpChange(fam, "release", tuple(a), done=True) for fam, a in released.items()]
    return changes, error


# -- leases -----------------------------------------------------------------------------------


@dataclass
class LeaseSet:
    """Leases this run holds, kept alive by a background thread until released."""

    fly: Fly
    app: str
    log: Log
    leases: dict[str, Lease] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, machines: list[Machine]) -> None:
        """Lease every machine; stop at the first one held by someone else.

        The first machine (the same for every run, since the order is computed from the same
        state) is leased alone: two runs racing for the cluster meet there and one of them wins
        outright. The rest are leased concurrently, which saves round trips on big clusters.
        """
        if not machines:
            return
        self._take(machines[0])
        if len(machines) > 1:
            with ThreadPoolExecutor(max_workers=min(8, len(machines) - 1)) as pool:
                errors = [f.exception() for f in [pool.submit(self._take, m) for m in machines[1:]]]
            for exc in errors:
                if exc is not None:
                    raise exc
        self._thread = threading.Thread(target=self._keep_alive, name="lease-refresh", daemon=True)
        self._thread.start()

    def _take(self, machine: Machine) -> None:
        try:
            lease = self.fly.machines.acquire_lease(self.app, machine.id, LEASE_TTL)
        except FlyConflict as exc:
            raise RunError(
                f"Machine {machine.id} is leased by someone else ({exc.message}). Another "
                "deploy or run is changing this cluster; nothing was changed. Re-run when it "
                "is done (an abandoned lease expires by itself)."
            ) from None
        with self._lock:
            self.leases[machine.id] = lease

    def nonce(self, machine_id: str) -> str:
        with self._lock:
            if machine_id in self.lost:
                raise RunError(
                    f"The lease on machine {machine_id} was lost ({self.lost[machine_id]}); "
                    "stopping before changing it."
                )
            return self.leases[machine_id].nonce

    def _keep_alive(self) -> None:
        while not self._stop.wait(LEASE_REFRESH):
            with self._lock:
                held = dict(self.leases)
            for mid, lease in held.items():
                if self._stop.is_set():
                    return
                try:
                    fresh = self.fly.machines.acquire_lease(
                        self.app, mid, LEASE_TTL, nonce=lease.nonce
                    )
                except FlyError as exc:
                    with self._lock:
                        self.lost[mid] = str(exc)
                    continue
                with self._lock:
                    if mid in self.leases:
                        self.leases[mid] = replace(lease, expires_at=fresh.expires_at)

    def release_all(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            held = dict(self.leases)
            self.leases.clear()

        def release(item: tuple[str, Lease]) -> None:
            mid, lease = item
            try:
                self.fly.machines.release_lease(self.app, mid, lease.nonce)
            except FlyError as exc:
                self.log.warning(
                    f"Could not release the lease on machine {mid} ({exc}); it expires within "
                    f"{LEASE_TTL} s."
                )

        if held:
            with ThreadPoolExecutor(max_workers=min(8, len(held))) as pool:
                list(pool.map(release, held.items()))


@contextmanager
def leased(fly: Fly, app: str, machines: list[Machine], log: Log) -> Iterator[LeaseSet]:
    leases = LeaseSet(fly, app, log)
    try:
        leases.acquire(machines)
        yield leases
    finally:
        leases.release_all()


# -- machines ---------------------------------------------------------------------------------


def wait_healthy(
    fly: Fly,
    app: str,
    machine_id: str,
    *,
    version: str,
    want_started: bool,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Wait until the machine runs `version` in the wanted state with every check passing."""
    state = "started" if want_started else "stopped"
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise FlyTimeout(f"machine {machine_id} did not reach {state} in time")
        try:
            fly.machines.wait(
                app, machine_id, state=state, version=version, timeout=max(1, int(remaining))
            )
            break
        except FlyTimeout:
            continue
        except FlyTransient:
            sleep(0.5)
    pause = 0.1
    while True:
        data = fly.machines.get(app, machine_id)
        if data.get("state") == "failed":
            raise FlyError(f"machine {machine_id} failed to start")
        if not want_started:
            return data
        checks = data.get("checks") or []
        if data.get("state") == "started" and all(c.get("status") == "passing" for c in checks):
            return data
        if clock() + pause > deadline:
            failing = [c.get("name") for c in checks if c.get("status") != "passing"]
            raise FlyTimeout(
                f"machine {machine_id} is {data.get('state')} but its checks "
                f"{', '.join(map(str, failing)) or '(none)'} are not passing"
            )
        sleep(pause)
        pause = min(2.0, pause * 1.5)


def _update_once(
    fly: Fly, app: str, update: MachineUpdate, body: dict[str, Any], nonce: str
) -> dict[str, Any]:
    """Send the update; if the response is lost, look before sending it again."""
    try:
        return fly.machines.update(app, update.machine.id, body, nonce=nonce)
    except FlyTransient:
        data = fly.machines.get(app, update.machine.id)
        if data.get("instance_id") != update.machine.instance_id and (data.get("config") or {}).get(
            "image"
        ) == body["config"].get("image"):
            return data  # the update went through; only its response was lost
        return fly.machines.update(app, update.machine.id, body, nonce=nonce)


@dataclass
class RolloutResult:
    machines: list[MachineChange]
    error: str | None = None


def rolling_update(
    fly: Fly,
    plan: Plan,
    leases: LeaseSet,
    log: Log,
    *,
    wait_timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> RolloutResult:
    """Update the machines one at a time; on a failure roll that machine back and stop."""
    remaining = list(plan.updates)
    results: dict[str, MachineChange] = {c.id: c for c in plan.outcome().machines}
    first = True
    while remaining:
        if not first and len(remaining) > 1:
            remaining = _reorder_by_current_roles(fly, plan.app, remaining, log)
        first = False
        update = remaining.pop(0)
        m = update.machine
        change = results[m.id]
        what = []
        if update.services_change:
            what.append(f"pg_tls service on port {plan.port}")
        if update.image_after != m.image:
            what.append(f"image {update.image_after}")
        log.info(f"Updating machine {m.id} ({change.role}, {m.region}): {', '.join(what)}.")
        start = clock()
        try:
            new = _update_once(fly, plan.app, update, update.request_body(), leases.nonce(m.id))
            wait_healthy(
                fly,
                plan.app,
                m.id,
                version=str(new.get("instance_id", "")),
                want_started=not update.skip_launch,
                deadline=start + wait_timeout,
            )
        except (FlyError, RunError) as exc:
            results[m.id] = replace(change, result="failed")
            error = f"Machine {m.id} did not become healthy after its update: {exc}."
            log.warning(error + " Restoring its previous config.")
            rolled = _rollback(fly, plan.app, update, leases, log, clock=clock)
            results[m.id] = replace(change, result="rolled-back" if rolled else "failed")
            ordered = [results[u.machine.id] for u in plan.updates] + [
                results[x.id] for x in plan.untouched
            ]
            untouched_note = (
                f" {len(remaining)} machine(s) not yet updated were left untouched."
                if remaining
                else ""
            )
            return RolloutResult(
                [c if c.result != "pending" else replace(c, result="untouched") for c in ordered],
                error
                + (" It was restored to its previous config." if rolled else " Rollback failed.")
                + untouched_note,
            )
        results[m.id] = replace(change, result="updated")
        log.info(f"Machine {m.id} is healthy again ({clock() - start:.1f} s).")
    ordered = [results[u.machine.id] for u in plan.updates] + [
        results[x.id] for x in plan.untouched
    ]
    return RolloutResult(ordered)


def _reorder_by_current_roles(
    fly: Fly, app: str, remaining: list[MachineUpdate], log: Log
) -> list[MachineUpdate]:
    """Roles can move during a rollout (repmgr fails over): keep the current primary last."""
    try:
        current = {m["id"]: Machine.from_api(m) for m in fly.machines.list(app) if "id" in m}
    except FlyError as exc:
        log.warning(f"Could not re-read machine roles ({exc}); keeping the planned order.")
        return remaining
    refreshed = [
        replace(u, machine=replace(u.machine, checks=current[u.machine.id].checks))
        if u.machine.id in current
        else u
        for u in remaining
    ]
    reordered = sorted(refreshed, key=lambda u: rollout_order(u.machine))
    if [u.machine.id for u in reordered] != [u.machine.id for u in remaining]:
        primary = next((u.machine.id for u in reordered if u.machine.role == "primary"), None)
        log.warning(
            f"The primary moved during the rollout (now {primary or 'unknown'}); "
            "the current primary is updated last."
        )
    return reordered


def _rollback(
    fly: Fly,
    app: str,
    update: MachineUpdate,
    leases: LeaseSet,
    log: Log,
    *,
    clock: Callable[[], float],
) -> bool:
    body = {
        "config": update.machine.config,
        "region": update.machine.region,
        "skip_launch": update.skip_launch,
        "skip_secrets": False,
    }
    try:
        new = fly.machines.update(
            app, update.machine.id, body, nonce=leases.nonce(update.machine.id)
        )
        wait_healthy(
            fly,
            app,
            update.machine.id,
            version=str(new.get("instance_id", "")),
            want_started=not update.skip_launch,
            deadline=clock() + ROLLBACK_WAIT_MAX,
        )
    except (FlyError, RunError) as exc:
        log.warning(f"Rollback of machine {update.machine.id} did not complete: {exc}")
        return False
    log.info(f"Machine {update.machine.id} is back on its previous config and healthy.")
    return True


def apply(fly: Fly, plan: Plan, log: Log, *, wait_timeout: float) -> Outcome:
    """Carry out `plan` and return what is true on Fly afterwards."""
    outcome = plan.outcome()
    if plan.mode == "unexpose":
        done, error = release_ips(fly, plan, log)
        gone = {a for c in done for a in c.addresses}
        left = [
            IpChange(i.family, i.action, tuple(a for a in i.addresses if a not in gone))
            for i in outcome.ips
        ]
        outcome.ips = [*done, *[i for i in left if i.action != "release" or i.addresses]]
        outcome.changed = bool(done)
        if error:
            outcome.status, outcome.error = "failed", error
        return outcome
    ip_changes: list[IpChange] = []
    try:
        with leased(fly, plan.app, [u.machine for u in plan.updates], log) as leases:
            for family in plan.allocate:
                # One family at a time, so a failure keeps what was already allocated on record.
                ip_changes += allocate_ips(fly, replace(plan, allocate=(family,)), log)
            outcome.ips = [*ip_changes, *[i for i in outcome.ips if i.action != "allocate"]]
            if plan.updates:
                result = rolling_update(fly, plan, leases, log, wait_timeout=wait_timeout)
                outcome.machines = result.machines
                if result.error:
                    outcome.status = "failed"
                    outcome.error = result.error
    except (RunError, FlyError) as exc:
        outcome.status = "failed"
        outcome.error = str(exc) if isinstance(exc, RunError) else f"Fly API error: {exc}"
        outcome.changed = bool(ip_changes)
        outcome.ips = [*ip_changes, *[i for i in plan.outcome().ips if i.action != "allocate"]]
        outcome.machines = [
            c if c.result != "pending" else replace(c, result="untouched") for c in outcome.machines
        ]
    return outcome


def refresh_ips(fly: Fly, app: str) -> AppInfo:
    return fly.graphql.get_app(app)
