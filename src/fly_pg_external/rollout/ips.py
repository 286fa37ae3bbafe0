"""Public IP addresses: allocating one per family without ever keeping a duplicate, releasing.

An allocation is a write that must not happen twice: `write_once` looks for a late address
before sending it again. Two runs allocating at the same time both see both addresses in the
mutation's answer, and every run keeps the oldest and releases the one it made.
"""

from __future__ import annotations

import logging

from ..domain import IpAddress, IpFamily
from ..errors import ActionError, FlyError, RunError
from ..flyapi import FlyApi
from ..plan import Plan
from ..poll import Clock, write_once
from ..progress import Progress
from .concurrency import concurrently

log = logging.getLogger(__name__)


def oldest(ips: list[IpAddress]) -> IpAddress:
    """The address every racing run agrees to keep: the earliest created.

    `createdAt` has one-second resolution, so ties are broken by the order the API lists the
    addresses in (creation order, the same for every reader; UNCONFIRMED for Fly, true of its
    list endpoints generally), never by the opaque ID.
    """
    return min(enumerate(ips), key=lambda pair: (pair[1].created_at, pair[0]))[1]


def allocate_family(
    fly: FlyApi, plan: Plan, family: IpFamily, progress: Progress, *, clock: Clock
) -> bool:
    """Allocate one address of `family` and record the one kept in `progress`; return whether a
    request failed in a way that may still take effect later (the caller then sweeps for a
    late duplicate)."""
    known = set(plan.existing.get(family, ()))
    ambiguous = False

    def landed() -> tuple[IpAddress, tuple[IpAddress, ...]] | None:
        listed = fly.get_app(plan.app).ips
        found = [ip for ip in listed if ip.type == family and ip.address not in known]
        if not found:
            return None
        log.info(f"The {family} address {oldest(found).address} exists after all.")
        return oldest(found), listed

    def on_ambiguous(exc: FlyError) -> None:
        nonlocal ambiguous
        ambiguous = True
        log.warning(
            f"Allocating the {family} address failed ({exc}); checking whether it happened "
            "anyway before trying again.",
            extra={"title": "Address allocation uncertain"},
        )

    created, listed = write_once(
        lambda: fly.allocate_ip(plan.app, family),
        landed,
        request_timeout=fly.request_timeout,
        clock=clock,
        on_ambiguous=on_ambiguous,
    )
    keep = oldest([ip for ip in listed if ip.type == family] or [created])
    progress.allocated_ip(family, keep)
    if keep.address != created.address:
        log.warning(
            f"Another run allocated {family} {keep.address} at the same time; releasing the "
            f"duplicate {created.address} this run created.",
            extra={"title": "Duplicate address released"},
        )
        fly.release_ip(plan.app, created.address)
    else:
        log.info(f"Allocated {family} address {created.address}.")
    return ambiguous


def allocate_families(fly: FlyApi, plan: Plan, progress: Progress, *, clock: Clock) -> bool:
    """Allocate every family in `plan.allocate`, the families concurrently (one round trip);
    return whether any allocation was ambiguous.

    The families are independent. When one fails, what the others allocated is already in
    `progress`; a late duplicate of theirs is swept now, since the run stops here and nothing
    later would look again. Then the first failure is raised.
    """
    families = list(plan.allocate)
    if not families:
        return False

    def one(family: IpFamily) -> bool:
        return allocate_family(fly, plan, family, progress, clock=clock)

    results = concurrently(one, families, workers=len(families), name="allocate")
    failures = [(f, r) for f, r in zip(families, results, strict=True) if isinstance(r, Exception)]
    ambiguous = any(r is True for r in results)
    if not failures:
        return ambiguous
    (_, error), *others = failures
    # The first failure becomes the run's error; a second one would otherwise go unsaid.
    for family, exc in others:
        log.warning(
            f"Allocating the {family} address failed as well: {exc}",
            extra={"title": "Address allocation failed"},
        )
    if ambiguous and progress.allocated:
        sweep_duplicates(fly, plan, progress)
    raise error


def sweep_duplicates(fly: FlyApi, plan: Plan, progress: Progress) -> None:
    """After an ambiguous allocation: release any address of an allocated family that appeared
    during the run besides the one kept (a late request that landed after all)."""
    try:
        listed = fly.get_app(plan.app).ips
    except FlyError as exc:
        log.warning(
            f"Could not re-check the app's IPs for duplicates ({exc}).",
            extra={"title": "Duplicate check failed"},
        )
        return
    for family, kept in dict(progress.allocated).items():
        known = set(plan.existing.get(family, ())) | {kept.address}
        for ip in listed:
            if ip.type == family and ip.address not in known:
                log.warning(
                    f"Releasing {ip.type} {ip.address}: a late duplicate of this run's.",
                    extra={"title": "Late duplicate address"},
                )
                try:
                    fly.release_ip(plan.app, ip.address)
                except FlyError as exc:
                    log.warning(
                        f"Could not release {ip.address} ({exc}); release it by hand.",
                        extra={"title": "Duplicate address not released"},
                    )


def release_ips(fly: FlyApi, plan: Plan, progress: Progress, *, clock: Clock) -> None:
    """Release the planned addresses one by one, recording each in `progress`. One that cannot
    be released does not stop the others (no later run may come to release them); the failures
    are raised together at the end."""
    failures: list[RunError] = []
    for ip in plan.release:
        try:
            _release(fly, plan.app, ip, clock)
        except RunError as exc:
            log.warning(str(exc), extra={"title": "Address not released"})
            failures.append(exc)
            continue
        log.info(f"Released {ip.type} address {ip.address}.")
        progress.released_ip("v4" if ip.type == "v4" else "v6", ip.address)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise RunError(" ".join(str(f) for f in failures))


def _release(fly: FlyApi, app: str, ip: IpAddress, clock: Clock) -> None:
    def send() -> bool:
        fly.release_ip(app, ip.address)
        return True

    def gone() -> bool | None:
        # A lost answer may hide a release that happened: the app's list decides.
        return True if ip.address not in {i.address for i in fly.get_app(app).ips} else None

    try:
        write_once(send, gone, request_timeout=fly.request_timeout, clock=clock)
    except ActionError as exc:
        raise RunError(f"Releasing {ip.type} address {ip.address} failed: {exc}") from exc
