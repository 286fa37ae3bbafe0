"""Measure what the action's image costs a job: its size, its build, each step's start to exit.

    python scripts/measure_container.py [--base-image IMAGE] [--runs N] [--json FILE]

Without --base-image the image is built on the local stand-in base (scripts/build-standin-base.sh),
so the base's figures describe that stand-in, not python:3.12-slim, and the output says so.
Printed as docs/benchmarks.md's section "What a job pays for the container" (bench/container.py
renders it; `python -m bench --container-only` writes it into the report); --json saves the
figures that section is made from.

- image size as a registry stores it, the base and the action's layers apart (container_size.py);
- a cold build (`docker build --no-cache`, base already present), which is roughly what
  `image: Dockerfile` costs on every job once the base is pulled;
- bare container start (`python -c pass` in the image);
- the action's own start-up: a run stopped by a bad input, which imports the code, reads every
  input, prints `::error` and exits, without any network request;
- a whole `dry-run: true` run against the Fly simulator on this machine (`--network host`);
- a job's main and post steps, and a no-op job's, started as the runner starts them against the
  simulator with a real PostgreSQL (container_job.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from container_job import BETWEEN_STEPS, measure_job_steps
from container_size import METHOD, split_sizes

from flysim import Simulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ renders the figures, at the repository root

from bench.container import SCHEMA, parse, section  # noqa: E402

TAG = "fly-pg-external:measure"
TOKEN = "fo1_measuretoken_0123456789"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def timed(argv: list[str], expect: int = 0) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect:
        sys.exit(f"{argv[-1]} exited {proc.returncode}, not {expect}:\n{proc.stdout}{proc.stderr}")
    return elapsed


def docker_version() -> str:
    """The daemon's version; exits, saying why, when there is no Docker to measure with."""
    if shutil.which("docker") is None:
        sys.exit("the docker CLI is not installed")
    info = docker("version", "--format", "{{.Server.Version}}", check=False)
    if info.returncode != 0:
        sys.exit(f"no Docker daemon answers: {info.stderr.strip()[:300]}")
    return info.stdout.strip()


def standin_base() -> str:
    script = ROOT / "scripts" / "build-standin-base.sh"
    built = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        tail = built.stderr.strip().splitlines()[-1:] or [f"exit {built.returncode}"]
        sys.exit(f"the stand-in base image could not be built ({script.name}): {tail[0]}")
    return built.stdout.strip().splitlines()[-1]


def build(base: str) -> float:
    """Seconds a `docker build --no-cache` of the Dockerfile on `base` takes."""
    # The Dockerfile names its base in its FROM line (where Dependabot updates it): build the
    # same file with that one line naming `base`, read from stdin, the context still the root.
    dockerfile, count = re.subn(
        r"^FROM[ \t]+\S+[ \t]*$", f"FROM {base}", (ROOT / "Dockerfile").read_text(), flags=re.M
    )
    if count != 1:
        sys.exit("the Dockerfile must have a single FROM line")
    start = time.perf_counter()
    proc = subprocess.run(
        ["docker", "build", "--no-cache", "-q", "-t", TAG, "-f", "-", str(ROOT)],
        input=dockerfile,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"docker build failed: {(proc.stdout + proc.stderr).strip()[-500:]}")
    return time.perf_counter() - start


def start_timings(runs: int) -> dict[str, list[float]]:
    """A bare container start, a run refused for a bad input, a dry run against the simulator."""
    python = ["docker", "run", "--rm", "--entrypoint", "/usr/local/bin/python", TAG]
    bare = [timed([*python, "-c", "pass"]) for _ in range(runs)]
    bad = ["-e", "INPUT_APP=my-db", "-e", "INPUT_IP-VERSIONS=shared-v4"]
    bad += ["-e", "INPUT_FLY-API-TOKEN=fo1_measure"]
    bad_input = [timed(["docker", "run", "--rm", *bad, TAG], expect=1) for _ in range(runs)]
    sim = Simulator(token=TOKEN, restart_seconds=0.05, hostname_on_loopback=False)
    sim.add_app("my-db", machines=3)
    sim.start()
    try:
        dry = [
            timed(
                [
                    *("docker", "run", "--rm", "--network", "host"),
                    *("-e", f"FLY_API_BASE_URL={sim.api_base_url}"),
                    *("-e", f"FLY_FLAPS_BASE_URL={sim.flaps_base_url}"),
                    *("-e", "INPUT_APP=my-db", "-e", "INPUT_DRY-RUN=true"),
                    *("-e", f"INPUT_FLY-API-TOKEN={TOKEN}", "-e", "INPUT_PR-COMMENT=false"),
                    TAG,
                ]
            )
            for _ in range(runs)
        ]
    finally:
        sim.stop()
    return {"bare_start": bare, "bad_input": bad_input, "dry_run": dry}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    version = docker_version()
    base = args.base_image or standin_base()
    build_seconds = build(base)
    base_layers, action_layers = split_sizes(TAG, base)
    python = docker("run", "--rm", "--entrypoint", "/usr/local/bin/python", TAG, "-V").stdout
    seconds = start_timings(args.runs)
    steps = measure_job_steps(TAG, args.runs, latency=args.latency, machines=args.machines)
    return {
        "schema": SCHEMA,
        "base_image": base,
        "standin": args.base_image is None,
        "python": python.strip(),
        "docker": version,
        "cpus": os.cpu_count() or 0,
        "runs": args.runs,
        "machines": args.machines,
        "latency": args.latency,
        "between_steps": BETWEEN_STEPS,
        "size_method": METHOD,
        "base_layers": base_layers.as_json(),
        "action_layers": action_layers.as_json(),
        "build_seconds": build_seconds,
        "seconds": {**seconds, **steps.seconds},
        "requests": steps.requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", help="base image to build on (default: the stand-in)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each timing (5)")
    parser.add_argument("--machines", type=int, default=3, help="machines in the cluster (3)")
    parser.add_argument(
        "--latency", type=float, default=0.05, help="seconds the simulator adds to each request"
    )
    parser.add_argument("--json", type=Path, help="save the figures here as well")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be 1 or more")
    try:
        figures = measure(args)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        # The whole story first (a step's log), then one line a caller can quote.
        print(str(exc), file=sys.stderr)
        first = str(exc).strip().splitlines()[:1] or [type(exc).__name__]
        sys.exit(f"measure_container: {first[0]}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print("\n".join(section(parse(figures))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
