"""docs/benchmarks.md and docs/benchmarks.png from the measured cells."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path

from bench.measure import SCENARIO_TITLES, SCENARIOS, Params
from bench.results import Cell, Goal, Summary, legacy_floor
from bench.startup import Startup


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _range(median: float, lo: int, hi: int) -> str:
    return _num(median) if lo == hi else f"{_num(median)} ({lo}-{hi})"


def _row(cell: Cell, who: str, s: Summary, ratio: str) -> str:
    status = "" if s.ok else " ⚠ failed"
    image = ("yes: " + s.image_change) if s.image_changed else "no"
    return (
        f"| {cell.machines} | {who}{status} | {_range(s.requests, *s.requests_range)} | "
        f"{_range(s.round_trips, *s.round_trips_range)} | {s.wall:.2f} s | {ratio} | "
        f"{s.restarts} | {image} |"
    )


def results_table(cells: list[Cell]) -> list[str]:
    lines: list[str] = []
    for scenario in SCENARIOS:
        rows = [c for c in cells if c.scenario == scenario]
        if not rows:
            continue
        lines += [
            f"### {SCENARIO_TITLES[scenario]}",
            "",
            "| Machines | Who | Requests | Round trips | Wall time | Action / baseline "
            "| Machines restarted | Image changed |",
            "|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for c in sorted(rows, key=lambda c: c.machines):
            lines.append(_row(c, "action", c.action, f"**{c.ratio:.3f}**"))
            lines.append(_row(c, "flyctl steps", c.baseline, ""))
        lines.append("")
    return lines


def floor_section(cells: list[Cell], params: Params) -> list[str]:
    """The least any run can cost on a legacy cluster under the rollout rules, beside the
    measured figures: how far the action is from the best it could do, and which goals no
    implementation of those rules can reach."""
    rows = sorted((c for c in cells if c.scenario == "legacy"), key=lambda c: c.machines)
    if not rows:
        return []
    lines = [
        "## What the rollout rules allow",
        "",
        "The action keeps these rules on a legacy cluster: every machine is leased before "
        "anything changes and released at the end, the IPs are allocated only once the leases "
        "are held, the ownership record naming them is written to every machine before any "
        "restart, the machines restart one at a time (update, wait, read the checks) and "
        "never while another one is down, and no request goes faster than Fly's rate limits "
        "allow (so none is answered 429). The least any run can cost under them, counting "
        "everything that may run concurrently as concurrent, leaving out lease refreshes and "
        "taking the last check read to land the instant the checks pass (a list read then "
        "answers the one-down rule too): 6·n + 4 requests, 3·n + 5 round trips, and n restarts "
        "plus (n + 5) request latencies of wall time.",
        "",
        "| Machines | | Requests | Round trips | Wall time | Over the least possible |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for c in rows:
        least = legacy_floor(c.machines, params)
        lines += [
            f"| {c.machines} | least possible | {least.requests} | {least.round_trips} | "
            f"{least.wall:.2f} s | |",
            f"| {c.machines} | action | {_num(c.action.requests)} | "
            f"{_num(c.action.round_trips)} | {c.action.wall:.2f} s | "
            f"{c.action.wall / least.wall - 1:+.1%} |",
            f"| {c.machines} | flyctl steps | {_num(c.baseline.requests)} | "
            f"{_num(c.baseline.round_trips)} | {c.baseline.wall:.2f} s | "
            f"{c.baseline.wall / least.wall - 1:+.1%} |",
        ]
    lines.append("")
    return lines


def goals_list(goals: list[Goal]) -> list[str]:
    lines = []
    for g in goals:
        mark = "✅ met" if g.met else "❌ **missed**"
        lines.append(f"- {mark}: {g.text}. Measured: {g.figures}.")
    return lines


def breakdown_section(cells: list[Cell]) -> list[str]:
    biggest = max((c.machines for c in cells), default=0)
    lines = [
        f"<details><summary>Where the requests go ({biggest} machine(s), first run)</summary>",
        "",
    ]
    for scenario in SCENARIOS:
        cell = next((c for c in cells if c.scenario == scenario and c.machines == biggest), None)
        if cell is None:
            continue
        for who, summary in (("action", cell.action), ("flyctl steps", cell.baseline)):
            if not summary.samples:
                continue
            parts = ", ".join(f"{k} ×{v}" for k, v in summary.samples[0].breakdown.items())
            lines.append(f"- {SCENARIO_TITLES[scenario]}, {who}: {parts}")
    lines += ["", "</details>"]
    return lines


def write_markdown(
    path: Path,
    *,
    cells: list[Cell],
    goals: list[Goal],
    startup: Startup | None,
    params: Params,
    runs: int,
    command: list[str],
    chart: Path | None,
    notes: list[str],
    container: Sequence[str] = (),
) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{shlex.join(command)}` (`make bench`); do not edit by hand.",
        "",
        "The action against a shell step that installs flyctl and runs Fly's documented manual "
        "steps (`fly ips list`, `fly ips allocate-v4`, `fly ips allocate-v6`, `fly config save`, "
        "`fly image show`, `fly deploy --image flyio/postgres-flex:<major>`, `fly services "
        "list`), both against the local Fly simulator (`src/flysim`) on a fresh cluster for "
        "every run.",
        "",
        f"- Per-request latency added by the simulator: **{params.latency * 1000:g} ms**.",
        f"- Machine restart: **{params.restart_seconds:g} s** down, then "
        f"**{params.check_grace_seconds:g} s** until its health checks pass "
        f"(so {params.machine_restart:g} s per machine restart).",
        f"- flyctl's smoke check after each machine update: {params.smoke_seconds:g} s "
        "(flyctl's `WaitForSmokeChecksToPass`).",
        f"- {runs} run(s) of each; wall times are medians, and the action/baseline ratio is the "
        "median of the per-run ratios (action and baseline measured back to back in the same "
        "run). Requests and round trips show the median, with the range when runs differed.",
        "",
        "## Results",
        "",
        *results_table(cells),
    ]
    if chart is not None:
        lines += [f"![Wall time against machine count]({chart.name})", ""]
    lines += ["## Goals", "", *goals_list(goals), ""]
    lines += floor_section(cells, params)
    if startup is not None:
        lines += [
            "## Start-up",
            "",
            f"Fresh interpreters (Python {startup.python}), median of several runs:",
            "",
            "| What | Time |",
            "|---|---:|",
            f"| `python -c pass` (the interpreter alone) | {startup.interpreter * 1000:.0f} ms |",
            f'| `python -c "import fly_pg_external.main"` | {startup.import_main * 1000:.0f} ms |',
            "| import of `fly_pg_external.main` itself (`-X importtime`, cumulative) | "
            f"{startup.import_self * 1000:.0f} ms |",
            "| `python entrypoint.py` up to its input validation and exit "
            f"(exit code {startup.entrypoint_exit}) | {startup.entrypoint * 1000:.0f} ms |",
            "",
        ]
    lines += container
    lines += [
        "## How it is measured",
        "",
        "- **Requests**: every HTTP request the simulator logged during the run (GraphQL and "
        "Machines API, retries included).",
        "- **Round trips**: sequential waves of requests, from the simulator's log: requests "
        "whose [start, end] intervals overlap count as one wave. Concurrent requests cost one "
        "round trip; a lease refresh that falls between two waves costs one more.",
        "- **Wall time**: the action is `fly_pg_external.main.main(env)` called in-process "
        "(inputs as `INPUT_*` variables, `verify: false`, `pr-comment: false`; the interpreter's "
        "start-up is measured separately above). The baseline is the replay of the seven "
        "commands' API calls; flyctl's own start-up (seven processes) and its installation are "
        "not counted.",
        "- **Machines restarted**: updates that took a running machine down, from the "
        "simulator's machine timeline. **Image changed**: a machine's `config.image` differs "
        "after the run.",
        "- **The baseline** (`bench/flyctl_baseline.py`) sends the calls flyctl makes for each "
        "command, in flyctl's order and concurrency: two GraphQL queries for `fly ips list`; "
        "one `allocateIpAddress` per family that list does not show yet (a re-runnable script "
        "needs that guard); `FlyctlConfigCurrentRelease` and `GET /machines` for `fly config "
        "save`; `GetAppCompact`, `GET /machines` and one `latestImageDetails` per machine for "
        "`fly image show`; for `fly deploy`: `GET /v1/apps/{app}`, `ResolveImageForApp`, the "
        "release mutations, `GET /machines`, a 13 s lease on every machine (in parallel) "
        "refreshed every 4 s, then per machine (sorted by ID, the first alone, then "
        "ceil(0.33·n) at a time) the update with the lease nonce, `wait?state=started`, the "
        "smoke check (GETs with a 0.5-2 s backoff) and GETs until every check passes, and "
        "finally the lease releases; `GET /machines` for `fly services list`. `fly deploy` "
        "updates, and so restarts, every machine: the new release metadata alone changes every "
        "machine's config, whether or not its services changed. It also re-points the image to "
        "the rolling major tag.",
        "- Left out of the baseline, all in its favour: `fly deploy`'s DNS propagation check "
        "(up to 60 s), its secrets and feature lookups, flyctl's start-up and installation.",
        *[f"- {n}" for n in notes],
        "",
        *breakdown_section(cells),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_chart(path: Path, cells: list[Cell], params: Params) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    scenarios = [s for s in SCENARIOS if any(c.scenario == s for c in cells)]
    fig, axes = plt.subplots(
        1, len(scenarios), figsize=(3.4 * len(scenarios), 3.0), sharey=True, squeeze=False
    )
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        rows = sorted((c for c in cells if c.scenario == scenario), key=lambda c: c.machines)
        xs = [c.machines for c in rows]
        ax.plot(xs, [c.baseline.wall for c in rows], "s--", color="#c0392b", label="flyctl steps")
        ax.plot(xs, [c.action.wall for c in rows], "o-", color="#1f77b4", label="action")
        if scenario == "legacy":
            ax.plot(
                xs,
                [n * params.machine_restart for n in xs],
                ":",
                color="grey",
                label="sum of restarts",
            )
            ax.plot(
                xs,
                [legacy_floor(n, params).wall for n in xs],
                "-.",
                color="#2ca02c",
                linewidth=0.8,
                label="least possible",
            )
        ax.set_title(SCENARIO_TITLES[scenario].split(" (")[0], fontsize=9)
        ax.set_xlabel("machines", fontsize=8)
        ax.set_xticks(xs)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("wall time (s, log)", fontsize=8)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, fontsize=7, loc="lower right")
    low = min((s.wall for c in cells for s in (c.action, c.baseline) if s.samples), default=0.01)
    axes[0][0].set_ylim(bottom=10 ** math.floor(math.log10(max(low, 1e-3))))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
