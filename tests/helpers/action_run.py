"""Run the action the way the runner does and read back what it wrote."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "entrypoint.py"
TOKEN = "fo1_simulatortoken_0123456789"

_HEREDOC = re.compile(
    r"^(?P<name>[^\n<]+)<<(?P<delim>ghadelimiter_[0-9a-f-]+)\n(?P<value>.*?)\n(?P=delim)\n",
    re.S | re.M,
)


def parse_outputs(text: str) -> dict[str, str]:
    return {m["name"]: m["value"] for m in _HEREDOC.finditer(text)}


@dataclass
class ActionResult:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str
    workdir: Path
    files: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    def errors(self) -> list[str]:
        """The `::error::` lines, their properties (the annotation's title) left out."""
        return [
            re.sub(r"^::error [^:]*::", "::error::", line)
            for line in self.log.splitlines()
            if line.startswith("::error")
        ]

    def error_titles(self) -> list[str]:
        return [
            m.group(1)
            for line in self.log.splitlines()
            if (m := re.match(r"^::error title=([^:,]*)", line))
        ]


def action_env(sim: Any, tmp_path: Path, inputs: dict[str, str]) -> dict[str, str]:
    """Environment of a run: INPUT_* names with hyphens kept, as the runner exports them."""
    files = tmp_path / "file_commands"
    files.mkdir(parents=True, exist_ok=True)
    (files / "output").touch()
    (files / "summary").touch()
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(files / "output"),
        "GITHUB_STEP_SUMMARY": str(files / "summary"),
        "RUNNER_TEMP": str(tmp_path / "runner_temp"),
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "GITHUB_REPOSITORY": "acme/infra",
        "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
        "FLY_API_BASE_URL": sim.api_base_url,
        "FLY_FLAPS_BASE_URL": sim.flaps_base_url,
        "FLY_PG_EXTERNAL_VERIFY_TIMEOUT": "10",
        "INPUT_FLY-API-TOKEN": TOKEN,
        "INPUT_VERIFY": "false",
        "INPUT_PR-COMMENT": "false",
        "INPUT_GITHUB-TOKEN": "",
        # Most tests follow holds across runs, so their runs hold until an unexpose; the tests
        # of `lifetime: job` and of the action's defaults say so in their inputs.
        "INPUT_LIFETIME": "persistent",
    }
    for key, value in inputs.items():
        env["INPUT_" + key.upper()] = value
    return env


def _result(code: int, out: str, err: str, env: dict[str, str], tmp_path: Path) -> ActionResult:
    outputs = parse_outputs(Path(env["GITHUB_OUTPUT"]).read_text())
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    files: dict[str, str] = {}
    temp = Path(env["RUNNER_TEMP"])
    if temp.exists():
        for p in temp.rglob("*"):
            if p.is_file():
                files[str(p)] = p.read_text()
    return ActionResult(code, out, err, outputs, summary, tmp_path, files)


def run_subprocess(
    sim: Any,
    tmp_path: Path,
    inputs: dict[str, str],
    extra_env: dict[str, str] | None = None,
    timeout: float = 240,
) -> ActionResult:
    """`python entrypoint.py` in a fresh process, from an unrelated working directory."""
    env = action_env(sim, tmp_path, inputs)
    env.update(extra_env or {})
    return _run_script(ENTRYPOINT, env, tmp_path, timeout)


def _run_script(script: Path, env: dict[str, str], tmp_path: Path, timeout: float) -> ActionResult:
    """`script` in a fresh process with `env` over this process's environment (less the
    runner's own variables), from an unrelated working directory."""
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INPUT_", "GITHUB_", "FLY_", "STATE_"))
    }
    full.update(env)
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=full,
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return _result(proc.returncode, proc.stdout, proc.stderr, env, tmp_path)


def run_inprocess(
    sim: Any, tmp_path: Path, inputs: dict[str, str], extra_env: dict[str, str] | None = None
) -> ActionResult:
    """`main(env)` in this process: faster, and lets a test inspect the simulator meanwhile."""
    from fly_pg_external.main import main

    env = action_env(sim, tmp_path, inputs)
    env.update(extra_env or {})
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(env)
    return _result(code, buf.getvalue(), "", env, tmp_path)


# -- a job: the main step, then the post step with the state the main step saved --------------

POST_ENTRYPOINT = ROOT / "post.py"


def _read_line(text: str, index: int) -> tuple[str | None, int, str | None]:
    """The runner's `ReadLine`: the line from `index`, the index after it, and the newline that
    ended it (None at the end of the text)."""
    if index >= len(text):
        return None, index, None
    lf = text.find("\n", index)
    if lf < 0:
        return text[index:], len(text), None
    if lf > index and text[lf - 1] == "\r":
        return text[index : lf - 1], lf + 1, "\r\n"
    return text[index:lf], lf + 1, "\n"


def parse_file_command(text: str) -> dict[str, str]:
    """Key/value pairs of a GITHUB_STATE (or GITHUB_OUTPUT/GITHUB_ENV) file, read as the runner
    reads them (`FileCommandManager`): `name=value` lines and `name<<DELIM` heredocs (as
    actions-toolkit's `prepare_key_value_message` writes them); empty lines are skipped, a later
    value of a name replaces an earlier one. A line of neither form, or a heredoc without its
    delimiter line, is an error, as it fails the step on a runner."""
    pairs: dict[str, str] = {}
    line, index, _ = _read_line(text, 0)
    while line is not None:
        if line:
            equals, heredoc = line.find("="), line.find("<<")
            if equals >= 0 and (heredoc < 0 or equals < heredoc):
                key, value = line.split("=", 1)
            elif heredoc >= 0:
                key, delimiter = line.split("<<", 1)
                if not key or not delimiter:
                    raise ValueError(f"invalid heredoc line {line!r}")
                start = end = index
                current, index, newline = _read_line(text, index)
                while current != delimiter:
                    if current is None:
                        raise ValueError(f"matching delimiter not found: {delimiter!r}")
                    if newline is None:
                        raise ValueError("EOF marker missing new line")
                    end = index - len(newline)
                    current, index, newline = _read_line(text, index)
                value = text[start:end] if end > start else ""
            else:
                raise ValueError(f"invalid format {line!r}")
            if not key:
                raise ValueError(f"empty name in {line!r}")
            pairs[key] = value
        line, index, _ = _read_line(text, index)
    return pairs


def _state_path(tmp_path: Path) -> Path:
    return tmp_path / "file_commands" / "state"


def run_main_step(
    sim: Any,
    tmp_path: Path,
    inputs: dict[str, str],
    extra_env: dict[str, str] | None = None,
    timeout: float = 240,
) -> ActionResult:
    """`python entrypoint.py` as `run_subprocess` runs it, with a GITHUB_STATE file (the runner
    always gives one); read what it saved with `step_state(result)`."""
    state = _state_path(tmp_path)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.touch()
    env = {"GITHUB_STATE": str(state), **(extra_env or {})}
    return run_subprocess(sim, tmp_path, inputs, env, timeout)


def step_state(result: ActionResult) -> dict[str, str]:
    """The state a step run by `run_main_step` saved for its post step (name → value)."""
    return parse_file_command(_state_path(result.workdir).read_text(encoding="utf-8"))


def run_post_step(
    sim: Any,
    tmp_path: Path,
    inputs: dict[str, str],
    state: dict[str, str],
    *,
    extra_env: dict[str, str] | None = None,
    timeout: float = 240,
) -> ActionResult:
    """The post step as the runner runs it: `python post.py` in a fresh process with the main
    step's INPUT_* values, `STATE_<name>` for each value the main step saved, and a fresh step
    summary and output file (give it a `tmp_path` of its own)."""
    env = action_env(sim, tmp_path, inputs)
    env.update(extra_env or {})
    env.update({f"STATE_{name}": value for name, value in state.items()})
    return _run_script(POST_ENTRYPOINT, env, tmp_path, timeout)


def warnings_of(result: ActionResult) -> list[str]:
    """The `::warning::` lines, their properties left out."""
    return [
        re.sub(r"^::warning [^:]*::", "::warning::", line)
        for line in result.log.splitlines()
        if line.startswith("::warning")
    ]
