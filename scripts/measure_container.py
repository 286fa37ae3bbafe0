"""Measure the action's image: its size, how long building it takes, how fast it starts.

    python scripts/measure_container.py [--base-image IMAGE] [--runs N]

Without --base-image the image is built on the local stand-in base (scripts/build-standin-base.sh),
so the figures describe that stand-in, not python:3.12-slim. Printed as a Markdown table:

- image size, and what the action adds on top of its base;
- a cold build (`docker build --no-cache`, base already present), which is roughly what
  `image: Dockerfile` costs on every job before the base image is even pulled;
- bare container start (`python -c pass` in the image);
- the action's own start-up: a run stopped by a bad input, which imports the code, reads every
  input, prints `::error` and exits, without any network request;
- a whole `dry-run: true` run against the Fly simulator on this machine (`--network host`).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from flysim import Simulator

ROOT = Path(__file__).resolve().parents[1]
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


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", help="base image to build on (default: the stand-in)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    base = args.base_image
    if base is None:
        script = ROOT / "scripts" / "build-standin-base.sh"
        built = subprocess.run([str(script)], capture_output=True, text=True, check=True)
        base = built.stdout.strip().splitlines()[-1]

    # The Dockerfile names its base in its FROM line (where Dependabot updates it): build the
    # same file with that one line naming `base`, read from stdin, the context still the root.
    dockerfile, count = re.subn(
        r"^FROM[ \t]+\S+[ \t]*$", f"FROM {base}", (ROOT / "Dockerfile").read_text(), flags=re.M
    )
    if count != 1:
        sys.exit("the Dockerfile must have a single FROM line")
    start = time.perf_counter()
    subprocess.run(
        ["docker", "build", "--no-cache", "-q", "-t", TAG, "-f", "-", str(ROOT)],
        input=dockerfile,
        capture_output=True,
        text=True,
        check=True,
    )
    build_seconds = time.perf_counter() - start

    size, base_size = image_size(TAG), image_size(base)
    bare = [
        timed(["docker", "run", "--rm", "--entrypoint", "/usr/local/bin/python", TAG, "-c", "pass"])
        for _ in range(args.runs)
    ]
    action = [
        timed(
            [
                "docker",
                "run",
                "--rm",
                "-e",
                "INPUT_APP=my-db",
                "-e",
                "INPUT_IP-VERSIONS=shared-v4",
                "-e",
                "INPUT_FLY-API-TOKEN=fo1_measure",
                TAG,
            ],
            expect=1,
        )
        for _ in range(args.runs)
    ]
    sim = Simulator(token=TOKEN, restart_seconds=0.05, hostname_on_loopback=False)
    sim.add_app("my-db", machines=3)
    sim.start()
    try:
        plan = [
            timed(
                [
                    "docker",
                    "run",
                    "--rm",
                    "--network",
                    "host",
                    *("-e", f"FLY_API_BASE_URL={sim.api_base_url}"),
                    *("-e", f"FLY_FLAPS_BASE_URL={sim.flaps_base_url}"),
                    *("-e", "INPUT_APP=my-db", "-e", "INPUT_DRY-RUN=true"),
                    *("-e", f"INPUT_FLY-API-TOKEN={TOKEN}", "-e", "INPUT_PR-COMMENT=false"),
                    TAG,
                ]
            )
            for _ in range(args.runs)
        ]
    finally:
        sim.stop()
    python = docker("run", "--rm", "--entrypoint", "/usr/local/bin/python", TAG, "-V").stdout

    print(f"Base image: `{base}` ({python.strip()}), {args.runs} runs each, median:\n")
    print("| What | Measured |")
    print("|---|---|")
    print(f"| Image size | {mb(size)} ({mb(size - base_size)} on top of the base) |")
    print(f"| Cold build from the Dockerfile (base present) | {build_seconds:.1f} s |")
    print(f"| Container start, `python -c pass` | {statistics.median(bare):.2f} s |")
    print(f"| Action start to exit on a bad input | {statistics.median(action):.2f} s |")
    print(f"| Whole `dry-run: true` run against the simulator | {statistics.median(plan):.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
