"""Git data and releases for the fake GitHub: blobs, trees, commits, tags, refs and releases.

Enough for a client that makes commits and moves tags without a local git (the release script).
Objects are content-addressed (SHA-1 over a git-like encoding, so equal content gives equal SHAs,
though not the SHAs git itself would compute) and scoped per repository, like on GitHub. A tree is
flat: every file's full path maps to its blob. A commit made through the API without `author` and
`committer` is "verified" (GitHub signs those), one with either given is not.

The routes of GitHub's Git Database and Releases APIs over them are :mod:`fakegithub.gitroutes`;
a refusal is a `GitError`, which the server turns into GitHub's error JSON.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Json = dict[str, Any]
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class GitError(Exception):
    def __init__(self, status: int, message: str, errors: list[Json] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors


@dataclass(frozen=True)
class GitCommit:
    sha: str
    tree: str
    parents: tuple[str, ...]
    message: str
    author: Json
    committer: Json
    verified: bool


@dataclass(frozen=True)
class GitTag:
    """An annotated tag object (what `git tag -a` pushes)."""

    sha: str
    tag: str
    object_sha: str
    object_type: str
    message: str


@dataclass(frozen=True)
class Release:
    id: int
    tag_name: str
    name: str
    body: str
    draft: bool
    prerelease: bool
    created_at: datetime


@dataclass
class _RepoData:
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> blob sha
    commits: dict[str, GitCommit] = field(default_factory=dict)
    tags: dict[str, GitTag] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "refs/tags/v1" -> object sha
    releases: dict[int, Release] = field(default_factory=dict)
    latest_release: int | None = None


def sha1(kind: str, payload: bytes) -> str:
    return hashlib.sha1(
        f"{kind} {len(payload)}\0".encode() + payload, usedforsecurity=False
    ).hexdigest()


def _person(value: Any, now: datetime) -> Json:
    if not isinstance(value, dict) or not value.get("name") or not value.get("email"):
        raise GitError(422, "Invalid request.\n\nauthor/committer needs name and email")
    return {"name": value["name"], "email": value["email"], "date": value.get("date") or iso(now)}


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class GitStore:
    """The git objects, refs and releases of every repository (callers hold the fake's lock)."""

    def __init__(self) -> None:
        self._repos: dict[str, _RepoData] = {}
        self._release_ids = itertools.count(5001)
        self._clock = itertools.count(1)

    def repo(self, repo: str) -> _RepoData:
        return self._repos.setdefault(repo, _RepoData())

    def now(self) -> datetime:
        return _EPOCH + timedelta(minutes=next(self._clock))

    # -- objects --------------------------------------------------------------------------
    def blob(self, repo: str, content: bytes) -> str:
        sha = sha1("blob", content)
        self.repo(repo).blobs[sha] = content
        return sha

    def tree(self, repo: str, files: Mapping[str, str]) -> str:
        data = self.repo(repo)
        for path, blob in files.items():
            if blob not in data.blobs:
                raise GitError(422, f"tree.sha {blob} is not a valid blob (path {path})")
        sha = sha1("tree", json.dumps(sorted(files.items())).encode())
        data.trees[sha] = dict(files)
        return sha

    def commit(
        self,
        repo: str,
        tree: str,
        parents: tuple[str, ...],
        message: str,
        *,
        login: str,
        author: Any = None,
        committer: Any = None,
    ) -> GitCommit:
        data = self.repo(repo)
        if tree not in data.trees:
            raise GitError(422, "Tree SHA does not exist")
        if any(p not in data.commits for p in parents):
            raise GitError(422, "Parent SHA does not exist or is not a commit object")
        now = self.now()
        me = {"name": login, "email": f"{login}@users.noreply.github.com", "date": iso(now)}
        who = _person(author, now) if author is not None else me
        by = _person(committer, now) if committer is not None else who
        text = "\n".join(
            [
                f"tree {tree}",
                *(f"parent {p}" for p in parents),
                f"author {who}",
                f"by {by}",
                "",
                message,
            ]
        )
        sha = sha1("commit", text.encode())
        verified = author is None and committer is None
        c = GitCommit(sha, tree, parents, message, who, by, verified)
        data.commits[sha] = c
        return c

    def annotated_tag(self, repo: str, tag: str, object_sha: str, message: str) -> GitTag:
        data = self.repo(repo)
        if object_sha not in data.commits:
            raise GitError(422, "Object does not exist")
        sha = sha1("tag", f"object {object_sha}\ntag {tag}\n\n{message}".encode())
        t = GitTag(sha, tag, object_sha, "commit", message)
        data.tags[sha] = t
        return t

    def object_type(self, repo: str, sha: str) -> str | None:
        data = self.repo(repo)
        if sha in data.commits:
            return "commit"
        if sha in data.tags:
            return "tag"
        return None

    def peel(self, repo: str, sha: str) -> str:
        """The commit an object names: itself, or what a chain of tag objects points at."""
        data = self.repo(repo)
        while sha in data.tags:
            sha = data.tags[sha].object_sha
        return sha

    def is_ancestor(self, repo: str, ancestor: str, sha: str) -> bool:
        data = self.repo(repo)
        todo, seen = [sha], set()
        while todo:
            current = todo.pop()
            if current == ancestor:
                return True
            if current in seen or current not in data.commits:
                continue
            seen.add(current)
            todo.extend(data.commits[current].parents)
        return False

    # -- refs -----------------------------------------------------------------------------
    def set_ref(self, repo: str, ref: str, sha: str, *, force: bool = True) -> None:
        data = self.repo(repo)
        if self.object_type(repo, sha) is None:
            raise GitError(422, "Object does not exist")
        old = data.refs.get(ref)
        if old is not None and not force:
            old_commit, new_commit = self.peel(repo, old), self.peel(repo, sha)
            if not self.is_ancestor(repo, old_commit, new_commit):
                raise GitError(422, "Update is not a fast forward")
        data.refs[ref] = sha

    # -- releases -------------------------------------------------------------------------
    def save_release(self, repo: str, release: Release, make_latest: str) -> Release:
        data = self.repo(repo)
        data.releases[release.id] = release
        if make_latest not in ("true", "false", "legacy"):
            raise GitError(422, "make_latest must be one of true, false, legacy")
        if make_latest != "false" and not release.draft and not release.prerelease:
            data.latest_release = release.id
        return release

    def new_release_id(self) -> int:
        return next(self._release_ids)
