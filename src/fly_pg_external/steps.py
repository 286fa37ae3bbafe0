"""What the main step and the post step share: the Fly client each makes, and cancellation.

A cancelled workflow sends the step's process SIGTERM (SIGINT by hand); `cancellable` turns it
into `Cancelled` in the main thread, so the step unwinds through its `finally` blocks and gives
back every lease it holds instead of dying with them. Both steps run inside it; neither imports
the other.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from .fly.client import FlyClient
from .settings import Settings


class Cancelled(BaseException):
    """SIGTERM/SIGINT (a cancelled workflow): unwind so every lease is released."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Cancelled(signal.Signals(signum).name)


@contextmanager
def cancellable() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT raise `Cancelled`; the handlers before are
    put back after it."""
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def make_fly(settings: Settings) -> FlyClient:
    return FlyClient.connect(
        api_base_url=settings.api_base_url,
        flaps_base_url=settings.flaps_base_url,
        auth=settings.fly_auth,
        timeout=settings.http_timeout,
    )
