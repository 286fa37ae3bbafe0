"""Machine leases: acquire, refresh, release, and the nonce check every leased change passes.

Each function works on a live :class:`~flysim.models.Machine`; the caller holds the state lock
(:attr:`State.lock <flysim.state.State.lock>`) and has already refused a machine
it may not touch (absent, destroyed, on an unreachable host). Refusals are :class:`ApiError`\\ s
with the Machines API's statuses and texts.
"""

from __future__ import annotations

import time

from flysim import _ids
from flysim.errors import ApiError
from flysim.models import Lease, Machine

NONCE_HEADER = "fly-machine-lease-nonce"


def held_by(machine_id: str, lease: Lease) -> str:
    """The 409 text of the Machines API when someone else holds the lease."""
    expires = _ids.rfc3339(lease.data()["expires_at"])
    return f"machine ID {machine_id} lease currently held by {lease.owner}, expires at {expires}"


def acquire(
    machine: Machine, nonce: str | None, *, ttl: float, owner: str, description: str
) -> Lease:
    """Take the machine's lease for ``ttl`` seconds, or refresh it when ``nonce`` is its nonce."""
    now = time.time()
    lease = machine.active_lease(now)
    if lease is not None:
        if nonce != lease.nonce:
            raise ApiError(409, held_by(machine.id, lease))
        # A refresh keeps the nonce (flyctl errors out if it changes) and moves the expiry.
        lease.expires_at = now + ttl
        lease.version = machine.instance_id
        return lease
    if nonce:
        # UNCONFIRMED: refreshing a lease that already expired. Strict: it is gone.
        raise ApiError(409, f"machine ID {machine.id} lease not found or expired")
    return _grant(machine, owner=owner, description=description, expires_at=now + ttl)


def hold(machine: Machine, *, owner: str, ttl: float, description: str) -> Lease:
    """Give the lease to ``owner`` whoever holds it now (a test's "someone else")."""
    return _grant(machine, owner=owner, description=description, expires_at=time.time() + ttl)


def current(machine: Machine) -> Lease:
    """The lease in force; 404 when there is none (never taken, released or expired)."""
    lease = machine.active_lease()
    if lease is None:
        raise ApiError(404, f"machine ID {machine.id} lease not found")
    return lease


def release(machine: Machine, nonce: str | None) -> None:
    """Drop the lease; only its holder (who sends its nonce) may."""
    lease = current(machine)
    if not nonce:
        raise ApiError(400, f"the {NONCE_HEADER} header is required to release a lease")
    if nonce != lease.nonce:
        raise ApiError(409, held_by(machine.id, lease))
    machine.lease = None


def check_nonce(machine: Machine, nonce: str | None) -> None:
    """Refuse a change to a leased machine unless it carries the lease's nonce."""
    lease = machine.active_lease()
    if lease is not None:
        if nonce != lease.nonce:
            raise ApiError(409, held_by(machine.id, lease))
    elif nonce:
        # UNCONFIRMED: a nonce for a lease that expired or was released. Refusing it (the
        # strict reading) exposes clients that let their lease lapse mid-update.
        raise ApiError(409, f"machine ID {machine.id} lease not found or expired")


def _grant(machine: Machine, *, owner: str, description: str, expires_at: float) -> Lease:
    lease = Lease(
        nonce=_ids.lease_nonce(),
        owner=owner,
        description=description,
        expires_at=expires_at,
        version=machine.instance_id,
    )
    machine.lease = lease
    return lease
