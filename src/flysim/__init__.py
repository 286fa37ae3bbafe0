"""flysim: a local Fly.io platform simulator for testing fly-pg-external.

It serves Fly's GraphQL API (apps, IP addresses) and Machines API (machines, leases, wait,
ip_assignments), plays the Fly proxy's ``pg_tls`` handler in front of a real PostgreSQL, records
every request and can inject faults. It is a test tool and is not part of the action's image.
"""

from __future__ import annotations

from flysim.faults import FaultRule, Faults
from flysim.models import App, Check, IPAddress, Lease, Machine
from flysim.postgres import PostgresNotInstalledError, PostgresServer
from flysim.requestlog import RequestRecord
from flysim.simulator import Simulator, StateChange

__all__ = [
    "App",
    "Check",
    "FaultRule",
    "Faults",
    "IPAddress",
    "Lease",
    "Machine",
    "PostgresNotInstalledError",
    "PostgresServer",
    "RequestRecord",
    "Simulator",
    "StateChange",
]
