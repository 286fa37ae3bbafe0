"""Aggregating samples into the figures the report shows, and checking the goals against them."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure import Params, Sample, Scenario, median


@dataclass
class Summary:
    """Several runs of one contender on one scenario and cluster size."""

    samples: list[Sample]

    @property
    def requests(self) -> float:
        return median([s.requests for s in self.samples])

    @property
    def requests_range(self) -> tuple[int, int]:
        values = [s.requests for s in self.samples]
        return min(values), max(values)

    @property
    def round_trips(self) -> float:
        return median([s.round_trips for s in self.samples])

    @property
    def round_trips_range(self) -> tuple[int, int]:
        values = [s.round_trips for s in self.samples]
        return min(values), max(values)

    @property
    def wall(self) -> float:
        return median([s.wall for s in self.samples])

    @property
    def restarts(self) -> int:
        return max(s.restarts for s in self.samples)

    @property
    def image_changed(self) -> bool:
        return any(s.image_changed for s in self.samples)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.samples)

    @property
    def image_change(self) -> str:
        for s in self.samples:
            if s.image_changed:
                return f"{_short(s.image_before)} → {_short(s.image_after)}"
        return ""


def _short(image: str) -> str:
    name, _, digest = image.partition("@")
    return f"{name}@{digest[:15]}…" if digest else name


@dataclass
class Cell:
    scenario: Scenario
    machines: int
    action: Summary = field(default_factory=lambda: Summary([]))
    baseline: Summary = field(default_factory=lambda: Summary([]))
    ratios: list[float] = field(default_factory=list)  # action wall / baseline wall, per run

    @property
    def ratio(self) -> float:
        return median(self.ratios)


@dataclass(frozen=True)
class Goal:
    text: str
    met: bool
    figures: str


@dataclass(frozen=True)
class Floor:
    """The least a first exposure of a legacy cluster can cost while keeping the rollout rules.

    The rules: the cluster is read first (the app with its IPs, and the machine list, at once);
    every machine is leased before anything changes; the IPs are allocated after the leases;
    the ownership record naming them is written to every machine's metadata once they exist and
    before any restart (so that it outlives a run stopped mid-rollout); machines are updated
    one at a time, each with an update, a wait for its restart and at least one read of its
    checks, and none while another is down (a list read at the instant the checks pass answers
    both, within List Machines' rate limit of 1 request/s); every lease is released at the end.
    Everything that may run concurrently is counted as running concurrently (all leases at
    once, both families at once, all record writes at once, all releases at once), lease
    refreshes are left out (a TTL longer than the rollout), and the last check read is taken to
    arrive the instant the checks pass. Measured runs can only be above it.
    """

    requests: int
    round_trips: int
    wall: float


def legacy_floor(machines: int, params: Params, families: int = 2) -> Floor:
    n = machines
    return Floor(
        # read 2, a lease and a release per machine, an allocation per family, the record
        # written to each machine, then update, wait and a checks read per machine.
        requests=2 + 2 * n + families + n + 3 * n,
        # read, leases, allocations, record writes, releases; update, wait and checks read per
        # machine.
        round_trips=5 + 3 * n,
        # The wait and the checks read overlap the restart; the read, the leases, the
        # allocations, the record writes, the releases and each update's request are not
        # overlapped by anything.
        wall=n * params.machine_restart + (5 + n) * params.latency,
    )


# What taking the record's turn costs a run that writes the record (ownership.py): the lease on
# the turn machine, the second read under it (app and machine list at once), giving the lease
# back. Requests, and round trips.
TURN_REQUESTS = 4
TURN_ROUND_TRIPS = 3


def current_least_requests(machines: int, families: int = 2) -> int:
    """The requests a first exposure of a current cluster needs: the read (app and machine
    list), the record's turn, an allocation per family, and the ownership record written to
    each machine."""
    return 2 + TURN_REQUESTS + families + machines


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_goals(cells: list[Cell], params: Params) -> list[Goal]:
    goals: list[Goal] = []
    by = {(c.scenario, c.machines): c for c in cells}
    sizes = sorted({c.machines for c in cells})

    noop = [by[("noop", n)] for n in sizes if ("noop", n) in by]
    if noop:
        worst_req = max(c.action.requests_range[1] for c in noop)
        worst_rt = max(c.action.round_trips_range[1] for c in noop)
        goals.append(
            Goal(
                "No-op: at most 2 requests in 1 round trip",
                worst_req <= 2 and worst_rt <= 1,
                "; ".join(
                    f"{c.machines} machine(s): {c.action.requests_range[1]} requests, "
                    f"{c.action.round_trips_range[1]} round trip(s)"
                    for c in noop
                ),
            )
        )

    current = [by[("current", n)] for n in sizes if ("current", n) in by]
    if current:
        goals.append(
            Goal(
                "First exposure of a current cluster: no machine restarted, at most 8 + n "
                "requests on n machines (the read, the record's turn: its lease, a second "
                "read and the lease given back, the two allocations, the ownership record "
                "written to each machine)",
                all(
                    c.action.restarts == 0
                    and c.action.requests_range[1] <= current_least_requests(c.machines)
                    for c in current
                ),
                "; ".join(
                    f"{c.machines} machine(s): {c.action.requests_range[1]} requests, "
                    f"{c.action.restarts} restarted"
                    for c in current
                ),
            )
        )

    legacy = [by[("legacy", n)] for n in sizes if ("legacy", n) in by]
    if legacy:
        parts = []
        met = True
        for c in legacy:
            least = legacy_floor(c.machines, params)
            over = c.action.wall / least.wall - 1
            met = met and over <= 0.03
            parts.append(
                f"{c.machines} machine(s): {c.action.wall:.2f} s against the least possible "
                f"{least.wall:.2f} s ({over:+.1%}; flyctl's steps {c.baseline.wall:.2f} s)"
            )
        goals.append(
            Goal(
                "Legacy cluster: wall time within 3 % of the least possible under the rollout "
                f"rules ({_fmt(params.restart_seconds)} s restart + "
                f"{_fmt(params.check_grace_seconds)} s until the checks pass, per machine)",
                met,
                "; ".join(parts),
            )
        )
        parts = []
        met = True
        for c in legacy:
            least = legacy_floor(c.machines, params)
            ratio = c.action.requests / least.requests
            met = met and ratio <= 1.5 and not c.action.image_changed
            parts.append(
                f"{c.machines} machine(s): {c.action.requests:g} requests against the least "
                f"possible {least.requests} ({ratio:.2f}x; flyctl's steps "
                f"{c.baseline.requests:g})" + (", image changed" if c.action.image_changed else "")
            )
        goals.append(
            Goal(
                "Legacy cluster: at most 1.5 times the least possible requests (the image is "
                "not changed)",
                met,
                "; ".join(parts),
            )
        )
    throttled = [(c, max(s.throttled for s in c.action.samples)) for c in cells if c.action.samples]
    if throttled:
        goals.append(
            Goal(
                "No request answered 429 under Fly's rate limits, at every size and scenario",
                all(n == 0 for _, n in throttled),
                "; ".join(f"{c.scenario} × {c.machines}: {n}" for c, n in throttled if c.machines),
            )
        )
    return goals
