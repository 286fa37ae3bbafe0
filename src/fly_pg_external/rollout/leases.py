"""Machine leases: taken before any change, kept alive in the background, always given back.

The first machine is leased alone, so two runs racing for the cluster meet there and one wins
outright; the rest are leased concurrently. A lease held by someone else is waited for while it
is due to end soon. Leases are refreshed every `LEASE_REFRESH` seconds, as `fly deploy` does,
and count as lost only once they would have expired by our own clock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

from ..domain import Lease, Machine
from ..errors import FlyConflict, FlyError, FlyNotFound, FlyTimeout, FlyTransient, RunError
from ..flyapi import FlyApi
from ..poll import SYSTEM_CLOCK, Clock, RetryPolicy, poll
from .concurrency import concurrently

log = logging.getLogger(__name__)

LEASE_TTL = 30  # seconds; an orphaned lease (the runner killed) blocks others at most this long
LEASE_REFRESH = 10.0
LEASE_WAIT = 40.0  # seconds; longer than our own TTL, so a re-run after a killed run gets through
LEASE_POLL = 2.0  # seconds between asks for a lease held by someone else (the limit is 1/s)
# The pause before the one second try after a lease request failed in transit: the HTTP
# client's own schedule (it already retried within the request).
LEASE_RETRY = RetryPolicy()
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

    fly: FlyApi
    app: str
    # How long a lease held by someone else is waited for before giving up (fly-go waits up to
    # a minute): an abandoned lease, or one of a deploy that is about to finish, ends by itself.
    wait: float = LEASE_WAIT
    leases: dict[str, Lease] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK
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
        # Not an executor: a cancellation must not wait for a slow acquire (see concurrently).
        results = concurrently(self._take, machines[1:], workers=8, name="lease")
        for result in results:
            if isinstance(result, Exception):
                raise result

    def extend(self, machines: list[Machine]) -> None:
        """Lease more machines (a plan made again under the first lease found more to update);
        the keep-alive already running refreshes them too."""
        results = concurrently(self._take, machines, workers=8, name="lease")
        for result in results:
            if isinstance(result, Exception):
                raise result

    def holds(self, machine_id: str) -> bool:
        with self._lock:
            return machine_id in self.leases

    def _start_keep_alive(self) -> None:
        thread = threading.Thread(target=self._keep_alive, name="lease-refresh", daemon=True)
        thread.start()
        # Recorded once started: release_all joins it, and an unstarted thread cannot be joined
        # (a cancellation may land in between; the thread then ends at its first wait).
        self._thread = thread

    def _take(self, machine: Machine) -> None:
        """Lease one machine: a failed attempt is sent once more, and a lease held by someone
        else is asked for again every `LEASE_POLL` seconds while it is due to end within `wait`
        seconds.

        A first acquire is not idempotent, so the HTTP layer does not resend it. Sending it once
        more here is still safe: if the failed attempt was carried out after all, the second one
        is refused (409), and that lease, our own, ends within LEASE_TTL like any other.
        """
        tries = _Tries(self, machine)
        lease = poll(
            tries.attempt,
            deadline=self.clock.now() + self.wait,
            pauses=tries.pauses(),
            clock=self.clock,
        )
        if lease is None:
            if tries.conflict is None:  # no time left to send the failed attempt again
                assert tries.failed is not None
                raise tries.failed
            raise RunError(self._held_message(machine, tries.conflict, tries.failed))
        self._keep(machine.id, lease)

    def _keep(self, machine_id: str, lease: Lease) -> None:
        with self._lock:
            released = self._released
            if not released:
                self.leases[machine_id] = lease
                self._valid_until[machine_id] = self.clock.now() + LEASE_TTL
        if released:
            # Taken in the background after the run was cancelled and let go of its leases:
            # give this one back too rather than block others until it expires.
            self._release_one(machine_id, lease)

    def _lease_pause(self, conflict: FlyConflict) -> float:
        """How long to wait before asking again. A lease that, by its stated expiry, outlasts the
        whole wait is not waited for at all (infinity); otherwise it is asked for again every
        couple of seconds, since its holder may release it before it expires."""
        expiry = lease_expiry(conflict.message)
        if expiry is not None and expiry - self.clock.wall() > self.wait:
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
            if (
                machine_id not in self.lost
                and self._valid_until.get(machine_id, 0) <= self.clock.now()
            ):
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
            fresh = self.fly.acquire_lease(self.app, machine_id, LEASE_TTL, nonce=lease.nonce)
        except (FlyConflict, FlyNotFound) as exc:
            with self._lock:
                self.lost[machine_id] = str(exc)
            return
        except FlyError as exc:
            log.warning(
                f"Refreshing the lease on machine {machine_id} failed ({exc}); it stays valid "
                f"for a while and is refreshed again in {LEASE_REFRESH:.0f} s.",
                extra={"title": "Lease refresh failed"},
            )
            return
        with self._lock:
            if fresh.nonce != lease.nonce:
                self.lost[machine_id] = "a refresh answered with another nonce"
            elif machine_id in self.leases:
                self.leases[machine_id] = replace(lease, expires_at=fresh.expires_at)
                self._valid_until[machine_id] = self.clock.now() + LEASE_TTL

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
            self.fly.release_lease(self.app, machine_id, lease.nonce)
        except FlyError as exc:
            log.warning(
                f"Could not release the lease on machine {machine_id} ({exc}); it expires within "
                f"{LEASE_TTL} s.",
                extra={"title": "Lease not released"},
            )


class _Tries:
    """The attempts at one machine's lease: what the last answer says about the next one."""

    def __init__(self, leases: LeaseSet, machine: Machine) -> None:
        self.leases = leases
        self.machine = machine
        self.failed: FlyError | None = None  # a first attempt that failed (sent once more)
        self.conflict: FlyConflict | None = None  # the latest "held by someone else"
        self.pause = LEASE_POLL

    def attempt(self) -> Lease | None:
        leases, machine_id = self.leases, self.machine.id
        try:
            return leases.fly.acquire_lease(leases.app, machine_id, LEASE_TTL)
        except FlyConflict as exc:
            if self.conflict is None:
                log.info(
                    f"Machine {machine_id} is leased ({exc.message}); waiting up to "
                    f"{leases.wait:.0f} s for that lease to end."
                )
            self.conflict, self.pause = exc, leases._lease_pause(exc)
        except (FlyTransient, FlyTimeout) as exc:
            if self.failed is not None:
                raise
            self.failed, self.pause = exc, LEASE_RETRY.delay(1)
            log.warning(
                f"Taking the lease on machine {machine_id} failed ({exc}); trying once more.",
                extra={"title": "Lease attempt failed"},
            )
        return None

    def pauses(self) -> Iterator[float]:
        while True:
            yield self.pause


@contextmanager
def leased(
    fly: FlyApi,
    app: str,
    machines: list[Machine],
    *,
    wait: float = LEASE_WAIT,
    clock: Clock = SYSTEM_CLOCK,
) -> Iterator[LeaseSet]:
    """Every machine of `machines` leased for the block; all released when it ends, however."""
    leases = LeaseSet(fly, app, wait=wait, clock=clock)
    try:
        leases.acquire(machines)
        yield leases
    finally:
        leases.release_all()
