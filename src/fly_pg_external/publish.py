"""Where the report goes: the job summary on every run, one PR comment per app when it applies.

`publish` is the one entry point. It writes the job summary first (a run always leaves its report
there), then decides whether a pull request comment applies (the `pr-comment` input, the event,
the token) and hands a finished comment body to `github.upsert_comment`, the GitHub API side.
The `Outcome` it gets is already redacted (main passes it through `outcome.redacted` once, where
it builds it), and messages go to the package log, whose handler redacts each line: nothing here
redacts again. Nothing here can fail the step: a report that cannot be posted is a warning.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol

from . import github
from .comment_marker import job_end_comment, parse_marker
from .event import PR_EVENTS, RunContext
from .github import ClientTuning
from .outcome import Outcome
from .report import comment_body, summary_markdown

log = logging.getLogger(__name__)


class SummaryWriter(Protocol):
    """Where the job summary goes (implemented by `gha.Actions`)."""

    def append_summary(self, markdown: str, /) -> None: ...


def publish(
    outcome: Outcome,
    *,
    token: str,
    pr_comment: bool,
    summary: SummaryWriter,
    ctx: RunContext,
    tuning: ClientTuning | None = None,
) -> str:
    """Write the job summary (always), upsert the PR comment when applicable; return the comment
    URL or ''.

    `outcome` must already be redacted. Never raises for a GitHub problem and never fails the
    step: a report that cannot be posted is a warning, the run's result stays what the Fly work
    made it.
    """
    write_summary(outcome, ctx=ctx, summary=summary)
    if not _comment_applies(ctx, token=token, pr_comment=pr_comment):
        return ""
    body = comment_body(outcome, commit=ctx.commit, run_url=ctx.run_url)
    return github.upsert_comment(
        ctx=ctx,
        token=token,
        app=outcome.app,
        body=body,
        # A run that changed nothing leaves the last report standing: it tells what was done.
        keep_existing=outcome.status == "no-change",
        tuning=tuning,
    )


# A comment's html_url: https://github.com/<owner>/<repo>/pull/<number>#issuecomment-<id>.
_COMMENT_URL_RE = re.compile(r"/(?:pull|issues)/([0-9]{1,10})#issuecomment-([0-9]{1,20})$")


def close_comment(
    *,
    comment_url: str,
    job_end: str,
    app: str,
    token: str,
    ctx: RunContext,
    tuning: ClientTuning | None = None,
) -> str:
    """After the post step of `lifetime: job`: put what it did (`job_end`) at the top of the
    comment the main step wrote (`comment_url`, from its step state), the main step's report
    folded below, so the comment does not go on saying "open" once the job closed the database.
    Only a comment of ours for `app`; never raises (a warning). Returns the comment's URL or ''.
    """
    match = _COMMENT_URL_RE.search(comment_url)
    if match is None or not token or not ctx.repository:
        log.info("PR comment: not updated (no comment of the main step, or no github-token).")
        return ""
    try:
        gh = github.client(token, ctx.api_url, tuning or ClientTuning())
        try:
            issue = gh.get_repo(ctx.repository).get_issue(int(match.group(1)))
            comment = issue.get_comment(int(match.group(2)))
            marker = parse_marker(comment.body)
            if marker is None or marker.app != app:
                log.info("PR comment: not updated (the comment is no report of this app).")
                return ""
            comment.edit(job_end_comment(comment.body, job_end, app=app))
            log.info(f"PR comment updated with the end of the job: {comment.html_url}")
            return str(comment.html_url)
        finally:
            gh.close()
    except Exception as e:  # a report must never fail the step
        log.warning(
            f"Could not update the pull request comment {comment_url} with what the end of the "
            f"job closed: {type(e).__name__}: {e}",
            extra={"title": github.NOT_WRITTEN},
        )
        return ""


def write_summary(outcome: Outcome, *, ctx: RunContext, summary: SummaryWriter) -> None:
    """The full report into the job summary, cut with a notice only above the runner's limit."""
    text = summary_markdown(outcome, commit=ctx.commit, run_url=ctx.run_url)
    try:
        summary.append_summary(text)
    except OSError as e:
        log.warning(
            f"Could not write the job summary ({e.strerror or e}); the report is lost.",
            extra={"title": "Job summary not written"},
        )


def _comment_applies(ctx: RunContext, *, token: str, pr_comment: bool) -> bool:
    """Whether to go to GitHub at all; when not, one log line says why."""
    if not pr_comment:
        log.info("PR comment: off (`pr-comment: false`); the report is in the job summary.")
        return False
    if ctx.pr_number is None and ctx.event_name not in PR_EVENTS and ctx.event_name != "push":
        log.info(
            f"PR comment: none, a `{ctx.event_name or 'unknown'}` run names no pull request "
            "(set the pr-number input for one); the report is in the job summary."
        )
        return False
    if ctx.event_name in PR_EVENTS and ctx.pr_number is None:
        log.info(
            "PR comment: none, the event payload names no pull request number; "
            "the report is in the job summary."
        )
        return False
    if not token:
        log.warning(
            "PR comment: skipped, the `github-token` input is empty. Pass "
            "`github-token: ${{ github.token }}` (the default) or another token that may write "
            "pull request comments. The report is in the job summary.",
            extra={"title": "PR comment not written"},
        )
        return False
    if not ctx.repository:
        log.warning(
            "PR comment: skipped, GITHUB_REPOSITORY is not set (not running in Actions?).",
            extra={"title": "PR comment not written"},
        )
        return False
    return True
