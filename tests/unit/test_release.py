"""scripts/release.py against a fake registry and a fake GitHub, both real HTTP servers.

The docker commands go to an injected runner that records them: `buildx build --push` puts a
multi-arch index into the fake registry and reports its digest the way buildx's metadata file
does, and `docker run` runs the action's own entrypoint on this machine with the container's
environment and mounts translated to host paths, so the run-by-digest step really runs the action
against the Fly simulator. Every request and command is timed, which gives one timeline across
docker, the registry and GitHub: the order of the release is read from what happened, not from
what the script says it did.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from fake_registry import FakeRegistry

from fakegithub import FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
REPO = "acme/fly-pg-external"
TOKEN = "ghs_releasetoken0123456789"
NAME = "acme/fly-pg-external"  # the image's repository in the registry
PLATFORMS = ["linux/amd64", "linux/arm64"]


def load_release() -> ModuleType:
    # runner_step.py sits next to it; tests/conftest.py puts scripts/ on sys.path, as running
    # `python scripts/release.py` does.
    spec = importlib.util.spec_from_file_location("release_script", ROOT / "scripts" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


release = load_release()

CHANGELOG = """# Changelog

## [Unreleased]

### Added
- Something not released yet.

## [1.3.0] - 2026-05-01

### Added
- Another thing.

## [1.2.4] - 2026-06-01

### Fixed
- A backported fix.

## [1.0.0] - 2026-01-01

The first release.

### Added
- Everything.

[Unreleased]: https://github.com/acme/fly-pg-external/compare/v1.3.0...HEAD
[1.0.0]: https://github.com/acme/fly-pg-external/releases/tag/v1.0.0
"""


# -- the injected docker --------------------------------------------------------------------------
@dataclass
class Call:
    argv: list[str]
    at_ns: int


@dataclass
class FakeDocker:
    """Records docker commands; `buildx build --push` pushes to the fake registry and `run`
    runs entrypoint.py here, as the image would, or, with `--entrypoint /post.py` (the post
    step), post.py. `run_as="fail"` makes the main entrypoint exit 1 instead, and
    `run_as="import-only"` exit 0 having done nothing (an image that merely starts); `post_as`
    does the same for the post entrypoint (a post step that fails, or that releases nothing)."""

    registry: FakeRegistry
    run_as: str = "entrypoint"
    post_as: str = "post"
    calls: list[Call] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(Call(argv, time.monotonic_ns()))
        if argv[:2] == ["buildx", "build"] and "--push" in argv:
            return self._push(argv)
        if argv[0] == "pull":
            name, _, digest = argv[-1].partition("/")[2].partition("@")
            if digest not in self.pushed:
                return subprocess.CompletedProcess(
                    argv, 1, "", f"manifest unknown: {name}@{digest}"
                )
        if argv[0] == "run":
            post = "--entrypoint" in argv
            behaviour = self.post_as if post else self.run_as
            if behaviour == "fail":
                return subprocess.CompletedProcess(argv, 1, "", "Traceback: ImportError: no module")
            if behaviour == "import-only":
                return subprocess.CompletedProcess(argv, 0, "ok\n", "")
            return run_entrypoint(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def _push(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        platforms = argv[argv.index("--platform") + 1].split(",")
        tag = argv[argv.index("--tag") + 1]
        name, _, version = tag.partition("/")[2].rpartition(":")
        digest = self.registry.push_index(name, platforms, tag=version)
        self.pushed.append(digest)
        metadata = Path(argv[argv.index("--metadata-file") + 1])
        metadata.write_text(json.dumps({"containerimage.digest": digest, "image.name": tag}))
        return subprocess.CompletedProcess(argv, 0, "", "")

    def commands(self, verb: str) -> list[list[str]]:
        return [c.argv for c in self.calls if c.argv[0] == verb]


def run_entrypoint(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`docker run … image` as a local `python entrypoint.py`, or with `--entrypoint /post.py`
    `python post.py` (the path is the same in the image and in the repository): container paths
    in the environment become the host directories mounted there."""
    mounts: dict[str, str] = {}
    env: dict[str, str] = {}
    workdir = ""
    script = ROOT / "entrypoint.py"
    i = 1
    while i < len(argv) - 1:
        flag, value = argv[i], argv[i + 1] if i + 1 < len(argv) else ""
        if flag == "-v":
            host, container = value.split(":", 1)
            mounts[container] = host
        elif flag == "-e":
            key, _, val = value.partition("=")
            env[key] = val
        elif flag == "--workdir":
            workdir = value
        elif flag == "--entrypoint":
            script = ROOT / value.lstrip("/")
        if flag.startswith("-") and flag not in ("--rm",):
            i += 2
        else:
            i += 1

    def host_path(value: str) -> str:
        for container, host in mounts.items():
            if value == container or value.startswith(container + "/"):
                return host + value[len(container) :]
        return value

    local_env = {"PATH": os.environ["PATH"], **{k: host_path(v) for k, v in env.items()}}
    return subprocess.run(
        [sys.executable, str(script)],
        env=local_env,
        cwd=host_path(workdir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    with FakeRegistry() as fake:
        yield fake


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The source checkout the workflow runs the script in."""
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copy(ROOT / "action.yml", root / "action.yml")
    (root / "CHANGELOG.md").write_text(CHANGELOG)
    return root


def source_files(root: Path) -> dict[str, str]:
    return {
        "action.yml": (root / "action.yml").read_text(),
        "CHANGELOG.md": (root / "CHANGELOG.md").read_text(),
        "Dockerfile": "FROM python:3.12-slim\n",
    }


@dataclass
class Release:
    """One release setup: a source commit in the fake GitHub, a checkout of it, and a way to run
    the script's steps against both fakes."""

    github: FakeGitHub
    registry: FakeRegistry
    docker: FakeDocker
    root: Path
    tmp: Path
    source: str = ""
    stdout: str = ""

    @property
    def image(self) -> str:
        return f"{self.registry.host}/{NAME}"

    def env(self, sha: str) -> dict[str, str]:
        return {
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_API_URL": self.github.base_url,
            "GITHUB_SERVER_URL": self.github.server_url,
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_SHA": sha,
            "GITHUB_OUTPUT": str(self.tmp / "github_output"),
            "GITHUB_STEP_SUMMARY": str(self.tmp / "step_summary"),
        }

    def run(
        self,
        version: str,
        *steps: str,
        sha: str | None = None,
        extra: Sequence[str] = (),
        capsys: pytest.CaptureFixture[str] | None = None,
        docker: Any = "fake",
    ) -> int:
        sleeps: list[float] = []
        argv = ["--version", version, "--image", self.image, "--root", str(self.root), *extra]
        code: int = release.main(
            [*argv, *steps],
            docker=self.docker if docker == "fake" else docker,
            env=self.env(sha or self.source),
            sleep=sleeps.append,
        )
        if capsys is not None:
            self.stdout = capsys.readouterr().out
        return code

    def outputs(self) -> dict[str, str]:
        path = self.tmp / "github_output"
        lines = path.read_text().splitlines() if path.exists() else []
        return dict(line.split("=", 1) for line in lines)

    def writes(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.github.requests if r.method != "GET"]

    def release_commit(self, version: str) -> str:
        sha = self.github.ref_commit(REPO, f"refs/tags/v{version}")
        assert sha is not None, f"no tag v{version}"
        return sha


@pytest.fixture
def rel(github: FakeGitHub, registry: FakeRegistry, checkout: Path, tmp_path: Path) -> Release:
    registry.set_visibility(NAME, "public")
    r = Release(github, registry, FakeDocker(registry), checkout, tmp_path)
    r.source = github.add_commit(REPO, source_files(checkout), "Prepare 1.0.0")
    github.set_ref(REPO, "refs/heads/main", r.source)
    return r


def seed_release(rel: Release, version: str, parent: str | None) -> tuple[str, str]:
    """An earlier release as the script makes it: a source commit, its release commit (pinned
    action.yml, trailers), and the version tag on the release commit. Returns both SHAs."""
    files = source_files(rel.root)
    parents = (parent,) if parent else ()
    source = rel.github.add_commit(REPO, files, f"Prepare {version}", parents)
    digest = "sha256:" + f"{version.replace('.', '')}".rjust(64, "a")
    image_ref = f"{rel.image}@{digest}"
    pinned = {**files, "action.yml": release.pin_image(files["action.yml"], image_ref)}
    message = release.commit_message(release.Version.parse(version), source, image_ref)
    commit = rel.github.add_commit(REPO, pinned, message, (source,))
    rel.github.set_ref(REPO, f"refs/tags/v{version}", commit)
    return source, commit


# -- the timeline ---------------------------------------------------------------------------------
MILESTONES = [
    "build",
    "push",
    "anonymous pull",
    "run by digest",
    "release commit",
    "tags",
    "release",
]


def timeline(rel: Release) -> list[str]:
    """What happened, in time order, as release milestones."""
    events: list[tuple[int, str]] = []
    for call in rel.docker.calls:
        if call.argv[:2] == ["buildx", "build"]:
            events.append((call.at_ns, "push" if "--push" in call.argv else "build"))
        elif call.argv[0] in ("pull", "run"):
            events.append((call.at_ns, "run by digest"))
    for r in rel.registry.requests:
        if "/manifests/" in r.path or r.path == "/token":
            events.append((r.at_ns, "anonymous pull"))
    for r in rel.github.requests:
        if r.method == "POST" and r.path.endswith("/git/commits"):
            events.append((r.at_ns, "release commit"))
        elif r.method in ("POST", "PATCH") and "/git/refs" in r.path:
            events.append((r.at_ns, "tags"))
        elif r.method in ("POST", "PATCH") and "/releases" in r.path:
            events.append((r.at_ns, "release"))
    return [name for _, name in sorted(events)]


def phases(events: list[str]) -> list[str]:
    return [e for i, e in enumerate(events) if i == 0 or events[i - 1] != e]


# -- the whole release ----------------------------------------------------------------------------
def test_release_builds_pushes_checks_runs_then_commits_tags_and_publishes(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rel.run("1.0.0", "all", capsys=capsys) == 0, rel.stdout

    # The order, read from what docker, the registry and GitHub saw.
    assert phases(timeline(rel)) == MILESTONES

    digest = rel.outputs()["digest"]
    image_ref = f"{rel.image}@{digest}"
    assert rel.docker.pushed == [digest]
    build, push = (c for c in rel.docker.commands("buildx"))
    assert build[build.index("--platform") + 1] == "linux/amd64,linux/arm64"
    assert push == [*build[:-1], "--push", "--metadata-file", push[-2], build[-1]]
    # The pull check was anonymous: a token asked for without credentials, then the manifest.
    token_requests = [r for r in rel.registry.requests if r.path == "/token"]
    assert token_requests and all(r.authorization is None for r in token_requests)
    served = [r for r in rel.registry.requests if r.status == 200 and "/manifests/" in r.path]
    assert [r.path for r in served] == [f"/v2/{NAME}/manifests/{digest}"]
    # Run by digest on both platforms, like the runner: pulled, then run with INPUT_* and mounts;
    # on each platform first a `lifetime: job` run and its post step, then the main entrypoint.
    pulls, runs = rel.docker.commands("pull"), rel.docker.commands("run")
    assert [p[-1] for p in pulls] == [image_ref, image_ref]
    assert [r[-1] for r in runs] == [image_ref] * 6
    assert [r[r.index("--platform") + 1] for r in runs] == [
        PLATFORMS[0],
        PLATFORMS[0],
        PLATFORMS[1],
        PLATFORMS[1],
        *PLATFORMS,
    ]
    assert ["INPUT_APP=my-db" in r and "--network" in r for r in runs] == [True] * 6
    post_steps = [r for r in runs if "--entrypoint" in r]
    assert [r[r.index("--entrypoint") + 1] for r in post_steps] == ["/post.py", "/post.py"]
    assert runs[1] in post_steps and runs[3] in post_steps
    # …and the action really ran: it exposed the app on the first run (the IPs it reported are
    # the simulator's), and found nothing to do on the second.
    assert "ran on linux/amd64, linux/arm64 like the runner runs it: exposed, then unchanged" in (
        rel.stdout
    )
    assert "its post step (/post.py) released exactly what the main step allocated" in rel.stdout

    # Both tags name the release commit, whose only change is action.yml's image.
    commit = rel.release_commit("1.0.0")
    assert rel.github.ref_commit(REPO, "refs/tags/v1") == commit
    assert rel.github.git_commit(REPO, commit).parents == (rel.source,)
    before, after = rel.github.files_at(REPO, rel.source), rel.github.files_at(REPO, commit)
    assert {k for k in before if before[k] != after[k]} == {"action.yml"}
    assert "  image: Dockerfile\n" in before["action.yml"]
    assert f"  image: docker://{image_ref}\n" in after["action.yml"]
    assert (
        after["action.yml"].replace(f"docker://{image_ref}", "Dockerfile") == before["action.yml"]
    )
    message = rel.github.git_commit(REPO, commit).message
    assert release.trailers(message) == {
        "Release-Version": "1.0.0",
        "Source-Commit": rel.source,
        "Image": image_ref,
    }
    assert rel.outputs()["release-commit"] == commit
    # Made through the API with the workflow's token: GitHub signs such commits.
    assert rel.github.git_commit(REPO, commit).verified

    # The GitHub Release: the CHANGELOG section, marked Latest.
    (made,) = rel.github.releases(REPO)
    assert made.tag_name == "v1.0.0"
    assert made.body == "The first release.\n\n### Added\n- Everything."
    latest = rel.github.latest_release(REPO)
    assert latest is not None and latest.id == made.id
    assert "::error" not in rel.stdout


# -- what stops a release before any tag ----------------------------------------------------------
@pytest.mark.parametrize("stage", ["token", "manifest"])
def test_a_private_package_stops_the_release_before_any_tag(
    rel: Release, stage: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """GHCR makes a package private on its first push; it refuses an anonymous pull either at
    the token request or at the manifest request. Either way: stop, and say how to fix it."""
    rel.registry.set_visibility(NAME, "private")
    rel.registry.private_stage = stage

    assert rel.run("1.0.0", "all", capsys=capsys) == 1

    assert phases(timeline(rel)) == ["build", "push", "anonymous pull"]
    (error,) = [line for line in rel.stdout.splitlines() if line.startswith("::error")]
    assert "title=Image not public" in error
    for words in ("anonymous pull", "private", "Package settings", "Change visibility", "Public"):
        assert words in error, error
    assert f"{stage} request" in error
    assert "no tag was created or moved" in error
    assert rel.docker.commands("run") == []
    assert rel.writes() == []
    assert rel.github.ref(REPO, "refs/tags/v1.0.0") is None
    assert rel.github.ref(REPO, "refs/tags/v1") is None


def test_a_registry_that_does_not_serve_the_image_yet_is_asked_again(rel: Release) -> None:
    rel.registry.fail_next(404, times=2)  # right after a push, the manifest may not be there yet

    assert rel.run("1.0.0", "preflight", "build", "push", "check-public") == 0

    manifests = [r.status for r in rel.registry.requests if "/manifests/" in r.path]
    assert manifests.count(404) == 2 and manifests[-1] == 200


def test_an_image_without_every_platform_is_refused(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = rel.registry.push_index(NAME, ["linux/amd64"])

    assert rel.run("1.0.0", "check-public", extra=["--digest", digest], capsys=capsys) == 1

    assert "title=Image platforms" in rel.stdout and "linux/arm64" in rel.stdout


@pytest.mark.parametrize(
    ("run_as", "says"),
    [("fail", "ImportError"), ("import-only", "changed=None, expected 'true'")],
)
def test_a_failing_run_by_digest_stops_the_release_before_any_tag(
    rel: Release, run_as: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image that fails, or one that starts but does not do the action's work."""
    rel.docker.run_as = run_as

    assert rel.run("1.0.0", "all", capsys=capsys) == 1

    assert phases(timeline(rel)) == ["build", "push", "anonymous pull", "run by digest"]
    assert "title=Run by digest" in rel.stdout and says in rel.stdout
    assert rel.writes() == []
    assert rel.github.ref(REPO, "refs/tags/v1.0.0") is None


@pytest.mark.parametrize(
    ("post_as", "says"),
    [
        ("fail", "The post step (/post.py) of {image} on linux/amd64 exited 1"),
        ("import-only", "did not release exactly what the main step allocated"),
    ],
    ids=["post-fails", "post-releases-nothing"],
)
def test_a_broken_post_entrypoint_stops_the_release_before_any_github_write(
    rel: Release, post_as: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The main entrypoint works, but `/post.py` (the post step of `lifetime: job`) fails, or
    exits 0 having released nothing: the image would leave every such job's addresses open."""
    rel.docker.post_as = post_as

    assert rel.run("1.0.0", "all", capsys=capsys) == 1

    assert phases(timeline(rel)) == ["build", "push", "anonymous pull", "run by digest"]
    (error,) = [line for line in rel.stdout.splitlines() if line.startswith("::error")]
    digest = rel.docker.pushed[0]
    assert "title=Run by digest" in error
    assert says.format(image=f"{rel.image}@{digest}") in error.replace("%0A", "\n"), error
    # It stopped at the first post step: the main entrypoint had run once, with `lifetime: job`.
    runs = rel.docker.commands("run")
    assert len(runs) == 2 and "--entrypoint" in runs[1]
    assert "INPUT_LIFETIME=job" in runs[0]
    assert rel.writes() == []
    assert rel.github.ref(REPO, "refs/tags/v1.0.0") is None
    assert rel.github.ref(REPO, "refs/tags/v1") is None


def test_the_post_step_is_run_like_the_runner_runs_it(rel: Release) -> None:
    """Same image digest and platform as its main step, same inputs, same workspace, home and
    runner temp; `--entrypoint` is action.yml's post-entrypoint; STATE_* is what the main step
    saved; file-command files of its own."""
    digest = rel.registry.push_index(NAME, PLATFORMS)
    rel.docker.pushed.append(digest)

    assert rel.run("1.0.0", "run", extra=["--digest", digest]) == 0

    runs = rel.docker.commands("run")
    post_entrypoint = yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["post-entrypoint"]
    for main, post in (runs[0:2], runs[2:4]):
        assert "--entrypoint" not in main
        assert post[post.index("--entrypoint") + 1] == post_entrypoint
        assert post[-1] == main[-1] == f"{rel.image}@{digest}"
        assert post[post.index("--platform") + 1] == main[main.index("--platform") + 1]
        main_env, post_env = _run_env(main), _run_env(post)
        inputs = {k: v for k, v in main_env.items() if k.startswith("INPUT_")}
        assert inputs["INPUT_LIFETIME"] == "job"
        assert {k: v for k, v in post_env.items() if k.startswith("INPUT_")} == inputs
        state = {k: v for k, v in post_env.items() if k.startswith("STATE_")}
        assert set(state) == {"STATE_HOLDER", "STATE_ALLOCATED"}
        assert len(state["STATE_ALLOCATED"].split(",")) == 2  # the v4 and the v6 it allocated
        assert not any(k.startswith("STATE_") for k in main_env)
        assert _mounts(post) == _mounts(main)
        for var in ("GITHUB_OUTPUT", "GITHUB_STATE", "GITHUB_STEP_SUMMARY"):
            assert post_env[var] != main_env[var]
    # The later plain runs hand nothing to a post step.
    assert not any("--entrypoint" in r or "INPUT_LIFETIME=job" in r for r in runs[4:])


def _run_env(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag == "-e"]
    return dict(pair.split("=", 1) for pair in pairs)


def _mounts(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag == "-v"]


def test_missing_release_notes_stop_the_release_before_anything_is_built(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rel.run("1.1.0", "all", capsys=capsys) == 1

    assert "title=No release notes" in rel.stdout
    assert "## [1.1.0]" in rel.stdout and "CHANGELOG.md" in rel.stdout
    assert rel.docker.calls == []
    assert rel.registry.requests == []
    assert rel.writes() == []


def test_an_empty_changelog_section_is_an_error(rel: Release) -> None:
    changelog = rel.root / "CHANGELOG.md"
    changelog.write_text(
        changelog.read_text().replace("The first release.\n\n### Added\n- Everything.\n", "")
    )

    assert rel.run("1.0.0", "preflight") == 1
    assert rel.docker.calls == []


# -- the major tag moves only forward -------------------------------------------------------------
def test_a_backport_does_not_move_the_major_tag_back(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    s123, _ = seed_release(rel, "1.2.3", rel.source)
    _, r130 = seed_release(rel, "1.3.0", s123)
    rel.github.set_ref(REPO, "refs/tags/v1", r130)
    # 1.2.4: a fix on the 1.2 line, released after 1.3.0.
    s124 = rel.github.add_commit(REPO, source_files(rel.root), "Fix on 1.2", (s123,))
    digest = rel.registry.push_index(NAME, PLATFORMS)

    code = rel.run(
        "1.2.4", "commit", "tag", "publish", sha=s124, extra=["--digest", digest], capsys=capsys
    )

    assert code == 0, rel.stdout
    r124 = rel.release_commit("1.2.4")
    assert r124 not in (s124, r130)
    assert rel.github.ref_commit(REPO, "refs/tags/v1") == r130
    assert "v1 stays at 1.3.0" in rel.stdout
    (made,) = rel.github.releases(REPO)
    assert made.body == "### Fixed\n- A backported fix."
    assert rel.github.latest_release(REPO) is None  # a backport is never marked Latest
    assert not any(w.endswith("/git/refs/tags/v1") for w in rel.writes())


def test_the_major_tag_version_is_read_from_version_tags_when_the_commit_has_no_trailer(
    rel: Release,
) -> None:
    """v1 on a commit made by hand: the (annotated) v1.3.0 tag on it says which release it is."""
    by_hand = rel.github.add_commit(
        REPO, source_files(rel.root), "Release 1.3.0 by hand", (rel.source,)
    )
    rel.github.add_annotated_tag(REPO, "v1.3.0", by_hand)
    rel.github.set_ref(REPO, "refs/tags/v1", by_hand)
    s124 = rel.github.add_commit(REPO, source_files(rel.root), "Fix", (rel.source,))
    digest = rel.registry.push_index(NAME, PLATFORMS)

    assert rel.run("1.2.4", "commit", "tag", sha=s124, extra=["--digest", digest]) == 0

    assert rel.github.ref_commit(REPO, "refs/tags/v1") == by_hand


@pytest.mark.parametrize(
    ("version", "moves"), [("1.3.1", {"v1"}), ("2.0.0", {"v2"})], ids=["minor", "new-major"]
)
def test_a_later_release_moves_its_major_tag_forward(
    rel: Release, version: str, moves: set[str]
) -> None:
    _, r130 = seed_release(rel, "1.3.0", rel.source)
    rel.github.set_ref(REPO, "refs/tags/v1", r130)
    source = rel.github.add_commit(REPO, source_files(rel.root), "Next", (rel.source,))
    changelog = rel.root / "CHANGELOG.md"
    changelog.write_text(changelog.read_text() + f"\n## [{version}] - 2026-07-01\n\n- Next.\n")
    digest = rel.registry.push_index(NAME, PLATFORMS)

    assert rel.run(version, "commit", "tag", "publish", sha=source, extra=["--digest", digest]) == 0

    made = rel.release_commit(version)
    for major in ("v1", "v2"):
        expected = made if major in moves else (r130 if major == "v1" else None)
        assert rel.github.ref_commit(REPO, f"refs/tags/{major}") == expected, major
    latest = rel.github.latest_release(REPO)
    assert latest is not None and latest.tag_name == f"v{version}"


def test_a_major_tag_on_a_commit_no_release_names_stops_before_anything_moves(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    stray = rel.github.add_commit(REPO, source_files(rel.root), "Something", (rel.source,))
    rel.github.set_ref(REPO, "refs/tags/v1", stray)

    assert rel.run("1.0.0", "all", capsys=capsys) == 1

    assert "title=Major tag" in rel.stdout
    assert rel.docker.calls == [] and rel.writes() == []


# -- re-running a release -------------------------------------------------------------------------
def test_releasing_an_existing_version_again_is_refused_before_anything_is_built(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new build would have another digest: a released version must never change its image."""
    digest = rel.registry.push_index(NAME, PLATFORMS)
    assert rel.run("1.0.0", "commit", "tag", "publish", extra=["--digest", digest]) == 0
    capsys.readouterr()
    before = (rel.release_commit("1.0.0"), len(rel.writes()))

    assert rel.run("1.0.0", "all", capsys=capsys) == 1

    assert "title=Already released" in rel.stdout and "release a new version" in rel.stdout
    assert rel.docker.calls == []
    assert (rel.release_commit("1.0.0"), len(rel.writes())) == before


def test_rerunning_the_last_steps_of_the_same_release_is_idempotent(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Release could not be created (GitHub failed): re-running the failed job, with the same
    digest, keeps the commit and tags already made and makes only the Release."""
    digest = rel.registry.push_index(NAME, PLATFORMS)
    rel.github.fail_next("POST", r"/repos/[^/]+/[^/]+/releases", status=502, message="Server Error")
    steps = ("commit", "tag", "publish")

    assert rel.run("1.0.0", *steps, extra=["--digest", digest], capsys=capsys) == 1
    assert "HTTP 502" in rel.stdout
    commit = rel.release_commit("1.0.0")
    assert rel.run("1.0.0", *steps, extra=["--digest", digest], capsys=capsys) == 0
    assert rel.run("1.0.0", *steps, extra=["--digest", digest], capsys=capsys) == 0

    assert rel.release_commit("1.0.0") == commit
    assert rel.github.ref_commit(REPO, "refs/tags/v1") == commit
    made_commits = [w for w in rel.writes() if w.endswith("/git/commits")]
    assert len(made_commits) == 1
    assert len(rel.github.releases(REPO)) == 1
    assert "already has this version's notes: kept" in rel.stdout


def test_the_last_steps_with_another_image_are_refused(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    first = rel.registry.push_index(NAME, PLATFORMS)
    assert rel.run("1.0.0", "commit", "tag", extra=["--digest", first]) == 0
    other = rel.registry.push_index(NAME, PLATFORMS)

    assert (
        rel.run("1.0.0", "commit", "tag", "publish", extra=["--digest", other], capsys=capsys) == 1
    )

    assert "never changes its image" in rel.stdout
    assert f"@{first}" in rel.github.files_at(REPO, rel.release_commit("1.0.0"))["action.yml"]


# -- dry run --------------------------------------------------------------------------------------
def test_dry_run_prints_the_docker_commands_and_github_writes_and_changes_nothing(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rel.run("1.0.0", "all", extra=["--dry-run"], docker=None, capsys=capsys) == 0, rel.stdout

    printed = [line for line in rel.stdout.splitlines() if line.startswith("[dry-run]")]
    docker = [line.removeprefix("[dry-run] docker ") for line in printed if " docker " in line]
    assert docker[0].startswith("buildx build --platform linux/amd64,linux/arm64 ")
    assert "--push --metadata-file" in docker[1]
    assert docker[2].startswith("pull --platform linux/amd64 ")
    assert docker[3].startswith("run --rm --platform linux/amd64 --network host")
    assert docker[3].endswith(f"{rel.image}@{release.DRY_DIGEST}")
    assert " -e INPUT_LIFETIME=job " in docker[3]
    assert docker[4].startswith("run --rm --platform linux/amd64 --network host --workdir ")
    assert " --entrypoint /post.py " in docker[4]
    assert docker[4].endswith(f"{rel.image}@{release.DRY_DIGEST}")
    assert any(line.startswith("[dry-run] anonymous GET") for line in printed)
    writes = [line.split()[1:3] for line in printed if re.match(r"\[dry-run\] (POST|PATCH) ", line)]
    assert writes == [
        ["POST", "git/trees"],
        ["POST", "git/commits"],
        ["POST", "git/refs"],  # the release branch
        ["POST", "git/refs"],
        ["POST", "git/refs"],
        ["POST", "releases"],
    ]
    refs = [json.loads(line.split(" ", 3)[3])["ref"] for line in printed if " git/refs " in line]
    assert refs == ["refs/heads/releases/v1.0.0", "refs/tags/v1.0.0", "refs/tags/v1"]
    assert rel.writes() == [] and rel.registry.requests == []


# -- the pieces -----------------------------------------------------------------------------------
def test_versions_compare_numerically() -> None:
    v = release.Version.parse
    assert v("v1.10.0") > v("1.9.9") > v("1.2.10") > v("1.2.9")
    assert v("1.2.3") == v("v1.2.3")
    assert [v(t) for t in ("1.2", "v1.2.3-rc1", "01.2.3", "1.2.3.4", "")] == [None] * 5
    assert v("1.2.3").tag == "v1.2.3" and v("1.2.3").major_tag == "v1"


def test_changelog_sections_are_read_in_keep_a_changelog_format() -> None:
    sections = release.changelog_sections(CHANGELOG)
    assert [(s.version, s.date) for s in sections] == [
        ("Unreleased", None),
        ("1.3.0", "2026-05-01"),
        ("1.2.4", "2026-06-01"),
        ("1.0.0", "2026-01-01"),
    ]
    assert sections[3].body == "The first release.\n\n### Added\n- Everything."  # no link lines


def test_pin_image_replaces_exactly_the_build_line() -> None:
    text = "name: x\nruns:\n  using: docker\n  image: Dockerfile\n  post-entrypoint: /post.py\n"
    pinned = release.pin_image(text, "ghcr.io/acme/x@sha256:" + "a" * 64)
    assert pinned == text.replace(
        "image: Dockerfile", "image: docker://ghcr.io/acme/x@sha256:" + "a" * 64
    )
    assert yaml.safe_load(pinned)["runs"]["image"] == "docker://ghcr.io/acme/x@sha256:" + "a" * 64
    assert (
        release.pin_image(text.replace("Dockerfile", "'Dockerfile'"), "i@d").count("docker://i@d")
        == 1
    )
    for bad in (
        text.replace("image: Dockerfile", "image: docker://x@sha256:1"),
        text + "  image: Dockerfile\n",
    ):
        with pytest.raises(release.ReleaseError):
            release.pin_image(bad, "i@d")


def test_the_bearer_challenge_is_parsed_like_ghcr_sends_it() -> None:
    header = 'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/x:pull"'
    assert release._parse_challenge(header) == {
        "realm": "https://ghcr.io/token",
        "service": "ghcr.io",
        "scope": "repository:acme/x:pull",
    }
    assert release._parse_challenge('Basic realm="x"') == {}


def test_the_default_image_is_on_ghcr_under_the_lowercased_owner() -> None:
    cfg, _, steps = release.parse_args(
        ["--version", "1.0.0", "build"],
        {"GITHUB_REPOSITORY": "Acme/fly-pg-external", "GITHUB_SHA": "a" * 40},
    )
    assert cfg.image == "ghcr.io/acme/fly-pg-external" and steps == ["build"]


def test_steps_must_be_given_in_release_order() -> None:
    env = {"GITHUB_REPOSITORY": REPO, "GITHUB_SHA": "a" * 40}
    with pytest.raises(SystemExit):
        release.parse_args(["--version", "1.0.0", "tag", "commit"], env)


# -- the repository's own files -------------------------------------------------------------------
def test_the_changelog_has_a_section_for_the_package_version() -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None
    sections = {
        s.version: s for s in release.changelog_sections((ROOT / "CHANGELOG.md").read_text())
    }
    assert "Unreleased" in sections
    assert sections[version[1]].body, f"CHANGELOG.md has no notes for {version[1]}"


def test_the_release_workflow_runs_the_steps_in_order_one_job_after_the_other() -> None:
    """release.yml calls the script's steps in release order, each job needing the one before,
    and only the last job (the one that can write tags) commits, tags and publishes."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    jobs = workflow["jobs"]
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [
            name
            for name, job in jobs.items()
            if name not in order and set(_as_list(job.get("needs"))) <= set(order)
        ]
        assert len(ready) == 1, f"the release jobs must form one chain: {ready}"
        order += ready
    steps_by_job = {name: _script_steps(jobs[name]) for name in order}
    assert [s for name in order for s in steps_by_job[name]] == list(release.STEPS)
    writers = [name for name in order if jobs[name]["permissions"].get("contents") == "write"]
    assert writers == [order[-1]]
    assert steps_by_job[order[-1]] == ["commit", "tag", "publish"]
    pushers = [name for name in order if jobs[name]["permissions"].get("packages") == "write"]
    assert pushers == [order[0]] and "commit" not in steps_by_job[order[0]]
    # Every job works on the one dispatched commit, even if its branch moves meanwhile; the one
    # that signs the attestation checks out nothing (tests/unit/test_release_workflow.py).
    for name, job in jobs.items():
        checkouts = [
            s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")
        ]
        assert len(checkouts) == (0 if "id-token" in job["permissions"] else 1), name
        for checkout in checkouts:
            assert checkout["with"] == {"ref": "${{ github.sha }}", "persist-credentials": False}
    # The pull check and the run happen where no credential could make a pull succeed.
    verify = jobs[order[1]]
    assert steps_by_job[order[1]] == ["check-public", "run"]
    assert not any("login" in str(s.get("uses", "")) for s in verify["steps"])
    assert "token" not in json.dumps(verify).lower()
    # The version tag is made by the release, at the release commit: nobody pushes it.
    assert set(workflow[True]) == {"workflow_dispatch"}  # YAML reads the key `on` as True


def test_the_registry_login_lives_in_a_temporary_docker_config_removed_after_the_push() -> None:
    """docker login stores the token in $DOCKER_CONFIG/config.json: only the login and the push
    see that directory (in the job's RUNNER_TEMP, never ~/.docker), and the step right after the
    push removes it, whatever happened."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    (pusher,) = [
        job for job in workflow["jobs"].values() if job["permissions"].get("packages") == "write"
    ]
    steps = pusher["steps"]
    (login,) = [
        i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("docker/login-action@")
    ]
    (push,) = [i for i, s in enumerate(steps) if s.get("id") == "push"]
    config = steps[login]["env"]["DOCKER_CONFIG"]
    assert config.startswith("${{ runner.temp }}/")
    users = [i for i, s in enumerate(steps) if "DOCKER_CONFIG" in (s.get("env") or {})]
    assert users == [login, push, push + 1]
    assert {steps[i]["env"]["DOCKER_CONFIG"] for i in users} == {config}
    remove = steps[push + 1]
    assert remove["if"] == "always()" and remove["run"].strip() == 'rm -rf -- "$DOCKER_CONFIG"'
    assert steps[login]["with"]["logout"] is False  # nothing left to log out of
    # Nowhere else: no workflow- or job-wide DOCKER_CONFIG, no other login.
    assert "DOCKER_CONFIG" not in json.dumps(
        [workflow.get("env"), *(job.get("env") for job in workflow["jobs"].values())]
    )
    logins = [
        s
        for job in workflow["jobs"].values()
        for s in job["steps"]
        if "login" in str(s.get("uses", ""))
    ]
    assert logins == [steps[login]]


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _script_steps(job: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for step in job["steps"]:
        for line in str(step.get("run", "")).splitlines():
            if "scripts/release.py" in line:
                words = line.split("scripts/release.py", 1)[1].replace("\\", " ").split()
                found += [w for w in words if w in release.STEPS]
    return found


# -- the release branch ---------------------------------------------------------------------------
def test_the_release_commit_is_on_a_branch_of_its_own_before_any_tag_names_it(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    """The release commit is not on main (which keeps `image: Dockerfile`): the branch
    releases/vX.Y.Z is made at it right after it, so no moment exists where only a tag reaches
    it, and a user who opens the pinned SHA sees a commit of a branch of this repository."""
    assert rel.run("1.0.0", "all", capsys=capsys) == 0, rel.stdout

    commit = rel.release_commit("1.0.0")
    assert rel.github.ref_commit(REPO, "refs/heads/releases/v1.0.0") == commit
    assert rel.github.ref_commit(REPO, "refs/heads/main") == rel.source  # main is untouched
    writes = [r for r in rel.github.requests if r.method != "GET"]
    made = [r.body.get("ref") for r in writes if r.path.endswith("/git/refs")]
    assert made == ["refs/heads/releases/v1.0.0", "refs/tags/v1.0.0", "refs/tags/v1"]
    # The branch is the first write after the commit: nothing happens in between.
    kinds = [r.path.rsplit("/", 2)[-1] if "/git/" in r.path else r.path for r in writes]
    assert kinds[kinds.index("commits") + 1] == "refs"
    assert rel.outputs()["release-branch"] == "releases/v1.0.0"


def test_a_rerun_after_the_commit_reuses_the_commit_its_branch_holds(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job stopped after its release commit and branch (the tag step never ran): the re-run
    finds the commit on the branch and tags it, instead of making a second commit."""
    digest = rel.registry.push_index(NAME, PLATFORMS)
    assert rel.run("1.0.0", "commit", extra=["--digest", digest]) == 0
    on_branch = rel.github.ref_commit(REPO, "refs/heads/releases/v1.0.0")
    assert on_branch is not None and rel.github.ref_commit(REPO, "refs/tags/v1.0.0") is None

    code = rel.run("1.0.0", "commit", "tag", "publish", extra=["--digest", digest], capsys=capsys)

    assert code == 0, rel.stdout
    assert "releases/v1.0.0 is already at this release's commit" in rel.stdout
    assert rel.release_commit("1.0.0") == on_branch
    assert len([w for w in rel.writes() if w.endswith("/git/commits")]) == 1


def test_a_branch_write_github_made_but_did_not_confirm_is_found_on_the_rerun(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    """The branch was created but the answer was lost (a gateway timeout): the job fails before
    any tag; its re-run finds the branch at a release commit of this image and goes on."""
    digest = rel.registry.push_index(NAME, PLATFORMS)
    rel.github.fail_next("POST", r"/repos/[^/]+/[^/]+/git/refs", status=504, after_effect=True)
    steps = ("commit", "tag", "publish")

    assert rel.run("1.0.0", *steps, extra=["--digest", digest], capsys=capsys) == 1
    assert "HTTP 504" in rel.stdout
    assert rel.github.ref_commit(REPO, "refs/tags/v1.0.0") is None
    assert rel.run("1.0.0", *steps, extra=["--digest", digest], capsys=capsys) == 0, rel.stdout

    commit = rel.release_commit("1.0.0")
    assert rel.github.ref_commit(REPO, "refs/heads/releases/v1.0.0") == commit
    assert len([w for w in rel.writes() if w.endswith("/git/commits")]) == 1


def test_a_new_run_for_a_version_whose_branch_exists_is_refused_before_anything_is_built(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new run would build another image: a branch left by an unfinished run of this version
    stops it at the preflight, saying how to finish the old run or start over."""
    digest = rel.registry.push_index(NAME, PLATFORMS)
    assert rel.run("1.0.0", "commit", extra=["--digest", digest]) == 0
    capsys.readouterr()

    assert rel.run("1.0.0", "all", capsys=capsys) == 1

    assert "title=Already released" in rel.stdout and "re-run only its" in rel.stdout
    assert "releases/v1.0.0 already exists" in rel.stdout
    assert rel.docker.calls == []


def test_a_release_branch_somewhere_else_stops_the_release_before_any_tag(
    rel: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    """The branch names another commit than the tagged release commit (moved by hand): the
    release stops at `commit`, before the tags, rather than leave the release commit on no
    branch; and a branch at a commit that is no release of this image is never tagged."""
    digest = rel.registry.push_index(NAME, PLATFORMS)
    assert rel.run("1.0.0", "commit", "tag", extra=["--digest", digest]) == 0
    rel.github.set_ref(REPO, "refs/heads/releases/v1.0.0", rel.source)
    capsys.readouterr()

    assert rel.run("1.0.0", "commit", "tag", extra=["--digest", digest], capsys=capsys) == 1
    assert "title=Release branch" in rel.stdout and "never moves" in rel.stdout

    # No tag yet, and the branch names a commit that is not this release's: refused too.
    other = rel.github.add_commit(REPO, source_files(rel.root), "Other", (rel.source,))
    rel.github.set_ref(REPO, "refs/heads/releases/v2.0.0", other)
    changelog = rel.root / "CHANGELOG.md"
    changelog.write_text(changelog.read_text() + "\n## [2.0.0] - 2026-07-01\n\n- Next.\n")
    assert rel.run("2.0.0", "commit", "tag", extra=["--digest", digest], capsys=capsys) == 1
    assert "releases/v2.0.0 already exists at" in rel.stdout
    assert rel.github.ref_commit(REPO, "refs/tags/v2.0.0") is None
