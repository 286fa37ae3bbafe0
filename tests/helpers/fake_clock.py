"""A clock for unit tests: time moves only when the code under test sleeps."""

from __future__ import annotations

import threading


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def wall(self) -> float:
        """The epoch, moving with `now`: a fixed day in 2026 plus the clock's own time."""
        with self._lock:
            return 1_780_000_000.0 + self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.t += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds
