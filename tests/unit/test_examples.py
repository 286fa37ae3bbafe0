"""The recipes are real workflows: actionlint-clean, shown verbatim in docs/recipes.md, and
each one listed in the README."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from linters import run_tool, tool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yml"))
RECIPES = ROOT / "docs" / "recipes.md"


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
def test_recipe_is_shown_verbatim_in_the_recipes_page(path: Path) -> None:
    assert path.read_text().rstrip() in RECIPES.read_text()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_recipe_is_listed_in_readme(path: Path) -> None:
    # The README lists every recipe, one line each, linking the workflow file itself.
    assert f"](docs/examples/{path.name})" in (ROOT / "README.md").read_text()


# -- concurrency groups that must not drop a run ---------------------------------------------------
# A pull_request trigger without `types` starts runs for these three activity types (GitHub
# Actions docs, "Events that trigger workflows").
DEFAULT_ACTIVITY_TYPES = {
    "pull_request": ("opened", "synchronize", "reopened"),
    "pull_request_target": ("opened", "synchronize", "reopened"),
}


def run_kinds(on: Any) -> set[str]:
    """The kinds of run a workflow's `on:` starts: one per event, or one per activity type of an
    event that has them (`pull_request: {types: [opened, closed]}` starts two kinds)."""
    # `on: push`, `on: [push, pull_request]` or a mapping of event → its configuration.
    events = on if isinstance(on, dict) else dict.fromkeys([on] if isinstance(on, str) else on)
    kinds: set[str] = set()
    for event, config in events.items():
        listed = config.get("types") if isinstance(config, dict) else None  # schedule: a list
        types = listed or DEFAULT_ACTIVITY_TYPES.get(event) or ("",)
        kinds.update(f"{event}.{t}" if t else event for t in types)
    return kinds


def concurrency_blocks(workflow: dict[Any, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, block) for the workflow's `concurrency` and each job's, the string form made the
    mapping it stands for."""
    found = [("workflow", workflow.get("concurrency"))]
    found += [(f"job {name}", job.get("concurrency")) for name, job in workflow["jobs"].items()]
    return [
        (where, {"group": block} if isinstance(block, str) else dict(block))
        for where, block in found
        if block is not None
    ]


def lossy_concurrency(recipes: dict[str, str]) -> list[str]:
    """What in these workflows (name → YAML text) can drop a run that closes or migrates:

    - A concurrency group entered by more than one kind of run (two recipes, or two events or
      activity types of one recipe) must say `cancel-in-progress: false` and `queue: max`. A
      group keeps one running and, without `queue: max`, one waiting run: "any existing pending
      job or workflow in the same concurrency group ... will be canceled and the new queued job or
      workflow will take its place" (GitHub Actions docs, "Control the concurrency of workflows
      and jobs"). The cancelled one can be a pull request's `closed` run or a migration, and
      nothing runs it again. `queue: max` keeps up to 100 waiting runs, in order (GitHub
      changelog, 2026-05-07, "GitHub Actions concurrency groups now allow larger queues").
    - No group may cancel a running run (`cancel-in-progress` other than false): an unexpose or a
      migration would stop half-way.

    A group of one kind of run (one recipe, one event and activity type) may drop a waiting run:
    the run that replaces it does the same work, on a newer commit. Groups are compared as
    GitHub compares them, ignoring case; one that names `github.run_id` is unique to its run."""
    entered: dict[str, set[str]] = {}
    blocks: list[tuple[str, str, dict[str, Any]]] = []
    for name, text in recipes.items():
        workflow = yaml.safe_load(text)
        kinds = run_kinds(workflow[True])  # YAML reads the key `on` as True
        for where, block in concurrency_blocks(workflow):
            group = " ".join(str(block.get("group", "")).lower().split())
            if "github.run_id" not in group:
                entered.setdefault(group, set()).update(f"{name}:{k}" for k in kinds)
                blocks.append((f"{name} ({where})", group, block))
    problems = []
    for where, group, block in blocks:
        if block.get("cancel-in-progress", False) is not False:
            problems.append(f"{where}: cancel-in-progress must be false in group {group!r}")
        if len(entered[group]) > 1 and block.get("queue") != "max":
            runs = ", ".join(sorted(entered[group]))
            problems.append(f"{where}: {group!r} takes several kinds of run ({runs}): queue: max")
    return problems


def test_no_recipe_concurrency_group_can_drop_a_close_or_a_migration() -> None:
    """See lossy_concurrency for the rule; every recipe together, as a user copies several."""
    recipes = {path.name: path.read_text() for path in EXAMPLES}
    assert lossy_concurrency(recipes) == []


def test_the_concurrency_rule_catches_a_shared_group_without_a_queue() -> None:
    push = "on: {push: {branches: [main]}}\n"
    pr = "on: {pull_request: {types: [opened, closed]}}\n"
    job = "jobs: {a: {runs-on: x, steps: [{run: 'true'}]}}\n"
    shared = "concurrency: {group: DB, cancel-in-progress: false}\n"
    queued = "concurrency: {group: db, cancel-in-progress: false, queue: max}\n"
    # Two recipes, one group, no queue: a migration waiting behind a close is dropped by the next.
    assert len(lossy_concurrency({"a": push + shared + job, "b": pr + shared + job})) == 2
    assert lossy_concurrency({"a": push + queued + job, "b": pr + queued + job}) == []
    # One recipe whose close and open share a group: its own `closed` run can be dropped.
    assert len(lossy_concurrency({"b": pr + shared + job})) == 1
    # One kind of run: the newer push does the older one's work.
    assert lossy_concurrency({"a": push + shared + job}) == []
    # `pull_request` without types is three kinds; a string is a group without a queue.
    assert len(lossy_concurrency({"c": "on: pull_request\nconcurrency: g\n" + job})) == 1
    # Unique per run: never shared.
    per_run = "concurrency: {group: 'x-${{ github.run_id }}'}\n"
    assert lossy_concurrency({"a": push + per_run + job, "b": pr + per_run + job}) == []
    # A running close or migration is never cancelled.
    cancel = "concurrency: {group: a, cancel-in-progress: true}\n"
    assert len(lossy_concurrency({"a": push + cancel + job})) == 1


# -- zizmor, as a user runs it on a copied recipe --------------------------------------------------
# The recipes name the action by its major tag (`org/fly-pg-external@v1`), as docs/versioning.md
# explains; every other action is pinned by commit. fork-safe.yml uses
# `workflow_run` on purpose, and says what that means at its top.
ZIZMOR_RECIPES = """\
rules:
  unpinned-uses:
    config:
      policies:
        "org/fly-pg-external": ref-pin
        "*": hash-pin
  dangerous-triggers:
    ignore:
      - fork-safe.yml
"""


def test_recipes_pass_zizmor(tmp_path: Path) -> None:
    config = tmp_path / "zizmor.yml"
    config.write_text(ZIZMOR_RECIPES)
    run_tool(tool("zizmor"), "--offline", "--no-progress", "--config", config, *EXAMPLES)
