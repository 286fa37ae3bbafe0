"""Applying a plan: reading the cluster, leases, IP allocation, the rolling update, rollback.

Order matters for safety. Leases on every machine to update are taken first, so a run stopped by
someone else's lease has changed nothing. IPs are allocated next, then machines are updated one
at a time (failing role checks first, replicas, the primary last), each waited on until it is
started with every check passing. A machine that fails gets its previous config back. Leases are
refreshed in the background, as `fly deploy` does, and released on every path.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from .cluster import ClusterState, Machine, is_active
from .fly.errors import FlyConflict, FlyError, FlyNotFound, FlyTimeout, FlyTransient
from .fly.graphql import GraphQL, IpAddress
from .fly.http import FlyHttp
from .fly.machines import Lease, Machines
from .outcome import IpChange, IpFamily, MachineChange, MachineResult, Outcome
from .plan import MachineUpdate, Plan, plan_machine, rollout_order, update_body

LEASE_TTL = 30  # seconds; an orphaned lease (the runner killed) blocks others at most this long
LEASE_REFRESH = 10.0
ROLLBACK_WAIT_MAX = 120.0


class Log(Protocol):
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...


class RunError(Exception):
    """A failure with a message for the person reading the log."""


_T = TypeVar("_T")
_R = TypeVar("_R")


def _concurrently(
    fn: Callable[[_T], _R], items: Sequence[_T], *, workers: int, name: str
) -> list[_R | Exception]:
    """`fn` over `items`, up to `workers` at once; each result, or the exception it raised, in
    the order of `items`.

    The calling thread does the first item itself; the others go to daemon threads, not to a
    ThreadPoolExecutor. A cancellation (SIGTERM/SIGINT) is raised in the main thread by the signal
    handler, and leaving an executor's block waits for its workers, as the interpreter's exit does
    for every executor thread: a cancelled run would sit out an allocation that can take a minute
    and a half to settle before releasing its leases, and the runner kills it long before. Here
    the wait is Thread.join, which the signal interrupts, and the daemon threads are left behind.
    """
    results: list[_R | Exception] = [RuntimeError(f"{name}: not run") for _ in items]
    pending = iter(enumerate(items))
    lock = threading.Lock()

    def run(index: int, item: _T) -> None:
        try:
            results[index] = fn(item)
        except Exception as exc:  # handed back to the caller, which decides what to raise
            results[index] = exc

    def work() -> None:
        while True:
            with lock:
                taken = next(pending, None)
            if taken is None:
                return
            run(*taken)

    first = next(pending, None)  # taken before any helper starts: it is this thread's
    helpers = [
        threading.Thread(target=work, name=f"{name}-{n}", daemon=True)
        for n in range(1, min(workers, len(items)))
    ]
    for helper in helpers:
        helper.start()
    if first is not None:
        run(*first)
        work()
    for helper in helpers:
        helper.join()
    return results


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
    """The address every racing run agrees to keep: the earliest created.

    `createdAt` has one-second resolution, so ties are broken by the order the API lists the
    addresses in (creation order, the same for every reader; UNCONFIRMED for Fly, true of its
    list endpoints generally), never by the opaque ID.
    """
    return min(enumerate(ips), key=lambda pair: (pair[1].created_at, pair[0]))[1]


def _settle_seconds(fly: Fly) -> float:
    """How long a request that timed out may still be in flight on the server."""
    return min(30.0, 2 * fly.http.timeout)


def _find_late(
    fly: Fly,
    app: str,
    family: str,
    known: set[str],
    *,
    settle: float,
    sleep: Callable[[float], None],
) -> tuple[IpAddress, tuple[IpAddress, ...]] | None:
    """After an ambiguous failure: watch the app's IPs until an allocation shows up or `settle`
    seconds pass (a timed-out request may still be carried out)."""
    deadline = time.monotonic() + settle
    pause = 0.25
    while True:
        listed = fly.graphql.get_app(app).ips
        found = [ip for ip in listed if ip.type == family and ip.address not in known]
        if found:
            return _oldest(found), listed
        if time.monotonic() + pause > deadline:
            return None
        sleep(pause)
        pause = min(2.0, pause * 2)


@dataclass
class Allocation:
    changes: list[IpChange]
    ambiguous: bool  # a request failed in a way that may still take effect later


def allocate_family(
    fly: Fly,
    plan: Plan,
    family: IpFamily,
    log: Log,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Allocation:
    """Allocate one IP of `family`; never leave a duplicate this run created.

    A failed allocation is not resent blindly: the app's IPs are watched for a while first (a
    request that timed out may still land), and the allocation is repeated only if nothing of
    that family showed up. The allocation's payload lists the app's addresses: if another run
    allocated one of the same family at the same time, every run keeps the oldest and releases
    the one it created.
    """
    ambiguous = False
    known = set(plan.existing.get(family, ()))
    created: IpAddress | None = None
    listed: tuple[IpAddress, ...] = ()
    for attempt in (1, 2):
        try:
            created, listed = fly.graphql.allocate_ip(plan.app, family)
            break
        except (FlyTransient, FlyTimeout) as exc:
            ambiguous = True
            # A 5xx answer was most likely not carried out; a timeout may be in flight.
            settle = 1.0 if isinstance(exc, FlyTransient) and exc.status else None
            log.warning(
                f"Allocating the {family} address failed ({exc}); checking whether it "
                "happened anyway before trying again."
            )
            late = _find_late(
                fly, plan.app, family, known, settle=settle or _settle_seconds(fly), sleep=sleep
            )
            if late is not None:
                created, listed = late
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
    return Allocation([IpChange(family, "allocate", (keep.address,), done=True)], ambiguous)


def allocate_families(fly: Fly, plan: Plan, log: Log) -> tuple[list[IpChange], bool]:
    """Allocate every family in `plan.allocate`, the families concurrently (one round trip).

    The families are independent: each has its own race and late-answer handling in
    `allocate_family`. When one fails, what the others allocated is still recorded (the exception's
    `changes`, and `ambiguous` if they succeeded only after a failed attempt) so the run reports
    what it did change, and looks for late duplicates, before stopping.
    """
    families = list(plan.allocate)
    if not families:
        return [], False

    def one(family: IpFamily) -> Allocation:
        return allocate_family(fly, plan, family, log)

    results = _concurrently(one, families, workers=len(families), name="allocate")
    done = [r for r in results if isinstance(r, Allocation)]
    changes = [c for r in done for c in r.changes]
    ambiguous = any(r.ambiguous for r in done)
    failures = [(f, r) for f, r in zip(families, results, strict=True) if isinstance(r, Exception)]
    if failures:
        (_, error), *others = failures
        # The first failure becomes the run's error; a second one would otherwise go unsaid.
        for family, exc in others:
            log.warning(f"Allocating the {family} address failed as well: {exc}")
        raise AllocationFailed(error, changes, ambiguous) from error
    return changes, ambiguous


class AllocationFailed(Exception):
    """A family's allocation failed (`error`); `changes` holds what the others allocated, and
    `ambiguous` tells whether they got there only after a failed attempt (which may still land:
    the caller should sweep for duplicates)."""

    def __init__(self, error: Exception, changes: list[IpChange], ambiguous: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.changes = changes
        self.ambiguous = ambiguous


def sweep_duplicates(fly: Fly, plan: Plan, kept: list[IpChange], log: Log) -> None:
    """After an ambiguous allocation: release any address of the family that appeared during
    the run besides the one kept (a late request that landed after all)."""
    try:
        listed = fly.graphql.get_app(plan.app).ips
    except FlyError as exc:
        log.warning(f"Could not re-check the app's IPs for duplicates ({exc}).")
        return
    for change in kept:
        known = set(plan.existing.get(change.family, ())) | set(change.addresses)
        for ip in listed:
            if ip.type == change.family and ip.address not in known:
                log.warning(f"Releasing {ip.type} {ip.address}: a late duplicate of this run's.")
                try:
                    fly.graphql.release_ip(plan.app, ip.address)
                except FlyError as exc:
                    log.warning(f"Could not release {ip.address} ({exc}); release it by hand.")


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

LEASE_WAIT = 40.0  # seconds; longer than our own TTL, so a re-run after a killed run gets through
LEASE_POLL = 2.0  # seconds between asks for a lease held by someone else (the limit is 1/s)
_EXPIRES_RE = re.compile(r"expires at (\S+?)[,.;)]*(?:\s|$)")


def lease_expiry(message: str) -> float | None:
    """The expiry (unix seconds) in a 409's text, as Fly writes it: "machine ID … lease currently
    held by …, expires at 2026-05-14T10:41:08Z" (flyctl and user reports quote this text)."""
    match = _EXPIRES_RE.search(message)
    if match is None:
        return None
    try:
        return datetime.fromisoformat(match.group(1)).timestamp()
    except ValueError:
        return None


@dataclass
class LeaseSet:
    """Leases this run holds, kept alive by a background thread until released."""

    fly: Fly
    app: str
    log: Log
    # How long a lease held by someone else is waited for before giving up (fly-go waits up to
    # a minute): an abandoned lease, or one of a deploy that is about to finish, ends by itself.
    wait: float = LEASE_WAIT
    leases: dict[str, Lease] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _valid_until: dict[str, float] = field(default_factory=dict)  # by our clock, not Fly's
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: bool = False  # release_all ran: a lease taken after that is given back at once

    def acquire(self, machines: list[Machine]) -> None:
        """Lease every machine; stop at the first one held by someone else for too long.

        The first machine (the same for every run, since the order is computed from the same
        state) is leased alone: two runs racing for the cluster meet there and one of them wins
        outright. The rest are leased concurrently, which saves round trips on big clusters.
        The keep-alive starts as soon as the first lease is held: taking the others can outlast
        a lease's TTL (each one may be sent twice, each within the HTTP timeout). Whether this
        returns or raises, `release_all` must follow (`leased` does that).
        """
        if not machines:
            return
        self._take(machines[0])
        self._start_keep_alive()
        # Not an executor: a cancellation must not wait for a slow acquire (see _concurrently).
        results = _concurrently(self._take, machines[1:], workers=8, name="lease")
        for result in results:
            if isinstance(result, Exception):
                raise result

    def _start_keep_alive(self) -> None:
        thread = threading.Thread(target=self._keep_alive, name="lease-refresh", daemon=True)
        thread.start()
        # Recorded once started: release_all joins it, and an unstarted thread cannot be joined
        # (a cancellation may land in between; the thread then ends at its first wait).
        self._thread = thread

    def _take(self, machine: Machine) -> None:
        """Lease one machine: a failed attempt is sent once more, and a lease held by someone
        else is waited for while it is due to end within `wait` seconds.

        A first acquire is not idempotent, so the HTTP layer does not resend it. Sending it once
        more here is still safe: if the failed attempt was carried out after all, the second one
        is refused (409), and that lease, our own, ends within LEASE_TTL like any other.
        """
        failed: FlyError | None = None
        give_up = self.clock() + self.wait
        announced = False
        while True:
            try:
                lease = self.fly.machines.acquire_lease(self.app, machine.id, LEASE_TTL)
                break
            except FlyConflict as exc:
                pause = self._lease_pause(exc)
                if self.clock() + pause > give_up:
                    raise RunError(self._held_message(machine, exc, failed)) from None
                if not announced:
                    self.log.info(
                        f"Machine {machine.id} is leased ({exc.message}); waiting up to "
                        f"{self.wait:.0f} s for that lease to end."
                    )
                    announced = True
                self.sleep(pause)
            except (FlyTransient, FlyTimeout) as exc:
                if failed is not None:
                    raise
                failed = exc
                self.log.warning(
                    f"Taking the lease on machine {machine.id} failed ({exc}); trying once more."
                )
                self.sleep(self.fly.http.retry.delay(1))
        with self._lock:
            released = self._released
            if not released:
                self.leases[machine.id] = lease
                self._valid_until[machine.id] = self.clock() + LEASE_TTL
        if released:
            # Taken in the background after the run was cancelled and let go of its leases:
            # give this one back too rather than block others until it expires.
            self._release_one(machine.id, lease)

    def _lease_pause(self, conflict: FlyConflict) -> float:
        """How long to wait before asking again. A lease that, by its stated expiry, outlasts the
        whole wait is not waited for at all (infinity); otherwise it is asked for again every
        couple of seconds, since its holder may release it before it expires."""
        expiry = lease_expiry(conflict.message)
        if expiry is not None and expiry - time.time() > self.wait:
            return float("inf")
        return LEASE_POLL

    def _held_message(self, machine: Machine, exc: FlyConflict, failed: FlyError | None) -> str:
        # A 429 is refused before any work (and the HTTP layer resends only those, so every try
        # of that attempt was one): it cannot have left a lease of ours.
        ours = failed is not None and not (
            isinstance(failed, FlyTransient) and failed.status == 429
        )
        if ours:
            return (
                f"Machine {machine.id} is leased ({exc.message}), maybe by this run's first "
                f"attempt, whose answer was lost ({failed}). Nothing was changed; that lease "
                f"expires within {LEASE_TTL} s: re-run after that."
            )
        return (
            f"Machine {machine.id} is leased by someone else ({exc.message}), for longer than "
            f"this run waits ({self.wait:.0f} s). Another deploy or run is changing this "
            "cluster; nothing was changed. Re-run when it is done (an abandoned lease expires "
            "by itself)."
        )

    def versions_match(self, versions: dict[str, str]) -> bool:
        """Do the leases name these instance_ids (the machines did not change since read)?"""
        with self._lock:
            return all(
                # A lease without a version (not seen, but possible) counts as a change.
                mid in self.leases and self.leases[mid].version == version
                for mid, version in versions.items()
            )

    def nonce(self, machine_id: str) -> str:
        with self._lock:
            if machine_id not in self.lost and self._valid_until.get(machine_id, 0) <= self.clock():
                self.lost[machine_id] = "it was not refreshed before it expired"
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
                self._refresh_one(mid, lease)

    def _refresh_one(self, machine_id: str, lease: Lease) -> None:
        """Refresh one lease, as flyctl does: a refused refresh (409/404) or a new nonce means
        the lease is no longer ours; a refresh that merely failed (a 5xx, a timeout) is tried
        again next time, and the lease counts as lost only once it would have expired."""
        try:
            fresh = self.fly.machines.acquire_lease(
                self.app, machine_id, LEASE_TTL, nonce=lease.nonce
            )
        except (FlyConflict, FlyNotFound) as exc:
            with self._lock:
                self.lost[machine_id] = str(exc)
            return
        except FlyError as exc:
            self.log.warning(
                f"Refreshing the lease on machine {machine_id} failed ({exc}); it stays valid "
                f"for a while and is refreshed again in {LEASE_REFRESH:.0f} s."
            )
            return
        with self._lock:
            if fresh.nonce != lease.nonce:
                self.lost[machine_id] = "a refresh answered with another nonce"
            elif machine_id in self.leases:
                self.leases[machine_id] = replace(lease, expires_at=fresh.expires_at)
                self._valid_until[machine_id] = self.clock() + LEASE_TTL

    def release_all(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._released = True
            held = dict(self.leases)
            self.leases.clear()

        if held:
            # An executor is fine here: its block waits for every release, which is the point.
            with ThreadPoolExecutor(max_workers=min(8, len(held))) as pool:
                list(pool.map(self._release_one, held.keys(), held.values()))

    def _release_one(self, machine_id: str, lease: Lease) -> None:
        try:
            self.fly.machines.release_lease(self.app, machine_id, lease.nonce)
        except FlyError as exc:
            self.log.warning(
                f"Could not release the lease on machine {machine_id} ({exc}); it expires within "
                f"{LEASE_TTL} s."
            )


@contextmanager
def leased(
    fly: Fly, app: str, machines: list[Machine], log: Log, *, wait: float = LEASE_WAIT
) -> Iterator[LeaseSet]:
    leases = LeaseSet(fly, app, log, wait=wait)
    try:
        leases.acquire(machines)
        yield leases
    finally:
        leases.release_all()


# -- machines ---------------------------------------------------------------------------------

# Persistent states of a machine that does not run: not serving now, and not serving before the
# run either (scale to zero, or a skip_launch update, which leaves the new version `created`).
RESTING_STATES = frozenset({"created", "stopped", "suspended"})
# Each wait call is one slice (the endpoint caps it at 60 s). Waiting for `settled` gets short
# slices: what it means server-side is UNCONFIRMED, so the machine itself is read after each.
SETTLED_SLICE = 10
# Health polls read the one machine (Get Machine), quickly at first: checks usually pass within
# a second or two of the start. The HTTP layer keeps them under Get Machine's rate limit.
POLL_MIN = 0.1
POLL_MAX = 1.0
# Once a machine of the rollout has shown how long its checks take, the next one is polled
# densely around that moment (within Get Machine's burst of 10).
POLL_DENSE = 0.04
DENSE_POLLS = 8


def wait_healthy(
    fly: Fly,
    app: str,
    machine_id: str,
    *,
    version: str,
    want_started: bool,
    deadline: float,
    on_started: Callable[[], None] | None = None,
    checks_expected: float | None = None,
    round_trip: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Settled:
    """Wait until the machine runs `version`: started with every check its config defines
    passing, or, after a skip_launch update, at rest (`created`, `stopped` or `suspended`).

    The state comes from the wait endpoint (flyctl waits for `settled` after a skip_launch update:
    the new version may stay `created`, which `stopped` would never match); the machine is read
    to see what it settled in unless the answer says it started. Checks have no wait endpoint:
    the machine is polled. `on_started` runs once the machine has started, while its checks have
    yet to run: time the caller can use for a read of its own. `checks_expected` is how long the
    checks took on a machine like this one: polling starts just before that, which saves most
    polls of a rollout without reading the result late.
    """
    states = ("started", "failed") if want_started else ("settled",)
    pause = 0.5
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise FlyTimeout(f"machine {machine_id} did not reach {states[0]} in time")
        slice_ = remaining if want_started else min(remaining, SETTLED_SLICE)
        answer: str | None = None
        try:
            answer = fly.machines.wait(
                app, machine_id, states=states, version=version, timeout=max(1, int(slice_))
            )
        except FlyTimeout:
            pass  # not yet: the machine itself says where it is
        except FlyTransient:
            sleep(pause)
            pause = min(4.0, pause * 2)
        if want_started and answer == "started":
            # The answer is about `version` (the wait names it), so it needs no second look;
            # a freshly started machine has no check results to read yet anyway.
            machine = None
            break
        machine = _read_version(fly, app, machine_id, version)
        if not want_started and machine.state in RESTING_STATES:
            return Settled(machine)
        if want_started and machine.state == "started":
            break
    reached = clock()
    if on_started is not None:
        on_started()
    dense = checks_expected is not None
    # When reads answered that the checks were pending and that they passed, to estimate the
    # moment they passed (the start is the earliest it can have been).
    pending_seen: float | None = None
    if machine is None or not machine.healthy:
        # A moment after the start, or so that the read arrives as the checks are expected to
        # pass (one round trip earlier).
        first = POLL_MIN if checks_expected is None else checks_expected - round_trip
        sleep(max(0.0, reached + first - clock()))
        machine, round_trip = _timed_read(fly, app, machine_id, version, clock)
    polling_since = clock()
    polls = 0
    while not machine.healthy:
        pending_seen = clock()
        polls += 1
        if dense and polls <= DENSE_POLLS:
            wait = POLL_DENSE  # around the expected moment: a late read costs wall time
        else:
            wait = min(POLL_MAX, max(POLL_MIN, 0.2 * (clock() - polling_since)))
        if clock() + wait > deadline:
            raise FlyTimeout(
                f"machine {machine_id} is {machine.state} but its checks "
                f"{', '.join(machine.pending_checks) or '(none)'} are not passing"
            )
        sleep(wait)
        machine, round_trip = _timed_read(fly, app, machine_id, version, clock)
    passed_seen = clock()
    # The checks passed between the last answer that saw them pending and the one that saw them
    # pass: the middle is the best guess, for the next machine's first read. When the first
    # read already saw them pass, the guess is a little earlier, and corrects itself.
    if pending_seen is None:
        took = passed_seen - reached - POLL_DENSE
    else:
        took = (pending_seen + passed_seen) / 2 - reached
    return Settled(machine, max(0.0, took), round_trip)


def _timed_read(
    fly: Fly, app: str, machine_id: str, version: str, clock: Callable[[], float]
) -> tuple[Machine, float]:
    sent = clock()
    machine = _read_version(fly, app, machine_id, version)
    return machine, clock() - sent


@dataclass(frozen=True)
class Settled:
    machine: Machine
    checks_took: float | None = None  # from the start until every check passed, about
    round_trip: float = 0.0  # of the last read, to aim the next machine's first one


def _read_version(fly: Fly, app: str, machine_id: str, version: str) -> Machine:
    """The machine, which must still run `version` and must not have failed."""
    machine = Machine.from_api(fly.machines.get(app, machine_id))
    if machine.instance_id != version:
        raise FlyError(
            f"machine {machine_id} now runs version {machine.instance_id}, not {version}: "
            "someone else changed it"
        )
    if machine.state == "failed":
        raise FlyError(f"machine {machine_id} failed to start")
    return machine


def active_machines(fly: Fly, app: str) -> list[Machine]:
    return [Machine.from_api(m) for m in fly.machines.list(app) if is_active(m)]


def _watch_for_new_version(
    fly: Fly,
    app: str,
    machine_id: str,
    before: str,
    *,
    settle: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Any] | None:
    """Read the machine until its instance_id moves on from `before` (an update landed) or
    `settle` seconds pass; the machine as read, or None."""
    deadline = clock() + settle
    pause = 0.25
    while True:
        data = fly.machines.get(app, machine_id)
        if data.get("instance_id") != before:
            return data
        if clock() + pause > deadline:
            return None
        sleep(pause)
        pause = min(2.0, pause * 2)


def update_machine(
    fly: Fly,
    app: str,
    machine_id: str,
    body: dict[str, Any],
    *,
    before: str,
    nonce: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Send an update whose body is conditional on `before` (its `current_version`), and make
    sure an ambiguous failure cannot restart the machine twice. Returns the machine as updated.

    After a 408, a timeout or a reset the update may still be carried out: the machine is
    watched for a while (we hold its lease, so a new instance_id can only be ours) before the
    update is resent. No source states the status Fly gives a stale `current_version`, so
    whatever the resend's answer, the machine's instance_id decides whether an update landed.
    """
    try:
        return fly.machines.update(app, machine_id, body, nonce=nonce)
    except (FlyTransient, FlyTimeout) as exc:
        # A 5xx answer was most likely not carried out; a 408, timeout or reset may be in flight.
        quick = isinstance(exc, FlyTransient) and exc.status is not None
        settle = 1.0 if quick else _settle_seconds(fly)
    landed = _watch_for_new_version(
        fly, app, machine_id, before, settle=settle, clock=clock, sleep=sleep
    )
    if landed is not None:
        return landed  # it went through; only the answer was lost
    try:
        return fly.machines.update(app, machine_id, body, nonce=nonce)
    except FlyError:
        late = _landed_anyway(fly, app, machine_id, before)
        if late is not None:
            return late  # the first request landed in the meantime
        raise


def _landed_anyway(fly: Fly, app: str, machine_id: str, before: str) -> dict[str, Any] | None:
    """After a failed update: the machine if it runs a new version all the same, None if it
    still runs `before`. Raises FlyError when it cannot be read (then nobody knows)."""
    data = fly.machines.get(app, machine_id)
    return data if data.get("instance_id") != before else None


@dataclass
class RolloutResult:
    machines: list[MachineChange]
    error: str | None = None


def _down(machine: Machine) -> str | None:
    """Why a machine counts as down for the one-at-a-time rule, or None if it is serving or at
    rest (a stopped, suspended or created machine was not serving before the run either)."""
    if not machine.reachable:
        return f"on a host Fly cannot reach (host_status {machine.host_status})"
    if machine.state in RESTING_STATES:
        return None
    if machine.state == "started":
        if machine.healthy:
            return None
        return f"started with checks not passing ({', '.join(machine.pending_checks)})"
    return machine.state  # on its way somewhere (replacing, starting, ...), or failed


def _wait_until_none_down(
    fly: Fly,
    plan: Plan,
    log: Log,
    *,
    known: list[Machine] | None,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> list[Machine]:
    """The machines, once none of them is down; waits (within `deadline`) while one is.

    `known` is a list just read, which saves a request; the list is read again while anything
    is down, no faster than List Machines' rate limit (1 request/s per app).
    """
    pause = 1.0
    announced = False
    machines = known
    while True:
        if machines is None:
            machines = active_machines(fly, plan.app)
        down = [(m.id, why) for m in machines if (why := _down(m))]
        if not down:
            return machines
        mid, why = down[0]
        if why == "failed" or clock() + pause > deadline:
            raise RunError(
                f"Machine {mid} is {why}: not restarting another machine of the cluster while "
                "one is down. The machines not yet updated were left as they are; re-run once "
                "the cluster is healthy."
            )
        if not announced:
            log.info(f"Waiting for machine {mid} ({why}) before restarting another machine.")
            announced = True
        sleep(pause)
        pause = min(5.0, pause * 2)
        machines = None


def _still_needed(
    plan: Plan, remaining: list[MachineUpdate], machines: list[Machine], log: Log
) -> tuple[list[MachineUpdate], list[str]]:
    """The updates still needed, in order, and the machines dropped because they comply.

    A plan gone stale while waiting for leases (another run finished first) is brought up to
    date machine by machine, and roles are read again, so the current primary goes last even
    after a failover.
    """
    by_id = {m.id: m for m in machines}
    kept: list[MachineUpdate] = []
    dropped: list[str] = []
    for update in remaining:
        current = by_id.get(update.machine.id)
        if current is None:
            log.warning(f"Machine {update.machine.id} is gone; skipping it.")
            dropped.append(update.machine.id)
            continue
        if current.instance_id != update.machine.instance_id:
            fresh = plan_machine(current, plan.port, plan.image_policy)
            if fresh is None:
                log.info(f"Machine {current.id} was updated meanwhile and already complies.")
                dropped.append(current.id)
                continue
            kept.append(fresh)
        else:
            kept.append(replace(update, machine=replace(update.machine, checks=current.checks)))
    reordered = sorted(kept, key=lambda u: rollout_order(u.machine))
    planned = [u.machine.id for u in remaining if u.machine.id not in dropped]
    if [u.machine.id for u in reordered] != planned:
        primary = next((u.machine.id for u in reordered if u.machine.role == "primary"), None)
        log.warning(
            f"The primary moved during the rollout (now {primary or 'unknown'}); "
            "the current primary is updated last."
        )
    return reordered, dropped


def rolling_update(
    fly: Fly,
    plan: Plan,
    leases: LeaseSet,
    log: Log,
    *,
    wait_timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RolloutResult:
    """Update the machines one at a time; on a failure roll that machine back and stop."""
    remaining = list(plan.updates)
    results: dict[str, MachineChange] = {c.id: c for c in plan.outcome().machines}

    def finish(error: str | None = None) -> RolloutResult:
        ordered = [results[c.id] for c in plan.outcome().machines]
        return RolloutResult(
            [c if c.result != "pending" else replace(c, result="untouched") for c in ordered],
            error,
        )

    # The plan was read just before the leases were taken; if every lease names the version
    # the plan saw, that read is still the truth and needs no second look.
    known: list[Machine] | None = None
    checks_took: float | None = None
    round_trip = 0.0
    if leases.versions_match({u.machine.id: u.machine.instance_id for u in plan.updates}):
        known = [u.machine for u in plan.updates] + list(plan.untouched)
    while remaining:
        try:
            machines = _wait_until_none_down(
                fly,
                plan,
                log,
                known=known,
                deadline=clock() + wait_timeout,
                clock=clock,
                sleep=sleep,
            )
            remaining, dropped = _still_needed(plan, remaining, machines, log)
        except (FlyError, RunError) as exc:
            return finish(str(exc))
        for mid in dropped:
            results[mid] = replace(results[mid], result="untouched")
        if not remaining:
            break
        update = remaining.pop(0)
        change = replace(results[update.machine.id], role=update.machine.role)
        step = _MachineStep(
            fly,
            plan,
            update,
            leases,
            log,
            clock=clock,
            sleep=sleep,
            read_list=bool(remaining),
            checks_expected=checks_took,
            round_trip=round_trip,
        )
        result, error = step.run(wait_timeout)
        checks_took = step.checks_took or checks_took
        round_trip = step.round_trip or round_trip
        results[change.id] = replace(change, result=result)
        known = step.cluster_after()
        if error is not None:
            if remaining:
                error += f" {len(remaining)} machine(s) not yet updated were left untouched."
            return finish(error)
    return finish()


@dataclass
class _MachineStep:
    """Updating one machine and waiting for it, and the cluster as seen meanwhile."""

    fly: Fly
    plan: Plan
    update: MachineUpdate
    leases: LeaseSet
    log: Log
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    read_list: bool = True  # read the machine list while the checks run (for the next step)
    checks_expected: float | None = None  # how long the checks took on the previous machine
    listed: list[Machine] | None = None  # the machine list, read while this one's checks ran
    healthy: Machine | None = None
    checks_took: float | None = None  # from the start to every check passing
    round_trip: float = 0.0  # of a read, as last measured

    def cluster_after(self) -> list[Machine] | None:
        """The list read while the checks ran, with this machine as last seen (healthy), for the
        next step's one-down check: the list costs no time there (the checks take longer)."""
        if self.listed is None or self.healthy is None:
            return None
        done = self.healthy
        return [done if m.id == done.id else m for m in self.listed]

    def _on_started(self) -> None:
        if not self.read_list:
            return
        try:
            self.listed = active_machines(self.fly, self.plan.app)
        except FlyError:
            self.listed = None  # the next step reads it again

    def run(self, wait_timeout: float) -> tuple[MachineResult, str | None]:
        """The machine's result and the error that stopped the rollout, if any. A machine whose
        update may be live is watched, never rolled back blindly; one whose update did not
        land is left alone."""
        m = self.update.machine
        what = []
        if self.update.services_change:
            what.append(f"pg_tls service on port {self.plan.port}")
        if self.update.image_after != m.image:
            what.append(f"image {self.update.image_after}")
        self.log.info(f"Updating machine {m.id} ({m.role}, {m.region}): {', '.join(what)}.")
        start = self.clock()
        try:
            new = update_machine(
                self.fly,
                self.plan.app,
                m.id,
                self.update.request_body(),
                before=m.instance_id,
                nonce=self.leases.nonce(m.id),
                clock=self.clock,
                sleep=self.sleep,
            )
        except (FlyError, RunError) as exc:
            try:
                landed = _landed_anyway(self.fly, self.plan.app, m.id, m.instance_id)
            except FlyError as read_error:
                return "failed", (
                    f"The update of machine {m.id} failed ({exc}), and whether it landed cannot "
                    f"be told ({read_error}). Check it with fly machine status {m.id}."
                )
            if landed is None:
                return "untouched", (
                    f"The update of machine {m.id} was not carried out ({exc}); the machine was "
                    "left as it was."
                )
            new = landed
        try:
            settled = wait_healthy(
                self.fly,
                self.plan.app,
                m.id,
                version=str(new.get("instance_id", "")),
                want_started=not self.update.skip_launch,
                deadline=start + wait_timeout,
                on_started=self._on_started,
                checks_expected=self.checks_expected,
                round_trip=self.round_trip,
                clock=self.clock,
                sleep=self.sleep,
            )
        except (FlyError, RunError) as exc:
            error = f"Machine {m.id} did not become healthy after its update: {exc}."
            self.log.warning(error + " Restoring its previous config.")
            if _rollback(
                self.fly,
                self.plan.app,
                self.update,
                self.leases,
                self.log,
                clock=self.clock,
                sleep=self.sleep,
            ):
                return "rolled-back", error + " It was restored to its previous config."
            return "failed", error + " Rollback failed."
        self.healthy, self.checks_took = settled.machine, settled.checks_took
        self.round_trip = settled.round_trip
        self.log.info(f"Machine {m.id} is healthy again ({self.clock() - start:.1f} s).")
        return "updated", None


def _rollback(
    fly: Fly,
    app: str,
    update: MachineUpdate,
    leases: LeaseSet,
    log: Log,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    machine_id = update.machine.id
    try:
        # The failed update made a new version: the rollback is conditional on that one.
        current = Machine.from_api(fly.machines.get(app, machine_id))
        body = update_body(current, update.machine.config, skip_launch=update.skip_launch)
        new = update_machine(
            fly,
            app,
            machine_id,
            body,
            before=current.instance_id,
            nonce=leases.nonce(machine_id),
            clock=clock,
            sleep=sleep,
        )
        wait_healthy(
            fly,
            app,
            machine_id,
            version=str(new.get("instance_id", "")),
            want_started=not update.skip_launch,
            deadline=clock() + ROLLBACK_WAIT_MAX,
            clock=clock,
            sleep=sleep,
        )
    except (FlyError, RunError) as exc:
        log.warning(f"Rollback of machine {machine_id} did not complete: {exc}")
        return False
    log.info(f"Machine {machine_id} is back on its previous config and healthy.")
    return True


def apply(
    fly: Fly, plan: Plan, log: Log, *, wait_timeout: float, lease_wait: float = LEASE_WAIT
) -> Outcome:
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
        if plan.updates and plan.unreachable:
            # Checked before anything changes: a restart now would be a second machine down.
            names = ", ".join(f"{m.id} (host_status {m.host_status})" for m in plan.unreachable)
            raise RunError(
                f"Machine(s) {names} on a host Fly cannot reach count as down, and "
                f"{len(plan.updates)} machine(s) need a restart: nothing was changed. Re-run "
                "once every machine is reachable again (fly machine status <id>)."
            )
        machines = [u.machine for u in plan.updates]
        with leased(fly, plan.app, machines, log, wait=lease_wait) as leases:
            # IPs first: a failed allocation stops the run before any machine restarts.
            try:
                ip_changes, ambiguous = allocate_families(fly, plan, log)
            except AllocationFailed as failed:
                ip_changes = failed.changes
                if failed.ambiguous and failed.changes:
                    # The run stops here, so nothing later would look again: a late request of
                    # a family that did succeed must be caught now.
                    sweep_duplicates(fly, plan, failed.changes, log)
                raise failed.error from None
            outcome.ips = [*ip_changes, *[i for i in outcome.ips if i.action != "allocate"]]
            if plan.updates:
                result = rolling_update(fly, plan, leases, log, wait_timeout=wait_timeout)
                outcome.machines = result.machines
                if result.error:
                    outcome.status = "failed"
                    outcome.error = result.error
            if ambiguous:
                sweep_duplicates(fly, plan, ip_changes, log)
    except (RunError, FlyError) as exc:
        outcome.status = "failed"
        if outcome.error is None:
            outcome.error = str(exc) if isinstance(exc, RunError) else f"Fly API error: {exc}"
        outcome.changed = bool(ip_changes) or any(
            c.result in ("updated", "rolled-back", "failed") for c in outcome.machines
        )
        outcome.ips = [*ip_changes, *[i for i in plan.outcome().ips if i.action != "allocate"]]
        outcome.machines = [
            c if c.result != "pending" else replace(c, result="untouched") for c in outcome.machines
        ]
    return outcome
