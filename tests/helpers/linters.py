"""Running the offline linters of the dev extra (actionlint, zizmor, check-jsonschema, hadolint)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """The linter installed next to this interpreter (the dev extra), else one on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed; it comes with the dev extra: pip install -e '.[dev]'"
        )
    return found


def run_tool(*args: str | Path) -> None:
    """Run a linter from the repository root; any finding fails the test with its report."""
    proc = subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        report = (proc.stdout + proc.stderr).strip()
        pytest.fail(f"{Path(str(args[0])).name} reported findings:\n{report}", pytrace=False)
