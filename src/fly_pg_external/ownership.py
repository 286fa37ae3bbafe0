"""The action's record, on Fly, of the public addresses it allocated and of who holds them open.

An address is the action's own only if this record names it, by IP ID and address (an address
released and allocated again gets a new ID, so a recycled address is never taken for ours). Every
run that exposes the app adds a hold, named after its repository and its run (holders.py), which
says when it was taken and which IP families the run asked for. A run that unexposes removes its
own hold, and an address of the action's own is released only once no hold covers its family, so
closing one pull request never cuts access another one still relies on.

The record is kept in the metadata of every machine of the cluster under `RECORD_KEY`, written
through the Machines API's metadata endpoint, which does not make a new machine version (Fly
docs, "runtime environment": "Changing the Machine's metadata using the metadata endpoint of the
Machines API doesn't trigger a new version"). Writers take turns (a lease on one designated
machine, rollout/apply.py) and each write carries a generation one above the newest it read:

- the copy with the newest generation is the record; older copies (a write that failed on that
  machine) are stale, ignored, and replaced by the next write;
- a machine without a copy (replaced, or its config rewritten without it) changes nothing;
- a copy this version cannot read (not JSON, another shape, a newer format) makes the record
  unknown: a releasing run then releases nothing that is not named, and the next write replaces
  it with what can be known.

A copy never disappears: a record with nothing left in it is written empty, with its generation,
so that a stale copy elsewhere can never outrank it. See docs/lifetime.md for the invariants.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeGuard, cast

from .domain import IP_FAMILIES, IpAddress, IpFamily, Machine
from .fly.config import Config, metadata, with_metadata

# Fly's own metadata keys start with `fly`; the key goes into a URL path unescaped (fly-go).
RECORD_KEY = "pg_external_owner"
RECORD_VERSION = 2
LEGACY_VERSION = 1  # no generation, no families: read (generation 0), never written
PERSISTENT = "persistent"  # the default holder outside GitHub, and a legacy holder name
# The size bound: at most this many holds. When a write would keep more, the oldest give way
# first: they are the ones a sweep drops first, and a hold is renewed by every run that relies
# on it, so the oldest is the least likely to belong to a live run. At about 120 bytes a hold,
# the record stays under 8 KiB.
MAX_HOLDS = 64
# A recorded allocation attempt (an allocation whose answer was lost, or a run cancelled while
# it was in flight) claims an address of its family that Fly created within this window of the
# attempt's time: before it by up to CLAIM_BEFORE (clock skew between the runner and Fly), after
# it by up to CLAIM_AFTER (the request landing late). Older attempts are forgotten.
CLAIM_BEFORE = 120
CLAIM_AFTER = 900


@dataclass(frozen=True)
class Hold:
    since: int  # unix seconds: when the hold was taken or last renewed
    families: tuple[IpFamily, ...] = IP_FAMILIES  # what its run asked for

    def covers(self, family: str) -> bool:
        return family in self.families


@dataclass(frozen=True)
class Ownership:
    addresses: Mapping[str, str] = field(default_factory=dict)  # IP ID -> address
    holds: Mapping[str, Hold] = field(default_factory=dict)  # holder -> its hold
    # Allocations whose outcome this run could not see: family -> unix time the request went.
    attempts: Mapping[IpFamily, int] = field(default_factory=dict)
    generation: int = 0
    # What reading found (never written): copies that could not be read, and why; whether every
    # machine read carries the newest copy.
    unreadable: tuple[str, ...] = field(default=(), compare=False)
    synced: bool = field(default=True, compare=False)

    def owns(self, ip: IpAddress) -> bool:
        return self.addresses.get(ip.id) == ip.address

    @property
    def known(self) -> bool:
        """Could every copy be read? An unknown record releases nothing that is not named."""
        return not self.unreadable

    @property
    def empty(self) -> bool:
        return not self.addresses and not self.holds and not self.attempts

    def covered(self, family: str) -> bool:
        return any(h.covers(family) for h in self.holds.values())

    def holders_of(self, family: str) -> list[str]:
        return sorted(h for h, hold in self.holds.items() if hold.covers(family))

    def _with(self, **changes: Any) -> Ownership:
        return replace(self, **changes)

    def holding(self, holder: str, now: int, families: Iterable[IpFamily]) -> Ownership:
        fams = tuple(f for f in IP_FAMILIES if f in set(families)) or IP_FAMILIES
        holds = {**self.holds, holder: Hold(now, fams)}
        return self._with(holds=_bounded(holds, keep=holder))

    def without_holds(self, holders: Iterable[str]) -> Ownership:
        gone = set(holders)
        return self._with(holds={h: v for h, v in self.holds.items() if h not in gone})

    def with_addresses(self, ips: Iterable[IpAddress]) -> Ownership:
        added = {ip.id: ip.address for ip in ips}
        families = {ip.type for ip in ips}
        attempts = {f: t for f, t in self.attempts.items() if f not in families}
        return self._with(addresses={**self.addresses, **added}, attempts=attempts)

    def with_attempts(self, families: Iterable[IpFamily], now: int) -> Ownership:
        return self._with(attempts={**self.attempts, **dict.fromkeys(families, now)})

    def without_addresses(self, addresses: Iterable[str]) -> Ownership:
        gone = set(addresses)
        kept = {i: a for i, a in self.addresses.items() if a not in gone}
        return self._with(addresses=kept)

    def next_generation(self) -> Ownership:
        """The record as the next write carries it: one generation up, read-side facts reset."""
        return replace(self, generation=self.generation + 1, unreadable=(), synced=True)


def _bounded(holds: Mapping[str, Hold], *, keep: str | None = None) -> dict[str, Hold]:
    """At most MAX_HOLDS holds: the newest stay (and `keep`, the writer's own, always)."""
    if len(holds) <= MAX_HOLDS:
        return dict(holds)
    order = sorted(holds, key=lambda h: (h != keep, -holds[h].since, h))
    return {h: holds[h] for h in order[:MAX_HOLDS]}


def encode(record: Ownership) -> str:
    """Compact JSON, sorted, so the same record is always the same text."""
    payload = {
        "v": RECORD_VERSION,
        "gen": record.generation,
        "ips": dict(record.addresses),
        "holds": {h: {"t": v.since, "f": list(v.families)} for h, v in record.holds.items()},
    }
    if record.attempts:
        payload["attempts"] = dict(record.attempts)
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


class Unreadable(ValueError):
    """A copy of the record that this version cannot read; the text says why."""


def decode(text: str) -> Ownership:
    """The record in `text`, or `Unreadable` saying why not."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise Unreadable("not JSON") from None
    if not isinstance(payload, dict) or type(payload.get("v")) is not int:
        raise Unreadable("not a record of this action (no version)")
    version = payload["v"]
    if version == LEGACY_VERSION:
        return _decode_legacy(payload)
    if version != RECORD_VERSION:
        raise Unreadable(f"format version {version}, this version of the action reads 1 and 2")
    gen, ips, holds = payload.get("gen"), payload.get("ips"), payload.get("holds")
    attempts = payload.get("attempts", {})
    if type(gen) is not int or gen < 0:
        raise Unreadable("its generation is not a whole number")
    if not _str_map(ips):
        raise Unreadable("its addresses are not a map of IP ID to address")
    if not isinstance(holds, dict) or not all(_hold_shape(v) for v in holds.values()):
        raise Unreadable("its holds are not a map of holder to time and families")
    if not isinstance(attempts, dict) or not all(
        f in IP_FAMILIES and type(t) is int for f, t in attempts.items()
    ):
        raise Unreadable("its attempts are not a map of family to time")
    return Ownership(
        addresses=dict(ips),
        holds={
            str(h): Hold(v["t"], tuple(f for f in IP_FAMILIES if f in v["f"]) or IP_FAMILIES)
            for h, v in holds.items()
        },
        attempts=cast(dict[IpFamily, int], dict(attempts)),
        generation=gen,
    )


def _str_map(value: object) -> TypeGuard[dict[str, str]]:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _hold_shape(value: object) -> bool:
    return (
        isinstance(value, dict)
        and type(value.get("t")) is int
        and isinstance(value.get("f"), list)
        and all(f in IP_FAMILIES for f in value["f"])
    )


def _decode_legacy(payload: dict[str, Any]) -> Ownership:
    """A record the previous format wrote: no generation (0), holds covering every family."""
    ips, holds = payload.get("ips"), payload.get("holds")
    if not _str_map(ips) or not isinstance(holds, dict):
        raise Unreadable("a version 1 record of the wrong shape")
    return Ownership(
        addresses=dict(ips),
        holds={str(h): Hold(t) for h, t in holds.items() if type(t) is int},
    )


def read(machines: Iterable[Machine], ips: Iterable[IpAddress], *, now: int) -> Ownership:
    """The record the machines carry: the newest generation wins (copies of the same generation,
    which only the legacy format leaves, are merged), limited to addresses that still exist,
    hold times clamped to `now`, at most MAX_HOLDS holds, and the addresses recorded attempts
    claim added."""
    copies: list[tuple[str | None, Ownership]] = []
    unreadable: list[str] = []
    for machine in machines:
        text = record_text(machine.config)
        if text is None:
            copies.append((None, Ownership()))
            continue
        try:
            copies.append((text, decode(text)))
        except Unreadable as exc:
            unreadable.append(f"machine {machine.id}: {exc}")
    found = [record for text, record in copies if text is not None]
    if not found:
        record = Ownership()
    else:
        newest = max(r.generation for r in found)
        record = _merge([r for r in found if r.generation == newest])
    texts = {text for text, _ in copies}
    synced = not unreadable and len(texts) == 1 and None not in texts
    listed = list(ips)
    record = _current(record, listed, now)
    return replace(record, unreadable=tuple(unreadable), synced=synced)


def _merge(records: list[Ownership]) -> Ownership:
    addresses: dict[str, str] = {}
    holds: dict[str, Hold] = {}
    attempts: dict[IpFamily, int] = {}
    for record in records:
        addresses.update(record.addresses)
        attempts.update(record.attempts)
        for holder, hold in record.holds.items():
            if holder not in holds or hold.since > holds[holder].since:
                holds[holder] = hold
    return Ownership(addresses, holds, attempts, records[0].generation)


def _current(record: Ownership, ips: list[IpAddress], now: int) -> Ownership:
    """Only addresses that still exist under the same ID, plus those an attempt claims; holds
    no later than now, and no more than the bound."""
    present = {ip.id: ip.address for ip in ips}
    kept = {i: a for i, a in record.addresses.items() if present.get(i) == a}
    claimed, attempts = _claims(record, ips, now)
    holds = {h: Hold(min(v.since, now), v.families) for h, v in record.holds.items()}
    return replace(record, addresses={**kept, **claimed}, holds=_bounded(holds), attempts=attempts)


def _claims(
    record: Ownership, ips: list[IpAddress], now: int
) -> tuple[dict[str, str], dict[IpFamily, int]]:
    """The addresses recorded attempts prove to be the action's own, and the attempts still
    open. An attempt claims the one address of its family that no record names and that Fly
    created within the attempt's window; with two such addresses it claims neither (it cannot
    tell which), and an attempt past its window is forgotten."""
    claimed: dict[str, str] = {}
    still: dict[IpFamily, int] = {}
    for family, sent in record.attempts.items():
        if now - sent > CLAIM_AFTER:
            continue
        candidates = [
            ip
            for ip in ips
            if ip.type == family
            and ip.id not in record.addresses
            and _created_within(ip, sent - CLAIM_BEFORE, sent + CLAIM_AFTER)
        ]
        if len(candidates) == 1:
            claimed[candidates[0].id] = candidates[0].address
        else:
            still[family] = sent
    return claimed, still


def _created_within(ip: IpAddress, start: int, end: int) -> bool:
    try:
        created = datetime.fromisoformat(ip.created_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False  # no creation time: no evidence
    return start <= created <= end


def describe_holds(holds: Iterable[str]) -> str:
    return ", ".join(sorted(holds)) or "none"


def with_record(config: Config, text: str) -> dict[str, Any]:
    """A copy of a machine config that carries the record: an update replaces the whole config,
    metadata included, so one sent without it would erase what the metadata endpoint wrote."""
    return with_metadata(config, RECORD_KEY, text)


def record_text(config: Config) -> str | None:
    value = metadata(config).get(RECORD_KEY)
    return value if isinstance(value, str) else None
