"""A container action's step, started the way the GitHub runner's ContainerActionHandler does it.

Shared by the container test (tests/container) and the release's run by digest
(scripts/releasing/run.py), so the runner's contract is written down once: the five directories
it mounts (less /var/run/docker.sock, which the action does not use), a file of each file command
per step, the environment it passes (`INPUT_<NAME>` for every declared input, `STATE_<name>` for
a post step), `--workdir /github/workspace` and, for the post step, `--entrypoint` set to
action.yml's `runs.post-entrypoint`. Standard library only: the release runs it outside the
development environment too.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOUNTS = ("workspace", "home", "workflow", "file_commands", "runner_temp")
# Each file command's variable and the prefix of its per-step file name.
FILE_COMMANDS = {
    "GITHUB_OUTPUT": "set_output",
    "GITHUB_STEP_SUMMARY": "step_summary",
    "GITHUB_ENV": "set_env",
    "GITHUB_PATH": "add_path",
    "GITHUB_STATE": "save_state",
}
# What the runner sets in a container step whatever the workflow (paths as the container sees
# them); the caller adds the repository, the commit and the action's own variables.
RUNNER_ENV = {
    "HOME": "/github/home",
    "CI": "true",
    "GITHUB_ACTIONS": "true",
    "GITHUB_WORKSPACE": "/github/workspace",
    "GITHUB_EVENT_NAME": "workflow_dispatch",
    "GITHUB_EVENT_PATH": "/github/workflow/event.json",
    "GITHUB_RUN_ID": "1",
    "RUNNER_OS": "Linux",
    "RUNNER_TEMP": "/github/runner_temp",
}
_HEREDOC = re.compile(
    r"^(?P<name>[^\n<]+)<<(?P<delim>ghadelimiter_[0-9a-f-]+)\n(?P<value>.*?)\n?(?P=delim)$",
    re.S | re.M,
)


def parse_file_command(text: str) -> dict[str, str]:
    """The `name<<delimiter` records a step wrote to GITHUB_OUTPUT or GITHUB_STATE."""
    return {m["name"]: m["value"] for m in _HEREDOC.finditer(text)}


def runner_inputs(declared: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    """INPUT_* as the runner exports them: every declared input (action.yml's `inputs`), its
    default or "" when unset (a default that is an expression is "": nothing evaluates it)."""
    values = {
        name: "" if "${{" in str((spec or {}).get("default", "")) else str(spec.get("default", ""))
        for name, spec in declared.items()
    }
    values.update(given)
    return {"INPUT_" + name.replace(" ", "_").upper(): value for name, value in values.items()}


@dataclass(frozen=True)
class Step:
    """One step ready to start: `argv` is `docker` arguments up to (not including) the image."""

    argv: list[str]
    file_commands: Path
    files: dict[str, str]  # file command variable → file name in `file_commands`

    def read(self, var: str) -> str:
        return (self.file_commands / self.files[var]).read_text(encoding="utf-8")

    @property
    def outputs(self) -> dict[str, str]:
        return parse_file_command(self.read("GITHUB_OUTPUT"))

    @property
    def state(self) -> dict[str, str]:
        return parse_file_command(self.read("GITHUB_STATE"))


def prepare_step(
    tmp: Path,
    *,
    declared_inputs: Mapping[str, Any],
    inputs: Mapping[str, str],
    env: Mapping[str, str],
    entrypoint: str | None = None,
    state: Mapping[str, str] | None = None,
    platform: str | None = None,
    owner_uid: int | None = None,
    file_mode: int = 0o644,
) -> Step:
    """The mounts under `tmp` (a post step reuses its main step's `tmp`, as the runner reuses
    the job's directories) and a fresh file of each file command. With `entrypoint` and
    `state`, the post step. `owner_uid`: who owns the mounted directories and files, as the
    runner's user does on a real runner."""
    dirs = {name: tmp / name for name in MOUNTS}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
        if owner_uid is not None:
            os.chown(path, owner_uid, owner_uid)
    suffix = uuid.uuid4()
    files = {var: f"{prefix}_{suffix}" for var, prefix in FILE_COMMANDS.items()}
    for name in files.values():
        path = dirs["file_commands"] / name
        path.touch(mode=file_mode)
        if owner_uid is not None:
            os.chown(path, owner_uid, owner_uid)
    (dirs["workflow"] / "event.json").write_text(json.dumps({"inputs": {}}))
    full_env = {
        **RUNNER_ENV,
        **env,
        **{var: f"/github/file_commands/{name}" for var, name in files.items()},
        **runner_inputs(declared_inputs, inputs),
        **{f"STATE_{name}": value for name, value in (state or {}).items()},
    }
    argv = ["run", "--rm"]
    if platform is not None:
        argv += ["--platform", platform]
    argv += ["--network", "host", "--workdir", "/github/workspace"]
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    for name, path in dirs.items():
        argv += ["-v", f"{path}:/github/{name}"]
    for key, value in full_env.items():
        argv += ["-e", f"{key}={value}"]
    return Step(argv, dirs["file_commands"], files)
