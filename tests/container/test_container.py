"""The action's image, built from the Dockerfile and run the way the GitHub runner runs it.

The Python tests never see the Dockerfile; a wrong COPY, a missing dependency or a `USER` that
cannot write $GITHUB_OUTPUT only shows in a container. So this builds the image and runs it as
`ContainerActionHandler` does: `docker run --rm --workdir /github/workspace` with the workspace,
home, workflow, runner-temp and file-command directories mounted, every declared input exported as
`INPUT_<NAME>` with hyphens kept (defaults filled in), `GITHUB_OUTPUT` pointing into
/github/file_commands, against the Fly simulator on the host (`--network host`).

Base image (env FLY_PG_EXTERNAL_BASE_IMAGE):
- unset or `standin`: a stand-in for python:3.12-slim built from Debian packages by
  scripts/build-standin-base.sh (cached by tag), for machines that reach no image registry;
- `dockerfile-default`: the Dockerfile's own pinned python:3.12-slim (CI on hosted runners);
- anything else: that image.
The project's Dockerfile is the one built, unchanged but for its FROM line when another base is
chosen: the base is written into FROM (the line Dependabot updates), not passed as an ARG, so the
test substitutes that one line and feeds the result to `docker build -f -`.

Without Docker the tests skip locally, but fail when CI is set: CI must not pass by skipping.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml
from runner_step import parse_file_command, prepare_step

from flysim import PostgresServer, Simulator

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE_TAG = "fly-pg-external:container-test"
TOKEN = "fo1_containertesttoken_0123456789"
APP = "my-db"
# A file owner the container's root is not: with a USER in the image, writing would fail.
RUNNER_UID = 1001


def docker(
    *args: str, timeout: float = 600, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def dockerfile_on(base: str) -> str:
    """The project's Dockerfile with its one FROM line naming `base` instead."""
    text, count = re.subn(
        r"^FROM[ \t]+\S+[ \t]*$", f"FROM {base}", (ROOT / "Dockerfile").read_text(), flags=re.M
    )
    assert count == 1, "the Dockerfile has a single FROM line"
    return text


@pytest.fixture(scope="session")
def action_image(base_image: str | None) -> str:
    if base_image is None:
        proc = docker("build", "-t", IMAGE_TAG, str(ROOT), timeout=900)
    else:
        # `-f -`: the Dockerfile from stdin, the build context still the repository root.
        proc = docker(
            "build",
            "-t",
            IMAGE_TAG,
            "-f",
            "-",
            str(ROOT),
            timeout=900,
            stdin=dockerfile_on(base_image),
        )
    if proc.returncode != 0:
        pytest.fail(f"docker build failed:\n{(proc.stdout + proc.stderr)[-5000:]}")
    return IMAGE_TAG


@pytest.fixture
def sim(flysim: Callable[..., Simulator]) -> Simulator:
    # No PostgreSQL and no listener on 127.0.0.1:5432: these runs use `verify: false`.
    return flysim(
        apps={APP: {"machines": 2, "legacy": False}},
        postgres=False,
        token=TOKEN,
        hostname_on_loopback=False,
    )


def declared(kind: str) -> dict[str, dict[str, str]]:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    return dict(action.get(kind) or {})


def post_entrypoint() -> str:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    return str(action["runs"]["post-entrypoint"])


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    output_file: str  # GITHUB_OUTPUT as the step wrote it
    state: dict[str, str]  # what the step saved for the post step
    summary: str

    @property
    def outputs(self) -> dict[str, str]:
        return parse_file_command(self.output_file)

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    def errors(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith("::error")]


def run_like_the_runner(
    image: str,
    sim: Simulator,
    tmp_path: Path,
    inputs: dict[str, str],
    *,
    post: dict[str, str] | None = None,
) -> Run:
    """The main step, or with `post` (the STATE_* values the main step saved) the post step,
    which the runner starts with `--entrypoint` set to action.yml's `post-entrypoint`."""
    step = prepare_step(
        tmp_path,
        declared_inputs=declared("inputs"),
        inputs=inputs,
        env={
            "GITHUB_REPOSITORY": "acme/infra",
            "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
            "FLY_API_BASE_URL": sim.api_base_url,
            "FLY_FLAPS_BASE_URL": sim.flaps_base_url,
        },
        entrypoint=post_entrypoint() if post is not None else None,
        state=post,
        owner_uid=RUNNER_UID if os.geteuid() == 0 else None,
    )
    proc = docker(*step.argv, image, timeout=300)
    return Run(
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        output_file=step.read("GITHUB_OUTPUT"),
        state=step.state,
        summary=step.read("GITHUB_STEP_SUMMARY"),
    )


BASE_INPUTS = {"app": APP, "fly-api-token": TOKEN, "verify": "false", "pr-comment": "false"}


def test_image_runs_as_root_from_absolute_paths(action_image: str) -> None:
    config = json.loads(
        docker("image", "inspect", "--format", "{{json .Config}}", action_image).stdout
    )
    user = config.get("User", "")
    assert user in ("", "root", "0"), f"USER {user}: the runner needs root to write file commands"
    assert config["Entrypoint"] == ["/usr/local/bin/python", "/app/entrypoint.py"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_image_holds_the_runtime_code_and_nothing_else(action_image: str) -> None:
    probe = """
import importlib.util, json, os, sys
import fly_pg_external.main, fly_pg_external.github, httpx, tomlkit, github, actions_toolkit
import psycopg
print(json.dumps({
    "uid": os.getuid(),
    "libpq": [psycopg.pq.__impl__, psycopg.pq.version()],
    "files": sorted(
        os.path.relpath(os.path.join(d, f), "/app")
        for d, _, fs in os.walk("/app") for f in fs if not f.endswith(".pyc")
    ),
    "absent": [m for m in ("flysim", "fakegithub", "pytest")
               if importlib.util.find_spec(m) is None],
}))
"""
    proc = docker("run", "--rm", "--entrypoint", "/usr/local/bin/python", action_image, "-c", probe)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["uid"] == 0
    assert seen["absent"] == ["flysim", "fakegithub", "pytest"]
    # psycopg with the libpq its wheel bundles (temporary credentials): no system library needed.
    assert seen["libpq"][0] == "binary" and seen["libpq"][1] >= 160000, seen["libpq"]
    package = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "src" / "fly_pg_external").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    assert seen["files"] == sorted(["entrypoint.py", "requirements.txt", *package])
    post = docker("run", "--rm", "--entrypoint", "/bin/sh", action_image, "-c", "test -x /post.py")
    assert post.returncode == 0, f"{post_entrypoint()} is not executable in the image"


def test_plan_run_reports_outputs_and_changes_nothing(
    action_image: str, sim: Simulator, tmp_path: Path
) -> None:
    run = run_like_the_runner(action_image, sim, tmp_path, {**BASE_INPUTS, "dry-run": "true"})

    assert run.returncode == 0, run.log
    assert re.search(r"^changed<<ghadelimiter_[0-9a-f-]+\ntrue\n", run.output_file, flags=re.M)
    outputs = run.outputs
    assert set(outputs) == set(declared("outputs")), "every declared output, and only those"
    assert outputs["changed"] == "true"
    assert outputs["host"] == f"{APP}.fly.dev"
    assert outputs["port"] == "5432"
    assert outputs["ipv4"] == outputs["ipv6"] == ""
    assert sim.mutating_requests() == []
    assert not run.errors()


def test_expose_run_allocates_the_public_ips(
    action_image: str, sim: Simulator, tmp_path: Path
) -> None:
    run = run_like_the_runner(action_image, sim, tmp_path, {**BASE_INPUTS, "mode": "expose"})

    assert run.returncode == 0, run.log
    outputs = run.outputs
    assert outputs["changed"] == "true"
    public = {ip.type: ip.address for ip in sim.app(APP).ips if ip.type in ("v4", "v6")}
    assert outputs["ipv4"] == public["v4"]
    assert outputs["ipv6"] == public["v6"]
    allocations = [r for r in sim.mutating_requests() if "allocateIpAddress" in r.graphql_fields]
    assert len(allocations) == 2
    assert run.summary.strip(), "a step summary was written"
    assert (tmp_path / "runner_temp" / "fly-pg-external" / APP / "fly.toml").is_file()


def test_bad_input_fails_the_step_before_any_request(
    action_image: str, sim: Simulator, tmp_path: Path
) -> None:
    run = run_like_the_runner(
        action_image, sim, tmp_path, {**BASE_INPUTS, "ip-versions": "shared-v4"}
    )

    assert run.returncode == 1, run.log
    assert any("ip-versions" in line for line in run.errors()), run.log
    assert "Traceback" not in run.log
    assert sim.requests == []


def test_lifetime_job_post_step_releases_what_the_main_step_allocated(
    action_image: str, sim: Simulator, tmp_path: Path
) -> None:
    """The post step as the runner starts it: the same image, `--entrypoint` set to action.yml's
    `post-entrypoint`, the same inputs, and STATE_* from the main step's GITHUB_STATE."""
    inputs = {**BASE_INPUTS, "lifetime": "job"}
    main = run_like_the_runner(action_image, sim, tmp_path / "main", inputs)
    assert main.returncode == 0, main.log
    allocated = sorted(main.state["ALLOCATED"].split(","))
    assert allocated == sorted([main.outputs["ipv4"], main.outputs["ipv6"]])
    # The repository, the run, attempt and job, and the step's own leg.
    assert re.fullmatch(r"acme/infra#run-1-1-[A-Za-z0-9_.-]+-[0-9a-f]{8}", main.state["HOLDER"])

    post = run_like_the_runner(action_image, sim, tmp_path / "post", inputs, post=main.state)
    assert post.returncode == 0, post.log
    assert [ip for ip in sim.app(APP).ips if ip.type in ("v4", "v6")] == []
    assert "end of the job" in post.summary and "released" in post.summary
    assert not post.errors(), post.log


def test_temporary_credentials_from_the_image(
    action_image: str, flysim: Callable[..., Simulator], pg_server: PostgresServer, tmp_path: Path
) -> None:
    """`credentials: temporary` in the image: its psycopg (libpq from the wheel) creates the
    run's role through the simulator's pg_tls endpoint, the URL logs in as it, and the post
    step drops it."""
    sim = flysim(apps={APP: {"machines": 2}}, postgres=True, token=TOKEN)
    internal = sim.attach_database(APP, "image_owner", "Image-owner-pw-1", "image_db")
    pg_server.psql('ALTER ROLE "image_owner" SUPERUSER')
    inputs = {
        **BASE_INPUTS,
        "database-url": internal,
        "host": "localhost",
        "verify": "true",
        "lifetime": "job",
        "credentials": "temporary",
    }
    main = run_like_the_runner(action_image, sim, tmp_path / "main", inputs)
    assert main.returncode == 0, main.log
    role = main.outputs["user"]
    assert re.fullmatch(r"fpe_tmp_[0-9a-f]{16}", role), role
    assert main.state["TEMP_ROLE"] == role
    with psycopg.connect(main.outputs["database-url"], connect_timeout=10) as conn:
        assert conn.execute("SELECT session_user, current_user").fetchone() == (role, "image_owner")

    post = run_like_the_runner(action_image, sim, tmp_path / "post", inputs, post=main.state)

    assert post.returncode == 0, post.log
    assert f"Role `{role}`: dropped" in post.summary
    gone = pg_server.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")  # noqa: S608
    assert gone.strip() == "0"
