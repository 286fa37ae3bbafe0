"""What a run has done on Fly so far, recorded the moment each thing is done.

`main` creates the record and passes it to `apply`; the outcome (outputs, summary, comment) is
built from the plan and this record on every exit, including a failure half-way and a
cancellation, so the outputs never forget an address that Fly holds. Allocations run on helper
threads, hence the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .domain import IpAddress, IpFamily

# pending: to be updated; updated: done and healthy; rolled-back: failed, previous config
# restored; failed: its state is unknown (rollback failed, or an update that may have landed
# could not be read back); untouched: left alone (already compliant, not reached after a
# failure, or its update was refused).
MachineResult = Literal["pending", "updated", "rolled-back", "failed", "untouched"]


@dataclass
class Progress:
    allocated: dict[IpFamily, IpAddress] = field(default_factory=dict)  # the one kept per family
    released: dict[IpFamily, list[str]] = field(default_factory=dict)
    machines: dict[str, MachineResult] = field(default_factory=dict)
    # A machine's role when it was updated, if it differs from the plan's (a failover).
    roles: dict[str, str] = field(default_factory=dict)
    # Told of each allocation the moment it is recorded (a `lifetime: job` run saves it in the
    # step state for its post step, before anything else can go wrong).
    on_allocated: Callable[[dict[IpFamily, IpAddress]], None] | None = field(
        default=None, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allocated_ip(self, family: IpFamily, ip: IpAddress) -> None:
        with self._lock:
            self.allocated[family] = ip
            # Told under the lock: the listener's last word must name every allocation (the
            # runner keeps the last value saved for a state name).
            if self.on_allocated is not None:
                self.on_allocated(dict(self.allocated))

    def released_ip(self, family: IpFamily, address: str) -> None:
        with self._lock:
            self.released.setdefault(family, []).append(address)

    def machine(self, machine_id: str, result: MachineResult, role: str | None = None) -> None:
        with self._lock:
            self.machines[machine_id] = result
            if role is not None:
                self.roles[machine_id] = role

    @property
    def allocated_addresses(self) -> dict[IpFamily, str]:
        with self._lock:
            return {family: ip.address for family, ip in self.allocated.items()}

    @property
    def changed(self) -> bool:
        """Did the run change anything on Fly (a machine whose state is unknown counts)?"""
        with self._lock:
            return bool(self.allocated or self.released) or any(
                r in ("updated", "rolled-back", "failed") for r in self.machines.values()
            )
