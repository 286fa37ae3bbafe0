"""Carrying out a plan on Fly: read the cluster, take leases, allocate or release addresses,
update the machines one at a time. `apply` only orchestrates; each job has its own module:
`ips`, `leases`, `machine` (one machine's update and health), `rolling` (the order and the
one-down rule)."""

from __future__ import annotations

from .apply import apply, read_cluster

__all__ = ["apply", "read_cluster"]
