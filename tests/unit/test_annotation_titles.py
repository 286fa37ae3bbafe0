"""Every annotation the action prints has a title that says what it is about, so the run's
summary lists "Lease refresh failed" or "Address kept", not a column of bare "Warning"s.

The cheap strong check reads the source: a warning or error logged without `extra={"title": ...}`
(log.py turns it into the annotation's title), or written with `gha.warning`/`gha.error` without
`title=`, fails here. The plan's warnings are text only; describe.py names them by how they
start, and the last tests check that every kind the plan makes gets a name of its own.
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path
from typing import Any

import pytest

from fly_pg_external.describe import WARNING_TITLES, describe_plan
from fly_pg_external.domain import AppInfo, ClusterState, IpAddress
from fly_pg_external.fly.machines import machine_from_api
from fly_pg_external.gha import Actions
from fly_pg_external.intent import Intent
from fly_pg_external.log import to_workflow
from fly_pg_external.ownership import RECORD_KEY
from fly_pg_external.plan import Plan, make_plan
from fly_pg_external.settings import Settings, from_environ

from machines_data import machine

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "fly_pg_external"

# `log.warning(...)` and its kin: the title goes in `extra={"title": ...}`.
LOGGERS = {"log", "logger", "logging", "_log", "LOG"}
LOG_LEVELS = {"warning", "warn", "error", "exception", "critical", "fatal", "log"}
# `gha.warning(...)`: the workflow-command writer, whose title is the `title=` keyword.
WRITERS = {"gha", "actions"}
WRITER_LEVELS = {"notice", "warning", "error"}


def receiver(call: ast.Call) -> str | None:
    """The last name of what a method is called on: `log` for `log.warning`, `gha` for
    `self.gha.warning`."""
    if not isinstance(call.func, ast.Attribute):
        return None
    value = call.func.value
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Attribute):
        return value.attr
    return None


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def logged_title(call: ast.Call) -> ast.expr | None:
    extra = keyword(call, "extra")
    if not isinstance(extra, ast.Dict):
        return None
    for key, value in zip(extra.keys, extra.values, strict=True):
        if isinstance(key, ast.Constant) and key.value == "title":
            return value
    return None


def annotations(path: Path) -> list[tuple[int, str, ast.expr | None]]:
    """Each call in `path` that prints an annotation: its line, its text, and its title."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        who, level = receiver(node), node.func.attr
        if who in LOGGERS and level in LOG_LEVELS:
            found.append((node.lineno, ast.unparse(node), logged_title(node)))
        elif who in WRITERS and level in WRITER_LEVELS:
            found.append((node.lineno, ast.unparse(node), keyword(node, "title")))
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_every_warning_and_error_has_a_title() -> None:
    untitled = [
        f"{relative(path)}:{line}: {text}"
        for path in modules()
        for line, text, title in annotations(path)
        if title is None
    ]
    assert untitled == [], "\n".join(untitled)


def test_the_scan_finds_the_calls_it_is_meant_to() -> None:
    # A scan that matched nothing would pass whatever the code does.
    calls = [text for path in modules() for _, text, _ in annotations(path)]
    assert any(t.startswith("log.warning(") for t in calls)
    assert any(t.startswith("log.error(") for t in calls)
    assert any(t.startswith("self.gha.warning(") for t in calls)


def literal_titles() -> list[tuple[str, str]]:
    """Every title written as a string in the package, where it is written."""
    titles = []
    for path in modules():
        for line, _, title in annotations(path):
            if isinstance(title, ast.Constant) and isinstance(title.value, str):
                titles.append((f"{relative(path)}:{line}", title.value))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            # Class titles (errors.py) and module constants named like one.
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any(n == "title" or n.endswith("_TITLE") for n in names):
                    titles.append((f"{relative(path)}:{node.lineno}", str(node.value.value)))
    return titles


def bad_title(title: str) -> bool:
    # The runner escapes ":" and "," in a property; a title is a few words, not a sentence.
    return not title.strip() or bool(re.search(r"[:,%\n]", title)) or len(title.split()) > 6


def test_titles_are_a_few_plain_words() -> None:
    titles = literal_titles()
    assert titles, "no titles found"
    assert [(where, t) for where, t in titles if bad_title(t)] == []


# -- the plan's warnings -----------------------------------------------------------------------

V4 = IpAddress("ip1", "137.66.1.2", "v4", "global", "2026-01-02T00:00:00Z")


def settings(**inputs: str) -> Settings:
    env = {"INPUT_APP": "my-db", "INPUT_FLY-API-TOKEN": "fo1_x"}
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return from_environ(env, lambda n: env.get("INPUT_" + n.upper()))


def intent(**inputs: str) -> Intent:
    """What the planner gets from a run with these inputs."""
    return settings(**inputs).intent


def cluster(
    machines: list[dict[str, Any]], ips: tuple[IpAddress, ...] = (), shared: str | None = None
) -> ClusterState:
    app = AppInfo("app1", "my-db", "postgres_cluster", ips, shared)
    return ClusterState.of(app, [machine_from_api(m) for m in machines])


def plans() -> dict[str, Plan]:
    """Plans that between them make every kind of warning the plan has."""
    down = {**machine("m3"), "host_status": "unreachable"}
    legacy = [machine("m1", "primary", legacy=True), machine("m2", legacy=True), down]
    bad_record = machine("m1", "primary")
    bad_record["config"].setdefault("metadata", {})[RECORD_KEY] = "not json"
    return {
        "expose": make_plan(intent(**{"dry-run": "true"}), cluster(legacy, shared="66.241.1.1")),
        "v6 only": make_plan(intent(**{"ip-versions": "v6"}), cluster([machine("m1", "primary")])),
        "unexpose": make_plan(intent(mode="unexpose"), cluster([machine("m1", "primary")], (V4,))),
        "bad record": make_plan(intent(mode="unexpose"), cluster([bad_record], (V4,))),
    }


def test_every_kind_of_plan_warning_has_its_own_title() -> None:
    kinds = {w.kind for plan in plans().values() for w in plan.warnings}
    assert kinds == set(WARNING_TITLES), "the plans above make every kind"
    assert len(set(WARNING_TITLES.values())) == len(WARNING_TITLES)
    assert [t for t in WARNING_TITLES.values() if bad_title(t)] == []


@pytest.mark.parametrize("name", ["expose", "v6 only", "unexpose"])
def test_describe_plan_prints_every_warning_with_a_title(name: str) -> None:
    plan = plans()[name]
    out = io.StringIO()
    with to_workflow(Actions(env={}, out=out)):
        describe_plan(plan)
    printed = [line for line in out.getvalue().splitlines() if line.startswith("::warning")]
    assert len(printed) == len(plan.warnings) > 0
    assert [line for line in printed if not line.startswith("::warning title=")] == []
    # The text after the title is the plan's warning, unchanged.
    assert [line.split("::", 2)[2] for line in printed] == [w.text for w in plan.warnings]
