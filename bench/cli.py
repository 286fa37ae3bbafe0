"""`python -m bench`: measure, print the table, write docs/benchmarks.md and docs/benchmarks.png."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.container import report_lines, splice
from bench.measure import (
    SCENARIO_TITLES,
    SCENARIOS,
    Params,
    Sample,
    Scenario,
    measure_action,
    measure_baseline,
)
from bench.report import goals_list, results_table, write_chart, write_markdown
from bench.results import Cell, Summary, check_goals
from bench.startup import measure_startup

ROOT = Path(__file__).resolve().parents[1]
# The container figures of the last measurement, kept to render the section again.
CONTAINER_SAVED = ROOT / "build" / "bench" / "container.json"


def _ints(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("machine counts must be 1 or more")
    return values


def _scenarios(text: str) -> list[Scenario]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in SCENARIOS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"scenarios are {', '.join(SCENARIOS)}")
    return [s for s in SCENARIOS if s in names]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the action against the manual flyctl steps on the Fly simulator.",
    )
    p.add_argument("--latency", type=float, default=None, help="seconds per request (0.05)")
    p.add_argument("--restart-seconds", type=float, default=None, help="machine restart time (2)")
    p.add_argument(
        "--check-grace-seconds",
        type=float,
        default=None,
        help="after a restart, seconds until the health checks pass (0.5)",
    )
    p.add_argument(
        "--smoke-seconds",
        type=float,
        default=None,
        help="flyctl's smoke check per updated machine (10, flyctl's constant)",
    )
    p.add_argument("--runs", type=int, default=None, help="runs of each measurement (3)")
    p.add_argument("--machines", type=_ints, default=None, help="cluster sizes (1,3,10)")
    p.add_argument(
        "--scenarios", type=_scenarios, default=list(SCENARIOS), help="noop,current,legacy"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 run, 1 and 3 machines, short restarts and smoke checks; writes to build/bench",
    )
    p.add_argument("--out", type=Path, default=None, help="directory for benchmarks.md/.png (docs)")
    p.add_argument("--startup-runs", type=int, default=5, help="runs of each start-up timing")
    p.add_argument(
        "--container-runs",
        type=int,
        default=None,
        help="runs of each container timing (5; 0 without Docker's figures; by default 0 "
        "with --quick or --out, where the image's build and runs would dominate)",
    )
    p.add_argument("--container-base-image", help="base to build the image on (the local stand-in)")
    p.add_argument(
        "--container-only",
        action="store_true",
        help="only the container section: measure it (or read --container-from) and rewrite "
        "that section of the existing benchmarks.md, the rest as the last full run left it",
    )
    p.add_argument(
        "--container-from",
        type=Path,
        default=None,
        help=f"container figures saved earlier (e.g. {CONTAINER_SAVED.relative_to(ROOT)}) "
        "instead of measuring them",
    )
    return p


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def container_section(args: argparse.Namespace) -> list[str]:
    runs = args.container_runs
    if runs is None:
        runs = 0 if args.quick or args.out is not None else 5
    if runs > 0 and args.container_from is None:
        _log("Container: building the image and timing its steps (a few minutes) ...")
    return report_lines(
        runs,
        CONTAINER_SAVED,
        base_image=args.container_base_image,
        from_file=args.container_from,
    )


def container_only(args: argparse.Namespace) -> int:
    """Rewrite the container section of an existing report, nothing else."""
    if args.container_runs is None:
        args.container_runs = 5
    report = (args.out or ROOT / "docs") / "benchmarks.md"
    if not report.is_file():
        _log(f"{report} does not exist: run the whole bench first")
        return 2
    lines = container_section(args)
    report.write_text(splice(report.read_text(encoding="utf-8"), lines), encoding="utf-8")
    print("\n".join(lines))
    print(f"Rewrote the container section of {report}")
    return 0


def _notes(a: Sample, b: Sample, scenario: Scenario, n: int) -> set[str]:
    """What the report should say about one run of each contender."""
    notes: set[str] = set()
    for s in (a, b):
        if not s.ok:
            notes.add(
                f"A {s.contender} run failed ({SCENARIO_TITLES[scenario]}, "
                f"{n} machines): {s.detail.splitlines()[-1] if s.detail else '?'}"
            )
    if b.detail and b.ok:
        notes.add(b.detail.replace("GraphQL answered", "The simulator answered") + ".")
    for s in (a, b):
        if s.client_requests is not None and s.client_requests != s.requests:
            notes.add(
                f"The {s.contender} sent {s.client_requests} requests where the "
                f"simulator logged {s.requests} ({SCENARIO_TITLES[scenario]}, {n})."
            )
    return notes


def measure_cells(
    scenarios: Sequence[Scenario], sizes: Sequence[int], runs: int, params: Params
) -> tuple[list[Cell], set[str]]:
    """Every scenario on every cluster size, action and baseline back to back in each run."""
    cells: list[Cell] = []
    notes: set[str] = set()
    began = time.monotonic()
    for n in sizes:
        for scenario in scenarios:
            cell = Cell(scenario, n, Summary([]), Summary([]))
            for run in range(runs):
                seed = 1000 * n + run
                a = measure_action(scenario, n, params, seed)
                b = measure_baseline(scenario, n, params, seed)
                cell.action.samples.append(a)
                cell.baseline.samples.append(b)
                cell.ratios.append(a.wall / b.wall if b.wall else float("nan"))
                notes |= _notes(a, b, scenario, n)
                _log(
                    f"[{time.monotonic() - began:6.1f} s] {scenario:<7} {n:>2} machine(s) "
                    f"run {run + 1}/{runs}: action {a.requests} req / {a.round_trips} rt / "
                    f"{a.wall:.2f} s; flyctl steps {b.requests} req / {b.round_trips} rt / "
                    f"{b.wall:.2f} s"
                )
            cells.append(cell)
    return cells, notes


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.container_only:
        return container_only(args)
    quick = args.quick
    params = Params(
        latency=args.latency if args.latency is not None else 0.05,
        restart_seconds=(
            args.restart_seconds if args.restart_seconds is not None else (0.5 if quick else 2.0)
        ),
        check_grace_seconds=(
            args.check_grace_seconds
            if args.check_grace_seconds is not None
            else (0.2 if quick else 0.5)
        ),
        smoke_seconds=(
            args.smoke_seconds if args.smoke_seconds is not None else (1.0 if quick else 10.0)
        ),
    )
    runs = args.runs if args.runs is not None else (1 if quick else 3)
    sizes: list[int] = args.machines or ([1, 3] if quick else [1, 3, 10])
    out: Path = args.out or (ROOT / ("build/bench" if quick else "docs"))
    out.mkdir(parents=True, exist_ok=True)

    cells, notes = measure_cells(args.scenarios, sizes, runs, params)

    goals = check_goals(cells, params)
    startup = measure_startup(args.startup_runs) if args.startup_runs > 0 else None
    container = container_section(args)
    chart = out / "benchmarks.png"
    write_chart(chart, cells, params)
    command = ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])]
    write_markdown(
        out / "benchmarks.md",
        cells=cells,
        goals=goals,
        startup=startup,
        params=params,
        runs=runs,
        command=command,
        chart=chart,
        notes=sorted(notes),
        container=container,
    )
    print("\n".join(results_table(cells)))
    print("\n".join(goals_list(goals)))
    if startup is not None:
        print(
            f"\nStart-up: interpreter {startup.interpreter * 1000:.0f} ms, "
            f"import fly_pg_external.main {startup.import_self * 1000:.0f} ms, "
            f"entrypoint to validation exit {startup.entrypoint * 1000:.0f} ms"
        )
    print(f"\nWrote {out / 'benchmarks.md'} and {chart}")
    return 0
