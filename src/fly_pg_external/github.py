"""Publish the report: the job summary on every run, and one PR comment per app.

The comment is found again by its hidden marker line (it names the app and carries a digest of the
content), and only among comments the token's own identity may have written, so another app's
comment or a person's comment that quotes the marker is never touched:

- a token that may read `GET /user` (a PAT) knows its login: only that login's comments count;
- an integration token (the Actions `GITHUB_TOKEN`, a GitHub App installation token) gets 403 from
  `GET /user`, and no REST endpoint tells it its bot login (`<app-slug>[bot]` for an App). Its
  candidates are the comments by bots that carry the marker; GitHub refuses (403) such a token an
  edit of a comment it did not write, so a refused candidate is someone else's and the next one is
  tried. See `_integration_candidates` and `_update_first_own`.

Nothing here can change the step's result: every GitHub problem becomes a warning that says how to
fix it.

PyGithub is imported inside the functions that use it: it pulls in requests, urllib3, PyJWT and
cryptography (about 0.2 s), a waste for runs that never comment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .report import (
    COMMENT_SAFETY_MARGIN,
    GITHUB_COMMENT_LIMIT,
    comment_body,
    marker_digest,
    parse_marker,
    render_markdown,
)

if TYPE_CHECKING:
    from github import Github, GithubException
    from github.GithubObject import GithubObject
    from github.IssueComment import IssueComment
    from github.Repository import Repository

    from .outcome import Outcome
    from .redact import Redactor

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
# Who writes the comments of the Actions GITHUB_TOKEN; that token may not read GET /user.
ACTIONS_BOT_LOGIN = "github-actions[bot]"
# How many bot comments an integration token tries to edit before it posts its own (each refused
# edit is one wasted request; more than one other bot reporting on the same app is already rare).
MAX_EDIT_ATTEMPTS = 3
PR_EVENTS = frozenset({"pull_request", "pull_request_target"})
# The runner refuses a step summary over 1 MiB per step. The report stays well below, leaving
# room for whatever else the step appends.
SUMMARY_MAX_BYTES = 1024 * 1024 - 64 * 1024
FORK_PATTERN_URL = (
    "https://securitylab.github.com/resources/github-actions-preventing-pwn-requests/"
)


class GhaLike(Protocol):
    """The workflow-command surface publish needs (implemented by `gha.Actions`)."""

    def info(self, message: str, /) -> None: ...
    def notice(self, message: str, /) -> None: ...
    def warning(self, message: str, /) -> None: ...
    def append_summary(self, markdown: str, /) -> None: ...


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


@dataclass(frozen=True)
class RunContext:
    """What publish needs to know about the run, read once from the runner's environment."""

    event_name: str
    repository: str
    api_url: str
    commit: str | None
    run_url: str | None
    pr_number: int | None
    # The fork a pull request comes from (None for a PR from the repository itself).
    fork: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunContext:
        event_name = env.get("GITHUB_EVENT_NAME", "")
        repository = env.get("GITHUB_REPOSITORY", "")
        api_url = (env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        server_url = (env.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
        run_id = env.get("GITHUB_RUN_ID", "")
        run_url = (
            f"{server_url}/{repository}/actions/runs/{run_id}" if repository and run_id else None
        )
        payload = _read_event(env.get("GITHUB_EVENT_PATH", ""))
        commit = env.get("GITHUB_SHA") or None
        pr_number: int | None = None
        fork: str | None = None
        pr = _obj(payload.get("pull_request"))
        if event_name in PR_EVENTS and pr:
            number = pr.get("number", payload.get("number"))
            # bool is an int too; a payload saying `"number": true` names no pull request.
            if isinstance(number, int) and not isinstance(number, bool) and number > 0:
                pr_number = number
            # GITHUB_SHA of a PR run is a merge commit nobody has seen; the head is what was
            # pushed.
            head = _obj(pr.get("head"))
            head_sha = head.get("sha")
            if isinstance(head_sha, str) and head_sha:
                commit = head_sha
            head_repo = _full_name(head.get("repo"))
            base_repo = _full_name(_obj(pr.get("base")).get("repo")) or repository
            if head_repo and base_repo and head_repo != base_repo:
                fork = head_repo
        return cls(
            event_name=event_name,
            repository=repository,
            api_url=api_url,
            commit=commit,
            run_url=run_url,
            pr_number=pr_number,
            fork=fork,
        )


def _read_event(path: str) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _full_name(repo: object) -> str | None:
    if isinstance(repo, dict) and isinstance(repo.get("full_name"), str):
        return str(repo["full_name"])
    return None


# -- entry point ----------------------------------------------------------------------------


def publish(
    outcome: Outcome,
    *,
    token: str,
    pr_comment: bool,
    env: Mapping[str, str],
    gha: GhaLike,
    redactor: Redactor,
    tuning: ClientTuning | None = None,
) -> str:
    """Write the job summary (always), upsert the PR comment when applicable; return the comment
    URL or ''.

    Never raises for a GitHub problem and never fails the step: a report that cannot be posted is
    a warning, the run's result stays what the Fly work made it.
    """
    ctx = RunContext.from_env(env)
    write_summary(outcome, ctx=ctx, gha=gha, redactor=redactor)
    if not pr_comment:
        gha.info("PR comment: off (`pr-comment: false`); the report is in the job summary.")
        return ""
    if ctx.event_name not in PR_EVENTS and ctx.event_name != "push":
        gha.info(
            f"PR comment: none, a `{ctx.event_name or 'unknown'}` run has no pull request; "
            "the report is in the job summary."
        )
        return ""
    if ctx.event_name in PR_EVENTS and ctx.pr_number is None:
        gha.info(
            "PR comment: none, the event payload names no pull request number; "
            "the report is in the job summary."
        )
        return ""
    if not token:
        gha.warning(
            "PR comment: skipped, the `github-token` input is empty. Pass "
            "`github-token: ${{ github.token }}` (the default) or another token that may write "
            "pull request comments. The report is in the job summary."
        )
        return ""
    if not ctx.repository:
        gha.warning("PR comment: skipped, GITHUB_REPOSITORY is not set (not running in Actions?).")
        return ""
    try:
        return _upsert(outcome, ctx=ctx, token=token, gha=gha, redactor=redactor, tuning=tuning)
    except Exception as e:  # a report must never turn a finished run into a failed step
        gha.warning(redactor.redact(_explain(e, ctx)))
        return ""


def write_summary(outcome: Outcome, *, ctx: RunContext, gha: GhaLike, redactor: Redactor) -> None:
    """The full report into the job summary, cut with a notice only above the runner's limit."""
    text = redactor.redact(render_markdown(outcome, commit=ctx.commit, run_url=ctx.run_url))
    note = "The job summary of a step holds at most 1 MiB; the rest of the diff is left out."
    max_chars = len(text)
    while len(text.encode("utf-8")) > SUMMARY_MAX_BYTES and max_chars > 0:
        overflow = len(text.encode("utf-8")) - SUMMARY_MAX_BYTES
        # Characters can take up to 4 bytes; shrink by at least the byte overflow each round.
        max_chars = min(max_chars, len(text)) - overflow - 256
        text = redactor.redact(
            render_markdown(
                outcome,
                commit=ctx.commit,
                run_url=ctx.run_url,
                max_chars=max(max_chars, 0),
                truncation_note=note,
            )
        )
    try:
        gha.append_summary(text)
    except OSError as e:
        gha.warning(f"Could not write the job summary ({e.strerror or e}); the report is lost.")


# -- the upsert -----------------------------------------------------------------------------


_RETRY_METHODS = frozenset({"GET", "HEAD", "PATCH", "PUT", "DELETE"})


def _client(token: str, api_url: str, tuning: ClientTuning) -> Github:
    from github import Auth, Github, GithubRetry

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
    # A sentence the warning adds after GitHub's answer.
    note: str = ""


class _CreateUncertain(Exception):
    """The comment POST failed in a way that does not say whether GitHub created the comment."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _upsert(
    outcome: Outcome,
    *,
    ctx: RunContext,
    token: str,
    gha: GhaLike,
    redactor: Redactor,
    tuning: ClientTuning | None,
) -> str:
    from github import GithubException

    tuning = tuning or ClientTuning()
    gh = _client(token, ctx.api_url, tuning)
    try:
        # A create is never retried on its own (it could post a second comment): the whole
        # find-then-create is, so a comment that did get created is found and reused.
        attempts = 2 if tuning.retry_total > 0 else 1
        for attempt in range(1, attempts + 1):
            stage = _Stage()
            try:
                return _upsert_once(
                    outcome, gh=gh, ctx=ctx, gha=gha, redactor=redactor, stage=stage
                )
            except _CreateUncertain as e:
                if attempt == attempts:
                    cause = e.cause
                    if isinstance(cause, GithubException):
                        gha.warning(redactor.redact(_explain_github_error(cause, ctx, stage)))
                    else:
                        gha.warning(redactor.redact(_explain(cause, ctx)))
                    return ""
                gha.info("PR comment: the create request failed; looking for the comment again.")
            except GithubException as e:
                gha.warning(redactor.redact(_explain_github_error(e, ctx, stage)))
                return ""
        return ""  # not reached: the last attempt returns
    finally:
        gh.close()


def _upsert_once(
    outcome: Outcome,
    *,
    gh: Github,
    ctx: RunContext,
    gha: GhaLike,
    redactor: Redactor,
    stage: _Stage,
) -> str:
    import requests
    from github import GithubException

    repo = gh.get_repo(ctx.repository)
    number = ctx.pr_number
    if ctx.event_name == "push":
        stage.doing = f"find the pull request merged as commit {ctx.commit} in {ctx.repository}"
        number = _merged_pr_number(repo, ctx.commit or "")
    if number is None:
        gha.info(
            f"PR comment: none, no merged pull request has commit {ctx.commit} as its merge "
            "commit; the report is in the job summary."
        )
        return ""
    where = f"pull request #{number} in {ctx.repository}"
    stage.doing = "find out which account the token acts as"
    login = _token_login(gh)
    stage.doing = f"read the comments of {where}"
    issue = repo.get_issue(number)
    candidates: list[IssueComment]
    if login is not None:
        own = _find_own_comment(issue.get_comments(), app=outcome.app, login=login)
        candidates = [own] if own is not None else []
    else:
        candidates = _integration_candidates(issue.get_comments(), app=outcome.app)
    body = comment_body(
        outcome,
        commit=ctx.commit,
        run_url=ctx.run_url,
        max_chars=GITHUB_COMMENT_LIMIT - COMMENT_SAFETY_MARGIN,
        redact=redactor.redact,
    )
    # The body was redacted piece by piece while rendering; a secret spanning two pieces would
    # only show in the whole.
    body = redactor.redact(body)
    # The two shortcuts below never write. With a PAT the candidate is known to be ours. With an
    # integration token a candidate is only known to be ours once an edit of it succeeds, which
    # these paths must not try; they trust any candidate all the same, because leaving a comment
    # alone cannot harm anyone's comment, and a candidate is a bot's comment whose marker names
    # this app, i.e. a report of this action on this app (a person's comment quoting the marker is
    # never a candidate). So one that already holds the same content (digest) says what this run
    # would say, and on a no-change run any of them still tells what was last done to the app.
    # Which token wrote it does not matter to the reader. (With the Actions token its own comment,
    # if any, comes first, so that token keeps finding it as before.)
    if candidates and outcome.status == "no-change":
        url = str(candidates[0].html_url)
        gha.info(
            f"PR comment: left as is on {where}; this run changed nothing, so the comment "
            f"keeps telling what was last done: {url}"
        )
        return url
    digest = marker_digest(body)
    same = next((c for c in candidates if marker_digest(c.body or "") == digest), None)
    if same is not None:
        url = str(same.html_url)
        gha.info(f"PR comment: already up to date on {where}: {url}")
        return url
    stage.doing, stage.writing = f"edit the comment of app {outcome.app} on {where}", True
    updated, refused = _update_first_own(
        candidates, body, trusted=login is not None, gha=gha, redactor=redactor
    )
    if updated is not None:
        url = str(updated.html_url)
        gha.info(f"PR comment: updated on {where}: {url}")
        return url
    if ctx.event_name == "push":
        if refused is not None:
            # A token that may not write at all is refused every edit: keep warning about it.
            stage.note = (
                "An Actions or GitHub App token may edit only the comments it wrote itself: if "
                "another bot wrote this one, the token has no comment here to update (a push run "
                "does not start one)."
            )
            raise refused
        gha.info(
            f"PR comment: none, {where} (merged as {ctx.commit}) has no comment for app "
            f"{outcome.app} to update, and a push run does not start one."
        )
        return ""
    stage.doing, stage.writing = f"comment on {where}", True
    try:
        created = issue.create_comment(body)
    except GithubException as e:
        if e.status >= 500:
            raise _CreateUncertain(e) from e
        if refused is not None and e.status in (403, 404):
            # Refused the create as well: the token may not write comments at all, and the
            # first refusal (an edit) is reported, as it was before candidates were tried.
            stage.doing = f"edit the comment of app {outcome.app} on {where}"
            raise refused from e
        raise
    except requests.RequestException as e:
        raise _CreateUncertain(e) from e
    url = str(created.html_url)
    gha.info(f"PR comment: created on {where}: {url}")
    return url


def _token_login(gh: Github) -> str | None:
    """The login the token writes comments as, or None for an integration token.

    The Actions GITHUB_TOKEN and a GitHub App installation token may not read /user (403
    "Resource not accessible by integration"). Their comments are by github-actions[bot] and
    `<app-slug>[bot]`, and nothing in the REST API tells an installation token its slug.
    """
    from github import GithubException

    try:
        return str(gh.get_user().login)
    except GithubException as e:
        if e.status in (403, 404):
            return None
        raise


def _find_own_comment(
    comments: Iterable[IssueComment], *, app: str, login: str
) -> IssueComment | None:
    """The oldest comment by `login` whose marker names `app`, reading every page."""
    for c in comments:
        author = c.user.login if c.user is not None else None
        if author != login:
            continue
        marker = parse_marker(c.body)
        if marker is not None and marker.app == app:
            return c
    return None


def _integration_candidates(comments: Iterable[IssueComment], *, app: str) -> list[IssueComment]:
    """The comments an integration token may have written for `app`, in the order to try them.

    Those by a bot whose marker names `app`, reading every page: github-actions[bot]'s first (so
    the Actions token meets its own comment first, as when it was the only one looked at), then
    the other bots', each oldest first. A person's comment is never one, marker or not.
    """
    found = [
        c
        for c in comments
        if _is_bot(c.user) and (marker := parse_marker(c.body)) is not None and marker.app == app
    ]
    # sorted() is stable: within each group the listing's order (oldest first) stays.
    return sorted(found, key=lambda c: _login(c.user) != ACTIONS_BOT_LOGIN)


def _is_bot(user: GithubObject | None) -> bool:
    """Whether the author is a bot: `type` "Bot" in the JSON, else a login ending in "[bot]".

    Read from the listing's JSON: PyGithub's `user.type` would fetch the user (one more request
    per comment) whenever the field is missing.
    """
    if user is None:
        return False
    kind = user._rawData.get("type")
    if isinstance(kind, str):
        return kind == "Bot"
    return _login(user).endswith("[bot]")


def _login(user: GithubObject | None) -> str:
    if user is None:
        return ""
    login = user._rawData.get("login")
    return login if isinstance(login, str) else ""


def _update_first_own(
    candidates: list[IssueComment],
    body: str,
    *,
    trusted: bool,
    gha: GhaLike,
    redactor: Redactor,
) -> tuple[IssueComment | None, GithubException | None]:
    """Edit the first candidate GitHub lets the token edit; return it and the first refusal.

    A `trusted` candidate (a PAT's own comment) is edited and any error is raised, as for every
    write. An integration token's candidate may be another bot's: GitHub answers 403 to its edit
    (404 if it is gone meanwhile), and then the next one is tried, at most MAX_EDIT_ATTEMPTS, and
    none by an author already refused (one refusal shows that author is not this token).
    """
    from github import GithubException

    refused: GithubException | None = None
    refused_authors: set[str] = set()
    attempts = 0
    for c in candidates:
        author = _login(c.user)
        if author in refused_authors:
            continue
        if attempts == MAX_EDIT_ATTEMPTS:
            gha.info(
                f"PR comment: tried {attempts} comments this token may not edit; "
                "not trying more of them."
            )
            break
        attempts += 1
        try:
            c.edit(body)
        except GithubException as e:
            if trusted or e.status not in (403, 404):
                raise
            if e.status == 403:
                refused_authors.add(author)
            refused = refused or e
            gha.info(
                redactor.redact(
                    f"PR comment: could not edit {c.html_url} by {author} (GitHub answered "
                    f"{e.status}); an Actions or GitHub App token may edit only its own comments, "
                    "so it is taken to be another bot's and left alone."
                )
            )
            continue
        return c, refused
    return None, refused


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
    if stage.note:
        lead += f" {stage.note}"
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
