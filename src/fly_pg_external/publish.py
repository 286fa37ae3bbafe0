"""Where the report goes: the job summary on every run, one PR comment per app when it applies.

`publish` is the one entry point. It writes the job summary first (a run always leaves its report
there), then decides whether a pull request comment applies (the `pr-comment` input, the event,
the token) and hands a finished comment body to `github.upsert_comment`, the GitHub API side.
The `Outcome` it gets is already redacted (main passes it through `outcome.redacted` once, where
it builds it), and messages go to the package log, whose handler redacts each line: nothing here
redacts again. Nothing here can fail the step: a report that cannot be posted is a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import github
from .github import ClientTuning
from .outcome import Outcome
from .report import comment_body, summary_markdown

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
PR_EVENTS = frozenset({"pull_request", "pull_request_target"})


class SummaryWriter(Protocol):
    """Where the job summary goes (implemented by `gha.Actions`)."""

    def append_summary(self, markdown: str, /) -> None: ...


def publish(
    outcome: Outcome,
    *,
    token: str,
    pr_comment: bool,
    env: Mapping[str, str],
    summary: SummaryWriter,
    tuning: ClientTuning | None = None,
    pr_number: int | None = None,
) -> str:
    """Write the job summary (always), upsert the PR comment when applicable; return the comment
    URL or ''.

    `outcome` must already be redacted. Never raises for a GitHub problem and never fails the
    step: a report that cannot be posted is a warning, the run's result stays what the Fly work
    made it.
    """
    ctx = RunContext.from_env(env, pr_number=pr_number)
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
        log.warning(f"Could not write the job summary ({e.strerror or e}); the report is lost.")


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
            "pull request comments. The report is in the job summary."
        )
        return False
    if not ctx.repository:
        log.warning("PR comment: skipped, GITHUB_REPOSITORY is not set (not running in Actions?).")
        return False
    return True


# -- the run, as the runner describes it -----------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What publishing needs to know about the run, read once from the runner's environment.

    This is where the footer's commit and run URL enter: the runner's own values (a SHA from
    GITHUB_SHA or the event's PR head, a URL built from the server, repository and run id), which
    hold no secret of the run, so the report prints them without redaction.
    """

    event_name: str
    repository: str
    api_url: str
    commit: str | None
    run_url: str | None
    pr_number: int | None
    # The fork a pull request (or the run a workflow_run follows) comes from; None for the
    # repository itself. An issue_comment names its pull request but not where its head is.
    fork: str | None
    comment_on_pr: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, pr_number: int | None = None) -> RunContext:
        """The run as the runner describes it; `pr_number` (the input) names the pull request a
        run belongs to when its event does not."""
        event_name = env.get("GITHUB_EVENT_NAME", "")
        repository = env.get("GITHUB_REPOSITORY", "")
        api_url = (env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        server_url = (env.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
        run_id = env.get("GITHUB_RUN_ID", "")
        run_url = (
            f"{server_url}/{repository}/actions/runs/{run_id}" if repository and run_id else None
        )
        payload = _read_event(env.get("GITHUB_EVENT_PATH", ""))
        trigger = _trigger(event_name, payload, repository)
        return cls(
            event_name=event_name,
            repository=repository,
            api_url=api_url,
            commit=trigger.commit or env.get("GITHUB_SHA") or None,
            run_url=run_url,
            pr_number=pr_number if pr_number is not None else trigger.pr_number,
            fork=trigger.fork,
            comment_on_pr=trigger.comment_on_pr,
        )


@dataclass(frozen=True)
class _Trigger:
    pr_number: int | None = None
    commit: str | None = None  # the head that was pushed, where GITHUB_SHA is not it
    fork: str | None = None
    comment_on_pr: int | None = None


def _trigger(event_name: str, payload: dict[str, Any], repository: str) -> _Trigger:
    """What the event payload says about the pull request and the code behind the run."""
    if event_name in PR_EVENTS:
        pr = _obj(payload.get("pull_request"))
        number = pr.get("number", payload.get("number"))
        # GITHUB_SHA of a PR run is a merge commit nobody has seen; the head is what was pushed.
        head = _obj(pr.get("head"))
        head_repo = _full_name(head.get("repo"))
        base_repo = _full_name(_obj(pr.get("base")).get("repo")) or repository
        return _Trigger(
            pr_number=_number(number) if pr else None,
            commit=_text(head.get("sha")),
            fork=head_repo if head_repo and base_repo and head_repo != base_repo else None,
        )
    if event_name == "workflow_run":
        run = _obj(payload.get("workflow_run"))
        head_repo = _full_name(run.get("head_repository"))
        base_repo = _full_name(payload.get("repository")) or repository
        return _Trigger(
            commit=_text(run.get("head_sha")),
            fork=head_repo if head_repo and base_repo and head_repo != base_repo else None,
        )
    if event_name == "issue_comment":
        issue = _obj(payload.get("issue"))
        if issue.get("pull_request"):
            number = _number(issue.get("number"))
            # The payload does not say where the pull request's head is: forks.py asks GitHub.
            return _Trigger(pr_number=number, comment_on_pr=number)
    return _Trigger()


def _number(value: object) -> int | None:
    # bool is an int too; a payload saying `"number": true` names no pull request.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


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
