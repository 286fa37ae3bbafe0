"""Which public addresses a releasing run (unexpose, sweep, the post step of a `lifetime: job`
run) releases, and which it keeps and why. Pure: decided from the cluster and the ownership
record; nothing here talks to Fly.

The rule: the action's own address is released once no hold on the record covers its family
(the post step and `unexpose` release every such address, not only those their run allocated);
an address that is not its own is released only when the `addresses` input names it (or says
`all`); while the record is unknown nothing else is released; everything else is kept, with the
reason.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .domain import IP_FAMILIES, ClusterState, IpAddress, IpFamily, PlanWarning
from .errors import PlanError
from .intent import Intent
from .ownership import PERSISTENT, Ownership, describe_holds


@dataclass(frozen=True)
class Kept:
    ip: IpAddress
    reason: str
    foreign: bool  # not the action's own: the run warns, and says how to release it

    def warning(self, app: str) -> PlanWarning:
        hint = (
            f"To release it, name it in the addresses input (addresses: {self.ip.address}, or "
            f"addresses: all), or run fly ips release {self.ip.address} -a {app}."
        )
        return PlanWarning(
            "kept",
            f"Kept {self.ip.type} {self.ip.address}: {self.reason}. {hint}",
            subject=self.ip.address,
            hint=hint,
        )


@dataclass(frozen=True)
class Releases:
    release: tuple[IpAddress, ...]
    kept: tuple[Kept, ...]


FOREIGN = (
    "it is not this action's own (no record of the action allocating it: made by hand, by "
    "another tool, or before the action kept records)"
)


def unknown_reason(record: Ownership) -> str:
    return (
        "the ownership record could not be read ("
        + "; ".join(record.unreadable)
        + "), so whether another run still holds it is unknown"
    )


def stale_holds(
    record: Ownership, *, now: int, max_age: float, gone: Collection[str]
) -> tuple[str, ...]:
    """Holds a sweep drops: older than `max_age` seconds, or whose holder is gone (a closed
    pull request)."""
    return tuple(
        sorted(h for h, hold in record.holds.items() if h in gone or now - hold.since > max_age)
    )


def decide(
    cluster: ClusterState,
    record: Ownership,
    *,
    families: Iterable[IpFamily],
    named: Collection[str] = (),
    every: bool = False,
) -> Releases:
    """What to release, given the record as it will be once this run's holds are dropped.

    `named`/`every` come from the `addresses` input and are released whoever owns or holds
    them. An address of the action's own is released once no hold covers its family (a hold
    covers what its run asked for); an unknown record (a copy that could not be read) releases
    nothing that is not named.
    """
    wanted = set(families)
    public = [ip for ip in cluster.app.ips if ip.type in ("v4", "v6")]
    missing = sorted(set(named) - {ip.address for ip in public})
    if missing:
        raise PlanError(
            f"{', '.join(missing)} is not a public address of app {cluster.app.name} (it has "
            f"{', '.join(ip.address for ip in public) or 'none'}); nothing was released.",
            "addresses",
        )
    release: list[IpAddress] = []
    kept: list[Kept] = []
    for ip in public:
        explicit = (every and ip.type in wanted) or ip.address in named
        if not explicit and ip.type not in wanted:
            continue
        if explicit:
            release.append(ip)
        elif not record.known:
            kept.append(Kept(ip, unknown_reason(record), foreign=True))
        elif not record.owns(ip):
            kept.append(Kept(ip, FOREIGN, foreign=True))
        elif record.covered(ip.type):
            reason = f"still held by {describe_holds(record.holders_of(ip.type))}"
            kept.append(Kept(ip, reason, foreign=False))
        else:
            release.append(ip)
    return Releases(tuple(release), tuple(kept))


@dataclass(frozen=True)
class Holding:
    """Who a run holds the exposure for, and what a releasing run lets go of."""

    holder: str = PERSISTENT
    now: int = 0  # unix seconds, for the hold's time and the sweep's age
    gone: frozenset[str] = frozenset()  # holders a sweep found gone (closed pull requests)
    families: tuple[IpFamily, ...] = IP_FAMILIES  # what the run asks for: what its hold covers
    # The addresses the post step's state proves its job allocated: the action's own even if
    # the record lost them (a record write that failed everywhere).
    claims: tuple[str, ...] = ()
    legacy: tuple[str, ...] = ()  # this run's holder as the previous record format named it


# A hold taken longer ago than this is taken again (its time renewed), so a sweep's `max-age`
# counts from the latest run that relied on the exposure, not the first.
HOLD_RENEWAL = 3600


def expose_record(owned: Ownership, holding: Holding, *, allocating: bool) -> Ownership | None:
    """The record an expose writes (its allocations are added when they are made), or None:
    nothing to write, so the run needs no turn at the record (the cheap no-op).

    A run writes its hold even when the record owns none of the public addresses it finds:
    they may still be the action's. Another run allocates in its turn and records right after,
    so an address can be seen before its record; this run's write comes in its own turn, after
    that record (a matrix leg that read in between would otherwise hold nothing, and the other
    leg's post step would close its database). On a cluster opened by hand, that costs one
    write per new holder; a hold on addresses no record owns releases nothing."""
    hold = owned.holds.get(holding.holder)
    fresh = (
        hold is not None
        and holding.now - hold.since < HOLD_RENEWAL
        and set(holding.families) <= set(hold.families)
    )
    if fresh and not allocating and owned.synced and owned.known:
        return None
    families = set(holding.families) | (set(hold.families) if fresh and hold else set())
    return owned.holding(holding.holder, holding.now, families)


def plan_releases(
    intent: Intent, cluster: ClusterState, owned: Ownership, holding: Holding
) -> tuple[tuple[str, ...], Ownership | None, Releases]:
    """The holds a releasing run drops, the record to write, and what it releases or keeps."""
    if intent.mode == "sweep":
        dropped = stale_holds(owned, now=holding.now, max_age=intent.max_age, gone=holding.gone)
    else:
        mine = (holding.holder, *holding.legacy)
        dropped = tuple(h for h in mine if h in owned.holds)
    claimed = [
        ip
        for ip in cluster.app.ips
        if ip.address in holding.claims and ip.type in ("v4", "v6") and not owned.owns(ip)
    ]
    if claimed and owned.known:
        owned = owned.with_addresses(claimed)
    after = owned.without_holds(dropped)
    decided = decide(
        cluster,
        after,
        families=intent.families,
        named=intent.addresses.named,
        every=intent.addresses.every,
    )
    owned_released = any(owned.owns(ip) for ip in decided.release)
    write = dropped or owned_released or (claimed and owned.known)
    return dropped, after if write else None, decided


def record_warnings(owned: Ownership) -> tuple[PlanWarning, ...]:
    if owned.known:
        return ()
    return (
        PlanWarning(
            "record",
            "The ownership record could not be read ("
            + "; ".join(owned.unreadable)
            + "). It counts as unknown: nothing is released unless the addresses input names "
            "it, and the next run that writes the record replaces it with what is known.",
        ),
    )
