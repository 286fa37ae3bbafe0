"""GitHub's Git Database API (`/repos/{owner}/{repo}/git/...`) and Releases API over the fake's
git data (:mod:`fakegithub.gitdata`): read a commit and its tree, create a tree on a base tree,
create a commit, read, list, create and update refs (with GitHub's fast-forward rule), read
annotated tag objects, and create, read and update releases with `make_latest`.

The route functions raise `GitError`, which the server turns into GitHub's error JSON.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from .gitdata import GitCommit, GitError, GitStore, Json, Release, iso, sha1


class RouteContext(Protocol):
    """What a route needs from the server's request context."""

    @property
    def api(self) -> str: ...
    @property
    def web(self) -> str: ...
    @property
    def body(self) -> Any: ...
    @property
    def query(self) -> dict[str, str]: ...
    @property
    def login(self) -> str: ...
    @property
    def git(self) -> GitStore: ...
    def repo(self, m: re.Match[str]) -> str: ...
    def paginate(self, items: list[Json]) -> tuple[int, Any, dict[str, str]]: ...


Answer = tuple[int, Any, dict[str, str]]


# -- JSON shapes ------------------------------------------------------------------------------
def _commit_json(ctx: RouteContext, repo: str, c: GitCommit) -> Json:
    base = f"{ctx.api}/repos/{repo}"
    return {
        "sha": c.sha,
        "node_id": f"C_{c.sha[:12]}",
        "url": f"{base}/git/commits/{c.sha}",
        "html_url": f"{ctx.web}/{repo}/commit/{c.sha}",
        "author": c.author,
        "committer": c.committer,
        "message": c.message,
        "tree": {"sha": c.tree, "url": f"{base}/git/trees/{c.tree}"},
        "parents": [
            {"sha": p, "url": f"{base}/git/commits/{p}", "html_url": f"{ctx.web}/{repo}/commit/{p}"}
            for p in c.parents
        ],
        "verification": {
            "verified": c.verified,
            "reason": "valid" if c.verified else "unsigned",
            "signature": None,
            "payload": None,
        },
    }


def _ref_json(ctx: RouteContext, repo: str, ref: str, sha: str) -> Json:
    kind = ctx.git.object_type(repo, sha) or "commit"
    base = f"{ctx.api}/repos/{repo}"
    return {
        "ref": ref,
        "node_id": f"REF_{ref}",
        "url": f"{base}/git/{ref}",
        "object": {"sha": sha, "type": kind, "url": f"{base}/git/{kind}s/{sha}"},
    }


def _tree_json(ctx: RouteContext, repo: str, sha: str, recursive: bool) -> Json:
    data = ctx.git.repo(repo)
    files = data.trees[sha]
    entries: dict[str, Json] = {}
    for path, blob in sorted(files.items()):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if (recursive or depth == 1) and folder not in entries:
                entries[folder] = {
                    "path": folder,
                    "mode": "040000",
                    "type": "tree",
                    "sha": sha1("tree", folder.encode()),
                }
        if recursive or len(parts) == 1:
            entries[path] = {
                "path": path,
                "mode": "100644",
                "type": "blob",
                "sha": blob,
                "size": len(data.blobs[blob]),
                "url": f"{ctx.api}/repos/{repo}/git/blobs/{blob}",
            }
    return {
        "sha": sha,
        "url": f"{ctx.api}/repos/{repo}/git/trees/{sha}",
        "tree": list(entries.values()),
        "truncated": False,
    }


def _release_json(ctx: RouteContext, repo: str, r: Release) -> Json:
    base = f"{ctx.api}/repos/{repo}"
    return {
        "id": r.id,
        "url": f"{base}/releases/{r.id}",
        "html_url": f"{ctx.web}/{repo}/releases/tag/{r.tag_name}",
        "tag_name": r.tag_name,
        "name": r.name,
        "body": r.body,
        "draft": r.draft,
        "prerelease": r.prerelease,
        "created_at": iso(r.created_at),
    }


# -- routes -----------------------------------------------------------------------------------
def _body(ctx: RouteContext) -> Json:
    if not isinstance(ctx.body, dict):
        raise GitError(400, "Problems parsing JSON")
    return ctx.body


def _get_commit(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo = ctx.repo(m)
    c = ctx.git.repo(repo).commits.get(m["sha"])
    if c is None:
        raise GitError(404, "Not Found")
    return 200, _commit_json(ctx, repo, c), {}


def _create_commit(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, body = ctx.repo(m), _body(ctx)
    message, tree, parents = body.get("message"), body.get("tree"), body.get("parents", [])
    if not isinstance(message, str) or not isinstance(tree, str) or not isinstance(parents, list):
        raise GitError(422, "Invalid request.\n\nmessage, tree and parents are required")
    c = ctx.git.commit(
        repo,
        tree,
        tuple(parents),
        message,
        login=ctx.login,
        author=body.get("author"),
        committer=body.get("committer"),
    )
    return 201, _commit_json(ctx, repo, c), {}


def _get_tree(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo = ctx.repo(m)
    if m["sha"] not in ctx.git.repo(repo).trees:
        raise GitError(404, "Not Found")
    # GitHub: any value of `recursive` (even 0 or false) lists the whole tree.
    recursive = "recursive" in ctx.query
    return 200, _tree_json(ctx, repo, m["sha"], recursive), {}


def _create_tree(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, body = ctx.repo(m), _body(ctx)
    data = ctx.git.repo(repo)
    base = body.get("base_tree")
    if base is not None and base not in data.trees:
        raise GitError(422, "base_tree is not a valid tree oid")
    files = dict(data.trees[base]) if base else {}
    entries = body.get("tree")
    if not isinstance(entries, list):
        raise GitError(422, 'Invalid request.\n\n"tree" wasn\'t supplied.')
    for entry in entries:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or entry.get("type", "blob") != "blob":
            raise GitError(422, "Invalid tree entry (the fake handles blobs only)")
        if "content" in entry:
            files[path] = ctx.git.blob(repo, str(entry["content"]).encode())
        elif entry.get("sha") is None:
            files.pop(path, None)
        else:
            files[path] = str(entry["sha"])
    sha = ctx.git.tree(repo, files)
    return 201, _tree_json(ctx, repo, sha, recursive=False), {}


def _get_blob(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo = ctx.repo(m)
    content = ctx.git.repo(repo).blobs.get(m["sha"])
    if content is None:
        raise GitError(404, "Not Found")
    encoded = base64.encodebytes(content).decode()
    return (
        200,
        {"sha": m["sha"], "size": len(content), "content": encoded, "encoding": "base64"},
        {},
    )


def _get_tag(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo = ctx.repo(m)
    t = ctx.git.repo(repo).tags.get(m["sha"])
    if t is None:
        raise GitError(404, "Not Found")
    obj = {"sha": t.object_sha, "type": t.object_type}
    return 200, {"sha": t.sha, "tag": t.tag, "message": t.message, "object": obj}, {}


def _get_ref(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, ref = ctx.repo(m), f"refs/{m['ref']}"
    sha = ctx.git.repo(repo).refs.get(ref)
    if sha is None:
        raise GitError(404, "Not Found")
    return 200, _ref_json(ctx, repo, ref, sha), {}


def _matching_refs(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, prefix = ctx.repo(m), f"refs/{m['ref']}"
    refs = ctx.git.repo(repo).refs
    items = [_ref_json(ctx, repo, r, s) for r, s in sorted(refs.items()) if r.startswith(prefix)]
    return ctx.paginate(items)


def _create_ref(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, body = ctx.repo(m), _body(ctx)
    ref, sha = body.get("ref"), body.get("sha")
    if (
        not isinstance(ref, str)
        or not re.fullmatch(r"refs/[^/]+/.+", ref)
        or not isinstance(sha, str)
    ):
        raise GitError(422, "Reference name must start with 'refs/' and have at least two slashes.")
    if ref in ctx.git.repo(repo).refs:
        raise GitError(422, "Reference already exists")
    ctx.git.set_ref(repo, ref, sha)
    return 201, _ref_json(ctx, repo, ref, sha), {}


def _update_ref(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, body, ref = ctx.repo(m), _body(ctx), f"refs/{m['ref']}"
    sha = body.get("sha")
    if not isinstance(sha, str):
        raise GitError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
    if ref not in ctx.git.repo(repo).refs:
        raise GitError(422, "Reference does not exist")
    ctx.git.set_ref(repo, ref, sha, force=bool(body.get("force", False)))
    return 200, _ref_json(ctx, repo, ref, sha), {}


def _delete_ref(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, ref = ctx.repo(m), f"refs/{m['ref']}"
    if ctx.git.repo(repo).refs.pop(ref, None) is None:
        raise GitError(422, "Reference does not exist")
    return 204, None, {}


def _one_release(ctx: RouteContext, repo: str, pick: Callable[[Release], bool]) -> Release:
    for r in ctx.git.repo(repo).releases.values():
        if pick(r):
            return r
    raise GitError(404, "Not Found")


def _list_releases(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo = ctx.repo(m)
    releases = sorted(ctx.git.repo(repo).releases.values(), key=lambda r: -r.id)
    return ctx.paginate([_release_json(ctx, repo, r) for r in releases])


def _release_by_tag(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo = ctx.repo(m)
    r = _one_release(ctx, repo, lambda r: r.tag_name == m["tag"] and not r.draft)
    return 200, _release_json(ctx, repo, r), {}


def _latest_release(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo = ctx.repo(m)
    latest = ctx.git.repo(repo).latest_release
    r = _one_release(ctx, repo, lambda r: r.id == latest)
    return 200, _release_json(ctx, repo, r), {}


def _create_release(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, body = ctx.repo(m), _body(ctx)
    tag = body.get("tag_name")
    if not isinstance(tag, str) or not tag:
        raise GitError(
            422,
            "Validation Failed",
            [{"resource": "Release", "code": "missing_field", "field": "tag_name"}],
        )
    data = ctx.git.repo(repo)
    if any(r.tag_name == tag for r in data.releases.values()):
        raise GitError(
            422,
            "Validation Failed",
            [{"resource": "Release", "code": "already_exists", "field": "tag_name"}],
        )
    if f"refs/tags/{tag}" not in data.refs:
        # GitHub would create the tag from target_commitish (default: the default branch); the
        # fake asks for the tag to exist, so a client that forgot to create it is caught.
        raise GitError(
            422,
            "Validation Failed",
            [{"resource": "Release", "code": "invalid", "field": "tag_name"}],
        )
    r = Release(
        ctx.git.new_release_id(),
        tag,
        str(body.get("name") or tag),
        str(body.get("body") or ""),
        bool(body.get("draft", False)),
        bool(body.get("prerelease", False)),
        ctx.git.now(),
    )
    ctx.git.save_release(repo, r, str(body.get("make_latest", "true")))
    return 201, _release_json(ctx, repo, r), {}


def _update_release(ctx: RouteContext, m: re.Match[str]) -> Answer:
    repo, body = ctx.repo(m), _body(ctx)
    r = _one_release(ctx, repo, lambda r: r.id == int(m["id"]))
    changes = {k: body[k] for k in ("name", "body", "draft", "prerelease") if k in body}
    r = replace(r, **changes)
    ctx.git.save_release(repo, r, str(body.get("make_latest", "false")))
    return 200, _release_json(ctx, repo, r), {}


# A repository path, as both route tables match it.
REPO_PATH = r"/repos/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+)"
_REPO = REPO_PATH
_SHA = r"(?P<sha>[0-9a-f]{40})"
ROUTES: list[tuple[str, re.Pattern[str], Callable[[Any, re.Match[str]], Answer]]] = [
    ("GET", re.compile(_REPO + r"/git/commits/" + _SHA), _get_commit),
    ("POST", re.compile(_REPO + r"/git/commits"), _create_commit),
    ("GET", re.compile(_REPO + r"/git/trees/" + _SHA), _get_tree),
    ("POST", re.compile(_REPO + r"/git/trees"), _create_tree),
    ("GET", re.compile(_REPO + r"/git/blobs/" + _SHA), _get_blob),
    ("GET", re.compile(_REPO + r"/git/tags/" + _SHA), _get_tag),
    ("GET", re.compile(_REPO + r"/git/ref/(?P<ref>.+)"), _get_ref),
    ("GET", re.compile(_REPO + r"/git/matching-refs/(?P<ref>.+)"), _matching_refs),
    ("POST", re.compile(_REPO + r"/git/refs"), _create_ref),
    ("PATCH", re.compile(_REPO + r"/git/refs/(?P<ref>.+)"), _update_ref),
    ("DELETE", re.compile(_REPO + r"/git/refs/(?P<ref>.+)"), _delete_ref),
    ("GET", re.compile(_REPO + r"/releases"), _list_releases),
    ("GET", re.compile(_REPO + r"/releases/latest"), _latest_release),
    ("GET", re.compile(_REPO + r"/releases/tags/(?P<tag>.+)"), _release_by_tag),
    ("POST", re.compile(_REPO + r"/releases"), _create_release),
    ("PATCH", re.compile(_REPO + r"/releases/(?P<id>\d+)"), _update_release),
]
