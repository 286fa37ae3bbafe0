"""What a run has done on Fly so far, recorded the moment each thing is done.

`main` creates the record and passes it to `apply`; the outcome (outputs, summary, comment) is
built from the plan and this record on every exit, including a failure half-way and a
cancellation, so the outputs never forget an address that Fly holds. Allocations run on helper
threads, hence the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from .domain import IpFamily

# pending: to be updated; updated: done and healthy; rolled-back: failed, previous config
# restored; failed: its state is unknown (rollback failed, or an update that may have landed
# could not be read back); untouched: left alone (already compliant, not reached after a
# failure, or its update was refused).
MachineResult = Literal["pending", "updated", "rolled-back", "failed", "untouched"]


@dataclass
class Progress:
    allocated: dict[IpFamily, str] = field(default_factory=dict)  # the address kept per family
    released: dict[IpFamily, list[str]] = field(default_factory=dict)
    machines: dict[str, MachineResult] = field(default_factory=dict)
    # A machine's role when it was updated, if it differs from the plan's (a failover).
    roles: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allocated_ip(self, family: IpFamily, address: str) -> None:
        with self._lock:
            self.allocated[family] = address

    def released_ip(self, family: IpFamily, address: str) -> None:
        with self._lock:
            self.released.setdefault(family, []).append(address)

    def machine(self, machine_id: str, result: MachineResult, role: str | None = None) -> None:
        with self._lock:
            self.machines[machine_id] = result
            if role is not None:
                self.roles[machine_id] = role

    @property
    def changed(self) -> bool:
        """Did the run change anything on Fly (a machine whose state is unknown counts)?"""
        with self._lock:
            return bool(self.allocated or self.released) or any(
                r in ("updated", "rolled-back", "failed") for r in self.machines.values()
            )
