"""The fake GitHub's state core: repositories, pull requests, comments, tokens, the request log,
the armed failures and the git data, behind one lock; and what every endpoint shares: who a token
acts as, an account's type, a comment's id and times, the failure a request takes.

:class:`~fakegithub.server.FakeGitHub` builds it and is the tests' API; the handler
(:mod:`fakegithub.handler`) and the routes work on it, holding :attr:`Store.lock`.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from .gitdata import GitStore
from .models import Comment, Failure, Identity, PullRequest, Request, UserType, type_of

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class Store:
    """Everything the fake knows, and the settings its endpoints follow.

    The settings are `FakeGitHub`'s arguments of the same names: `login`, `token` and
    `user_endpoint_forbidden` for a fake with one identity, `api_prefix`, `body_limit`.
    """

    def __init__(
        self,
        *,
        login: str,
        user_endpoint_forbidden: bool,
        api_prefix: str,
        token: str | None,
        body_limit: int,
    ) -> None:
        self.login = login
        self.user_endpoint_forbidden = user_endpoint_forbidden
        self.api_prefix = api_prefix
        self.token = token
        self.body_limit = body_limit
        self.lock = threading.Lock()
        self.repos: set[str] = set()
        self.pulls: dict[tuple[str, int], PullRequest] = {}
        self.comments: dict[int, Comment] = {}
        self.requests: list[Request] = []
        self.failures: list[Failure] = []
        self.writes_forbidden: str | None = None
        self.tokens: dict[str, Identity] = {}
        # The `type` of accounts that wrote comments (default: from the login, see `type_of`).
        self.account_types: dict[str, UserType] = {}
        self.git = GitStore()
        self._ids = itertools.count(1001)
        self._clock = itertools.count(1)

    # The methods below are called with the lock held.
    def add_token(self, token: str, identity: Identity) -> None:
        if not token:
            raise ValueError("a token must not be empty")
        self.tokens[token] = identity
        self.account_types[identity.login] = identity.type

    def identity(self, authorization: str | None) -> Identity | None:
        """Who a request acts as; None for a token the fake does not accept (GitHub's 401)."""
        given = None
        for scheme in ("token ", "Bearer "):
            if authorization is not None and authorization.startswith(scheme):
                given = authorization[len(scheme) :]
        if self.tokens:
            return self.tokens.get(given) if given is not None else None
        if self.token is not None and given != self.token:
            return None
        return Identity(
            self.login, self.user_type(self.login), integration=self.user_endpoint_forbidden
        )

    def user_type(self, login: str) -> UserType:
        return self.account_types.get(login, type_of(login))

    def create_comment(self, repo: str, number: int, body: str, login: str) -> Comment:
        now = self._tick()
        c = Comment(next(self._ids), repo, number, body, login, now, now)
        self.comments[c.id] = c
        return c

    def edit_comment(self, comment_id: int, body: str) -> Comment:
        c = replace(self.comments[comment_id], body=body, updated_at=self._tick())
        self.comments[comment_id] = c
        return c

    def take_failure(self, method: str, route_path: str) -> Failure | None:
        """The armed failure this request meets, counted off; None when none matches."""
        for failure in self.failures:
            if failure.method == method and failure.path.fullmatch(route_path):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self.failures.remove(failure)
                return failure
        return None

    def _tick(self) -> datetime:
        return _EPOCH + timedelta(seconds=next(self._clock))
