"""Waiting, in two primitives every loop of the action uses.

- `poll`: ask until there is an answer or a deadline would pass, with pauses from a schedule.
- `write_once`: send a write that must not happen twice (an IP allocation, a machine update, a
  release). After an answer that leaves it open whether the write was carried out (a timeout, a
  408, a reset, a 5xx), look before sending it again.

Both take a `Clock`, so unit tests run them on a fake one, in no time.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .errors import FlyError, FlyTimeout, FlyTransient, LandingUnknown

_T = TypeVar("_T")


class Clock(Protocol):
    """The one source of time: `now` for deadlines and intervals (monotonic), `wall` for what
    is compared with times others wrote (a hold's age, a lease's expiry, epoch seconds)."""

    def now(self) -> float: ...
    def wall(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Monotonic time, the epoch, and real sleeps."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


@dataclass(frozen=True)
class Backoff:
    """Pauses that start at `first` and grow by `factor`, up to `most`."""

    first: float
    most: float
    factor: float = 2.0

    def __iter__(self) -> Iterator[float]:
        pause = self.first
        while True:
            yield pause
            pause = min(self.most, pause * self.factor)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and after what pause a request is sent again: `attempts` in all, pauses from
    `pauses` with jitter (racing runs drift apart instead of retrying in step), a server's
    Retry-After honoured up to `retry_after_max`, all on `clock`."""

    attempts: int = 5
    pauses: Backoff = Backoff(0.25, 8.0)
    retry_after_max: float = 30.0
    clock: Clock = SYSTEM_CLOCK
    jitter: Callable[[float, float], float] = random.uniform

    def delay(self, attempt: int) -> float:
        """The pause before retry `attempt` (1-based): half the schedule's, plus up to half."""
        base = next(itertools.islice(iter(self.pauses), attempt - 1, None))
        return base / 2 + self.jitter(0, base / 2)

    def pause(self, attempt: int, retry_after: float | None = None) -> None:
        self.clock.sleep(retry_after if retry_after is not None else self.delay(attempt))


def poll(
    read: Callable[[], _T | None],
    *,
    deadline: float,
    pauses: Iterable[float],
    clock: Clock,
) -> _T | None:
    """Call `read` until it returns something other than None, and return that; None once the
    next call would come after `deadline` (a time on `clock`). `read` is always called once.

    `read` raises to stop early (a failure no wait can mend). `pauses` must not run out before
    the deadline does; an infinite pause means "do not ask again".
    """
    schedule = iter(pauses)
    while True:
        value = read()
        if value is not None:
            return value
        pause = next(schedule)
        if clock.now() + pause > deadline:
            return None
        clock.sleep(pause)


# After an ambiguous failure, the target is read this often while the write may still land.
LANDING_CHECKS = Backoff(0.25, 2.0)
# A 5xx answer was most likely not carried out: a short look is enough.
SETTLE_AFTER_5XX = 1.0


def ambiguous(exc: FlyError) -> bool:
    """Could the request have been carried out although it failed?"""
    return isinstance(exc, FlyTimeout | FlyTransient)


def settle_seconds(exc: FlyError, request_timeout: float) -> float:
    """How long a request that failed with `exc` may still take effect on the server: a timeout
    or a reset may be in flight for about two request timeouts; a 5xx answer was given after
    the server gave up."""
    if isinstance(exc, FlyTransient) and exc.status is not None and exc.status != 408:
        return SETTLE_AFTER_5XX
    return min(30.0, 2 * request_timeout)


def write_once(
    send: Callable[[], _T],
    landed: Callable[[], _T | None],
    *,
    request_timeout: float,
    clock: Clock,
    on_ambiguous: Callable[[FlyError], None] | None = None,
) -> _T:
    """Send, and make sure the write is carried out once: the result of the send that counts.

    `landed` reads the target and returns the result if the write is visible there (None if
    not). After an ambiguous failure it is read until the write shows up or the failure has
    settled; the write is sent again only if it did not, and a resend that fails ambiguously is
    watched the same way. Any other failure is judged by one more read: the target decides, not
    the status (no source states the status Fly gives a stale `current_version`). Raises the
    send's error when the write did not land, `LandingUnknown` when the target cannot be read
    to tell.
    """
    try:
        return send()
    except FlyError as exc:
        if not ambiguous(exc):
            return _judge(exc, landed)
        first = exc
    if on_ambiguous is not None:
        on_ambiguous(first)
    found = _watch(first, landed, request_timeout=request_timeout, clock=clock)
    if found is not None:
        return found  # it went through; only the answer was lost
    try:
        return send()
    except FlyError as exc:
        if not ambiguous(exc):
            return _judge(exc, landed)
        # The resend may be in flight in its turn: give it the same time to show up.
        late = _watch(exc, landed, request_timeout=request_timeout, clock=clock)
        if late is None:
            raise
        return late


def _watch(
    error: FlyError, landed: Callable[[], _T | None], *, request_timeout: float, clock: Clock
) -> _T | None:
    """Read the target until the write shows up or the failure has settled."""
    try:
        return poll(
            landed,
            deadline=clock.now() + settle_seconds(error, request_timeout),
            pauses=LANDING_CHECKS,
            clock=clock,
        )
    except FlyError as read_error:
        # A target that cannot be read is LandingUnknown, as in `_judge`: the read's own error
        # escaping would pass for "the write failed and was not carried out".
        raise LandingUnknown(
            f"{error}; whether it was carried out cannot be told ({read_error})"
        ) from error


def _judge(error: FlyError, landed: Callable[[], _T | None]) -> _T:
    try:
        found = landed()
    except FlyError as read_error:
        raise LandingUnknown(
            f"{error}; whether it was carried out cannot be told ({read_error})"
        ) from error
    if found is None:
        raise error
    return found
