"""The fake GitHub's data: who a token acts as, pull requests, comments, the request log and the
failures a test arms."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

ACTIONS_BOT = "github-actions[bot]"
BODY_LIMIT = 65_536

Json = dict[str, Any]
UserType = Literal["User", "Bot"]


def type_of(login: str) -> UserType:
    # GitHub logins cannot contain brackets: only bot accounts end in "[bot]".
    return "Bot" if login.endswith("[bot]") else "User"


@dataclass(frozen=True)
class Identity:
    """Who a token acts as.

    `login` writes the comments the token creates; `type` is the account's `user.type` in the
    JSON ("User" for a person, "Bot" for the Actions bot and GitHub App bots). An `integration`
    token (the Actions `GITHUB_TOKEN`, a GitHub App installation token) gets 403 "Resource not
    accessible by integration" from `GET /user`.
    """

    login: str
    type: UserType = "User"
    integration: bool = False

    @classmethod
    def user(cls, login: str) -> Identity:
        """A person's token (a PAT): `GET /user` works."""
        return cls(login, "User", integration=False)

    @classmethod
    def actions_bot(cls) -> Identity:
        """The Actions `GITHUB_TOKEN`: comments by github-actions[bot]."""
        return cls(ACTIONS_BOT, "Bot", integration=True)

    @classmethod
    def app_bot(cls, slug: str) -> Identity:
        """A GitHub App installation token: comments by `<slug>[bot]`."""
        return cls(f"{slug}[bot]", "Bot", integration=True)


@dataclass(frozen=True)
class Comment:
    id: int
    repo: str
    issue: int
    body: str
    login: str
    created_at: datetime
    updated_at: datetime


@dataclass
class PullRequest:
    repo: str
    number: int
    state: str = "open"  # open / closed
    merged: bool = False
    merge_commit_sha: str | None = None
    head_sha: str = "0" * 40
    head_repo: str | None = None  # a fork's full name; None means the base repository
    title: str = "Update fly.toml"


@dataclass(frozen=True)
class Request:
    """One request as the server saw it (the path includes any `/api/v3` prefix)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    at_ns: int = 0  # time.monotonic_ns() when it arrived, to order it among other fakes' logs


@dataclass
class Failure:
    """A failure armed with `FakeGitHub.fail_next`."""

    method: str
    path: re.Pattern[str]
    status: int
    message: str
    remaining: int | None  # None: every matching request fails
    after: bool  # the request takes effect, then the client gets the error anyway
