"""Release the action as vX.Y.Z: an image pinned by digest that every `uses: …@vX` can pull.

    python scripts/release.py --version 1.2.3 all
    python scripts/release.py --version 1.2.3 preflight build push          # job 1
    python scripts/release.py --version 1.2.3 --digest sha256:… check-public run   # job 2
    python scripts/release.py --version 1.2.3 --digest sha256:… commit tag publish # job 3

The steps, always in this order (.github/workflows/release.yml runs them in three jobs):

1. `preflight`: vX.Y.Z is a new version (its tag does not exist yet), CHANGELOG.md has its
   section, action.yml builds from the Dockerfile, and the major tag vX can be placed; nothing
   is built or pushed otherwise.
2. `build`: `docker buildx build` for every platform (linux/amd64, linux/arm64).
3. `push`: the same build pushed to <registry>/<owner>/fly-pg-external:X.Y.Z; its digest is the
   release's image.
4. `check-public`: the image can be pulled by digest ANONYMOUSLY, through the registry's
   `WWW-Authenticate: Bearer` token flow without credentials, as a user's runner pulls it. GHCR
   creates a package private on its first push; a private image would break every `uses: …@vX`,
   so the release stops here, before any tag exists, and says how to make the package public.
5. `run`: the pushed image, by digest, on every platform, run the way the runner runs a
   container action (INPUT_* variables, file commands, the workspace mounts) against the Fly
   simulator (scripts/self_test_simulator.py). First its post entrypoint: a `lifetime: job` run,
   then the post step as the runner starts it (`--entrypoint` = action.yml's `post-entrypoint`,
   the same image and inputs, the STATE_* the main step saved in GITHUB_STATE), which must
   release exactly the addresses the main step allocated, as the simulator sees them. Then the
   main entrypoint: `mode: expose` allocates the IPs it reports, a second run changes nothing.
6. `commit`: a commit on top of the released source commit whose only change is action.yml's
   `image: Dockerfile` → `image: docker://<image>@sha256:…`, made through the GitHub API (no git
   credentials on disk). Its message carries `Release-Version:`, `Source-Commit:` and `Image:`.
   The branch `releases/vX.Y.Z` is created at it right away, so a branch contains every release
   commit (the branch released from keeps `image: Dockerfile`); like the version tag, it never
   moves.
7. `tag`: creates vX.Y.Z at that commit (so the version tag never names a commit that builds the
   Dockerfile on every job), then moves vX there only FORWARD: vX stays where it is when it
   names a later release (a backport v1.2.4 after v1.3.0).
8. `publish`: the GitHub Release of vX.Y.Z, its notes the version's section of CHANGELOG.md,
   marked "Latest" only if no higher version exists.

A new release of an existing version is refused before anything is built: a version's image and
commit never change. Re-running the last steps of the same release (same digest, e.g. after the
Release could not be created) is idempotent: the release commit (on its tag or its branch), the
branch and the tags already made are found and kept, only what is missing is made.

`--dry-run` prints the docker commands and the GitHub writes instead of running them (GitHub is
still read). In-process callers (tests) pass their own docker runner, HTTP transports and sleep.

Environment: GITHUB_TOKEN (contents: write for commit/tag/publish), GITHUB_REPOSITORY, GITHUB_SHA,
GITHUB_API_URL, GITHUB_SERVER_URL, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY, as the runner sets them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import total_ordering
from pathlib import Path
from typing import Any

import httpx
from runner_step import prepare_step  # next to this script (python scripts/release.py)

HERE = Path(__file__).resolve().parent
STEPS = ("preflight", "build", "push", "check-public", "run", "commit", "tag", "publish")
IMAGE_NAME = "fly-pg-external"
PLATFORMS = ("linux/amd64", "linux/arm64")
DRY_DIGEST = "sha256:" + "0" * 64
DRY_SHA = "0" * 40
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
SIM_APP = "my-db"

Docker = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]
Sleep = Callable[[float], None]


class ReleaseError(Exception):
    """Stops the release; printed as an ::error:: with `title`."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__(message)
        self.title = title


# -- workflow commands ----------------------------------------------------------------------------
def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotate(kind: str, message: str, title: str | None = None) -> None:
    props = (
        "" if title is None else " title=" + _escape(title).replace(":", "%3A").replace(",", "%2C")
    )
    print(f"::{kind}{props}::{_escape(message)}", flush=True)


def log(message: str) -> None:
    print(message, flush=True)


# -- versions and the changelog -------------------------------------------------------------------
@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version | None:
        m = re.fullmatch(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", text.strip())
        return None if m is None else cls(int(m[1]), int(m[2]), int(m[3]))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def tag(self) -> str:
        return f"v{self}"

    @property
    def major_tag(self) -> str:
        return f"v{self.major}"


_HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?:\s+-\s+(?P<date>\S.*?))?\s*$")
_LINK_DEFINITION = re.compile(r"^\[[^\]]+\]:\s+\S+")


@dataclass(frozen=True)
class ChangelogSection:
    version: str
    date: str | None
    body: str


def changelog_sections(text: str) -> list[ChangelogSection]:
    """The `## [name] - date` sections of a Keep a Changelog file, bodies stripped (the link
    definitions at the end of the file belong to no section)."""
    sections: list[ChangelogSection] = []
    current: tuple[str, str | None, list[str]] | None = None
    for line in [*text.splitlines(), "## [end]"]:
        heading = _HEADING.match(line)
        if heading is not None or (current is not None and line.startswith("## ")):
            if current is not None:
                sections.append(
                    ChangelogSection(current[0], current[1], "\n".join(current[2]).strip())
                )
            current = None if heading is None else (heading["name"], heading["date"], [])
        elif current is not None and not _LINK_DEFINITION.match(line):
            current[2].append(line)
    return sections[:-1] if sections and sections[-1].version == "end" else sections


def release_notes(changelog: Path, version: Version) -> str:
    """The version's CHANGELOG.md section: the release notes. An error if it is missing."""
    if not changelog.is_file():
        raise ReleaseError(
            "No CHANGELOG.md", f"{changelog} does not exist; it holds the release notes."
        )
    wanted = str(version)
    for section in changelog_sections(changelog.read_text(encoding="utf-8")):
        if Version.parse(section.version) == version:
            if not section.body:
                raise ReleaseError(
                    "Empty release notes", f"CHANGELOG.md's section [{wanted}] is empty."
                )
            if (section.date or "").strip().lower() in ("", "unreleased"):
                annotate(
                    "warning",
                    f"CHANGELOG.md gives [{wanted}] no release date; set it on the branch.",
                    "Release date",
                )
            return section.body
    raise ReleaseError(
        "No release notes",
        f"CHANGELOG.md has no `## [{wanted}] - YYYY-MM-DD` section: write this version's notes "
        "there (move them out of [Unreleased]) and release again. Nothing was built or pushed.",
    )


# -- action.yml -----------------------------------------------------------------------------------
_BUILD_LINE = re.compile(r"^(?P<indent>[ \t]+)image:[ \t]*(['\"]?)Dockerfile\2[ \t]*$", re.M)


def pin_image(action_yml: str, image_ref: str) -> str:
    """action.yml with `image: Dockerfile` replaced by `image: docker://<image_ref>`."""
    found = _BUILD_LINE.findall(action_yml)
    if len(found) != 1:
        raise ReleaseError(
            "action.yml",
            "action.yml must say `image: Dockerfile` exactly once under `runs:` "
            f"(found {len(found)}): release from a commit that builds the Dockerfile.",
        )
    return _BUILD_LINE.sub(lambda m: f"{m['indent']}image: docker://{image_ref}", action_yml)


def trailers(message: str) -> dict[str, str]:
    return {
        m["key"]: m["value"].strip()
        for m in re.finditer(
            r"^(?P<key>Release-Version|Source-Commit|Image): (?P<value>.+)$", message, re.M
        )
    }


def commit_message(version: Version, source_sha: str, image_ref: str) -> str:
    return (
        f"Release {version.tag}\n\n"
        "action.yml runs the image built from this version's Dockerfile, pulled by digest,\n"
        "instead of building the Dockerfile on every job.\n\n"
        f"Release-Version: {version}\n"
        f"Source-Commit: {source_sha}\n"
        f"Image: {image_ref}\n"
    )


# -- configuration --------------------------------------------------------------------------------
@dataclass
class Config:
    root: Path
    version: Version
    repository: str
    source_sha: str
    image: str  # registry/owner/name, no tag
    platforms: tuple[str, ...]
    api_url: str
    server_url: str
    token: str | None
    dry_run: bool
    simulator_python: str
    output: Path | None
    summary: Path | None


@dataclass
class State:
    """What the steps of one invocation hand each other."""

    digest: str | None = None
    release_sha: str | None = None
    done: list[str] = field(default_factory=list)

    def need_digest(self) -> str:
        if self.digest is None:
            raise ReleaseError("No digest", "run `push` first, or pass --digest sha256:…")
        return self.digest

    def need_release_sha(self) -> str:
        if self.release_sha is None:
            raise ReleaseError("No release commit", "run `commit` first, or pass --release-commit")
        return self.release_sha


def write_output(cfg: Config, name: str, value: str) -> None:
    if cfg.output is not None:
        with cfg.output.open("a", encoding="utf-8") as f:
            f.write(f"{name}={value}\n")


def write_summary(cfg: Config, text: str) -> None:
    if cfg.summary is not None:
        with cfg.summary.open("a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")


# -- GitHub ---------------------------------------------------------------------------------------
class GitHub:
    """The repository's REST API (git data, refs, releases). In a dry run writes are printed."""

    def __init__(
        self, cfg: Config, sleep: Sleep, transport: httpx.BaseTransport | None = None
    ) -> None:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "fly-pg-external-release",
        }
        if cfg.token:
            headers["Authorization"] = f"Bearer {cfg.token}"
        self.dry_run = cfg.dry_run
        self.sleep = sleep
        self.http = httpx.Client(
            base_url=f"{cfg.api_url.rstrip('/')}/repos/{cfg.repository}/",
            headers=headers,
            timeout=30,
            transport=transport,
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(4):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if method == "POST" or attempt == 3:
                    raise ReleaseError("GitHub API", f"{method} {path}: {e}") from e
            else:
                if response.status_code < 500 or method == "POST" or attempt == 3:
                    return response
            self.sleep(2.0 * 2**attempt)
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, response: httpx.Response) -> Any:
        if response.is_success:
            return None if response.status_code == 204 else response.json()
        try:
            detail = response.json().get("message", "")
        except ValueError:
            detail = response.text[:200]
        raise ReleaseError("GitHub API", f"{method} {path}: HTTP {response.status_code} {detail}")

    def get(self, path: str, **params: str) -> Any:
        return self._json("GET", path, self._send("GET", path, params=params))

    def find(self, path: str) -> Any | None:
        """GET, or None on 404."""
        response = self._send("GET", path)
        return None if response.status_code == 404 else self._json("GET", path, response)

    def get_all(self, path: str) -> list[Any]:
        items: list[Any] = []
        response = self._send("GET", path, params={"per_page": "100"})
        while True:
            page = self._json("GET", path, response)
            items.extend(page)
            nxt = response.links.get("next", {}).get("url")
            if not nxt:
                return items
            response = self._send("GET", nxt)

    def write(self, method: str, path: str, body: Mapping[str, Any]) -> Any:
        if self.dry_run:
            shown = {
                k: v if len(json.dumps(v)) <= 100 else f"<{len(json.dumps(v))} bytes>"
                for k, v in body.items()
            }
            log(f"[dry-run] {method} {path} {json.dumps(shown, default=str)}")
            return {"sha": DRY_SHA, "id": 0, "html_url": ""}
        return self._json(method, path, self._send(method, path, json=dict(body)))

    # -- reads built on the above --
    def peel(self, obj: Mapping[str, Any]) -> str:
        """The commit a ref's object names, through annotated tag objects."""
        while obj["type"] == "tag":
            obj = self.get(f"git/tags/{obj['sha']}")["object"]
        return str(obj["sha"])

    def ref_commit(self, ref: str) -> str | None:
        found = self.find(f"git/ref/{ref}")
        return None if found is None else self.peel(found["object"])

    def version_tags(self) -> dict[Version, str]:
        """Every vX.Y.Z tag: version -> the commit it names."""
        tags: dict[Version, str] = {}
        for ref in self.get_all("git/matching-refs/tags/v"):
            version = Version.parse(ref["ref"].removeprefix("refs/tags/"))
            if version is not None and ref["ref"] == f"refs/tags/{version.tag}":
                tags[version] = self.peel(ref["object"])
        return tags

    def commit(self, sha: str) -> dict[str, Any]:
        return dict(self.get(f"git/commits/{sha}"))

    def file_at(self, commit_sha: str, path: str) -> str:
        tree = self.commit(commit_sha)["tree"]["sha"]
        entries = self.get(f"git/trees/{tree}", recursive="1")["tree"]
        blob = next((e["sha"] for e in entries if e["path"] == path and e["type"] == "blob"), None)
        if blob is None:
            raise ReleaseError("GitHub API", f"{path} is not in commit {commit_sha}")
        return base64.b64decode(self.get(f"git/blobs/{blob}")["content"]).decode("utf-8")


# -- docker ---------------------------------------------------------------------------------------
def docker_runner(dry_run: bool) -> Docker:
    def run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        if dry_run:
            log("[dry-run] docker " + " ".join(_shell_quote(a) for a in argv))
            return subprocess.CompletedProcess(["docker", *argv], 0, "", "")
        log("+ docker " + " ".join(_shell_quote(a) for a in argv))
        return subprocess.run(
            ["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def _checked(proc: subprocess.CompletedProcess[str], title: str, what: str) -> None:
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-3000:]
        raise ReleaseError(title, f"{what} failed (exit {proc.returncode}):\n{tail}")


def build_args(cfg: Config) -> list[str]:
    labels = {
        "org.opencontainers.image.source": f"{cfg.server_url}/{cfg.repository}",
        "org.opencontainers.image.revision": cfg.source_sha,
        "org.opencontainers.image.version": cfg.version.tag,
    }
    argv = ["buildx", "build", "--platform", ",".join(cfg.platforms)]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    return [*argv, "--tag", f"{cfg.image}:{cfg.version}", str(cfg.root)]


# -- the steps ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MajorPlan:
    action: str  # create, move, keep, noop
    current: str | None
    current_version: Version | None


def plan_major(gh: GitHub, version: Version, release_sha: str | None) -> MajorPlan:
    """Where the major tag goes: only forward, judged by the version of the commit it names now
    (the vX.Y.Z tags on that commit and its Release-Version trailer, the highest of them)."""
    current = gh.ref_commit(f"tags/{version.major_tag}")
    if current is None:
        return MajorPlan("create", None, None)
    found = [v for v, sha in gh.version_tags().items() if sha == current]
    marker = Version.parse(trailers(gh.commit(current)["message"]).get("Release-Version", ""))
    if marker is not None:
        found.append(marker)
    if not found:
        raise ReleaseError(
            "Major tag",
            f"{version.major_tag} points at {current}, which no vX.Y.Z tag and no Release-Version "
            f"trailer names, so the release cannot tell whether moving it to {version.tag} is "
            f"forward. Point {version.major_tag} at the latest release commit by hand "
            f"(git push --force origin <commit>:refs/tags/{version.major_tag}), then release "
            "again.",
        )
    at = max(found)
    if version > at:
        return MajorPlan("move", current, at)
    if version == at:
        return MajorPlan("noop" if current == release_sha else "move", current, at)
    return MajorPlan("keep", current, at)


def preflight(cfg: Config, gh: GitHub, state: State) -> None:
    notes = release_notes(cfg.root / "CHANGELOG.md", cfg.version)
    pin_image((cfg.root / "action.yml").read_text(encoding="utf-8"), f"{cfg.image}@{DRY_DIGEST}")
    existing = gh.ref_commit(f"tags/{cfg.version.tag}")
    if existing is not None:
        raise ReleaseError(
            "Already released",
            f"{cfg.version.tag} already exists (commit {existing}). A released version never "
            "changes its image or commit: release a new version instead. (To finish a release "
            "that stopped after its image was pushed, re-run only its failed jobs.)",
        )
    branch = gh.ref_commit(f"heads/{release_branch(cfg.version)}")
    if branch is not None:
        raise ReleaseError(
            "Already released",
            f"{release_branch(cfg.version)} already exists (commit {branch}): a run for "
            f"{cfg.version.tag} got as far as its release commit. To finish it, re-run only its "
            "failed jobs; to start over with a new image, delete that branch first.",
        )
    plan = plan_major(gh, cfg.version, None)
    where = {
        "create": f"created at {cfg.version.tag}",
        "move": f"moved from {plan.current_version} to {cfg.version}",
        "noop": "kept",
        "keep": f"kept at {plan.current_version}, a later release ({cfg.version} is a backport)",
    }[plan.action]
    major = cfg.version.major_tag
    log(f"Releasing {cfg.version.tag} from {cfg.source_sha}; {major} will be {where}.")
    log(f"Release notes ({len(notes)} characters) from CHANGELOG.md.")


def build(cfg: Config, docker: Docker, state: State) -> None:
    _checked(docker(build_args(cfg), 3600), "Build", "docker buildx build")


def push(cfg: Config, docker: Docker, state: State) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        metadata = Path(tmp) / "metadata.json"
        argv = [*build_args(cfg)[:-1], "--push", "--metadata-file", str(metadata), str(cfg.root)]
        _checked(docker(argv, 3600), "Push", "docker buildx build --push")
        if cfg.dry_run:
            digest = state.digest or DRY_DIGEST
        else:
            written = json.loads(metadata.read_text()) if metadata.exists() else {}
            digest = str(written.get("containerimage.digest", ""))
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ReleaseError("Push", f"the push reported no image digest ({digest!r})")
    state.digest = digest
    write_output(cfg, "digest", digest)
    # The image's name as pushed (the owner lowercased): the attestation's subject.
    write_output(cfg, "image", cfg.image)
    write_summary(cfg, f"- image: `{cfg.image}@{digest}`")
    log(f"Pushed {cfg.image}:{cfg.version} = {cfg.image}@{digest}")


def _registry_parts(image: str) -> tuple[str, str]:
    host, _, name = image.partition("/")
    local = host.startswith(("127.0.0.1:", "localhost:")) or host in ("127.0.0.1", "localhost")
    return ("http://" if local else "https://") + host, name


def _parse_challenge(header: str) -> dict[str, str]:
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {m[1].lower(): m[2] for m in re.finditer(r'(\w+)="([^"]*)"', params)}


def _not_public(cfg: Config, image_ref: str, stage: str, response: httpx.Response) -> ReleaseError:
    owner = cfg.image.split("/")[1]
    try:
        errors = response.json().get("errors") or []
        code = " ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except ValueError:
        code = ""
    return ReleaseError(
        "Image not public",
        f"An anonymous pull of {image_ref} was refused ({stage}: HTTP {response.status_code} "
        f"{code}). Users' runners pull without credentials, so every `uses: {cfg.repository}@"
        f"{cfg.version.major_tag}` would fail. GHCR makes a new package private on its first "
        "push, even for a public repository: make it public once, in "
        f"{cfg.server_url}/{owner}?tab=packages → {IMAGE_NAME} → Package settings → Danger Zone → "
        "Change visibility → Public (an organization must allow public packages in its "
        "Packages settings). Then re-run the failed jobs: no tag was created or moved.",
    )


def check_public(
    cfg: Config, state: State, sleep: Sleep, transport: httpx.BaseTransport | None
) -> None:
    digest = state.need_digest()
    image_ref = f"{cfg.image}@{digest}"
    base, name = _registry_parts(cfg.image)
    url = f"{base}/v2/{name}/manifests/{digest}"
    if cfg.dry_run:
        log(f"[dry-run] anonymous GET {url} (following the Bearer challenge, no credentials)")
        return
    with httpx.Client(
        timeout=30, transport=transport, headers={"User-Agent": "fly-pg-external-release"}
    ) as http:
        body = _anonymous_manifest(cfg, http, url, image_ref, sleep)
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise ReleaseError("Image digest", f"the registry served {image_ref} with other content")
    manifest = json.loads(body)
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}"
        for m in manifest.get("manifests", [])
        if "platform" in m
    }
    missing = sorted(set(cfg.platforms) - platforms)
    if manifest.get("mediaType") not in INDEX_TYPES or missing:
        raise ReleaseError(
            "Image platforms",
            f"{image_ref} is not an index for {', '.join(cfg.platforms)} (missing: {missing})",
        )
    pulled = ", ".join(sorted(platforms & set(cfg.platforms)))
    log(f"{image_ref} can be pulled anonymously ({pulled}).")
    write_summary(cfg, f"- anonymous pull of `{image_ref}`: ok")


def _anonymous_manifest(
    cfg: Config, http: httpx.Client, url: str, image_ref: str, sleep: Sleep
) -> bytes:
    """The manifest, fetched as an anonymous client: no credentials, and a token from the
    registry's Bearer challenge asked for without any. Retried while it is not there yet (a
    registry may answer 404 for a moment after a push) or the registry fails (5xx)."""
    accept = {"Accept": ", ".join(MANIFEST_TYPES)}
    last = "no answer"
    for attempt in range(6):
        if attempt:
            sleep(min(2.0 * 2 ** (attempt - 1), 30.0))
        try:
            response = http.get(url, headers=accept)
            if response.status_code == 401:
                challenge = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
                if "realm" not in challenge:
                    raise ReleaseError("Registry", f"{url}: 401 without a Bearer challenge")
                params: dict[str, str] = {
                    k: challenge[k] for k in ("service", "scope") if k in challenge
                }
                params.setdefault("scope", f"repository:{_registry_parts(cfg.image)[1]}:pull")
                token_response = http.get(challenge["realm"], params=params)
                if token_response.status_code in (401, 403):
                    raise _not_public(cfg, image_ref, "token request", token_response)
                if token_response.status_code >= 500:
                    last = f"token request: HTTP {token_response.status_code}"
                    continue
                if not token_response.is_success:
                    raise ReleaseError(
                        "Registry",
                        f"token request: HTTP {token_response.status_code} "
                        + token_response.text[:200],
                    )
                answer = token_response.json()
                token = answer.get("token") or answer.get("access_token")
                response = http.get(url, headers={**accept, "Authorization": f"Bearer {token}"})
            if response.status_code in (401, 403):
                raise _not_public(cfg, image_ref, "manifest request", response)
            if response.status_code == 200:
                return response.content
            last = f"manifest request: HTTP {response.status_code} {response.text[:200]}"
            if response.status_code != 404 and response.status_code < 500:
                break
        except httpx.TransportError as e:
            last = f"{type(e).__name__}: {e}"
    raise ReleaseError("Registry", f"could not fetch {image_ref} anonymously: {last}")


def _action(action_yml: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError as e:  # the step runs in the dev venv, which has the simulator too
        raise ReleaseError(
            "run", "the run step needs PyYAML and the simulator: make .venv/bin/.installed"
        ) from e
    return dict(yaml.safe_load(action_yml.read_text(encoding="utf-8")) or {})


def post_entrypoint(action_yml: Path) -> str:
    """action.yml's `runs.post-entrypoint`: what the runner passes as `--entrypoint` to the post
    step of a container action."""
    runs = _action(action_yml).get("runs") or {}
    entrypoint = str(runs.get("post-entrypoint") or "")
    if not entrypoint:
        raise ReleaseError(
            "Run by digest", "action.yml has no `runs.post-entrypoint`: no post step to check."
        )
    return entrypoint


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
    argv = [cfg.simulator_python, str(HERE / "self_test_simulator.py"), "--host", "127.0.0.1"]
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


@dataclass
class RunResult:
    returncode: int
    log: str
    outputs: dict[str, str]
    state: dict[str, str]  # what the step saved for the post step (GITHUB_STATE)
    summary: str

    def errors(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith("::error")]


# The step state a `lifetime: job` run saves for its post step: the addresses it allocated,
# comma-separated (fly_pg_external.main.STATE_ALLOCATED; the post step reads STATE_ALLOCATED).
STATE_ALLOCATED = "ALLOCATED"


def run_like_the_runner(
    cfg: Config,
    docker: Docker,
    *,
    image_ref: str,
    platform: str,
    sim: SimulatorProcess,
    tmp: Path,
    inputs: Mapping[str, str] | None = None,
    entrypoint: str | None = None,
    state: Mapping[str, str] | None = None,
) -> RunResult:
    """`docker run` as the runner's ContainerActionHandler does it: the workspace, home, workflow
    and file-command directories mounted, INPUT_* for every declared input, on the host network
    (where the simulator listens). With `entrypoint` and `state`, the post step: the same image,
    inputs and mounts (`tmp` of the main step), `--entrypoint` set to action.yml's
    post-entrypoint and STATE_<name> for what the main step saved; like every step, it gets file
    command files of its own."""
    action = _action(cfg.root / "action.yml")
    step = prepare_step(
        tmp,
        declared_inputs=action.get("inputs") or {},
        inputs={
            "app": SIM_APP,
            "fly-api-token": sim.env["SIM_FLY_API_TOKEN"],
            "verify": "false",
            "pr-comment": "false",
            **(inputs or {}),
        },
        env={
            "GITHUB_REPOSITORY": cfg.repository,
            "GITHUB_SHA": cfg.source_sha,
            "FLY_API_BASE_URL": sim.env["FLY_API_BASE_URL"],
            "FLY_FLAPS_BASE_URL": sim.env["FLY_FLAPS_BASE_URL"],
        },
        entrypoint=entrypoint,
        state=state,
        platform=platform,
        file_mode=0o666,
    )
    proc = docker([*step.argv, image_ref], 600)
    return RunResult(
        proc.returncode,
        proc.stdout + proc.stderr,
        step.outputs,
        step.state,
        step.read("GITHUB_STEP_SUMMARY"),
    )


def _ran_clean(result: RunResult, what: str) -> None:
    if result.returncode != 0 or result.errors():
        raise ReleaseError(
            "Run by digest",
            f"{what} exited {result.returncode} against the simulator:\n{result.log[-3000:]}",
        )


def check_post_step(
    cfg: Config,
    docker: Docker,
    *,
    image_ref: str,
    platform: str,
    entrypoint: str,
    sim: SimulatorProcess,
    tmp: Path,
) -> int:
    """A `lifetime: job` run, then its post step as the runner starts it; the post step must
    release exactly what the main step allocated. The simulator starts with no public address
    and is left with none. Returns how many addresses were allocated and released."""
    inputs = {"mode": "expose", "lifetime": "job"}
    main = run_like_the_runner(
        cfg, docker, image_ref=image_ref, platform=platform, sim=sim, tmp=tmp, inputs=inputs
    )
    if not cfg.dry_run:
        _ran_clean(main, f"{image_ref} on {platform} (lifetime: job)")
        if main.outputs.get("changed") != "true":
            raise ReleaseError(
                "Run by digest",
                f"{image_ref} on {platform} (lifetime: job): changed="
                f"{main.outputs.get('changed')!r}, expected 'true'; outputs {main.outputs}",
            )
    before = sim.snapshot()
    post = run_like_the_runner(
        cfg,
        docker,
        image_ref=image_ref,
        platform=platform,
        sim=sim,
        tmp=tmp,  # the main step's workspace, home and runner temp, as on the runner
        inputs=inputs,
        entrypoint=entrypoint,
        state=main.state,
    )
    after = sim.snapshot()
    if cfg.dry_run:
        return 0
    allocated = {a for a in main.state.get(STATE_ALLOCATED, "").split(",") if a}
    public_before = before.get("public_ips", {})
    reported = {main.outputs.get("ipv4"), main.outputs.get("ipv6")}
    if not allocated or set(public_before.values()) != allocated or reported != allocated:
        raise ReleaseError(
            "Run by digest",
            f"{image_ref} on {platform} (lifetime: job) saved {STATE_ALLOCATED}="
            f"{main.state.get(STATE_ALLOCATED)!r} for its post step and reported ipv4/ipv6 "
            f"{sorted(map(str, reported))}; the simulator has {public_before}",
        )
    what = f"The post step ({entrypoint}) of {image_ref} on {platform}"
    _ran_clean(post, what)
    done = after.get("mutating_requests", [])[len(before.get("mutating_requests", [])) :]
    fields = [f for request in done for f in request.get("fields") or []]
    releases, allocations = fields.count("releaseIpAddress"), fields.count("allocateIpAddress")
    left = after.get("public_ips", {})
    if left or releases != len(allocated) or allocations:
        raise ReleaseError(
            "Run by digest",
            f"{what} did not release exactly what the main step allocated ({sorted(allocated)}): "
            f"{releases} release(s), {allocations} allocation(s), the simulator still has "
            f"{left or 'no public address'}.\n{post.log[-3000:]}",
        )
    return len(allocated)


def run_by_digest(cfg: Config, docker: Docker, state: State) -> None:
    image_ref = f"{cfg.image}@{state.need_digest()}"
    entrypoint = post_entrypoint(cfg.root / "action.yml")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp_name:
        tmp = Path(tmp_name)
        sim = start_simulator(cfg, tmp)
        try:
            # The post entrypoint first, while the app has no public address: each
            # `lifetime: job` run allocates, and its post step releases.
            released = []
            for n, platform in enumerate(cfg.platforms):
                pulled = docker(["pull", "--platform", platform, image_ref], 900)
                _checked(pulled, "Run by digest", f"docker pull {image_ref} ({platform})")
                released.append(
                    check_post_step(
                        cfg,
                        docker,
                        image_ref=image_ref,
                        platform=platform,
                        entrypoint=entrypoint,
                        sim=sim,
                        tmp=tmp / f"job{n}",
                    )
                )
            results = []
            for n, platform in enumerate(cfg.platforms):
                result = run_like_the_runner(
                    cfg,
                    docker,
                    image_ref=image_ref,
                    platform=platform,
                    sim=sim,
                    tmp=tmp / f"run{n}",
                )
                results.append((platform, result))
                if cfg.dry_run:
                    continue
                _ran_clean(result, f"{image_ref} on {platform}")
                expected = (
                    "true" if n == 0 else "false"
                )  # the first run exposes, the next ones find it done
                if result.outputs.get("changed") != expected:
                    raise ReleaseError(
                        "Run by digest",
                        f"{image_ref} on {platform}: changed={result.outputs.get('changed')!r}, "
                        f"expected {expected!r}; outputs {result.outputs}",
                    )
        finally:
            report = sim.stop()
    if cfg.dry_run:
        return
    public = report.get("public_ips", {})
    for platform, result in results:
        reported = {"v4": result.outputs.get("ipv4"), "v6": result.outputs.get("ipv6")}
        if not public.get("v4") or not public.get("v6") or reported != public:
            raise ReleaseError(
                "Run by digest",
                f"{image_ref} on {platform} reported ipv4/ipv6 {reported}, "
                f"the simulator has {public}",
            )
    ran = ", ".join(cfg.platforms)
    log(
        f"{image_ref} ran on {ran} with `lifetime: job`: its post step ({entrypoint}) released "
        "exactly what the main step allocated ("
        + ", ".join(f"{n} addresses on {p}" for p, n in zip(cfg.platforms, released, strict=True))
        + ")."
    )
    log(f"{image_ref} ran on {ran} like the runner runs it: exposed, then unchanged.")
    write_summary(
        cfg,
        f"- run by digest against the simulator on {ran}: ok (main entrypoint, and "
        f"`{entrypoint}` after a `lifetime: job` run)",
    )


def _is_release_commit(gh: GitHub, cfg: Config, sha: str, image_ref: str) -> bool:
    commit = gh.commit(sha)
    marks = trailers(commit["message"])
    if [p["sha"] for p in commit["parents"]] != [cfg.source_sha] or marks.get(
        "Release-Version"
    ) != str(cfg.version):
        return False
    if marks.get("Image") != image_ref:
        raise ReleaseError(
            "Already released",
            f"{cfg.version.tag} is already released with the image {marks.get('Image')}, not "
            f"{image_ref}: a released version never changes its image. Release a new version.",
        )
    return f"image: docker://{image_ref}" in gh.file_at(sha, "action.yml")


def release_branch(version: Version) -> str:
    """The branch that holds the release commit: `releases/vX.Y.Z`. The release commit is not on
    the branch it was released from (that keeps `image: Dockerfile`); without a branch of its own
    no branch would contain it, and GitHub shows such a commit as one that "does not belong to any
    branch of this repository", the warning a commit pushed only to a fork gets. The branch is
    made once, like the version tag, and never moves."""
    return f"releases/{version.tag}"


def _put_on_branch(cfg: Config, gh: GitHub, sha: str) -> None:
    branch = release_branch(cfg.version)
    at = gh.ref_commit(f"heads/{branch}")
    if at is None:
        gh.write("POST", "git/refs", {"ref": f"refs/heads/{branch}", "sha": sha})
        log(f"Created the branch {branch} at the release commit {sha}.")
        at = sha if cfg.dry_run else gh.ref_commit(f"heads/{branch}")
    if at != sha:
        raise ReleaseError(
            "Release branch",
            f"{branch} is at {at}, not at the release commit {sha}: the branch holds one release "
            "commit and never moves. If it is left from a release that never finished, delete "
            "it and re-run this job.",
        )
    write_output(cfg, "release-branch", branch)


def release_commit(cfg: Config, gh: GitHub, state: State) -> None:
    image_ref = f"{cfg.image}@{state.need_digest()}"
    # A re-run finds the commit an earlier attempt made: on the version tag, or, when the tag
    # step never ran, on the release branch.
    name = cfg.version.tag
    existing = gh.ref_commit(f"tags/{name}")
    if existing is None:
        name = release_branch(cfg.version)
        existing = gh.ref_commit(f"heads/{name}")
    if existing is not None:
        if not _is_release_commit(gh, cfg, existing, image_ref):
            raise ReleaseError(
                "Already released",
                f"{name} already exists at {existing}, which is not this release's commit. A "
                "released version never changes: release a new version.",
            )
        log(f"{name} is already at this release's commit {existing}: kept.")
        state.release_sha = existing
    else:
        source = gh.commit(cfg.source_sha)
        pinned = pin_image(gh.file_at(cfg.source_sha, "action.yml"), image_ref)
        entry = {"path": "action.yml", "mode": "100644", "type": "blob", "content": pinned}
        tree = gh.write("POST", "git/trees", {"base_tree": source["tree"]["sha"], "tree": [entry]})
        message = commit_message(cfg.version, cfg.source_sha, image_ref)
        commit = gh.write(
            "POST",
            "git/commits",
            {"message": message, "tree": tree["sha"], "parents": [cfg.source_sha]},
        )
        state.release_sha = str(commit["sha"])
        log(f"Release commit {state.release_sha}: action.yml runs {image_ref}.")
    _put_on_branch(cfg, gh, state.release_sha)
    write_output(cfg, "release-commit", state.release_sha)
    write_summary(cfg, f"- release commit: `{state.release_sha}` (on `{cfg.source_sha}`)")


def move_tags(cfg: Config, gh: GitHub, state: State) -> None:
    release_sha = state.need_release_sha()
    plan = plan_major(gh, cfg.version, release_sha)  # before anything moves
    tag, major = cfg.version.tag, cfg.version.major_tag
    current = gh.ref_commit(f"tags/{tag}")
    if current is None:
        gh.write("POST", "git/refs", {"ref": f"refs/tags/{tag}", "sha": release_sha})
        log(f"Created {tag} at {release_sha}.")
    elif current != release_sha:
        raise ReleaseError(
            "Already released", f"{tag} appeared at {current} during the release: stopped."
        )
    if plan.action == "create":
        gh.write("POST", "git/refs", {"ref": f"refs/tags/{major}", "sha": release_sha})
        log(f"Created {major} at {tag}.")
    elif plan.action == "move":
        gh.write("PATCH", f"git/refs/tags/{major}", {"sha": release_sha, "force": True})
        log(f"Moved {major} forward from {plan.current_version} to {cfg.version}.")
    elif plan.action == "keep":
        annotate(
            "notice",
            f"{major} stays at {plan.current_version}: {cfg.version} is a backport.",
            "Major tag",
        )
    if not cfg.dry_run:
        moved = {tag: gh.ref_commit(f"tags/{tag}")}
        if plan.action != "keep":
            moved[major] = gh.ref_commit(f"tags/{major}")
        wrong = {name: sha for name, sha in moved.items() if sha != release_sha}
        if wrong:
            raise ReleaseError("Tags", f"tags not at the release commit {release_sha}: {wrong}")
    write_summary(cfg, f"- tags: `{tag}`" + ("" if plan.action == "keep" else f", `{major}`"))


def publish(cfg: Config, gh: GitHub, state: State) -> None:
    notes = release_notes(cfg.root / "CHANGELOG.md", cfg.version)
    tag = cfg.version.tag
    versions = set(gh.version_tags()) | {cfg.version}
    latest = "true" if cfg.version >= max(versions) else "false"
    body = {
        "tag_name": tag,
        "name": tag,
        "body": notes,
        "draft": False,
        "prerelease": False,
        "make_latest": latest,
    }
    existing = gh.find(f"releases/tags/{tag}")
    if existing is None:
        made = gh.write("POST", "releases", body)
        log(
            f"Created the GitHub Release {tag}{'' if latest == 'true' else ' (not marked Latest)'}."
        )
    elif existing.get("body") != notes or existing.get("name") != tag:
        made = gh.write(
            "PATCH",
            f"releases/{existing['id']}",
            {k: body[k] for k in ("name", "body", "make_latest")},
        )
        log(f"Updated the GitHub Release {tag} to this version's notes.")
    else:
        made = existing
        log(f"The GitHub Release {tag} already has this version's notes: kept.")
    write_summary(cfg, f"- GitHub Release: {made.get('html_url') or tag}")


# -- command line ---------------------------------------------------------------------------------
def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> tuple[Config, State, list[str]]:
    parser = argparse.ArgumentParser(
        prog="release.py",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "steps",
        nargs="+",
        metavar="STEP",
        help=f"all, or some of: {' '.join(STEPS)} (in that order)",
    )
    parser.add_argument(
        "--version", required=True, help="X.Y.Z (or vX.Y.Z): the version to release"
    )
    parser.add_argument("--repository", default=env.get("GITHUB_REPOSITORY"), help="OWNER/NAME")
    parser.add_argument("--sha", default=env.get("GITHUB_SHA"), help="the source commit")
    parser.add_argument(
        "--image", help=f"registry/owner/name (default ghcr.io/<owner>/{IMAGE_NAME})"
    )
    parser.add_argument("--digest", help="the pushed image's digest, for steps after `push`")
    parser.add_argument("--release-commit", help="the release commit, for steps after `commit`")
    parser.add_argument("--platforms", default=",".join(PLATFORMS))
    parser.add_argument("--root", type=Path, default=HERE.parent, help="the source checkout")
    parser.add_argument("--simulator-python", default=sys.executable)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)

    steps = list(STEPS) if args.steps == ["all"] else args.steps
    unknown = [s for s in steps if s not in STEPS]
    if unknown or steps != sorted(steps, key=STEPS.index) or len(set(steps)) != len(steps):
        parser.error(
            f"steps are all, or some of {' '.join(STEPS)} in that order "
            f"(got {' '.join(args.steps)})"
        )
    version = Version.parse(args.version)
    if version is None:
        parser.error(f"--version must be X.Y.Z, got {args.version!r}")
    if not args.repository or not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repository):
        parser.error("--repository OWNER/NAME (or GITHUB_REPOSITORY) is required")
    if not args.sha or not re.fullmatch(r"[0-9a-f]{40}", args.sha):
        parser.error("--sha (or GITHUB_SHA) must be the 40-hex source commit")
    image = args.image or f"ghcr.io/{args.repository.split('/')[0].lower()}/{IMAGE_NAME}"
    if args.digest is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", args.digest):
        parser.error("--digest must be sha256:<64 hex>")
    cfg = Config(
        root=args.root.resolve(),
        version=version,
        repository=args.repository,
        source_sha=args.sha,
        image=image,
        platforms=tuple(p for p in args.platforms.split(",") if p),
        api_url=env.get("GITHUB_API_URL", "https://api.github.com"),
        server_url=env.get("GITHUB_SERVER_URL", "https://github.com"),
        token=env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or None,
        dry_run=args.dry_run,
        simulator_python=args.simulator_python,
        output=Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
        summary=Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None,
    )
    return cfg, State(digest=args.digest, release_sha=args.release_commit), steps


def main(
    argv: Sequence[str] | None = None,
    *,
    docker: Docker | None = None,
    env: Mapping[str, str] | None = None,
    sleep: Sleep = time.sleep,
    github_transport: httpx.BaseTransport | None = None,
    registry_transport: httpx.BaseTransport | None = None,
) -> int:
    cfg, state, steps = parse_args(
        sys.argv[1:] if argv is None else argv, os.environ if env is None else env
    )
    run_docker = docker or docker_runner(cfg.dry_run)
    gh = GitHub(cfg, sleep, github_transport)
    actions: dict[str, Callable[[], None]] = {
        "preflight": lambda: preflight(cfg, gh, state),
        "build": lambda: build(cfg, run_docker, state),
        "push": lambda: push(cfg, run_docker, state),
        "check-public": lambda: check_public(cfg, state, sleep, registry_transport),
        "run": lambda: run_by_digest(cfg, run_docker, state),
        "commit": lambda: release_commit(cfg, gh, state),
        "tag": lambda: move_tags(cfg, gh, state),
        "publish": lambda: publish(cfg, gh, state),
    }
    try:
        for step in steps:
            log(f"::group::{step}")
            try:
                actions[step]()
            finally:
                log("::endgroup::")
            state.done.append(step)
    except ReleaseError as e:
        annotate("error", str(e), e.title)
        return 1
    finally:
        gh.http.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
