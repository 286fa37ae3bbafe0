"""The README's first example works as a user copies it.

Its YAML is read from README.md, not copied here: the `with:` inputs of the
`uses: org/fly-pg-external@v1` step, with each `${{ secrets.* }}` given the value the simulator
needs, and every input the example leaves out at action.yml's default, as the runner passes it
(an empty `lifetime`, so the default lifetime is what is tested). The action then runs as the
runner runs a job: the main step, the README's next step (its `run:` with its `env:`, the step
output substituted) through bash, then the post step with what the main step saved. Against the
simulator with a real PostgreSQL behind its pg_tls proxy, the next step's psql connects while the
job runs, and once the post step is done the addresses it allocated are released and refuse
connections.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from exposure import job_env, public_ips, refused

from flysim import Simulator

from action_run import TOKEN, run_main_step, run_post_step, step_state

ROOT = Path(__file__).resolve().parents[2]
THIS_ACTION = "org/fly-pg-external@v1"
# The example must be where a reader sees it without scrolling.
FIRST_SCREEN_LINES = 40
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def first_yaml_example() -> tuple[int, list[dict[str, Any]]]:
    """(line where it starts, its steps) of the README's first ```yaml block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)
    assert match, "README.md shows no ```yaml example"
    steps = yaml.safe_load(match[1])
    assert isinstance(steps, list), "the README's first example is a list of steps"
    return text[: match.start()].count("\n") + 1, steps


def as_input(value: Any) -> str:
    """A `with:` value as the runner passes it: a string, booleans as `true`/`false`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def substitute(value: str, known: dict[str, str]) -> str:
    """Each `${{ … }}` replaced by its value in `known`; one the test does not know fails it,
    so an example that comes to need another secret or context is noticed here."""

    def one(m: re.Match[str]) -> str:
        assert m[1] in known, f"the README's example uses ${{{{ {m[1]} }}}}, unknown to this test"
        return known[m[1]]

    return EXPRESSION.sub(one, value)


def action_defaults() -> dict[str, str]:
    """Every optional input at the default action.yml declares, as the runner passes inputs a
    step does not set. `github-token`'s default is an expression the runner evaluates: a token
    the workflow_dispatch run below never uses (it comments on no pull request)."""
    declared = yaml.safe_load((ROOT / "action.yml").read_text())["inputs"]
    defaults = {
        name: as_input(spec["default"]) for name, spec in declared.items() if "default" in spec
    }
    defaults["github-token"] = "ghs_unused_on_workflow_dispatch"
    return defaults


def run_step(
    step: dict[str, Any], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """A `run:` step as a Linux runner runs it without `shell:` (`bash -e {0}`)."""
    assert "shell" not in step, "the runner's default shell is what this test runs"
    bash = shutil.which("bash")
    assert bash, "bash is the runner's default shell on Linux"
    return subprocess.run(
        [bash, "-e", "-c", step["run"]],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def sim(flysim: Any) -> Simulator:
    """A current `fly pg create` cluster with no public address, as a first run meets it."""
    return flysim(apps={"my-db": {"machines": 2}}, postgres=True)


def test_the_readme_example_opens_for_the_job_connects_and_closes(
    sim: Simulator, tmp_path: Path
) -> None:
    assert shutil.which("psql"), "the README's example runs psql: install PostgreSQL's client"
    starts_at, steps = first_yaml_example()
    assert starts_at <= FIRST_SCREEN_LINES, f"the README's first example starts at {starts_at}"
    index = next(i for i, s in enumerate(steps) if s.get("uses") == THIS_ACTION)
    action, next_step = steps[index], steps[index + 1]
    app = action["with"]["app"]
    assert app in sim.apps, f"the example's app {app!r}: give the simulator an app of that name"

    secrets = {
        "secrets.FLY_PG_DEPLOY_TOKEN": TOKEN,  # the token every simulator from flysim accepts
        "secrets.FLY_PG_INTERNAL_URL": sim.attach_database(app, "app_user", "s3cret-pw", "app_db"),
    }
    given = {name: substitute(as_input(v), secrets) for name, v in action["with"].items()}
    inputs = {**action_defaults(), **given}
    assert inputs["lifetime"] == "", "the example relies on the default lifetime (job)"
    # The one override: the simulator serves the app's hostname on loopback as `localhost`
    # (nothing here resolves <app>.fly.dev), so the URL the action emits connects from here.
    assert "host" not in given
    inputs["host"] = "localhost"

    main = run_main_step(sim, tmp_path / "main", inputs, job_env())
    assert main.code == 0, main.log
    allocated = [a for a in (main.outputs["ipv4"], main.outputs["ipv6"]) if a]
    assert allocated and set(public_ips(sim, app).values()) == set(allocated)
    state = step_state(main)
    assert set(state["ALLOCATED"].split(",")) == set(allocated), "the post step's to-do list"

    outputs = {f"steps.{action['id']}.outputs.{k}": v for k, v in main.outputs.items()}
    env = {k: substitute(as_input(v), outputs) for k, v in next_step.get("env", {}).items()}
    assert env, "the next step takes the URL from the action's outputs through env"
    (tmp_path / "workspace").mkdir(exist_ok=True)
    connected = run_step(next_step, env, tmp_path / "workspace")
    assert connected.returncode == 0, connected.stdout + connected.stderr
    assert re.search(r"^\s*1\s*$", connected.stdout, flags=re.M), connected.stdout

    post = run_post_step(sim, tmp_path / "post", inputs, state, extra_env=job_env())
    assert post.code == 0, post.log
    assert public_ips(sim, app) == {}
    assert all(refused(a) for a in allocated)
    # The same step after the job: the URL no longer connects.
    closed = run_step(next_step, env, tmp_path / "workspace")
    assert closed.returncode != 0, closed.stdout
