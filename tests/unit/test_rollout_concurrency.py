"""rollout._concurrently: what the allocations and lease acquires rely on (no server)."""

from __future__ import annotations

import threading
import time

import pytest

from fly_pg_external.rollout.concurrency import concurrently as _concurrently


class Cancelled(BaseException):
    """Stands in for main.Cancelled, which the signal handler raises in the main thread."""


def test_results_in_order_with_exceptions_in_place() -> None:
    def fn(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        time.sleep(0.01 * (5 - n))  # later items finish first
        return n * 10

    results = _concurrently(fn, [0, 1, 2, 3, 4], workers=3, name="t")
    assert results[:2] == [0, 10] and results[3:] == [30, 40]
    assert isinstance(results[2], ValueError)


def test_first_item_on_the_calling_thread_others_on_daemon_threads() -> None:
    seen: dict[int, threading.Thread] = {}

    def fn(n: int) -> None:
        seen[n] = threading.current_thread()
        time.sleep(0.05)  # so the helper cannot take every item before this thread does

    _concurrently(fn, [0, 1], workers=2, name="t")
    assert seen[0] is threading.current_thread()
    assert seen[1] is not threading.current_thread() and seen[1].daemon


def test_at_most_workers_at_once() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def fn(_: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    _concurrently(fn, list(range(10)), workers=3, name="t")
    assert peak == 3


def test_a_cancellation_on_the_calling_thread_does_not_wait_for_the_others() -> None:
    # A ThreadPoolExecutor's block would sit out the slow item on the way out.
    release = threading.Event()

    def fn(n: int) -> None:
        if n == 0:
            time.sleep(0.05)  # the slow item is under way
            raise Cancelled
        release.wait(10)

    started = time.monotonic()
    try:
        with pytest.raises(Cancelled):
            _concurrently(fn, [0, 1], workers=2, name="t")
        assert time.monotonic() - started < 2
    finally:
        release.set()
