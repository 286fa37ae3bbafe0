"""Every action pinned by commit runs on a runtime GitHub still has.

GitHub stops running an action whose metadata declares a removed Node (`runs.using: node20`
and older) and the job fails, so a pin that looks fine can stop working on a date nobody
chose. The tests run offline: .github/action-runtimes.json records, for each `owner/repo@sha`
used in the workflows, the recipes (docs/examples, docs/recipes.md), the README and action.yml,
the `runs.using` its action.yml declares at that commit (its `about` says how it was read and
how to refresh it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / ".github" / "action-runtimes.json"
# Node 12 and 16 were removed from the runners before 2025; Node 20 actions are forced onto
# Node 24 from 2026-06-02 and Node 20 is removed from the runners on 2026-09-16 (GitHub
# changelog, 2025-09-19, "Deprecation of Node 20 on GitHub Actions runners").
REMOVED = {"node12", "node16", "node20"}
RUNNABLE = {"node24", "docker", "composite"}
# This action itself: the recipes name it by its major tag (docs/versioning.md).
THIS_ACTION = "org/fly-pg-external"
USES = re.compile(r"""^[\s-]*uses:\s*["']?([^\s"'#]+)""", re.M)
SHA_PIN = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+(?:/[\w./-]+)?)@(?P<sha>[0-9a-f]{40})$")


def scanned_files() -> list[Path]:
    return [
        *sorted((ROOT / ".github" / "workflows").glob("*.yml")),
        *sorted((ROOT / "docs" / "examples").glob("*.yml")),
        ROOT / "docs" / "recipes.md",
        ROOT / "README.md",
        ROOT / "action.yml",
    ]


def uses_in(path: Path) -> list[str]:
    return [u for u in USES.findall(path.read_text()) if not u.startswith(("./", "docker://"))]


def pins() -> dict[str, list[str]]:
    """owner/repo[/path]@sha → the files that pin it."""
    found: dict[str, list[str]] = {}
    for path in scanned_files():
        for use in uses_in(path):
            if SHA_PIN.match(use):
                found.setdefault(use, []).append(str(path.relative_to(ROOT)))
    return found


def table() -> dict[str, dict[str, Any]]:
    data = json.loads(TABLE.read_text())
    entries: dict[str, dict[str, Any]] = data["pins"]
    return entries


def runtime_problems(pinned: set[str], entries: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with these pins given the table: a pin it lacks, a runtime GitHub no longer
    runs (or one this test does not know), a composite action whose steps pull in such a pin,
    and entries nothing pins any more."""
    problems: list[str] = []
    reached: set[str] = set()
    todo = sorted(pinned)
    while todo:
        pin = todo.pop()
        if pin in reached:
            continue
        reached.add(pin)
        entry = entries.get(pin)
        if entry is None:
            problems.append(f"{pin}: not in {TABLE.name}; read its action.yml and add it")
            continue
        using = str(entry.get("using", ""))
        if using in REMOVED:
            problems.append(f"{pin} ({entry.get('tag')}): runs on {using}, which GitHub removed")
        elif using not in RUNNABLE:
            problems.append(f"{pin}: runs.using {using!r} is not one of {sorted(RUNNABLE)}")
        nested = entry.get("uses", [])
        if using == "composite":
            todo += nested
        elif nested:
            problems.append(f"{pin}: only a composite action lists the actions it uses")
    problems += [
        f"{pin}: pinned nowhere any more; drop it" for pin in sorted(set(entries) - reached)
    ]
    return problems


def test_every_pinned_action_runs_on_a_runtime_github_still_has() -> None:
    found = pins()
    assert found, "no action pinned by commit found"
    assert runtime_problems(set(found), table()) == []


def test_every_other_action_is_pinned_by_commit() -> None:
    """A pin by tag would escape the table: every action but this one is pinned by commit."""
    loose = {
        f"{path.relative_to(ROOT)}: {use}"
        for path in scanned_files()
        for use in uses_in(path)
        if not SHA_PIN.match(use) and not use.startswith(f"{THIS_ACTION}@")
    }
    assert loose == set()


def test_every_entry_says_where_it_was_read() -> None:
    for pin, entry in table().items():
        action, sha = SHA_PIN.fullmatch(pin).group("action", "sha")  # type: ignore[union-attr]
        repo = "/".join(action.split("/")[:2])
        subpath = action.split("/", 2)[2] + "/" if action.count("/") > 1 else ""
        assert entry["source"] == f"https://github.com/{repo}/blob/{sha}/{subpath}action.yml", pin
        assert entry["tag"], pin


def test_this_action_runs_on_a_runtime_github_has() -> None:
    using = yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["using"]
    assert using in RUNNABLE


def test_the_check_catches_a_removed_runtime_a_missing_pin_and_a_stale_entry() -> None:
    sha = "a" * 40
    entries: dict[str, dict[str, Any]] = {
        f"x/old@{sha}": {"tag": "v1", "using": "node20"},
        f"x/wrap@{sha}": {"tag": "v2", "using": "composite", "uses": [f"x/inner@{sha}"]},
        f"x/stale@{sha}": {"tag": "v3", "using": "node24"},
    }
    problems = runtime_problems({f"x/old@{sha}", f"x/wrap@{sha}", f"x/new@{sha}"}, entries)
    assert {p.split(":")[0] for p in problems} == {
        f"x/old@{sha} (v1)",  # node20: removed
        f"x/new@{sha}",  # not in the table
        f"x/inner@{sha}",  # pulled in by a composite action, not in the table
        f"x/stale@{sha}",  # pinned nowhere
    }, problems
    assert len(problems) == 4
    # A pin a composite action pulls in is not stale.
    entries[f"x/inner@{sha}"] = {"tag": "v4", "using": "node24"}
    assert runtime_problems({f"x/wrap@{sha}"}, entries) == [
        f"x/old@{sha}: pinned nowhere any more; drop it",
        f"x/stale@{sha}: pinned nowhere any more; drop it",
    ]
