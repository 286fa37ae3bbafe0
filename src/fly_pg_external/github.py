"""The GitHub API side of the report: find, create or update this action's PR comment.

The comment is found again by its hidden marker line (it names the app and carries a digest of the
content), and only among comments written by the token's own account, so another app's comment or
someone else's comment that quotes the marker is never touched. Which account that is, GitHub's
GraphQL API tells for every kind of token (`viewerDidAuthor` on each comment): a PAT, the Actions
`GITHUB_TOKEN` and a GitHub App installation token alike. The REST API cannot: an installation
token gets 403 from `GET /user`, and nothing gives it its bot login (`<app-slug>[bot]`). Nothing
here can change the step's result: every GitHub problem becomes a logged warning that says how to
fix it. Messages go to the package log, whose handler redacts them: text from GitHub (an error's
message) needs no redaction here. What gets posted, and when, is `publish.py`'s decision.

PyGithub is imported inside the functions that use it: it pulls in requests, urllib3, PyJWT and
cryptography (about 0.2 s), a waste for runs that never comment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .comment_marker import marker_digest, parse_marker
from .log import silence

if TYPE_CHECKING:
    from github import Github, GithubException
    from github.Issue import Issue
    from github.IssueComment import IssueComment
    from github.Repository import Repository

    from .event import RunContext

log = logging.getLogger(__name__)
NOT_WRITTEN = "PR comment not written"  # the title of every warning here

# Who writes the comments of the Actions GITHUB_TOKEN; that token may not read GET /user.
ACTIONS_BOT_LOGIN = "github-actions[bot]"
FORK_PATTERN_URL = (
    "https://securitylab.github.com/resources/github-actions-preventing-pwn-requests/"
)


@dataclass(frozen=True)
class ClientTuning:
    """How the PyGithub client paces and retries.

    The defaults are for real GitHub: retry server errors and rate limits a few times, but never
    wait long (a report is not worth holding a runner for an hour). Tests use `fast()`.
    """

    retry_total: int = 3
    backoff_factor: float = 1.0
    secondary_rate_wait: float = 30.0
    max_rate_limit_wait: float = 60.0
    seconds_between_requests: float | None = 0.25
    seconds_between_writes: float | None = 1.0
    timeout: int = 15
    per_page: int = 100

    @classmethod
    def fast(cls, *, per_page: int = 100) -> ClientTuning:
        """No retries and no pacing: for a local fake server."""
        return cls(
            retry_total=0,
            seconds_between_requests=None,
            seconds_between_writes=None,
            timeout=5,
            per_page=per_page,
        )


# -- the upsert -----------------------------------------------------------------------------


def upsert_comment(
    *,
    ctx: RunContext,
    token: str,
    app: str,
    body: str,
    keep_existing: bool = False,
    tuning: ClientTuning | None = None,
) -> str:
    """Post `body` as the comment of `app` on the run's pull request, or update the one there;
    return its URL, or '' when there is none.

    `body` is a finished `report.comment_body` (its marker names `app` and carries the digest
    that spares an edit when nothing changed). With `keep_existing`, a comment already there is
    left as it is. A push run finds the pull request its commit merged and only updates.
    Never raises: a problem with GitHub is a logged warning.
    """
    try:
        return _upsert(ctx=ctx, token=token, app=app, body=body, keep=keep_existing, tuning=tuning)
    except Exception as e:  # a report must never turn a finished run into a failed step
        log.warning(_explain(e, ctx), extra={"title": NOT_WRITTEN})
        return ""


_RETRY_METHODS = frozenset({"GET", "HEAD", "PATCH", "PUT", "DELETE"})


def client(token: str, api_url: str, tuning: ClientTuning) -> Github:
    from github import Auth, Github, GithubRetry

    silence("github")  # its failures reach the log as our explanations, not as its own lines

    retry: GithubRetry | None = None
    if tuning.retry_total > 0:
        retry = GithubRetry(
            total=tuning.retry_total,
            backoff_factor=tuning.backoff_factor,
            secondary_rate_wait=tuning.secondary_rate_wait,
            max_rate_limit_wait=tuning.max_rate_limit_wait,
            # Not POST: a create that timed out may have worked, and repeating it would post a
            # second comment. `_upsert` retries the whole lookup-then-create instead.
            allowed_methods=_RETRY_METHODS,
        )
    return Github(
        auth=Auth.Token(token),
        base_url=api_url,
        per_page=tuning.per_page,
        lazy=True,
        timeout=tuning.timeout,
        retry=retry,
        seconds_between_requests=tuning.seconds_between_requests,
        seconds_between_writes=tuning.seconds_between_writes,
    )


@dataclass
class _Stage:
    """What the upsert is doing, so a failure message can say which request failed."""

    doing: str = "connect to GitHub"
    writing: bool = False


class _CreateUncertain(Exception):
    """The comment POST failed in a way that does not say whether GitHub created the comment."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _upsert(
    *, ctx: RunContext, token: str, app: str, body: str, keep: bool, tuning: ClientTuning | None
) -> str:
    from github import GithubException

    tuning = tuning or ClientTuning()
    gh = client(token, ctx.api_url, tuning)
    try:
        # A create is never retried on its own (it could post a second comment): the whole
        # find-then-create is, so a comment that did get created is found and reused.
        attempts = 2 if tuning.retry_total > 0 else 1
        for attempt in range(1, attempts + 1):
            stage = _Stage()
            try:
                return _upsert_once(gh=gh, ctx=ctx, app=app, body=body, keep=keep, stage=stage)
            except _CreateUncertain as e:
                if attempt == attempts:
                    cause = e.cause
                    if isinstance(cause, GithubException):
                        text = _explain_github_error(cause, ctx, stage)
                    else:
                        text = _explain(cause, ctx)
                    log.warning(text, extra={"title": NOT_WRITTEN})
                    return ""
                log.info("PR comment: the create request failed; looking for the comment again.")
            except GithubException as e:
                log.warning(_explain_github_error(e, ctx, stage), extra={"title": NOT_WRITTEN})
                return ""
        return ""  # not reached: the last attempt returns
    finally:
        gh.close()


def _upsert_once(
    *, gh: Github, ctx: RunContext, app: str, body: str, keep: bool, stage: _Stage
) -> str:
    repo = gh.get_repo(ctx.repository)
    number = ctx.pr_number
    # A push names no pull request (unless `pr-number` does): look up the one it merged.
    merged = ctx.event_name == "push" and number is None
    if merged:
        stage.doing = f"find the pull request merged as commit {ctx.commit} in {ctx.repository}"
        number = _merged_pr_number(repo, ctx.commit or "")
    if number is None:
        log.info(
            f"PR comment: none, no merged pull request has commit {ctx.commit} as its merge "
            "commit; the report is in the job summary."
        )
        return ""
    where = f"pull request #{number} in {ctx.repository}"
    stage.doing = f"read the comments of {where}"
    issue = repo.get_issue(number)
    reports = _reports_for(issue.get_comments(), app=app)
    stage.doing = f"find out which comments of {where} the token's account wrote"
    existing = _own_report(gh, reports)
    if existing is not None:
        return _update(existing, body=body, app=app, where=where, keep=keep, stage=stage)
    if merged:
        log.info(
            f"PR comment: none, {where} (merged as {ctx.commit}) has no comment for app "
            f"{app} to update, and a push run does not start one."
        )
        return ""
    return _create(issue, body=body, where=where, stage=stage)


def _update(
    existing: IssueComment, *, body: str, app: str, where: str, keep: bool, stage: _Stage
) -> str:
    url = str(existing.html_url)
    if keep:
        log.info(
            f"PR comment: left as is on {where}; this run changed nothing, so the comment "
            f"keeps telling what was last done: {url}"
        )
        return url
    if marker_digest(existing.body or "") == marker_digest(body):
        log.info(f"PR comment: already up to date on {where}: {url}")
        return url
    stage.doing, stage.writing = f"edit the comment of app {app} on {where}", True
    existing.edit(body)
    log.info(f"PR comment: updated on {where}: {url}")
    return url


def _create(issue: Issue, *, body: str, where: str, stage: _Stage) -> str:
    import requests
    from github import GithubException

    stage.doing, stage.writing = f"comment on {where}", True
    try:
        created = issue.create_comment(body)
    except GithubException as e:
        if e.status >= 500:
            raise _CreateUncertain(e) from e
        raise
    except requests.RequestException as e:
        raise _CreateUncertain(e) from e
    url = str(created.html_url)
    log.info(f"PR comment: created on {where}: {url}")
    return url


def _reports_for(comments: Iterable[IssueComment], *, app: str) -> list[IssueComment]:
    """Every comment whose marker names `app`, whoever wrote it, oldest first (all pages)."""
    found = []
    for c in comments:
        marker = parse_marker(c.body)
        if marker is not None and marker.app == app:
            found.append(c)
    return found


# `viewerDidAuthor` is true when the token's own account wrote the comment. `nodes` takes at most
# 100 IDs; the REST listing gives each comment's GraphQL ID as `node_id`.
VIEWER_DID_AUTHOR = (
    "query($ids: [ID!]!) { nodes(ids: $ids) { ... on IssueComment { id viewerDidAuthor } } }"
)
NODES_PER_QUERY = 100


def _own_report(gh: Github, reports: list[IssueComment]) -> IssueComment | None:
    """The oldest of `reports` written by the token's own account.

    Asked of GraphQL: one query per 100 reports, and right for every kind of token. Where
    GraphQL is not there (an old GitHub Enterprise Server, a proxy that only passes the REST API)
    the author is compared with the token's login instead (`_token_login`), which is exact for a
    PAT and for the Actions `GITHUB_TOKEN`, but not for a GitHub App token.
    """
    from github import GithubException

    if not reports:
        return None
    try:
        authored = _viewer_authored(gh, [str(c.node_id) for c in reports])
    except GithubException as e:
        # 401: the token is bad for REST too. 5xx: GraphQL is there but failing; guessing now
        # could edit a comment that is not ours, so the run gives up on the comment (a warning).
        if e.status == 401 or e.status >= 500:
            raise
        # Not there (404), refused (403), or a query it does not know (400): fall back.
        # With an integration token this assumes the Actions bot: a GitHub App token on such a
        # server would take the Actions bot's report of the same app for its own.
        login = _token_login(gh)
        return next((c for c in reports if c.user is not None and c.user.login == login), None)
    return next((c for c in reports if str(c.node_id) in authored), None)


def _viewer_authored(gh: Github, node_ids: list[str]) -> set[str]:
    """The IDs among `node_ids` of the comments the token's account wrote."""
    authored: set[str] = set()
    for start in range(0, len(node_ids), NODES_PER_QUERY):
        ids = node_ids[start : start + NODES_PER_QUERY]
        _, data = gh.requester.graphql_query(VIEWER_DID_AUTHOR, {"ids": ids})
        nodes = (data.get("data") or {}).get("nodes") or []
        for node in nodes:
            if isinstance(node, dict) and node.get("viewerDidAuthor") is True:
                authored.add(str(node.get("id")))
    return authored


def _token_login(gh: Github) -> str:
    """The login the token writes comments as, from the REST API (the fallback)."""
    from github import GithubException

    try:
        return str(gh.get_user().login)
    except GithubException as e:
        # The Actions GITHUB_TOKEN (and a GitHub App installation token) may not read /user:
        # 403 "Resource not accessible by integration". The Actions token's comments are by
        # github-actions[bot]; an App token's are by `<slug>[bot]`, which no REST endpoint gives
        # it, so this guess is right for the Actions token only (the default `github-token`).
        if e.status in (403, 404):
            return ACTIONS_BOT_LOGIN
        raise


def _merged_pr_number(repo: Repository, sha: str) -> int | None:
    """The pull request this commit merged (GET /repos/{o}/{r}/commits/{sha}/pulls)."""
    if not sha:
        return None
    first_closed: int | None = None
    for pr in repo.get_commit(sha).get_pulls():
        merged = pr.merged_at is not None
        if merged and pr.merge_commit_sha == sha:
            return int(pr.number)
        if first_closed is None and (merged or pr.state == "closed"):
            first_closed = int(pr.number)
    return first_closed


# -- messages -------------------------------------------------------------------------------


def _github_message(e: GithubException) -> str:
    data: object = e.data
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        errors = data.get("errors")
        if isinstance(errors, list):
            details = [str(x.get("message")) for x in errors if isinstance(x, dict)]
            details = [d for d in details if d and d != "None"]
            if details:
                message = f"{message}: {'; '.join(details)}" if message else "; ".join(details)
        return message
    return str(data or "")


def _explain_github_error(e: GithubException, ctx: RunContext, stage: _Stage) -> str:
    status = e.status
    message = _github_message(e)
    answer = f"GitHub answered {status}" + (f" ({message})" if message else "")
    lead = f"PR comment: could not {stage.doing}: {answer}."
    tail = " The report is in the job summary; the step's result is unchanged."
    if status == 401:
        return (
            f"{lead} GitHub refused the token in `github-token`: pass a valid one "
            "(`${{ github.token }}` is the default)." + tail
        )
    if _is_rate_limit(message):
        return f"{lead} The token hit GitHub's API rate limit; a later run will catch up.{tail}"
    if status in (403, 404) and stage.writing:
        fix = (
            " The token may not write pull request comments: give the job "
            "`permissions: pull-requests: write` (and `contents: read`), or pass a token that "
            "may, in `github-token`."
        )
        if ctx.fork and ctx.event_name == "pull_request":
            fix += (
                f" This pull request comes from the fork {ctx.fork}, and GitHub gives such runs a "
                "read-only token whatever `permissions:` asks. To comment on pull requests from "
                "forks, upload the report as an artifact and post it from a separate workflow "
                f"triggered by `workflow_run` (see {FORK_PATTERN_URL})."
            )
        return lead + fix + tail
    if status in (403, 404):
        return (
            f"{lead} The token may not read this pull request: give the job "
            "`permissions: pull-requests: write` (and `contents: read`), and check that the "
            f"repository {ctx.repository} and the pull request exist." + tail
        )
    return lead + tail


def _is_rate_limit(message: str) -> bool:
    return "rate limit" in message.lower()


def _explain(e: Exception, ctx: RunContext) -> str:
    return (
        f"PR comment: could not be posted ({type(e).__name__}: {e}) while talking to "
        f"{ctx.api_url}. The report is in the job summary; the step's result is unchanged."
    )
