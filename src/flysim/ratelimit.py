"""The Machines API's rate limits: token buckets per action and identifier, answered with 429.

Fly's docs (``machines/api/working-with-machines-api``, "Rate Limits"): 1 request per second per
action per identifier (machine ID or app ID), with short bursts up to 3; the one exception is Get
Machine, 5 per second with bursts up to 10. Polling the machine list (an app-scoped action) faster
than about once a second therefore draws 429s, as it does on the real platform.

What counts as one "action" is not spelled out. We read it as one API operation, i.e. one route
and method: acquiring (and refreshing, the same POST) a lease, reading it and releasing it are three
actions with a bucket each, like the three operations the API reference documents. A single bucket
for everything under ``/lease`` would be stricter, but a client that acquires, updates and releases
once per machine never notices the difference, and per-operation is what the docs' wording
suggests. UNCONFIRMED. The metadata endpoints are the exception: reading, setting and deleting a
machine's metadata share one ``metadata`` bucket per machine (fly-go labels them as three actions;
one bucket is the stricter reading, and a client that sets a key or two per machine never notices).

The GraphQL API has no documented limit, so nothing here applies to it.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0:
            raise ValueError("per_second must be > 0")
        if self.burst < 1:
            raise ValueError("burst must be >= 1")


FLY_ACTION_RATE = Rate(per_second=1.0, burst=3)
FLY_GET_MACHINE_RATE = Rate(per_second=5.0, burst=10)

# Every rate-limited REST operation the simulator serves, with the identifier it is counted per.
ACTION_SCOPES: dict[str, str] = {
    "get_app": "app",
    "list_machines": "app",
    "get_machine": "machine",
    "update_machine": "machine",
    "acquire_lease": "machine",  # a refresh is the same POST, so it shares this bucket
    "get_lease": "machine",
    "release_lease": "machine",
    "wait": "machine",
    "metadata": "machine",  # GET, POST and DELETE .../metadata[/{key}] share it
    "list_ip_assignments": "app",
    "assign_ip": "app",
    "release_ip_assignment": "app",
}


@dataclass(frozen=True)
class RateLimits:
    """The rate of each Machines API action; ``None`` leaves that action unlimited.

    The defaults are Fly's documented ones (:meth:`fly`). :meth:`off` is for the few tests that
    hammer the API on purpose (benchmark baselines, input validation tables); everything else
    should run with the defaults so that a client polling too fast fails in tests too.
    """

    get_app: Rate | None = FLY_ACTION_RATE
    list_machines: Rate | None = FLY_ACTION_RATE
    get_machine: Rate | None = FLY_GET_MACHINE_RATE
    update_machine: Rate | None = FLY_ACTION_RATE
    acquire_lease: Rate | None = FLY_ACTION_RATE
    get_lease: Rate | None = FLY_ACTION_RATE
    release_lease: Rate | None = FLY_ACTION_RATE
    wait: Rate | None = FLY_ACTION_RATE
    metadata: Rate | None = FLY_ACTION_RATE
    list_ip_assignments: Rate | None = FLY_ACTION_RATE
    assign_ip: Rate | None = FLY_ACTION_RATE
    release_ip_assignment: Rate | None = FLY_ACTION_RATE

    @classmethod
    def fly(cls) -> RateLimits:
        """Fly's documented limits: 1/s with bursts of 3, Get Machine 5/s with bursts of 10."""
        return cls()

    @classmethod
    def off(cls) -> RateLimits:
        """No limits at all."""
        return cls(**dict.fromkeys(ACTION_SCOPES))

    def rate(self, action: str) -> Rate | None:
        if action not in ACTION_SCOPES:
            raise KeyError(f"unknown Machines API action {action!r}")
        rate: Rate | None = getattr(self, action)
        return rate

    @property
    def enabled(self) -> bool:
        return any(self.rate(action) is not None for action in ACTION_SCOPES)


assert set(ACTION_SCOPES) == {f.name for f in dataclasses.fields(RateLimits)}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by ``(action, identifier)``; thread-safe."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def take(self, action: str, identifier: str) -> int | None:
        """Spend a token: None if the request may go on, else the ``Retry-After`` seconds (the
        time until a token is free, rounded up, at least 1)."""
        rate = self.limits.rate(action)
        if rate is None:
            return None
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get((action, identifier))
            if bucket is None:
                # A bucket starts full: the first burst of a fresh client is allowed.
                bucket = self._buckets[(action, identifier)] = _Bucket(float(rate.burst), now)
            bucket.tokens = min(
                float(rate.burst), bucket.tokens + (now - bucket.updated) * rate.per_second
            )
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - bucket.tokens) / rate.per_second))
