"""Which public addresses a releasing run (unexpose, sweep, the post step of a `lifetime: job`
run) releases, and which it keeps and why. Pure: decided from the cluster and the ownership
record; nothing here talks to Fly.

The rule: the action's own address is released once no hold is left on the record; an address
that is not its own is released only when the `addresses` input names it (or says `all`);
everything else is kept, with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from . import ownership
from .domain import ClusterState, IpAddress, IpFamily, Machine, PlanWarning
from .errors import PlanError
from .ownership import PERSISTENT, Ownership, describe_holds
from .settings import Settings


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


def stale_holds(
    record: Ownership, *, now: int, max_age: float, gone: Collection[str]
) -> tuple[str, ...]:
    """Holds a sweep drops: older than `max_age` seconds, or whose holder is gone (a closed
    pull request)."""
    return tuple(
        sorted(h for h, since in record.holds.items() if h in gone or now - since > max_age)
    )


def decide(
    cluster: ClusterState,
    record: Ownership,
    *,
    families: Iterable[IpFamily],
    named: Collection[str] = (),
    every: bool = False,
    only: Collection[str] | None = None,
) -> Releases:
    """What to release, given the record as it will be once this run's holds are dropped.

    `named`/`every` come from the `addresses` input. `only` limits the candidates to the
    addresses a `lifetime: job` run allocated (its post step): those are its own whatever the
    record says (the step state proves it), and are released unless someone else holds them.
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
        candidate = ip.type in wanted and (only is None or ip.address in only)
        if not explicit and not candidate:
            continue
        if explicit:
            release.append(ip)
        elif not record.owns(ip) and only is None:
            kept.append(Kept(ip, FOREIGN, foreign=True))
        elif record.holds:
            reason = f"still held by {describe_holds(record.holds)}"
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
    only: tuple[str, ...] | None = None  # the post step: just the addresses the job allocated


# A hold taken longer ago than this is taken again (its time renewed), so a sweep's `max-age`
# counts from the latest run that relied on the exposure, not the first.
HOLD_RENEWAL = 3600


def expose_record(
    owned: Ownership, reachable: list[Machine], holding: Holding, *, allocating: bool
) -> Ownership | None:
    """The record an expose writes (its allocations are added when they are made), or None."""
    if not owned.addresses:
        # A hold on addresses that are not the action's own would guard nothing: without an
        # allocation nothing is written, and a first allocation starts with this hold alone.
        return Ownership({}, {holding.holder: holding.now}) if allocating else None
    since = owned.holds.get(holding.holder)
    if since is not None and holding.now - since < HOLD_RENEWAL and not allocating:
        # Held and fresh: write only to machines that lack the record (replaced ones).
        text = ownership.encode(owned)
        copies = [ownership.record_text(m.config) for m in reachable]
        return None if all(c == text for c in copies) or owned.empty else owned
    return owned.holding(holding.holder, holding.now)


def plan_releases(
    settings: Settings, cluster: ClusterState, owned: Ownership, holding: Holding
) -> tuple[tuple[str, ...], Ownership | None, Releases]:
    """The holds a releasing run drops, the record to write, and what it releases or keeps."""
    if settings.mode == "sweep":
        dropped = stale_holds(owned, now=holding.now, max_age=settings.max_age, gone=holding.gone)
    else:
        dropped = tuple(h for h in (holding.holder,) if h in owned.holds)
    after = owned.without_holds(dropped)
    decided = decide(
        cluster,
        after,
        families=settings.ip_versions,
        named=settings.addresses.named,
        every=settings.addresses.every,
        only=holding.only,
    )
    owned_released = any(owned.owns(ip) for ip in decided.release)
    return dropped, after if (dropped or owned_released) else None, decided
