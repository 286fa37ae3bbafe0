"""The run as the runner describes it: the event, the repository, the pull request it belongs
to and where its code comes from, read once per run from the environment and the event payload.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
PR_EVENTS = frozenset({"pull_request", "pull_request_target"})


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
            # The pull request the event names wins: the input is for events that name none.
            pr_number=trigger.pr_number if trigger.pr_number is not None else pr_number,
            fork=trigger.fork,
        )


@dataclass(frozen=True)
class _Trigger:
    pr_number: int | None = None
    commit: str | None = None  # the head that was pushed, where GITHUB_SHA is not it
    fork: str | None = None


def _trigger(event_name: str, payload: dict[str, Any], repository: str) -> _Trigger:
    """What the event payload says about the pull request and the code behind the run."""
    if event_name in PR_EVENTS:
        pr = _obj(payload.get("pull_request"))
        number = pr.get("number", payload.get("number"))
        # GITHUB_SHA of a PR run is a merge commit nobody has seen; the head is what was pushed.
        head = _obj(pr.get("head"))
        base_repo = _full_name(_obj(pr.get("base")).get("repo")) or repository
        return _Trigger(
            pr_number=_number(number) if pr else None,
            commit=_text(head.get("sha")),
            # A pull_request_target payload that names no pull request (or cannot be read)
            # says nothing of where the code comes from: unknown, so a fork's for the guard.
            fork=_fork(_full_name(head.get("repo")), base_repo)
            if pr or event_name == "pull_request"
            else _fork(None, base_repo),
        )
    if event_name == "workflow_run":
        run = _obj(payload.get("workflow_run"))
        base_repo = _full_name(payload.get("repository")) or repository
        return _Trigger(
            commit=_text(run.get("head_sha")),
            fork=_fork(_full_name(run.get("head_repository")), base_repo),
        )
    if event_name == "issue_comment":
        issue = _obj(payload.get("issue"))
        if issue.get("pull_request"):
            number = _number(issue.get("number"))
            # The payload does not say where the pull request's head is: forks.py asks GitHub.
            return _Trigger(pr_number=number)
    return _Trigger()


def _fork(head_repo: str | None, base_repo: str | None) -> str | None:
    """The repository the code comes from when it is not the base one. GitHub sends no head
    repository once a fork is deleted, while its code is still reachable (refs/pull/N/head):
    that counts as a fork, never as the repository itself."""
    if head_repo is None:
        return "a deleted or unknown repository"
    return head_repo if base_repo and head_repo != base_repo else None


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
