"""The action's record, on Fly, of the public addresses it allocated and of who holds them open.

An address is the action's own only if this record names it, by IP ID and address (an address
released and allocated again gets a new ID, so a recycled address is never taken for ours). Every
run that exposes the app adds a hold: a pull request (`pr-12`), a job with `lifetime: job`
(`run-…`), or `persistent`. A run that unexposes removes its own hold, and the action's own
addresses are released only when no hold is left, so closing one pull request never cuts access
another one still relies on.

The record is kept in the metadata of every machine of the cluster under `RECORD_KEY`, written
through the Machines API's metadata endpoint, which does not make a new machine version (Fly
docs, "runtime environment": "Changing the Machine's metadata using the metadata endpoint of the
Machines API doesn't trigger a new version"). Each machine carries the whole record; reading takes
the union, so a machine that was replaced, or whose config someone rewrote without it, loses
nothing as long as one machine still has it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .domain import IpAddress, Machine

# Fly's own metadata keys start with `fly`; the key goes into a URL path unescaped (fly-go).
RECORD_KEY = "pg_external_owner"
RECORD_VERSION = 1
PERSISTENT = "persistent"


@dataclass(frozen=True)
class Ownership:
    addresses: Mapping[str, str] = field(default_factory=dict)  # IP ID -> address
    holds: Mapping[str, int] = field(default_factory=dict)  # holder -> unix time of its hold

    def owns(self, ip: IpAddress) -> bool:
        return self.addresses.get(ip.id) == ip.address

    @property
    def empty(self) -> bool:
        return not self.addresses and not self.holds

    def holding(self, holder: str, now: int) -> Ownership:
        return Ownership(dict(self.addresses), {**self.holds, holder: now})

    def without_holds(self, holders: Iterable[str]) -> Ownership:
        gone = set(holders)
        return Ownership(
            dict(self.addresses), {h: t for h, t in self.holds.items() if h not in gone}
        )

    def with_addresses(self, ips: Iterable[IpAddress]) -> Ownership:
        return Ownership({**self.addresses, **{ip.id: ip.address for ip in ips}}, dict(self.holds))

    def without_addresses(self, addresses: Iterable[str]) -> Ownership:
        gone = set(addresses)
        kept = {i: a for i, a in self.addresses.items() if a not in gone}
        return Ownership(kept, dict(self.holds))

    def current(self, ips: Iterable[IpAddress]) -> Ownership:
        """Only the addresses that still exist under the same ID."""
        present = {ip.id: ip.address for ip in ips}
        kept = {i: a for i, a in self.addresses.items() if present.get(i) == a}
        return Ownership(kept, dict(self.holds))


def encode(record: Ownership) -> str:
    """Compact JSON, sorted, so the same record is always the same text."""
    payload = {"v": RECORD_VERSION, "ips": dict(record.addresses), "holds": dict(record.holds)}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def decode(text: str) -> Ownership | None:
    """The record in `text`, or None when it is not one this version can read."""
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("v") != RECORD_VERSION:
        return None
    ips, holds = payload.get("ips"), payload.get("holds")
    if not isinstance(ips, dict) or not isinstance(holds, dict):
        return None
    return Ownership(
        {str(k): str(v) for k, v in ips.items() if isinstance(v, str)},
        {str(k): int(v) for k, v in holds.items() if isinstance(v, int)},
    )


def read(machines: Iterable[Machine], ips: Iterable[IpAddress]) -> Ownership:
    """The union of the record over the machines, limited to addresses that still exist.

    For a hold found on several machines the latest time wins.
    """
    addresses: dict[str, str] = {}
    holds: dict[str, int] = {}
    for machine in machines:
        metadata = machine.config.get("metadata") or {}
        text = metadata.get(RECORD_KEY) if isinstance(metadata, dict) else None
        record = decode(text) if isinstance(text, str) else None
        if record is None:
            continue
        addresses.update(record.addresses)
        for holder, since in record.holds.items():
            holds[holder] = max(since, holds.get(holder, since))
    return Ownership(addresses, holds).current(ips)


def describe_holds(holds: Mapping[str, int]) -> str:
    return ", ".join(sorted(holds)) or "none"


def with_record(config: dict[str, Any], text: str) -> dict[str, Any]:
    """A copy of a machine config that carries the record: an update replaces the whole config,
    metadata included, so one sent without it would erase what the metadata endpoint wrote."""
    new = dict(config)
    new["metadata"] = {**(config.get("metadata") or {}), RECORD_KEY: text}
    return new


def record_text(config: dict[str, Any]) -> str | None:
    metadata = config.get("metadata") or {}
    value = metadata.get(RECORD_KEY) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None
