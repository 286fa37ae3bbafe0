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
from typing import Protocol

from . import github
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
