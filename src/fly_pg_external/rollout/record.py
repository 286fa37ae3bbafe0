"""Writing the ownership record (ownership.py) to every machine of the cluster."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

from ..domain import Machine
from ..errors import FlyError, FlyNotFound
from ..flyapi import FlyApi
from ..ownership import RECORD_KEY, Ownership, encode, with_record
from ..plan import Plan
from .concurrency import concurrently

log = logging.getLogger(__name__)


def write_record(fly: FlyApi, app: str, machines: list[Machine], record: Ownership) -> bool:
    """Write the record on every machine at once (delete it when it is empty); whether at
    least one machine carries it now. A machine that could not be written is a warning: reading
    takes the union, so the others are enough."""
    text = encode(record)

    def one(machine: Machine) -> None:
        if not record.empty:
            fly.set_metadata(app, machine.id, RECORD_KEY, text)
            return
        with contextlib.suppress(FlyNotFound):  # nothing to delete
            fly.delete_metadata(app, machine.id, RECORD_KEY)

    results = concurrently(one, machines, workers=8, name="record")
    failed = [(m, r) for m, r in zip(machines, results, strict=True) if isinstance(r, FlyError)]
    for machine, exc in failed:
        log.warning(
            f"Could not write the ownership record on machine {machine.id} ({exc}); the other "
            "machines carry it.",
            extra={"title": "Ownership record not written"},
        )
    others = [r for r in results if isinstance(r, Exception) and not isinstance(r, FlyError)]
    if others:
        raise others[0]
    if machines and len(failed) == len(machines):
        log.warning(
            "No machine carries the ownership record: a later unexpose will not know which "
            "addresses this action allocated, and will keep them (name them in the addresses "
            "input to release them).",
            extra={"title": "No ownership record"},
        )
        return False
    return True


def carry_record(plan: Plan, record: Ownership) -> Plan:
    """The plan whose machine updates carry the record in their configs."""
    text = encode(record)
    updates = tuple(replace(u, new_config=with_record(u.new_config, text)) for u in plan.updates)
    return replace(plan, updates=updates)
