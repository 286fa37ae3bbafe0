"""The shape the code keeps: small modules and functions in every package under src/ (the action,
the Fly simulator and the fake GitHub), no import loop among them, a core that does no I/O of its
own making, and tests that use only the simulator's public API (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = SRC / "fly_pg_external"
# Every package under src/: the limits and the import-loop check hold for the test servers too.
PACKAGES = ("fly_pg_external", "flysim", "fakegithub")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# The edges: they talk to the runner, to GitHub, to sockets or to Fly. Everything else is the
# core, which must not import them (or their libraries): it gets Fly through `flyapi.FlyApi`.
EDGES = {
    "main",
    "post",
    "gha",
    "github",
    "publish",
    "holders",
    "forks",
    "verify",
    "pgwire",
    "verification",
    "log",
    "pgroles",
    "credential_steps",
    "steps",
    "pipeline",
}
FORBIDDEN_IN_CORE = (
    *("fly_pg_external.fly", "httpx", "github", "fly_pg_external.github"),
    *("psycopg", "fly_pg_external.pgroles"),
)
# Fly's formats with no I/O: the machine config's typed views and builders, and fly.toml. The
# core reads and changes configs only through them, so the wire shape is known in fly/ alone.
PURE_FLY = ("fly_pg_external.fly.config", "fly_pg_external.fly.flytoml")
# Keys of a machine config's wire shape: where they appear as strings, a module reads or builds
# that JSON itself.
WIRE_KEYS = frozenset({"services", "internal_port", "handlers", "start_port", "end_port"})


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def package_modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def imported(path: Path) -> set[str]:
    """Absolute names of what a module imports, relative imports resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def is_core(path: Path) -> bool:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] != "fly" and relative.stem not in EDGES


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_longer_than_the_limit(package: str) -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in package_modules(package)
        if (n := p.read_text().count("\n")) > MAX_MODULE_LINES
    }
    assert long == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_the_limit(package: str) -> None:
    long = {}
    for path in package_modules(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert long == {}


def imported_modules(
    name: str, source: str, known: set[str], *, is_package: bool = False
) -> set[str]:
    """The modules of ``known`` that module ``name`` (its ``source``) imports, anywhere in it: at
    module level, under ``if TYPE_CHECKING`` and inside functions alike.

    ``from pkg import sub`` names the module ``pkg.sub`` when it is one, else ``pkg`` itself (a
    name its ``__init__`` exports). The package ``__init__`` that Python runs before any of its
    modules is not an edge: it runs whoever imports, so it says nothing about who depends on whom.
    """
    package = name.split(".") if is_package else name.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                names.add(sub if sub in known else module)
    return names & known


def import_loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (or one that imports itself): each is
    a loop, whatever path through it one follows. Tarjan's algorithm."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            members = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(members) > 1 or module in graph[module]:
                loops.append(sorted(members))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return loops


def test_no_import_loop_under_src() -> None:
    """No module reaches itself through imports, across all three packages.

    Every import counts, including those under ``if TYPE_CHECKING`` and inside functions: a loop
    the interpreter is spared at run time is still modules that cannot be read, tested or changed
    one without the others. Behaviours take the state core they work on; the facade in front of
    them imports them, never the other way round.
    """
    paths = {module_name(p): p for package in PACKAGES for p in package_modules(package)}
    known = set(paths)
    graph = {
        name: imported_modules(name, path.read_text(), known, is_package=path.name == "__init__.py")
        for name, path in paths.items()
    }
    assert import_loops(graph) == []


def test_the_loop_check_counts_every_import() -> None:
    assert import_loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}) == [
        ["a", "b", "c"],
        ["d"],
    ]
    source = (
        "from typing import TYPE_CHECKING\n"
        "from flysim import Nothing\n"
        "if TYPE_CHECKING:\n"
        "    from flysim.simulator import Simulator\n"
        "def f():\n"
        "    from . import models, _ids\n"
        "    import flysim.errors\n"
    )
    known = {"flysim", "flysim.simulator", "flysim.models", "flysim._ids", "flysim.errors", "x"}
    assert imported_modules("flysim.probe", source, known) == known - {"x"}
    assert imported_modules("flysim", "from . import models", known, is_package=True) == {
        "flysim.models"
    }


@pytest.mark.parametrize("path", [p for p in modules() if is_core(p)], ids=module_name)
def test_the_core_imports_no_io_layer(path: Path) -> None:
    bad = sorted(
        name
        for name in imported(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_CORE)
        and not any(name == p or name.startswith(p + ".") for p in PURE_FLY)
        # The package itself, to reach a pure module (`from .fly import config`): it imports
        # nothing (test_the_pure_fly_modules_do_no_io).
        and name != "fly_pg_external.fly"
    )
    assert bad == []


@pytest.mark.parametrize("name", PURE_FLY)
def test_the_pure_fly_modules_do_no_io(name: str) -> None:
    path = PACKAGE.parent.joinpath(*name.split(".")).with_suffix(".py")
    io = {"httpx", "socket", "fly_pg_external.fly.http", "fly_pg_external.fly.client"}
    assert sorted(n for n in imported(path) if n.split(".")[0] in io or n in io) == []
    assert imported(PACKAGE / "fly" / "__init__.py") <= {"__future__", "__future__.annotations"}


@pytest.mark.parametrize(
    "path", [p for p in modules() if p.relative_to(PACKAGE).parts[0] != "fly"], ids=module_name
)
def test_no_module_outside_fly_reads_or_builds_the_config_wire_shape(path: Path) -> None:
    """Services, ports and handlers are read through `fly.config`'s views and changed through its
    builders: a Fly field renamed or added is a change in fly/ only."""
    found = sorted(
        {
            node.value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and node.value in WIRE_KEYS
        }
    )
    assert found == []


def test_the_planner_loads_without_httpx_or_pygithub() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import fly_pg_external.plan, fly_pg_external.rollout, "
        "fly_pg_external.outcome, fly_pg_external.report; "
        "print(sorted(m for m in ('httpx', 'github') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_tests_use_only_the_simulators_public_api() -> None:
    """No `sim._x`, `simulator._x` or `Simulator._x` in tests, helpers, benchmarks or scripts."""
    offenders = []
    for folder in ("tests", "bench", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name)
                    and node.value.id in {"sim", "simulator", "Simulator", "current_sim"}
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.attr}")
    assert offenders == []


# -- the scripts around the action ----------------------------------------------------------------
# The release (scripts/releasing/, a package), the reports, the demo and the container measurement
# keep the action's limits too: they are read and changed as often as the action.
SCRIPTS = ROOT / "scripts"


def script_modules() -> list[Path]:
    return sorted(SCRIPTS.rglob("*.py"))


def test_no_script_module_is_longer_than_the_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in script_modules()
        if (n := p.read_text().count("\n")) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_script_function_is_longer_than_the_limit() -> None:
    long = {
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}": length
        for path in script_modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_architecture_doc_lists_every_module_and_no_other() -> None:
    """docs/architecture.md has one line per module; it stays true as modules come and go."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^- `([\w/]+\.py)`:", doc, flags=re.MULTILINE))
    actual = set()
    for package in ("fly_pg_external", "flysim", "fakegithub"):
        base = ROOT / "src" / package
        actual |= {str(p.relative_to(base)) for p in base.rglob("*.py")}
    # The release's package, listed as `releasing/<module>.py`.
    actual |= {str(p.relative_to(SCRIPTS)) for p in (SCRIPTS / "releasing").rglob("*.py")}
    assert sorted(actual - listed) == []  # undocumented
    assert sorted(listed - actual) == []  # gone
