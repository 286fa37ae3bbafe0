"""The benchmark runs end to end, and the action's request counts it measures hold.

Tiny latency and restart times, one run on one machine: this checks functional properties read
from the simulator's request log (how many requests, how many sequential round trips, how many
restarts), never timings.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` lives at the repository root, next to src/
    sys.path.insert(0, str(ROOT))

from bench.cli import main as bench_main  # noqa: E402
from bench.measure import Params, measure_action, round_trips  # noqa: E402
from bench.results import TURN_ROUND_TRIPS, current_least_requests, legacy_floor  # noqa: E402
from fly_pg_external.ownership import RECORD_KEY  # noqa: E402

TINY = Params(latency=0.001, restart_seconds=0.05, check_grace_seconds=0.02, smoke_seconds=0.1)
# Round trips are read from overlapping request spans: with ~0 latency two concurrent requests
# may not overlap at all, so the round-trip count is checked with a latency that makes it real.
SLOW = Params(latency=0.2, restart_seconds=0.05, check_grace_seconds=0.02, smoke_seconds=0.1)


RECORD_WRITE = f"POST machines/{{id}}/metadata/{RECORD_KEY}"  # as `breakdown` names it


class _Span:
    def __init__(self, started: float, ended: float | None) -> None:
        self.started = started
        self.ended = ended


def test_round_trips_counts_waves_of_overlapping_requests() -> None:
    spans = [_Span(0, 1), _Span(0.5, 2), _Span(2.5, 3), _Span(3.5, 4), _Span(3.6, 3.7)]
    assert round_trips(spans) == 3
    assert round_trips([]) == 0


def test_noop_run_is_two_requests_in_one_round_trip() -> None:
    sample = measure_action("noop", 1, SLOW, seed=1)
    assert sample.ok, sample.detail
    assert sample.requests <= 2
    assert sample.round_trips == 1
    assert sample.restarts == 0
    assert not sample.image_changed


def test_first_exposure_of_current_cluster_restarts_nothing() -> None:
    sample = measure_action("current", 1, TINY, seed=2)
    assert sample.ok, sample.detail
    # the read (2), the record's turn (lease, read again, lease back: 4), the two allocations,
    # the ownership record on the one machine
    assert current_least_requests(1) == 9
    assert sample.requests <= 9
    assert sample.breakdown.get(RECORD_WRITE) == 1
    assert sample.restarts == 0
    assert not sample.image_changed


def test_current_cluster_allocates_both_families_in_one_round_trip() -> None:
    # The read, the record's turn (its lease, the read again, the lease back at the end), then
    # the v4 and v6 allocations at once, then the ownership record written to every machine at
    # once: nothing else is needed.
    sample = measure_action("current", 3, SLOW, seed=3)
    assert sample.ok, sample.detail
    assert sample.breakdown.get("graphql allocateIpAddress") == 2
    assert sample.breakdown.get(RECORD_WRITE) == 3
    assert sample.requests == current_least_requests(3) == 11
    assert sample.round_trips == 3 + TURN_ROUND_TRIPS


def test_legacy_floor_is_a_lower_bound_the_action_comes_close_to() -> None:
    # The floor is what no run keeping the rollout rules can beat: a measured run at or above
    # it in requests and round trips, and not far above it in round trips (the action's extra
    # ones are the first lease taken alone and the health polls).
    sample = measure_action("legacy", 2, SLOW, seed=4)
    assert sample.ok, sample.detail
    least = legacy_floor(2, SLOW)
    assert sample.requests >= least.requests
    assert least.round_trips <= sample.round_trips <= least.round_trips + 1 + 2 * 3
    assert least.requests == 6 * 2 + 4 and least.round_trips == 3 * 2 + 5
    assert sample.breakdown.get(RECORD_WRITE) == 2  # one per machine, in the floor


def test_legacy_floor_figures() -> None:
    p = Params(latency=0.05, restart_seconds=2.0, check_grace_seconds=0.5)
    one = legacy_floor(1, p)
    assert (one.requests, one.round_trips) == (10, 8)
    assert abs(one.wall - (2.5 + 6 * 0.05)) < 1e-9  # +12 % over the restart itself
    ten = legacy_floor(10, p)
    assert (ten.requests, ten.round_trips) == (64, 35)
    assert abs(ten.wall - (25 + 15 * 0.05)) < 1e-9


def test_bench_cli_writes_report_and_chart(tmp_path: Path) -> None:
    # The no-op goal needs its two reads in flight together: with 1 ms of latency a loaded
    # machine can start the second after the first has ended, so each request takes 50 ms here.
    code = bench_main(
        [
            "--latency",
            "0.05",
            "--restart-seconds",
            "0.05",
            "--check-grace-seconds",
            "0.02",
            "--smoke-seconds",
            "0.1",
            "--runs",
            "1",
            "--machines",
            "1",
            "--scenarios",
            "noop,current",
            "--startup-runs",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = (tmp_path / "benchmarks.md").read_text()
    assert "✅ met: No-op" in report
    assert "✅ met: First exposure of a current cluster" in report
    assert "flyctl steps" in report
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
