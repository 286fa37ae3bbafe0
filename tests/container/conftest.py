"""What every container test needs: a Docker daemon, and the base image the action's Dockerfile
is built on here (the local stand-in for python:3.12-slim, unless FLY_PG_EXTERNAL_BASE_IMAGE
names another)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def docker_daemon() -> None:
    """Skips without Docker; under CI, where .ci/run starts it, fails instead."""
    problem = ""
    if shutil.which("docker") is None:
        problem = "the docker CLI is not installed"
    else:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if info.returncode != 0:
            problem = f"no Docker daemon answers: {info.stderr.strip()[:300]}"
    if problem:
        if in_ci():
            pytest.fail(f"CI is set but {problem}; .ci/run installs and starts Docker.")
        pytest.skip(f"container tests need Docker and {problem} (CI would fail here)")


@pytest.fixture(scope="session")
def base_image(docker_daemon: None) -> str | None:
    """The base image to build on, or None for the Dockerfile's own."""
    choice = os.environ.get("FLY_PG_EXTERNAL_BASE_IMAGE", "standin")
    if choice == "dockerfile-default":
        return None
    if choice != "standin":
        return choice
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-standin-base.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            "could not build the stand-in base image (scripts/build-standin-base.sh; it needs "
            f"root for debootstrap, e.g. `sudo make standin-base`):\n{proc.stderr[-3000:]}"
        )
    return proc.stdout.strip().splitlines()[-1]
