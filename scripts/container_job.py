"""What one job's steps cost in container mode: the action's image started as the runner starts it.

Each step is `docker run` of the image with the runner's mounts, environment and file commands
(runner_step.py), against the Fly simulator on this machine (`--network host`) with a real
PostgreSQL behind its pg_tls proxy, timed from the start of `docker run` to its exit:

- main: a `lifetime: job` expose of a current cluster (public addresses allocated, no restart),
  every other input at its default, so `verify: true` proves TLS on every address and the login
  of the `database-url`;
- post: the post step of that run (`--entrypoint` action.yml's post-entrypoint, the STATE_*
  values the main step saved), which releases the addresses and checks they are closed;
- no-op main: the same expose of a database a persistent run of the same workflow has already
  exposed (nothing to change; the verification still runs), and its post step, which the
  runner starts whatever the lifetime and which then has nothing to close.

Each round uses a fresh simulator; the simulator adds `latency` to every request.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from runner_step import Step, prepare_step

from flysim import PostgresServer, Simulator

ROOT = Path(__file__).resolve().parents[1]
APP = "my-db"
TOKEN = "fo1_measuretoken_0123456789"
USER, PASSWORD, DATABASE = "app_user", "measure-Pa55word", "app_db"
STEPS = ("main", "post", "noop_main", "noop_post")
# In a job, its own steps run between the action's main and post steps. Back to back, the post
# step's machine list would find Fly's List Machines bucket (1/s, bursts of 3) still drained by
# the main step and wait out a 429: a cost of the measurement, not of a job. So steps on one
# cluster start this far apart, time enough for the buckets to refill.
BETWEEN_STEPS = 3.0


@dataclass
class StepTimes:
    """Seconds from `docker run` to its exit, and the requests the simulator saw, per step."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STEPS})
    requests: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in STEPS})


def _action() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text())
    return loaded


class _Job:
    """One job's directories and environment against one simulator."""

    def __init__(self, image: str, sim: Simulator, tmp: Path, inputs: Mapping[str, str]) -> None:
        self.image, self.sim, self.tmp, self.inputs = image, sim, tmp, dict(inputs)
        self.action = _action()

    def step(self, *, state: Mapping[str, str] | None = None) -> Step:
        return prepare_step(
            self.tmp,
            declared_inputs=self.action["inputs"],
            inputs=self.inputs,
            env={
                "GITHUB_REPOSITORY": "acme/infra",
                "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
                "GITHUB_WORKFLOW_REF": "acme/infra/.github/workflows/db.yml@refs/heads/main",
                "GITHUB_JOB": "migrate",
                "GITHUB_RUN_ATTEMPT": "1",
                "FLY_API_BASE_URL": self.sim.api_base_url,
                "FLY_FLAPS_BASE_URL": self.sim.flaps_base_url,
            },
            entrypoint=self.action["runs"]["post-entrypoint"] if state is not None else None,
            state=state,
        )

    def run(self, step: Step, what: str) -> tuple[float, int, str]:
        """(seconds from start to exit, requests the simulator logged, its log) of one step."""
        self.sim.clear_requests()
        start = time.perf_counter()
        proc = subprocess.run(
            ["docker", *step.argv, self.image], capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(
                f"the {what} step exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}"
            )
        time.sleep(0.05)  # the simulator logs a request just after answering it
        return elapsed, len(self.sim.requests), proc.stdout


def _simulator(pg: PostgresServer, latency: float, machines: int, seed: int) -> Simulator:
    sim = Simulator(
        token=TOKEN,
        postgres=pg,
        restart_seconds=0.5,
        check_grace_seconds=0.2,
        # The first app exposed is also served on 127.0.0.1:5432, standing in for its hostname.
        hostname_on_loopback=True,
        seed=seed,
    )
    sim.add_app(APP, machines=machines, legacy=False)
    sim.start()
    sim.faults.latency = latency
    return sim


def _check_listeners(sim: Simulator) -> None:
    if sim.listener_errors:
        raise RuntimeError(f"the simulator's pg_tls listeners failed: {sim.listener_errors[0]}")


def _round(image: str, pg: PostgresServer, times: StepTimes, opts: dict[str, Any]) -> None:
    inputs = {
        "app": APP,
        "fly-api-token": TOKEN,
        "database-url": (
            f"postgres://{USER}:{PASSWORD}@{APP}.flycast:5432/{DATABASE}?sslmode=disable"
        ),
        # No DNS here: the simulator serves the app's hostname on localhost.
        "host": "localhost",
    }
    with tempfile.TemporaryDirectory() as tmp:
        sim = _simulator(pg, opts["latency"], opts["machines"], opts["seed"])
        try:
            job = _Job(image, sim, Path(tmp) / "job", {**inputs, "lifetime": "job"})
            main = job.step()
            log = _record(times, "main", job.run(main, "main"))
            _check_listeners(sim)
            # What the figure claims to include: every address verified with a login.
            if main.outputs.get("exposed") != "true" or "logged in" not in log:
                raise RuntimeError("the main step did not expose and verify the database")
            time.sleep(BETWEEN_STEPS)
            _record(times, "post", job.run(job.step(state=main.state), "post"))
            if any(ip.type in ("v4", "v6") for ip in sim.app(APP).ips):
                raise RuntimeError("the post step left public addresses behind")
        finally:
            sim.stop()
        sim = _simulator(pg, opts["latency"], opts["machines"], opts["seed"] + 1)
        try:
            job = _Job(image, sim, Path(tmp) / "noop", {**inputs, "lifetime": "persistent"})
            job.run(job.step(), "exposing")  # the earlier run that left the database exposed
            noop = job.step()
            time.sleep(BETWEEN_STEPS)
            _record(times, "noop_main", job.run(noop, "no-op main"))
            if noop.outputs.get("changed") != "false":
                raise RuntimeError("the second expose changed something: not a no-op")
            _record(times, "noop_post", job.run(job.step(state=noop.state), "no-op post"))
        finally:
            sim.stop()


def _record(times: StepTimes, step: str, measured: tuple[float, int, str]) -> str:
    times.seconds[step].append(measured[0])
    times.requests[step].append(measured[1])
    return measured[2]


def measure_job_steps(image: str, runs: int, *, latency: float, machines: int) -> StepTimes:
    """Every step over `runs` rounds, one PostgreSQL for all of them."""
    times = StepTimes()
    with PostgresServer.start() as pg:
        pg.create_database(USER, PASSWORD, DATABASE)
        for n in range(runs):
            opts = {"latency": latency, "machines": machines, "seed": 100 + 2 * n}
            _round(image, pg, times, opts)
    return times
