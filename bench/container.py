"""What a job pays for the action's container: docs/benchmarks.md's section of that name.

The figures come from scripts/measure_container.py, run as a separate process (it builds the
image and starts containers; a machine without Docker, or without the stand-in base, gets a
section that says so and the rest of the bench still runs). The script saves them as JSON
(`--json`), read back here with `load`, so a saved measurement can be rendered again without
measuring (`python -m bench --container-only --container-from FILE`), and `splice` replaces
that one section of an existing report, leaving the others as the last full bench wrote them.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "measure_container.py"
HEADING = "## What a job pays for the container"
SCHEMA = 1
# The steps in the order the section lists them, with what each row says it is.
STEP_ROWS: tuple[tuple[str, str], ...] = (
    ("bare_start", "Container start alone (`python -c pass` in the image)"),
    ("bad_input", "Action stopped by a bad input (imports, reads every input, exits 1)"),
    ("dry_run", "`dry-run: true` (reads the cluster, changes nothing)"),
    ("main", "**Main step**: first `lifetime: job` expose of a current cluster, verify on"),
    ("post", "**Post step** of that job: releases the addresses, checks they are closed"),
    ("noop_main", "Main step, no-op: a second expose of an exposed database, verify on"),
    ("noop_post", "Post step of the no-op job (`lifetime: persistent`: nothing to close)"),
)


@dataclass(frozen=True)
class LayerSizes:
    count: int
    tar_bytes: int
    gzip_bytes: int


@dataclass(frozen=True)
class ContainerFigures:
    base_image: str
    standin: bool
    python: str
    docker: str
    cpus: int
    runs: int
    machines: int
    latency: float
    between_steps: float
    size_method: str
    base_layers: LayerSizes
    action_layers: LayerSizes
    build_seconds: float
    seconds: dict[str, list[float]]
    requests: dict[str, list[int]]


def _layers(data: Any, name: str) -> LayerSizes:
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: not an object")
    return LayerSizes(int(data["count"]), int(data["tar_bytes"]), int(data["gzip_bytes"]))


def parse(data: Any) -> ContainerFigures:
    """The figures measure_container.py saved; ValueError names what does not fit."""
    if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
        raise ValueError(f"not container figures of schema {SCHEMA}")
    try:
        seconds = {k: [float(x) for x in v] for k, v in data["seconds"].items()}
        requests = {k: [int(x) for x in v] for k, v in data.get("requests", {}).items()}
        missing = [k for k, _ in STEP_ROWS if not seconds.get(k)]
        if missing:
            raise ValueError(f"no timings of {', '.join(missing)}")
        return ContainerFigures(
            base_image=str(data["base_image"]),
            standin=bool(data["standin"]),
            python=str(data["python"]),
            docker=str(data["docker"]),
            cpus=int(data["cpus"]),
            runs=int(data["runs"]),
            machines=int(data["machines"]),
            latency=float(data["latency"]),
            between_steps=float(data["between_steps"]),
            size_method=str(data["size_method"]),
            base_layers=_layers(data["base_layers"], "base_layers"),
            action_layers=_layers(data["action_layers"], "action_layers"),
            build_seconds=float(data["build_seconds"]),
            seconds=seconds,
            requests=requests,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"container figures: {type(exc).__name__} {exc}") from None


def load(path: Path) -> ContainerFigures:
    return parse(json.loads(path.read_text(encoding="utf-8")))


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def spread(values: Sequence[float]) -> str:
    """Median, and the range when there is more than one run."""
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.2f} s"
    return f"{mid:.2f} s ({min(values):.2f}-{max(values):.2f})"


def _requests(values: Sequence[int]) -> str:
    if not values:
        return "-"
    lo, hi, mid = min(values), max(values), statistics.median(values)
    return f"{mid:g}" if lo == hi else f"{mid:g} ({lo}-{hi})"


def _base_words(f: ContainerFigures) -> str:
    if f.standin:
        return (
            f"**a local stand-in for python:3.12-slim** (`{f.base_image}`, {f.python}, Debian "
            "packages, scripts/build-standin-base.sh): the machine that measured reaches no "
            "image registry. The base's figures describe that stand-in, not python:3.12-slim; "
            "the action's layers are the same files and wheels, installed and compiled for "
            "the stand-in's Python"
        )
    return f"`{f.base_image}` ({f.python})"


def _size_table(f: ContainerFigures) -> list[str]:
    whole = LayerSizes(
        f.base_layers.count + f.action_layers.count,
        f.base_layers.tar_bytes + f.action_layers.tar_bytes,
        f.base_layers.gzip_bytes + f.action_layers.gzip_bytes,
    )
    rows = [("The base", f.base_layers), ("The action's layers on top", f.action_layers)]
    rows.append(("Whole image", whole))
    return [
        "| Layers | Count | Unpacked | Compressed (pulled) |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {s.count} | {mb(s.tar_bytes)} | **{mb(s.gzip_bytes)}** |"
            for name, s in rows
        ),
    ]


def _step_table(f: ContainerFigures) -> list[str]:
    lines = [
        "| Step | Start to exit: median (range) | Requests to Fly |",
        "|---|---:|---:|",
    ]
    for key, title in STEP_ROWS:
        lines.append(
            f"| {title} | {spread(f.seconds[key])} | {_requests(f.requests.get(key, []))} |"
        )
    for title, steps in (
        ("first exposure", ("main", "post")),
        ("no-op", ("noop_main", "noop_post")),
    ):
        total = sum(statistics.median(f.seconds[s]) for s in steps)
        lines.append(f"| Both steps of a job, {title} (sum of the medians) | {total:.2f} s | |")
    return lines


def section(figures: ContainerFigures) -> list[str]:
    f = figures
    return [
        HEADING,
        "",
        "A Docker action costs each job its image and two containers: the main step, and the "
        "post step, which the runner starts at the end of every job that ran the action "
        "(action.yml declares a `post-entrypoint`), whatever the lifetime. `make "
        "measure-container` measures this section again and rewrites it alone.",
        "",
        f"Measured on {_base_words(f)}.",
        "",
        "### The image",
        "",
        *_size_table(f),
        "",
        "- What a runner downloads: on `main`, `image: Dockerfile` makes every job pull the base "
        "and build the action's layers (a cold build here: "
        f"**{f.build_seconds:.1f} s** with the base present). A release pins the image by "
        "digest: a GitHub-hosted runner starts empty and pulls the whole image each job; a "
        "runner that already holds the same base (a self-hosted one) pulls only the action's "
        "layers.",
        f"- Compressed size: {f.size_method}.",
        "",
        "### The steps",
        "",
        *_step_table(f),
        "",
        f"- Each step is a `docker run` of the image as the runner starts it (scripts/"
        "runner_step.py: its mounts, `INPUT_*` with every default filled in, a file of each "
        "file command; the post step with `--entrypoint` action.yml's post-entrypoint and the "
        "STATE_* values the main step saved), timed from the start of `docker run` to its exit, "
        f"{f.runs} run(s) each, against the Fly simulator on the same machine (`--network "
        f"host`, {f.latency * 1000:g} ms added to every request, a {f.machines}-machine "
        "cluster) with a real PostgreSQL behind its pg_tls proxy; a fresh simulator each run. "
        f"Steps on one cluster start {f.between_steps:g} s apart, as a job's own steps would "
        "separate them, so "
        "Fly's rate limits (List Machines: 1/s, bursts of 3) have refilled.",
        "- The main step's inputs are `app`, `fly-api-token`, `database-url` (so the "
        "verification logs in) and `host: localhost` (no DNS here); the rest are their "
        "defaults. The no-op's database was exposed by a persistent run of the same workflow.",
        f"- Docker {f.docker}, {f.cpus} CPU(s). Not counted: the runner's own work around a "
        "step, and the image pull or build above.",
        "",
    ]


def unavailable(reason: str) -> list[str]:
    return [
        HEADING,
        "",
        f"Not measured in this run: {reason}",
        "",
        "`make measure-container` measures it and rewrites this section alone (it needs a "
        "Docker daemon; it builds the image on the local stand-in base, "
        "scripts/build-standin-base.sh, unless given another base).",
        "",
    ]


def splice(report: str, lines: Sequence[str]) -> str:
    """`report` with its container section replaced by `lines`; a report without one gets it
    before "## How it is measured" (or at the end)."""
    old = report.split("\n")
    new = list(lines)
    if HEADING in old:
        start = old.index(HEADING)
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
        return "\n".join(old[:start] + new + old[end:])
    anchor = "## How it is measured"
    at = old.index(anchor) if anchor in old else len(old)
    return "\n".join(old[:at] + new + old[at:])


def measure(
    runs: int, saved: Path, base_image: str | None = None, timeout: float = 3600
) -> tuple[ContainerFigures | None, str]:
    """Run scripts/measure_container.py; (its figures, "") or (None, why there are none)."""
    argv = [sys.executable, str(SCRIPT), "--runs", str(runs), "--json", str(saved)]
    if base_image:
        argv += ["--base-image", base_image]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"scripts/measure_container.py took more than {timeout:g} s."
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"it exited {proc.returncode}"
        return None, f"scripts/measure_container.py failed: {why[:400]}"
    try:
        return load(saved), ""
    except (OSError, ValueError) as exc:
        return None, f"scripts/measure_container.py saved no figures: {exc}"


def report_lines(
    runs: int, saved: Path, *, base_image: str | None = None, from_file: Path | None = None
) -> list[str]:
    """The section: from `from_file`, else measured afresh (saved to `saved`), else why not."""
    if from_file is not None:
        try:
            return section(load(from_file))
        except (OSError, ValueError) as exc:
            return unavailable(f"the saved figures in {from_file} could not be read ({exc}).")
    if runs < 1:
        return unavailable(
            "not asked for (`--container-runs 0`; runs with `--quick` or `--out` leave the "
            "container out unless `--container-runs` is given)."
        )
    figures, why = measure(runs, saved, base_image)
    return section(figures) if figures is not None else unavailable(why)
