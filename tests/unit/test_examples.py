"""The README's recipes are real workflows: actionlint-clean and identical to docs/examples."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yml"))


def actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(found).exists():
        pytest.fail("actionlint is not installed (pip install -e '.[dev]')")
    return found


def test_there_are_recipes() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_recipe_passes_actionlint(path: Path, tmp_path: Path) -> None:
    # actionlint only lints files under .github/workflows of a repository.
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    shutil.copy(path, wf / path.name)
    proc = subprocess.run(
        [actionlint(), "-no-color", str(wf / path.name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_recipe_is_shown_verbatim_in_readme(path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert path.read_text().rstrip() in readme
