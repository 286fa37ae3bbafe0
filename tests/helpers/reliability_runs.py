"""Runs of the action for the reliability suite: every run is checked for leaks and injections.

`checked(...)` wraps `action_run.run_subprocess` / `run_inprocess`; `Background` starts
`python entrypoint.py` with Popen (for races, signals and clients running meanwhile) and turns it
into the same ActionResult once it exits. Either way the result goes through the leak scanner and
the runner's command parser before the test sees it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import leaks
import workflow_log

from action_run import (
    ENTRYPOINT,
    TOKEN,
    ActionResult,
    action_env,
    parse_outputs,
    run_inprocess,
    run_subprocess,
)

PASSWORD = "s3cr3t/p@ss:w0rd+%é"
GITHUB_TOKEN = "ghs_Reliability0Suite0Fake0Token0xyz"
# What must never show: label → value (the scanner looks for every spelling of each).
SECRETS: dict[str, str] = {"fly token": TOKEN, "database password": PASSWORD}


def check(
    result: ActionResult,
    secrets: Mapping[str, str] = SECRETS,
    *,
    extra: Mapping[str, str] | None = None,
    killed: bool = False,
) -> ActionResult:
    """Leak scan and command-injection check of one finished (or `killed`) run."""
    leaks.assert_no_leaks(result, secrets, extra=extra)
    for stream in ("stdout", "stderr"):
        workflow_log.assert_no_injected_commands(
            getattr(result, stream), where=stream, require_resumed=not killed
        )
    return result


def checked(
    sim: Any,
    tmp_path: Path,
    inputs: dict[str, str],
    extra_env: dict[str, str] | None = None,
    *,
    inprocess: bool = False,
    secrets: Mapping[str, str] = SECRETS,
    timeout: float = 240,
) -> ActionResult:
    if inprocess:
        result = run_inprocess(sim, tmp_path, inputs, extra_env)
    else:
        result = run_subprocess(sim, tmp_path, inputs, extra_env, timeout=timeout)
    return check(result, secrets)


def result_from(
    code: int, out: str, err: str, env: Mapping[str, str], tmp_path: Path
) -> ActionResult:
    output_file, summary_file = Path(env["GITHUB_OUTPUT"]), Path(env["GITHUB_STEP_SUMMARY"])
    # Either may point somewhere unwritable on purpose (the failure-path tests).
    outputs = (
        parse_outputs(output_file.read_text(encoding="utf-8")) if output_file.is_file() else {}
    )
    summary = summary_file.read_text(encoding="utf-8") if summary_file.is_file() else ""
    files: dict[str, str] = {}
    temp = Path(env["RUNNER_TEMP"])
    if temp.exists():
        for p in temp.rglob("*"):
            if p.is_file():
                files[str(p)] = p.read_text(encoding="utf-8")
    return ActionResult(code, out, err, outputs, summary, tmp_path, files)


class Background:
    """`python entrypoint.py` running while the test does other things."""

    def __init__(
        self,
        sim: Any,
        tmp_path: Path,
        inputs: dict[str, str],
        extra_env: dict[str, str] | None = None,
        *,
        script: Path = ENTRYPOINT,
    ) -> None:
        self.tmp_path = tmp_path
        self.env = action_env(sim, tmp_path, inputs)
        self.env.update(extra_env or {})
        full = {
            k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_", "FLY_"))
        }
        full.update(self.env)
        workspace = tmp_path / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            env=full,
            cwd=workspace,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def finish(
        self, timeout: float = 120, *, secrets: Mapping[str, str] = SECRETS, killed: bool = False
    ) -> ActionResult:
        """Wait for the exit; check the run (a `killed` one may end inside a fenced block)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(
                f"the run did not finish within {timeout} s:\n{out}\n{err}"
            ) from None
        result = result_from(self.proc.returncode, out, err, self.env, self.tmp_path)
        return check(result, secrets, killed=killed)

    def kill(self) -> None:
        """Stop the process for good (test cleanup); its output is not checked."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
