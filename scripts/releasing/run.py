"""The `run` step: the pushed image, by digest, on every platform, run the way the runner runs a
container action (scripts/runner_step.py) against the Fly simulator. First a `lifetime: job` run
and its post step, which must release exactly what the main step allocated; then `mode: expose`,
which exposes on the first platform and finds nothing to change on the next."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner_step import prepare_step  # next to the package, in scripts/

from fly_pg_external import step_state
from fly_pg_external.step_state import StepState

from .config import Config, Docker
from .context import Context
from .errors import ReleaseError
from .image import checked
from .simulator import SimulatorProcess, start_simulator

SIM_APP = "my-db"
JOB_INPUTS = {"mode": "expose", "lifetime": "job"}


def run_by_digest(ctx: Context) -> None:
    cfg = ctx.cfg
    image_ref = f"{cfg.image}@{ctx.state.need_digest()}"
    entrypoint = post_entrypoint(cfg.root / "action.yml")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp_name:
        tmp = Path(tmp_name)
        sim = start_simulator(cfg, tmp)
        try:
            # The post entrypoint first, while the app has no public address: each
            # `lifetime: job` run allocates, and its post step releases.
            released = _post_steps(ctx, image_ref, entrypoint, sim, tmp)
            results = _main_steps(ctx, image_ref, sim, tmp)
        finally:
            report = sim.stop()
    if cfg.dry_run:
        return
    _check_reported(image_ref, results, report.get("public_ips", {}))
    ran = ", ".join(cfg.platforms)
    ctx.gha.info(
        f"{image_ref} ran on {ran} with `lifetime: job`: its post step ({entrypoint}) released "
        "exactly what the main step allocated ("
        + ", ".join(f"{n} addresses on {p}" for p, n in zip(cfg.platforms, released, strict=True))
        + ")."
    )
    ctx.gha.info(f"{image_ref} ran on {ran} like the runner runs it: exposed, then unchanged.")
    ctx.gha.append_summary(
        f"- run by digest against the simulator on {ran}: ok (main entrypoint, and "
        f"`{entrypoint}` after a `lifetime: job` run)"
    )


def post_entrypoint(action_yml: Path) -> str:
    """action.yml's `runs.post-entrypoint`: what the runner passes as `--entrypoint` to the post
    step of a container action."""
    runs = _action(action_yml).get("runs") or {}
    entrypoint = str(runs.get("post-entrypoint") or "")
    if not entrypoint:
        raise ReleaseError(
            "Run by digest", "action.yml has no `runs.post-entrypoint`: no post step to check."
        )
    return entrypoint


def _action(action_yml: Path) -> dict[str, Any]:
    # Imported here: the jobs that build, push or write to GitHub install no PyYAML.
    try:
        import yaml
    except ImportError as e:  # the step runs in the dev venv, which has the simulator too
        raise ReleaseError(
            "run", "the run step needs PyYAML and the simulator: make .venv/bin/.installed"
        ) from e
    return dict(yaml.safe_load(action_yml.read_text(encoding="utf-8")) or {})


def _post_steps(
    ctx: Context, image_ref: str, entrypoint: str, sim: SimulatorProcess, tmp: Path
) -> list[int]:
    """On each platform, the image pulled, then a `lifetime: job` run and its post step; how
    many addresses each released."""
    released = []
    for n, platform in enumerate(ctx.cfg.platforms):
        pulled = ctx.docker(["pull", "--platform", platform, image_ref], 900)
        checked(pulled, "Run by digest", f"docker pull {image_ref} ({platform})")
        released.append(
            check_post_step(
                ctx.cfg,
                ctx.docker,
                image_ref=image_ref,
                platform=platform,
                entrypoint=entrypoint,
                sim=sim,
                tmp=tmp / f"job{n}",
            )
        )
    return released


def _main_steps(
    ctx: Context, image_ref: str, sim: SimulatorProcess, tmp: Path
) -> list[tuple[str, RunResult]]:
    """`mode: expose` on each platform: the first run exposes, the next ones find it done."""
    results = []
    for n, platform in enumerate(ctx.cfg.platforms):
        result = run_like_the_runner(
            ctx.cfg,
            ctx.docker,
            image_ref=image_ref,
            platform=platform,
            sim=sim,
            tmp=tmp / f"run{n}",
        )
        results.append((platform, result))
        if not ctx.cfg.dry_run:
            _ran_and_changed(result, f"{image_ref} on {platform}", "true" if n == 0 else "false")
    return results


@dataclass
class RunResult:
    returncode: int
    log: str
    outputs: dict[str, str]
    state: dict[str, str]  # what the step saved for the post step (GITHUB_STATE)
    summary: str

    def errors(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith("::error")]


def run_like_the_runner(
    cfg: Config,
    docker: Docker,
    *,
    image_ref: str,
    platform: str,
    sim: SimulatorProcess,
    tmp: Path,
    inputs: Mapping[str, str] | None = None,
    entrypoint: str | None = None,
    state: Mapping[str, str] | None = None,
) -> RunResult:
    """`docker run` as the runner's ContainerActionHandler does it: the workspace, home, workflow
    and file-command directories mounted, INPUT_* for every declared input, on the host network
    (where the simulator listens). With `entrypoint` and `state`, the post step: the same image,
    inputs and mounts (`tmp` of the main step), `--entrypoint` set to action.yml's
    post-entrypoint and STATE_<name> for what the main step saved; like every step, it gets file
    command files of its own."""
    action = _action(cfg.root / "action.yml")
    step = prepare_step(
        tmp,
        declared_inputs=action.get("inputs") or {},
        inputs={
            "app": SIM_APP,
            "fly-api-token": sim.env["SIM_FLY_API_TOKEN"],
            "verify": "false",
            "pr-comment": "false",
            **(inputs or {}),
        },
        env={
            "GITHUB_REPOSITORY": cfg.repository,
            "GITHUB_SHA": cfg.source_sha,
            "FLY_API_BASE_URL": sim.env["FLY_API_BASE_URL"],
            "FLY_FLAPS_BASE_URL": sim.env["FLY_FLAPS_BASE_URL"],
        },
        entrypoint=entrypoint,
        state=state,
        platform=platform,
        file_mode=0o666,
    )
    proc = docker([*step.argv, image_ref], 600)
    return RunResult(
        proc.returncode,
        proc.stdout + proc.stderr,
        step.outputs,
        step.state,
        step.read("GITHUB_STEP_SUMMARY"),
    )


def check_post_step(
    cfg: Config,
    docker: Docker,
    *,
    image_ref: str,
    platform: str,
    entrypoint: str,
    sim: SimulatorProcess,
    tmp: Path,
) -> int:
    """A `lifetime: job` run, then its post step as the runner starts it; the post step must
    release exactly what the main step allocated. The simulator starts with no public address
    and is left with none. Returns how many addresses were allocated and released."""
    job = f"{image_ref} on {platform} (lifetime: job)"
    main = run_like_the_runner(
        cfg, docker, image_ref=image_ref, platform=platform, sim=sim, tmp=tmp, inputs=JOB_INPUTS
    )
    if not cfg.dry_run:
        _ran_and_changed(main, job, "true")
    before = sim.snapshot()
    post = run_like_the_runner(
        cfg,
        docker,
        image_ref=image_ref,
        platform=platform,
        sim=sim,
        tmp=tmp,  # the main step's workspace, home and runner temp, as on the runner
        inputs=JOB_INPUTS,
        entrypoint=entrypoint,
        state=main.state,
    )
    after = sim.snapshot()
    if cfg.dry_run:
        return 0
    allocated = set(StepState.from_saved(main.state).allocated)
    _check_allocated(main, allocated, before.get("public_ips", {}), job)
    what = f"The post step ({entrypoint}) of {image_ref} on {platform}"
    _ran_clean(post, what)
    _check_released(post, allocated, before, after, what)
    return len(allocated)


def _ran_clean(result: RunResult, what: str) -> None:
    if result.returncode != 0 or result.errors():
        raise ReleaseError(
            "Run by digest",
            f"{what} exited {result.returncode} against the simulator:\n{result.log[-3000:]}",
        )


def _ran_and_changed(result: RunResult, what: str, expected: str) -> None:
    """Ran cleanly, and its `changed` output is `expected`."""
    _ran_clean(result, what)
    if result.outputs.get("changed") != expected:
        raise ReleaseError(
            "Run by digest",
            f"{what}: changed={result.outputs.get('changed')!r}, expected {expected!r}; "
            f"outputs {result.outputs}",
        )


def _check_allocated(
    main: RunResult, allocated: set[str], public: Mapping[str, str], job: str
) -> None:
    """The main step saved, for its post step, exactly the addresses it reported and the
    simulator has."""
    reported = {main.outputs.get("ipv4"), main.outputs.get("ipv6")}
    if not allocated or set(public.values()) != allocated or reported != allocated:
        raise ReleaseError(
            "Run by digest",
            f"{job} saved {step_state.ALLOCATED}={main.state.get(step_state.ALLOCATED)!r} for "
            f"its post step and reported ipv4/ipv6 {sorted(map(str, reported))}; the simulator "
            f"has {public}",
        )


def _check_released(
    post: RunResult,
    allocated: set[str],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    what: str,
) -> None:
    """The post step released what was allocated, allocated nothing, and left no address."""
    done = after.get("mutating_requests", [])[len(before.get("mutating_requests", [])) :]
    fields = [f for request in done for f in request.get("fields") or []]
    releases, allocations = fields.count("releaseIpAddress"), fields.count("allocateIpAddress")
    left = after.get("public_ips", {})
    if left or releases != len(allocated) or allocations:
        raise ReleaseError(
            "Run by digest",
            f"{what} did not release exactly what the main step allocated ({sorted(allocated)}): "
            f"{releases} release(s), {allocations} allocation(s), the simulator still has "
            f"{left or 'no public address'}.\n{post.log[-3000:]}",
        )


def _check_reported(
    image_ref: str, results: list[tuple[str, RunResult]], public: Mapping[str, str]
) -> None:
    """Each `mode: expose` run reported the addresses the simulator has, one per family."""
    for platform, result in results:
        reported = {"v4": result.outputs.get("ipv4"), "v6": result.outputs.get("ipv6")}
        if not public.get("v4") or not public.get("v6") or reported != public:
            raise ReleaseError(
                "Run by digest",
                f"{image_ref} on {platform} reported ipv4/ipv6 {reported}, "
                f"the simulator has {public}",
            )
