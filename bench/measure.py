"""One measured run: a fresh simulator, one contender (the action or the baseline), its costs.

Every figure comes from the simulator: requests and their [start, end] times from its request
log, restarts from its machine timeline, images from its machine state. Nothing is taken from
what the contender says about itself (the action's own request counter is kept only as a cross
check).
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from bench.flyctl_baseline import FlyctlBaseline
from flysim import RateLimits, Simulator

APP = "bench-db"
TOKEN = "fo1_benchmark_token_0123456789"
Scenario = Literal["noop", "current", "legacy"]
Contender = Literal["action", "baseline"]
SCENARIOS: tuple[Scenario, ...] = ("noop", "current", "legacy")
SCENARIO_TITLES: dict[Scenario, str] = {
    "noop": "No-op (already exposed)",
    "current": "First exposure, current cluster (IPs only)",
    "legacy": "First exposure, legacy cluster (IPs and services)",
}


class Timed(Protocol):
    @property
    def started(self) -> float: ...
    @property
    def ended(self) -> float | None: ...


def round_trips(records: Iterable[Timed]) -> int:
    """Sequential round trips: the number of waves of requests whose [start, end] overlap.

    Requests in flight at the same time (a concurrent read, a lease refresh while an update is
    under way) belong to one wave; a request that starts after every earlier one has ended
    starts a new wave.
    """
    spans = sorted((r.started, r.ended if r.ended is not None else r.started) for r in records)
    waves = 0
    wave_end = float("-inf")
    for start, end in spans:
        if start > wave_end:
            waves += 1
            wave_end = end
        else:
            wave_end = max(wave_end, end)
    return waves


@dataclass(frozen=True)
class Params:
    latency: float = 0.05
    restart_seconds: float = 2.0
    check_grace_seconds: float = 0.5
    smoke_seconds: float = 10.0

    @property
    def machine_restart(self) -> float:
        """Down to healthy again, per machine: restart, then the checks' grace period."""
        return self.restart_seconds + self.check_grace_seconds


@dataclass
class Sample:
    """The costs of one run of one contender."""

    scenario: Scenario
    machines: int
    contender: Contender
    requests: int
    round_trips: int
    wall: float
    restarts: int
    image_before: str
    image_after: str
    image_changed: bool
    ok: bool
    detail: str = ""
    client_requests: int | None = None
    breakdown: dict[str, int] = field(default_factory=dict)
    throttled: int = 0  # requests the simulator answered 429 under Fly's rate limits


def _kind(record: Any) -> str:
    if record.api == "graphql":
        fields = ",".join(record.graphql_fields) or "?"
        return f"graphql {record.operation_name or fields}"
    path = record.path
    parts = path.strip("/").split("/")
    # /v1/apps/{app}/machines/{id}/lease → machines/{id}/lease
    if len(parts) >= 4 and parts[2] != "" and parts[3] == "machines":
        tail = parts[4:]
        if tail:
            tail[0] = "{id}"
        path = "/".join(["machines", *tail])
    elif len(parts) == 3:
        path = "app"
    return f"{record.method} {path}"


def breakdown(records: Iterable[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        k = _kind(r)
        counts[k] = counts.get(k, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@contextlib.contextmanager
def simulator(
    scenario: Scenario,
    machines: int,
    params: Params,
    seed: int,
    *,
    rate_limits: bool = True,
    exposed: bool = True,
) -> Iterator[Simulator]:
    sim = Simulator(
        rate_limits=RateLimits.fly() if rate_limits else RateLimits.off(),
        token=TOKEN,
        restart_seconds=params.restart_seconds,
        check_grace_seconds=params.check_grace_seconds,
        # Public listeners on free ports, nothing on 127.0.0.1:5432 (a local Postgres may be there).
        hostname_on_loopback=False,
        public_port_map={5432: 0, 5433: 0},
        seed=seed,
    )
    sim.add_app(
        APP,
        machines=machines,
        legacy=scenario == "legacy",
        # "Already exposed": a current cluster with its public addresses, as the manual steps
        # leave it (`exposed=False` leaves them to a first run of the action).
        public_v4=scenario == "noop" and exposed,
        public_v6=scenario == "noop" and exposed,
    )
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def _images(sim: Simulator) -> list[str]:
    return [str(m.config.get("image", "")) for m in sorted(sim.app(APP).machines, key=_id)]


def _id(machine: Any) -> str:
    return str(machine.id)


def _restarts(sim: Simulator, since: float) -> int:
    """Updates that took a running machine down (replacing), from the simulator's timeline."""
    return sum(
        1
        for c in sim.timeline(APP)
        if c.at >= since and c.reason == "update" and c.state == "replacing"
    )


def _logged(sim: Simulator, sent: int | None, timeout: float = 2.0) -> list[Any]:
    """The request log once it holds every request sent.

    The simulator logs a request just after sending its response, so the client can be done a
    moment before the last record is in.
    """
    deadline = time.monotonic() + timeout
    records = sim.requests
    while sent is not None and len(records) < sent and time.monotonic() < deadline:
        time.sleep(0.005)
        records = sim.requests
    return records


def _measure(
    sim: Simulator,
    *,
    scenario: Scenario,
    machines: int,
    contender: Contender,
    params: Params,
    body: Callable[[], tuple[bool, str, int | None]],
) -> Sample:
    before = _images(sim)
    sim.clear_requests()
    sim.faults.latency = params.latency
    since = time.monotonic()
    start = time.perf_counter()
    ok, detail, client_requests = body()
    wall = time.perf_counter() - start
    sim.faults.latency = 0.0
    records = _logged(sim, client_requests)
    after = _images(sim)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    shown = changed[0] if changed else 0
    return Sample(
        scenario=scenario,
        machines=machines,
        contender=contender,
        requests=len(records),
        round_trips=round_trips(records),
        wall=wall,
        restarts=_restarts(sim, since),
        image_before=before[shown] if before else "",
        image_after=after[shown] if after else "",
        image_changed=bool(changed),
        ok=ok,
        detail=detail,
        client_requests=client_requests,
        breakdown=breakdown(records),
        throttled=sum(1 for r in records if r.throttled),
    )


def action_env(sim: Simulator, workdir: Path) -> dict[str, str]:
    output = workdir / "github_output"
    output.touch()
    return {
        "INPUT_APP": APP,
        "INPUT_FLY-API-TOKEN": TOKEN,
        "INPUT_VERIFY": "false",
        "INPUT_PR-COMMENT": "false",
        "INPUT_GITHUB-TOKEN": "",
        # The flyctl steps it is compared with leave the database open: so does this run.
        "INPUT_LIFETIME": "persistent",
        "FLY_API_BASE_URL": sim.api_base_url,
        "FLY_FLAPS_BASE_URL": sim.flaps_base_url,
        "GITHUB_OUTPUT": str(output),
        "RUNNER_TEMP": str(workdir),
    }


def run_action(sim: Simulator, env: dict[str, str]) -> tuple[bool, str, int | None]:
    """`main(env)` in this process, stdout captured: (ok, log tail, the client's request count)."""
    from fly_pg_external import main as action_main

    made: list[Any] = []
    original = action_main.make_fly

    def make_fly(settings: Any) -> Any:
        fly = original(settings)
        made.append(fly)
        return fly

    buf = io.StringIO()
    action_main.make_fly = make_fly  # to read its request counter
    try:
        with contextlib.redirect_stdout(buf):
            code = action_main.main(env)
    finally:
        action_main.make_fly = original
    counted = made[0].http.stats.requests if made else None
    tail = "\n".join(buf.getvalue().splitlines()[-15:])
    return code == 0, tail, counted


def measure_action(scenario: Scenario, machines: int, params: Params, seed: int) -> Sample:
    noop = scenario == "noop"
    with (
        simulator(scenario, machines, params, seed, exposed=not noop) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = action_env(sim, Path(tmp))
        if noop:
            # "Already exposed" by the action: its addresses and its record with the hold of
            # this workflow, as a first run leaves them. The run measured is the next one.
            ok, detail, _ = run_action(sim, env)
            if not ok:
                raise RuntimeError(f"the run that exposes the no-op's cluster failed:\n{detail}")
        return _measure(
            sim,
            scenario=scenario,
            machines=machines,
            contender="action",
            params=params,
            body=lambda: run_action(sim, env),
        )


def measure_baseline(scenario: Scenario, machines: int, params: Params, seed: int) -> Sample:
    # Without Fly's rate limits: flyctl's steps, as replayed here, do not wait out a 429, and
    # the limits could only make them slower. The comparison is in the baseline's favour.
    with simulator(scenario, machines, params, seed, rate_limits=False) as sim:
        replay = FlyctlBaseline(
            api_base_url=sim.api_base_url,
            flaps_base_url=sim.flaps_base_url,
            token=TOKEN,
            app=APP,
            smoke_seconds=params.smoke_seconds,
        )

        def body() -> tuple[bool, str, int | None]:
            try:
                replay.run()
            except Exception as exc:  # reported in the results, not hidden
                return False, f"{type(exc).__name__}: {exc}", replay.sent
            return True, "", replay.sent

        sample = _measure(
            sim,
            scenario=scenario,
            machines=machines,
            contender="baseline",
            params=params,
            body=body,
        )
        if replay.result.graphql_errors:
            unknown = sorted(replay.result.graphql_errors)
            sample.detail = "GraphQL answered with errors (sent and counted): " + ", ".join(unknown)
        return sample


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")
