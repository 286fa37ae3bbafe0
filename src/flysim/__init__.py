"""flysim: a local Fly.io platform simulator for testing fly-pg-external.

It serves Fly's GraphQL API (apps, IP addresses) and Machines API (machines, leases, wait,
metadata, ip_assignments), plays the Fly proxy's ``pg_tls`` handler in front of a real PostgreSQL,
records every request and can inject faults. It is a test tool and is not part of the action's
image.

By default it is as strict as the real platform where a kinder simulator would hide bugs
(``docs/fly-behaviour.md``): Fly's rate limits answer 429 with
``Retry-After``; a machine's ``checks`` list is empty right after a start; a ``skip_launch`` update
leaves the machine ``created``; machines on an unreachable host show ``incomplete_config`` only;
a stale ``current_version`` is refused.
"""

from __future__ import annotations

from flysim.faults import FaultRule, Faults
from flysim.malformed import ABSENT, NOT_JSON
from flysim.models import App, Check, IPAddress, Lease, Machine
from flysim.postgres import PostgresNotInstalledError, PostgresServer
from flysim.ratelimit import Rate, RateLimits
from flysim.requestlog import RequestRecord
from flysim.simulator import Simulator, StateChange

__all__ = [
    "ABSENT",
    "NOT_JSON",
    "App",
    "Check",
    "FaultRule",
    "Faults",
    "IPAddress",
    "Lease",
    "Machine",
    "PostgresNotInstalledError",
    "PostgresServer",
    "Rate",
    "RateLimits",
    "RequestRecord",
    "Simulator",
    "StateChange",
]
