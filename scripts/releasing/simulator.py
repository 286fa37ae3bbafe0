"""The Fly simulator the run by digest runs the image against: a process of its own
(scripts/self_test_simulator.py, as the self-test workflow serves it), asked for a report of
what it saw."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import SCRIPTS, Config
from .errors import ReleaseError


@dataclass
class SimulatorProcess:
    process: subprocess.Popen[bytes] | None
    env: dict[str, str]
    report: Path

    def stop(self) -> dict[str, Any]:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return dict(json.loads(self.report.read_text())) if self.report.exists() else {}

    def snapshot(self) -> dict[str, Any]:
        """The simulator's report as of now (SIGUSR1 makes it write one): the mutating requests
        so far and the app's public IPs. Empty in a dry run."""
        if self.process is None:
            return {}
        self.report.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not self.report.exists():  # written whole, by a rename
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ReleaseError("Simulator", "the Fly simulator wrote no report on SIGUSR1")
            time.sleep(0.05)
        return dict(json.loads(self.report.read_text()))


def start_simulator(cfg: Config, tmp: Path) -> SimulatorProcess:
    env_file, report = tmp / "sim.env", tmp / "sim.json"
    if cfg.dry_run:
        env = {
            "FLY_API_BASE_URL": "http://127.0.0.1:<port>",
            "FLY_FLAPS_BASE_URL": "http://127.0.0.1:<port>",
        }
        return SimulatorProcess(None, {**env, "SIM_FLY_API_TOKEN": "<token>"}, report)
    argv = [cfg.simulator_python, str(SCRIPTS / "self_test_simulator.py"), "--host", "127.0.0.1"]
    with (tmp / "sim.log").open("wb") as sim_log:
        process = subprocess.Popen(
            [*argv, "--env-file", str(env_file), "--report", str(report)],
            stdout=sim_log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while not env_file.exists() or not env_file.read_text().endswith("\n"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log_text = (tmp / "sim.log").read_text(errors="replace")[-2000:]
            raise ReleaseError("Simulator", f"the Fly simulator did not start:\n{log_text}")
        time.sleep(0.05)
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return SimulatorProcess(process, env, report)
