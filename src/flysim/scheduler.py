"""The simulator's clock: callbacks run at monotonic deadlines on one background thread.

Machine transitions (a restart finishing, checks first running) are scheduled here; they take
the simulator's lock themselves when they run.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

# The simulator's logger: a failed transition is reported under "flysim", as it always was.
log = logging.getLogger("flysim")


class Scheduler:
    """Runs callbacks at monotonic deadlines on one thread, in deadline order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="flysim-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + max(delay, 0.0), next(self._seq), fn))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, fn = heapq.heappop(self._heap)
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cv.wait(timeout)
            try:
                fn()
            except Exception:  # a broken transition must not stop time
                log.exception("scheduled transition failed")
