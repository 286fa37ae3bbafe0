"""Static checks of what only the runner reads: action.yml, the workflows and the Dockerfile.

All offline: check-jsonschema's bundled GitHub schemas, actionlint (the wheel-shipped binary),
zizmor --offline and hadolint, plus the runner rules for container actions that no linter knows
(no USER, no WORKDIR reliance, exec-form ENTRYPOINT with absolute paths, no BuildKit-only syntax).
Any finding fails the test, with the tool's own report in the message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from linters import run_tool, tool

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
DEPENDABOT = ROOT / ".github" / "dependabot.yml"
DOCKERFILE = ROOT / "Dockerfile"
ACTION_YML = ROOT / "action.yml"
SHA_PIN = re.compile(r"^[^@\s]+@[0-9a-f]{40}$")


def load_yaml(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


def test_there_are_workflows() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "self-test.yml", "release.yml"} <= names


def test_action_yml_matches_the_github_actions_schema() -> None:
    run_tool(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", ACTION_YML)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_workflows_schema(workflow: Path) -> None:
    run_tool(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", workflow)


def test_dependabot_config_matches_its_schema() -> None:
    run_tool(tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", DEPENDABOT)


def test_actionlint_finds_nothing() -> None:
    # actionlint also reads action.yml for `uses: ./` and checks the inputs the self-test passes.
    run_tool(tool("actionlint"), "-no-color", *WORKFLOWS)


def test_zizmor_finds_nothing() -> None:
    # --strict-collection: a file zizmor cannot parse is a failure, not a skipped warning.
    run_tool(
        tool("zizmor"),
        "--offline",
        "--no-progress",
        "--strict-collection",
        "--config",
        ROOT / ".github" / "zizmor.yml",
        "--persona",
        "pedantic",
        ACTION_YML,
        DEPENDABOT,
        *WORKFLOWS,
    )


def test_hadolint_finds_nothing() -> None:
    run_tool(tool("hadolint"), "--no-color", "--failure-threshold", "style", DOCKERFILE)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_pins_every_action_by_commit_sha(workflow: Path) -> None:
    uses = re.findall(r"^\s*(?:-\s+)?uses:\s*([^\s#]+)", workflow.read_text(), flags=re.M)
    unpinned = [u for u in uses if not u.startswith("./") and not SHA_PIN.match(u)]
    assert not unpinned, f"{workflow.name}: pin these by full commit SHA: {unpinned}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_grants_no_permission_by_default(workflow: Path) -> None:
    data = load_yaml(workflow)
    assert data.get("permissions") == {}, (
        f"{workflow.name}: set `permissions: {{}}` at the top and grant each job only what it needs"
    )
    for name, job in data["jobs"].items():
        assert "permissions" in job, f"{workflow.name}: job {name} declares no permissions"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, args = stripped.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def test_dockerfile_follows_the_runner_rules_for_container_actions() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    # The runner writes $GITHUB_OUTPUT as root and mounts the workspace over any WORKDIR.
    assert "USER" not in keywords, "no USER: the step must run as root to write file commands"
    assert "WORKDIR" not in keywords, "no WORKDIR: the runner passes its own --workdir"

    entrypoints = [args for k, args in instructions if k == "ENTRYPOINT"]
    assert len(entrypoints) == 1, "exactly one ENTRYPOINT"
    assert entrypoints[0].startswith("["), "ENTRYPOINT must be exec form (a JSON array)"
    argv = yaml.safe_load(entrypoints[0])
    assert all(a.startswith("/") for a in argv[:2]), f"absolute paths in ENTRYPOINT: {argv}"

    env = " ".join(args for k, args in instructions if k == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env


# Dependabot's docker ecosystem finds a base image only in a FROM line this regular expression
# matches (dependabot-core docker/lib/dependabot/docker/file_parser.rb FROM_LINE, with
# shared_file_parser.rb's REGISTRY and IMAGE): no ARG or variable, so the digest stays updatable.
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_NAME_COMPONENT = r"(?:[a-z\d]+(?:(?:[._]|__|[-]*)[a-z\d]+)*)"
DEPENDABOT_FROM_LINE = re.compile(
    rf"^FROM\s+(?:--platform=\S+\s+)?"
    rf"(?:(?P<registry>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+(?::\d+)?)/)?"
    rf"(?P<image>{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@sha256:(?P<digest>[0-9a-f]{64}))?(?:\s+AS\s+[\w-]+)?",
    re.I,
)


def test_dockerfile_base_is_pinned_by_version_and_digest_where_dependabot_reads_it() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM", "FROM comes first: no ARG, which Dependabot cannot read"
    froms = [args for k, args in instructions if k == "FROM"]
    assert len(froms) == 1, "a single stage"
    assert "$" not in froms[0], "no variable in FROM: Dependabot would not see the image"
    m = DEPENDABOT_FROM_LINE.match(f"FROM {froms[0]}")
    assert m is not None and m.end() == len(f"FROM {froms[0]}"), froms[0]
    assert m["image"] == "python" and m["registry"] is None
    # A full version: a 3.12 patch release then comes as a tag-and-digest update.
    assert re.fullmatch(r"3\.12\.\d+-slim", m["tag"] or ""), m["tag"]
    assert m["digest"], "pinned by the digest of its multi-arch index"


def test_dependabot_updates_the_base_image_the_lock_and_the_actions() -> None:
    config = load_yaml(DEPENDABOT)
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(ecosystems) == {"github-actions", "docker", "pip", "npm"}
    assert all(u["directory"] == "/" for k, u in ecosystems.items() if k != "npm")
    # node-postgres of the client matrix, whose lock is what the matrix connects with.
    node = ROOT / ecosystems["npm"]["directory"].lstrip("/")
    assert (node / "package-lock.json").is_file()
    # Python stays on 3.12 until someone decides otherwise: only patch updates are proposed.
    (ignored,) = ecosystems["docker"]["ignore"]
    assert ignored["dependency-name"] == "python"
    assert set(ignored["update-types"]) == {
        "version-update:semver-major",
        "version-update:semver-minor",
    }
    # Dependabot's pip ecosystem reads requirement files named *.txt or *.in only (and those in
    # the directory's first-level folders): the lock the image installs must be one of them.
    runs = " ".join(args for k, args in dockerfile_instructions() if k == "RUN")
    (lock,) = re.findall(r"-r /app/(\S+)", runs)
    assert lock == "requirements.txt" and (ROOT / lock).is_file()
    assert "#    make lock\n" in (ROOT / lock).read_text()[:400], "the lock is made by `make lock`"


def test_dockerfile_needs_no_buildkit() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, flags=re.M | re.I), "no # syntax= directive"
    assert "--mount=" not in text, "RUN --mount needs BuildKit"
    assert not re.search(r"<<-?\s*['\"]?\w+", text), "heredocs in RUN/COPY need BuildKit"
    assert not re.search(r"^\s*COPY\s+--(?:link|parents|exclude)", text, flags=re.M | re.I)


def test_dockerfile_installs_dependencies_from_the_hashed_lock() -> None:
    runs = " ".join(args for k, args in dockerfile_instructions() if k == "RUN")
    assert "--require-hashes" in runs
    assert "-r /app/requirements.txt" in runs
    assert "--no-cache-dir" in runs


def test_dockerignore_lets_in_only_the_runtime_files() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start by excluding everything"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "Dockerfile",
        "requirements.txt",
        "entrypoint.py",
        "post.py",
        "src/fly_pg_external",
    }


USES_PIN = re.compile(r"uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s*#\s*(v[\w.]+)")


def _pins(text: str) -> dict[str, set[tuple[str, str]]]:
    """owner/repo → every (sha, version comment) pinned in `text`."""
    found: dict[str, set[tuple[str, str]]] = {}
    for repo, sha, version in USES_PIN.findall(text):
        found.setdefault(repo, set()).add((sha, version))
    return found


def test_recipes_and_readme_pin_what_the_workflows_pin() -> None:
    """Dependabot keeps the pins in .github/workflows current (and on a Node the runners still
    have: Node 20 actions stopped running on GitHub in 2026); it does not read the recipes in
    docs/examples, docs/recipes.md or the README. They must pin the same commit as the
    workflows, so a Dependabot update that leaves them behind fails here instead of shipping a
    recipe that no longer runs."""
    workflows: dict[str, set[tuple[str, str]]] = {}
    for workflow in WORKFLOWS:
        for repo, pins in _pins(workflow.read_text()).items():
            workflows.setdefault(repo, set()).update(pins)
    assert all(len(p) == 1 for p in workflows.values()), f"workflows disagree: {workflows}"
    recipes = ROOT / "docs" / "recipes.md"
    docs = [*sorted((ROOT / "docs" / "examples").glob("*.yml")), recipes, ROOT / "README.md"]
    behind = {
        f"{path.relative_to(ROOT)}: {repo}": sorted(pins)
        for path in docs
        for repo, pins in _pins(path.read_text()).items()
        if repo in workflows and pins != workflows[repo]
    }
    assert behind == {}, f"pinned differently from .github/workflows: {behind}"
    assert _pins(recipes.read_text()), "docs/recipes.md pins no action"
