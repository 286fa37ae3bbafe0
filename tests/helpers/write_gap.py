"""A Postgres client that keeps writing while something else happens, and the gaps it saw.

It loops `INSERT` + `SELECT` over one connection, reconnecting whenever the connection breaks,
and timestamps every successful round. The longest stretch without a success is the write gap a
real application would have felt.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field

import psycopg

TABLE = "reliability_write_probe"


@dataclass
class GapReport:
    successes: list[float] = field(default_factory=list)  # time.monotonic() of each success
    failures: int = 0
    connections: int = 0
    errors: list[str] = field(default_factory=list)  # distinct error kinds, first seen first

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without a successful round between `start` and the first success
        at or after `end` (inf if there was none)."""
        points = [t for t in self.successes if start <= t]
        after = [t for t in points if t >= end]
        if not after:
            return float("inf")
        window = [start, *[t for t in points if t <= after[0]]]
        return max(b - a for a, b in itertools.pairwise(window))

    def succeeded_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.successes if start <= t <= end)


def create_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial, at timestamptz)")


class WriteLoop:
    """Writes through `conninfo` in a background thread until `stop()`."""

    def __init__(self, conninfo: str, *, pause: float = 0.02) -> None:
        self.conninfo = conninfo
        self.pause = pause
        self.report = GapReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-loop", daemon=True)

    def start(self) -> WriteLoop:
        self._thread.start()
        return self

    def wait_for_successes(self, count: int, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.report.successes) >= count:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> GapReport:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.report

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.conninfo, connect_timeout=3, autocommit=True)
                    self.report.connections += 1
                conn.execute(f"INSERT INTO {TABLE} (at) VALUES (now())")  # noqa: S608
                row = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()  # noqa: S608
                assert row is not None and int(str(row[0])) > 0
                self.report.successes.append(time.monotonic())
                self._stop.wait(self.pause)
            except (psycopg.Error, OSError) as exc:
                self.report.failures += 1
                kind = type(exc).__name__
                if kind not in self.report.errors:
                    self.report.errors.append(kind)
                if conn is not None:
                    with contextlib.suppress(psycopg.Error, OSError):
                        conn.close()
                conn = None
                self._stop.wait(0.05)
        if conn is not None:
            conn.close()
