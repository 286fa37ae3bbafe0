"""The step state: what the main step saves reaches the post step as the runner hands it over."""

from __future__ import annotations

import io
from pathlib import Path

from runner_step import parse_file_command  # the runner's side (scripts/, tests/conftest.py)

from fly_pg_external import step_state
from fly_pg_external.gha import Actions
from fly_pg_external.step_state import StepState


def saved_by_main_step(tmp_path: Path) -> dict[str, str]:
    state_file = tmp_path / "save_state"
    state_file.touch()
    gha = Actions({"GITHUB_STATE": str(state_file)}, out=io.StringIO())
    step_state.save_holder(gha, "acme/infra#run-1-1-test-0a1b2c3d")
    step_state.save_allocated(gha, ["169.155.49.1"])
    step_state.save_allocated(gha, ["169.155.49.1", "2a09:8280:1::2"])
    step_state.save_comment_url(gha, "https://github.com/acme/infra/pull/5#issuecomment-7")
    return parse_file_command(state_file.read_text(encoding="utf-8"))


def test_the_post_step_loads_what_the_main_step_saved_last(tmp_path: Path) -> None:
    saved = saved_by_main_step(tmp_path)
    # The runner passes each saved name to the post step as STATE_<name>, among other variables.
    env = {"PATH": "/usr/bin", **{f"STATE_{name}": value for name, value in saved.items()}}

    assert step_state.load(env) == StepState(
        holder="acme/infra#run-1-1-test-0a1b2c3d",
        allocated=("169.155.49.1", "2a09:8280:1::2"),
        comment_url="https://github.com/acme/infra/pull/5#issuecomment-7",
    )
    assert StepState.from_saved(saved) == step_state.load(env)


def test_a_main_step_that_saved_nothing_leaves_an_empty_state() -> None:
    assert step_state.load({"PATH": "/usr/bin"}) == StepState()
    assert step_state.load({"STATE_ALLOCATED": ""}).allocated == ()
    assert StepState.from_saved({"OTHER": "x"}) == StepState()
