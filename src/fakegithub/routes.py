"""The routes of the endpoints the PR comment uses (the user, a repository, a pull request and
its issue, its comments, the pull requests of a commit) and the one GraphQL question the action
asks; with the git data's (:mod:`fakegithub.gitroutes`), the route table.

Any token may edit or delete anyone's comment (GitHub lets every account with write access do so),
so a test sees it when a client touches a comment that is not its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import gitroutes
from .context import NOT_INTEGRATION_ACCESSIBLE, Answer, Ctx, Reply
from .models import Comment, Json

Route = Callable[[Ctx, re.Match[str]], Answer]


def _get_user(ctx: Ctx, m: re.Match[str]) -> Answer:
    if ctx.identity.integration:
        raise Reply(403, NOT_INTEGRATION_ACCESSIBLE)
    return 200, ctx.user_json(ctx.identity.login), {}


def _get_repo(ctx: Ctx, m: re.Match[str]) -> Answer:
    return 200, ctx.repo_json(ctx.repo(m)), {}


def _get_pull(ctx: Ctx, m: re.Match[str]) -> Answer:
    return 200, ctx.pull_json(ctx.pull(m)), {}


def _get_issue(ctx: Ctx, m: re.Match[str]) -> Answer:
    return 200, ctx.issue_json(ctx.pull(m)), {}


def _list_comments(ctx: Ctx, m: re.Match[str]) -> Answer:
    pr = ctx.pull(m)
    items = [
        ctx.comment_json(c)
        for c in sorted(ctx.store.comments.values(), key=lambda c: c.id)
        if (c.repo, c.issue) == (pr.repo, pr.number)
    ]
    return ctx.paginate(items)


def _create_comment(ctx: Ctx, m: re.Match[str]) -> Answer:
    pr = ctx.pull(m)
    c = ctx.store.create_comment(pr.repo, pr.number, ctx.comment_body(), ctx.identity.login)
    return 201, ctx.comment_json(c), {"Location": ctx.comment_json(c)["url"]}


def _one_comment(ctx: Ctx, m: re.Match[str]) -> Comment:
    repo = ctx.repo(m)
    c = ctx.store.comments.get(int(m["id"]))
    if c is None or c.repo != repo:
        raise Reply(404, "Not Found")
    return c


def _get_comment(ctx: Ctx, m: re.Match[str]) -> Answer:
    return 200, ctx.comment_json(_one_comment(ctx, m)), {}


def _edit_comment(ctx: Ctx, m: re.Match[str]) -> Answer:
    # Like GitHub, any token with write access may edit any comment, not only its own (a
    # maintainer's edit; an App or Actions token with `pull-requests: write` as well): the client
    # is the one that must not touch other people's comments.
    c = _one_comment(ctx, m)
    return 200, ctx.comment_json(ctx.store.edit_comment(c.id, ctx.comment_body())), {}


def _delete_comment(ctx: Ctx, m: re.Match[str]) -> Answer:
    c = _one_comment(ctx, m)
    del ctx.store.comments[c.id]
    return 204, None, {}


def _commit_pulls(ctx: Ctx, m: re.Match[str]) -> Answer:
    repo = ctx.repo(m)
    sha = m["sha"]
    prs = sorted(
        (
            pr
            for pr in ctx.store.pulls.values()
            if pr.repo == repo and sha in (pr.merge_commit_sha, pr.head_sha)
        ),
        key=lambda pr: pr.number,
    )
    items = []
    for pr in prs:
        item = ctx.pull_json(pr)
        # The list endpoint leaves out `merged`; clients must read `merged_at`.
        item.pop("merged")
        items.append(item)
    return ctx.paginate(items)


def _graphql(ctx: Ctx) -> Answer:
    """The one GraphQL question the action asks: which of these comments did the viewer write.

    `nodes(ids:)` with `... on IssueComment { id viewerDidAuthor }`; an unknown ID is null, as on
    GitHub. Any other query gets GitHub's error shape (200 with `errors`).
    """
    body = ctx.body if isinstance(ctx.body, dict) else {}
    query = body.get("query")
    variables = body.get("variables") or {}
    if not isinstance(query, str) or "nodes(" not in query or "viewerDidAuthor" not in query:
        return 200, {"errors": [{"message": "the fake answers only nodes/viewerDidAuthor"}]}, {}
    ids = variables.get("ids") if isinstance(variables, dict) else None
    if not isinstance(ids, list) or len(ids) > 100:
        return 200, {"errors": [{"type": "INVALID", "message": "ids: 1 to 100 IDs"}]}, {}
    by_node = {f"IC_{c.id}": c for c in ctx.store.comments.values()}
    nodes: list[Json | None] = []
    for node_id in ids:
        c = by_node.get(str(node_id))
        nodes.append(
            None if c is None else {"id": node_id, "viewerDidAuthor": c.login == ctx.identity.login}
        )
    return 200, {"data": {"nodes": nodes}}, {}


_REPO = gitroutes.REPO_PATH
_ROUTES: list[tuple[str, re.Pattern[str], Route]] = [
    ("GET", re.compile(r"/user"), _get_user),
    ("GET", re.compile(_REPO), _get_repo),
    ("GET", re.compile(_REPO + r"/pulls/(?P<number>\d+)"), _get_pull),
    ("GET", re.compile(_REPO + r"/issues/(?P<number>\d+)"), _get_issue),
    ("GET", re.compile(_REPO + r"/issues/(?P<number>\d+)/comments"), _list_comments),
    ("POST", re.compile(_REPO + r"/issues/(?P<number>\d+)/comments"), _create_comment),
    ("GET", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), _get_comment),
    ("PATCH", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), _edit_comment),
    ("DELETE", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), _delete_comment),
    ("GET", re.compile(_REPO + r"/commits/(?P<sha>[0-9A-Za-z._-]+)/pulls"), _commit_pulls),
    *gitroutes.ROUTES,
]


def answer(ctx: Ctx) -> Answer:
    """The answer of the route the request's method and path name."""
    if ctx.path == "/graphql" and ctx.method == "POST":
        return _graphql(ctx)
    for route_method, pattern, route in _ROUTES:
        m = pattern.fullmatch(ctx.path)
        if m is not None and route_method == ctx.method:
            return route(ctx, m)
    # GitHub answers 404 to an unknown path and to a known path with another method.
    raise Reply(404, "Not Found")
