"""Privileged runs triggered from a fork change nothing unless `allow-forks: true`.

`pull_request_target`, `workflow_run` and `issue_comment` runs get the repository's secrets and a
write token even when a fork's pull request triggered them. A workflow that then builds or runs
the fork's code hands that code the database URL this action makes; so, as actions/checkout
refuses to fetch fork code into such runs unless told to, this action refuses to change
anything on them. A dry run still works: it reads and reports, but hands out no URL (the
database may already be open, and a URL that logs in is what the guard keeps from the fork).

The payload says where the code comes from for `pull_request_target` (the head repository) and
`workflow_run` (the head repository of the run it follows); a head repository missing from it
(a deleted fork, a payload that names no pull request or cannot be read) counts as a fork. An
`issue_comment` payload does not say: GitHub is asked about the commented pull request (or the
one `pr-number` names), and one that cannot be looked up is treated as a fork's.
"""

from __future__ import annotations

import logging

from .errors import ForkRunRefused
from .event import RunContext
from .settings import Settings

log = logging.getLogger(__name__)

PRIVILEGED_EVENTS = frozenset({"pull_request_target", "workflow_run", "issue_comment"})


def fork_behind(ctx: RunContext, token: str) -> str | None:
    """The fork whose pull request triggered this privileged run, or None."""
    if ctx.event_name not in PRIVILEGED_EVENTS:
        return None
    if ctx.fork:
        return ctx.fork
    if ctx.event_name == "issue_comment" and ctx.pr_number is not None:
        # The commented pull request, or the one `pr-number` names for a comment on an issue
        # (e.g. "/expose 42"): the run acts for that pull request, so its head decides.
        return _head_of_commented_pull(ctx, ctx.pr_number, token)
    return None


def _head_of_commented_pull(ctx: RunContext, number: int, token: str) -> str | None:
    unknown = f"an unknown repository (pull request #{number} could not be looked up"
    if not token or not ctx.repository:
        return unknown + ": no github-token or GITHUB_REPOSITORY)"
    from . import github  # PyGithub only when this event needs it

    try:
        repo = github.client(token, ctx.api_url, github.ClientTuning()).get_repo(ctx.repository)
        head = repo.get_pull(number).head.repo
    except Exception as exc:  # refusing is the safe answer to a lookup that failed
        return unknown + f": {type(exc).__name__})"
    full_name = head.full_name if head is not None else None  # a deleted fork has no repo
    if full_name == ctx.repository:
        return None
    return full_name or f"a deleted fork (pull request #{number})"


def guard_fork_runs(settings: Settings, ctx: RunContext) -> str | None:
    """Before any request to Fly: raise when a fork's pull request triggered a run that would
    change something; for a read-only run, return that fork (its URL outputs are withheld: a dry
    run that hands out a working URL gives the fork what a change would). None when the run is
    the repository's own or `allow-forks` is set."""
    if settings.allow_forks:
        return None
    fork = fork_behind(ctx, settings.github_token)
    if fork is None or settings.read_only:
        return fork
    raise ForkRunRefused(
        f"This {ctx.event_name} run was triggered from {fork}, and such runs get the "
        f"repository's secrets: if the workflow runs that code, it could take the database "
        f"URL this step makes. Nothing was changed on {settings.app}.",
        hint=(
            "Set dry-run: true to report what would change, or allow-forks: true if this "
            "workflow never runs the fork's code (see the README's fork-safe recipe)."
        ),
    )


def withheld_notice(fork: str, ctx: RunContext) -> str:
    return (
        f"This {ctx.event_name} run was triggered from {fork}: it reports, but its connection "
        "outputs (database-url, node-database-url, jdbc-url, password) stay empty, since a "
        "workflow that runs the fork's code could take a URL that logs in from outside Fly. "
        "Set allow-forks: true if this workflow never runs the fork's code."
    )
