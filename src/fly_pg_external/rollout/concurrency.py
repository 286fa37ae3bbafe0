"""Running a few Fly calls at once without making a cancellation wait for them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def concurrently(
    fn: Callable[[_T], _R], items: Sequence[_T], *, workers: int, name: str
) -> list[_R | Exception]:
    """`fn` over `items`, up to `workers` at once; each result, or the exception it raised, in
    the order of `items`.

    The calling thread does the first item itself; the others go to daemon threads, not to a
    ThreadPoolExecutor. A cancellation (SIGTERM/SIGINT) is raised in the main thread by the signal
    handler, and leaving an executor's block waits for its workers, as the interpreter's exit does
    for every executor thread: a cancelled run would sit out an allocation that can take a minute
    and a half to settle before releasing its leases, and the runner kills it long before. Here
    the wait is Thread.join, which the signal interrupts, and the daemon threads are left behind.
    """
    results: list[_R | Exception] = [RuntimeError(f"{name}: not run") for _ in items]
    pending = iter(enumerate(items))
    lock = threading.Lock()

    def run(index: int, item: _T) -> None:
        try:
            results[index] = fn(item)
        except Exception as exc:  # handed back to the caller, which decides what to raise
            results[index] = exc

    def work() -> None:
        while True:
            with lock:
                taken = next(pending, None)
            if taken is None:
                return
            run(*taken)

    first = next(pending, None)  # taken before any helper starts: it is this thread's
    helpers = [
        threading.Thread(target=work, name=f"{name}-{n}", daemon=True)
        for n in range(1, min(workers, len(items)))
    ]
    for helper in helpers:
        helper.start()
    if first is not None:
        run(*first)
        work()
    for helper in helpers:
        helper.join()
    return results
