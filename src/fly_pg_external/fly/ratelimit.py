"""Staying under the Machines API's rate limits, so that Fly never has to answer 429.

Fly's docs (machines/api/working-with-machines-api, "Rate Limits"): 1 request per second per
action per identifier (machine ID or app ID), in short bursts up to 3; Get Machine allows 5 per
second, bursts up to 10. A 429 is harmless in itself (the HTTP layer waits and resends), but it
costs a Retry-After of at least a second, and a client that relies on being told off is one
misjudged burst away from failing a rollout. So each request first takes a token from a bucket
of its own (action, identifier), locally, and waits when there is none.

The local buckets are a little stricter than Fly's: requests can reach Fly closer together
than they left here (one is delayed on the way, the next is not), and Fly's clock starts its
buckets at a different moment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..poll import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: int  # bucket size


# Fly's published limits, each less a margin of one burst token and 20 % of the rate.
DEFAULT = Limit(rate=0.8, burst=2)  # 1/s, bursts of 3
GET_MACHINE = Limit(rate=4.0, burst=9)  # 5/s, bursts of 10


class Limiter:
    """Token buckets keyed by (action, identifier); `take` blocks until a token is free.

    A token is reserved at once even when it is not free yet (the bucket goes below zero), so
    concurrent callers queue up in order instead of all waking at the same moment.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # tokens, as of when
        self.waited = 0.0  # seconds spent waiting, for the log and the benchmark

    def take(self, action: str, identifier: str, limit: Limit = DEFAULT) -> None:
        key = (action, identifier)
        with self._lock:
            now = self._clock.now()
            tokens, then = self._buckets.get(key, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - then) * limit.rate) - 1.0
            self._buckets[key] = (tokens, now)
            wait = -tokens / limit.rate if tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            self._clock.sleep(wait)
