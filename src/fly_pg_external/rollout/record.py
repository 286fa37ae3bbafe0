"""Writing the ownership record (ownership.py) to every machine of the cluster.

Only a run that holds the record's turn (the lease on `Plan.turn_machine`, apply.py) writes, and
only after reading the record again under it; each write goes one generation above what it read.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..domain import Machine
from ..errors import FlyError, RunError
from ..flyapi import FlyApi
from ..ownership import RECORD_KEY, Ownership, encode, with_record
from ..plan import Plan
from .concurrency import concurrently

log = logging.getLogger(__name__)


def write_record(fly: FlyApi, app: str, machines: list[Machine], record: Ownership) -> Ownership:
    """Write `record`, one generation up, on every machine at once; the record as written.

    A machine that could not be written is a warning: its copy is now stale, which readers
    ignore (the newest generation wins) and the next write replaces. When no machine took it,
    the change is lost and the run must say so: `RunError`. A record with nothing left in it is
    written too, never deleted: a deleted copy would let a stale one elsewhere win.
    """
    written = record.next_generation()
    text = encode(written)

    def one(machine: Machine) -> None:
        fly.set_metadata(app, machine.id, RECORD_KEY, text)

    results = concurrently(one, machines, workers=8, name="record")
    failed = [(m, r) for m, r in zip(machines, results, strict=True) if isinstance(r, FlyError)]
    others = [r for r in results if isinstance(r, Exception) and not isinstance(r, FlyError)]
    if others:
        raise others[0]
    if machines and len(failed) == len(machines):
        raise RunError(
            f"Could not write the ownership record on any machine of {app} ("
            + "; ".join(f"{m.id}: {exc}" for m, exc in failed)
            + "). Its holds and addresses are as they were before this run.",
            hint="Re-run the workflow: the record is read again and written then.",
        )
    for machine, exc in failed:
        log.warning(
            f"Could not write the ownership record on machine {machine.id} ({exc}); its copy "
            "is stale now, which readers ignore (the other machines carry the newer one), and "
            "the next write replaces it.",
            extra={"title": "Ownership record not written"},
        )
    return written


def carry_record(plan: Plan, record: Ownership) -> Plan:
    """The plan whose machine updates carry the record in their configs (an update replaces the
    whole config, metadata included)."""
    text = encode(record)
    updates = tuple(replace(u, new_config=with_record(u.new_config, text)) for u in plan.updates)
    return replace(plan, updates=updates)
